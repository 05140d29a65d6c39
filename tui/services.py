"""The engine as the TUI sees it: one injected facade plus a run store.

`Services` bundles what the app talks to (runs directory, experiments file, GPU source,
launcher, sampler, reporter). `create_app` builds the real ones from the engine; tests
pass fakes with the same few methods. The engine modules are imported lazily so the app
starts (and shows runs) even where launching or sampling is unavailable.

`RunStore` turns the runs directory into immutable `RunView` rows and per-run loss
series. It is only ever driven from one poll worker thread; the UI reads the series
(append-only lists) and the views it is handed in messages. Every read is incremental:
status.json is re-read only when its mtime changes (or, for running runs, every few
seconds to notice a dead process), metrics and samples through `JsonlTail` (new bytes
only), and only for the runs the visible screen watches.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from engine.runs import JsonlTail, RunDir, list_runs

LIVENESS_CHECK_S = 5.0   # how often a running run's process is checked without a status change
LOG_FIRST_BYTES = 64 * 1024  # a newly shown log starts at its last 64 KiB


class ServiceUnavailable(RuntimeError):
    """An engine part this installation does not have (yet); the message is one line."""


# ---- the facade -------------------------------------------------------------------------

class Launcher(Protocol):
    def sweeps(self) -> list["SweepInfo"]: ...
    def plan(self, selection: list[str]) -> list[Any]: ...
    def queue(self, selection: list[str], gpu: str = "auto") -> list[RunDir]: ...
    def start_dispatcher(self, gpu: str) -> None: ...
    def stop(self, run: RunDir) -> None: ...
    def resume(self, run: RunDir) -> None: ...


@dataclass(frozen=True)
class SweepInfo:
    name: str
    description: str = ""
    runs: tuple[str, ...] = ()   # run ids, "sweep/name"


@dataclass
class Services:
    runs_root: Path
    experiments_path: Path
    gpu_source: Any            # .snapshot() -> list[GpuSnapshot], never raises
    launcher: Any              # Launcher
    sampler: Any = None        # .generate(run, prompt, temperature, top_k, max_new_tokens) -> dict
    reporter: Any = None       # .write(sweeps, out_dir) -> Path

    @classmethod
    def default(cls, runs_root: Path, experiments_path: Path) -> "Services":
        gpus = _default_gpu_source()
        return cls(Path(runs_root), Path(experiments_path), gpus,
                   EngineLauncher(Path(runs_root), Path(experiments_path), gpus),
                   EngineSampler(), EngineReporter(Path(runs_root)))


class _NoGpus:
    def snapshot(self) -> list:
        return []


def _default_gpu_source() -> Any:
    try:
        from engine.launch.gpu import default_gpu_source
    except ImportError:
        return _NoGpus()
    return default_gpu_source()


def _engine(module: str, what: str) -> Any:
    import importlib
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise ServiceUnavailable(f"{what} is not available: {module} is not installed") from e
        raise


class EngineLauncher:
    """engine.launch.dispatcher and engine.experiments behind the Launcher methods."""

    def __init__(self, runs_root: Path, experiments_path: Path, gpu_source: Any = None):
        self.runs_root = runs_root
        self.experiments_path = experiments_path
        self.gpu_source = gpu_source

    def sweeps(self) -> list[SweepInfo]:
        exps = _engine("engine.experiments", "reading experiments").load_experiments(
            self.experiments_path)
        return [SweepInfo(s.name, s.description or "", tuple(r.id for r in s.runs))
                for s in exps.sweeps.values()]

    def plan(self, selection: list[str]) -> list[Any]:
        return _engine("engine.launch.dispatcher", "planning").plan_runs(
            self.experiments_path, selection, gpu_source=self.gpu_source)

    def queue(self, selection: list[str], gpu: str = "auto") -> list[RunDir]:
        """Create the runs (queued, each remembering the card asked for); prepares data."""
        return _engine("engine.launch.dispatcher", "launching").queue_runs(
            self.experiments_path, self.runs_root, selection, gpu=gpu)

    def start_dispatcher(self, gpu: str = "auto") -> None:
        """A background dispatcher (its own session: it outlives the app) unless one runs."""
        _engine("engine.launch.dispatcher", "launching").ensure_dispatcher(
            self.runs_root, self.experiments_path, gpu)

    def stop(self, run: RunDir) -> None:
        launch = _engine("engine.launch.dispatcher", "stopping")
        try:
            grace = launch.stop_grace(self.experiments_path)
        except Exception:  # no or broken experiments file: the default grace
            grace = 10.0
        launch.stop_run(run, grace_s=grace)

    def resume(self, run: RunDir) -> None:
        launch = _engine("engine.launch.dispatcher", "resuming")
        launch.resume_run(run)
        launch.ensure_dispatcher(self.runs_root, self.experiments_path)


class EngineSampler:
    """engine.sample.generate: one loaded model per run, reloaded when its checkpoint changes."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._models: dict[Path, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def generate(self, run: RunDir, prompt: str, temperature: float, top_k: int | None,
                 max_new_tokens: int = 200, seed: int = 1337) -> dict[str, Any]:
        sample = _engine("engine.sample.generate", "sampling")
        if not run.ckpt_path.exists():
            raise ServiceUnavailable(f"{run.id} has no checkpoint yet (written at its first eval)")
        with self._lock:
            mtime = run.ckpt_path.stat().st_mtime
            cached = self._models.get(run.path)
            if cached is None or cached[0] != mtime:
                self._models[run.path] = (mtime, sample.load_model(run.path, self.device))
            loaded = self._models[run.path][1]
            if loaded.tokenizer is None:
                raise ServiceUnavailable(f"{run.id}: no tokenizer ({loaded.why_no_tokenizer})")
            out = sample.generate_samples(loaded.model, loaded.tokenizer, [prompt], num_samples=1,
                                          max_new_tokens=max_new_tokens, temperature=temperature,
                                          top_k=top_k, top_p=None, seed=seed)
        rec = dict(out[0])
        rec["iter"] = loaded.iter_num
        return rec


class EngineReporter:
    def __init__(self, runs_root: Path):
        self.runs_root = runs_root

    def write(self, sweeps: list[str], out_dir: Path) -> Path:
        report = _engine("engine.report.write", "the report")
        result = report.write_report(self.runs_root, sweeps, out_dir)
        first = Path(result.out_dir) / sweeps[0] / "report.md"
        return first if len(sweeps) == 1 and first.exists() else Path(result.out_dir)


# ---- what the UI shows of one run ------------------------------------------------------------

@dataclass(frozen=True)
class RunView:
    run: RunDir
    state: str
    reason: str = ""
    device: str = ""
    iter: int | None = None
    max_iters: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    params: int | None = None
    tok_s: float | None = None
    eta_s: float | None = None
    gpu_index: int | None = None
    gpu_uuid: str = ""
    pid: int | None = None
    host: str = ""

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def sweep(self) -> str:
        return self.run.sweep

    @property
    def name(self) -> str:
        return self.run.name

    @classmethod
    def from_status(cls, run: RunDir, st: dict[str, Any]) -> "RunView":
        gpu = st.get("gpu") if isinstance(st.get("gpu"), dict) else {}
        device = str(st.get("device") or "")
        if not device and gpu.get("index") is not None:
            device = f"cuda:{gpu['index']}"
        return cls(run=run, state=str(st.get("state", "queued")), reason=str(st.get("reason") or ""),
                   device=device, iter=st.get("iter"), max_iters=st.get("max_iters"),
                   train_loss=st.get("train_loss"), val_loss=st.get("val_loss"),
                   best_val_loss=st.get("best_val_loss"), params=st.get("params"),
                   tok_s=st.get("tok_s"), eta_s=st.get("eta_s") if st.get("state") == "running" else None,
                   gpu_index=gpu.get("index"), gpu_uuid=str(gpu.get("uuid") or ""),
                   pid=st.get("pid") if st.get("state") == "running" else None,
                   host=str(st.get("host") or ""))


@dataclass
class Series:
    """A run's loss curves; append-only lists (the UI reads while the poller appends)."""

    train_iter: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_tokens: list[float] = field(default_factory=list)
    eval_iter: list[int] = field(default_factory=list)
    eval_train: list[float] = field(default_factory=list)
    eval_val: list[float] = field(default_factory=list)
    eval_tokens: list[float] = field(default_factory=list)
    tok_s_sum: float = 0.0      # throughput over the run (the first record, often a warm-up
    tok_s_n: int = 0            # or compile step, is left out)

    @property
    def mean_tok_s(self) -> float | None:
        return self.tok_s_sum / self.tok_s_n if self.tok_s_n else None


@dataclass(frozen=True)
class PollResult:
    views: tuple[RunView, ...]
    metrics_changed: frozenset[str] = frozenset()
    samples_changed: frozenset[str] = frozenset()
    log_id: str | None = None
    log_text: str = ""
    log_reset: bool = False


class _Tracked:
    def __init__(self, run: RunDir):
        self.run = run
        self.status_key: tuple[int, int] | None = None
        self.checked_at = 0.0
        self.view: RunView | None = None
        self.metrics: JsonlTail | None = None
        self.series = Series()
        self.samples_tail: JsonlTail | None = None
        self.samples: list[dict[str, Any]] = []
        self.tokens_per_iter: int | None = None


class RunStore:
    def __init__(self, runs_root: Path, clock=time.monotonic):
        self.runs_root = Path(runs_root)
        self._clock = clock
        self._runs: dict[str, _Tracked] = {}
        self._watch: frozenset[str] = frozenset()
        self._log_id: str | None = None
        self._log_offset = 0
        self._lock = threading.Lock()

    # -- called from the UI thread --
    def watch(self, ids: Iterable[str]) -> None:
        """Tail metrics and samples of these runs (the rest only get status)."""
        with self._lock:
            self._watch = frozenset(ids)

    def show_log(self, run_id: str | None) -> None:
        with self._lock:
            if run_id != self._log_id:
                self._log_id, self._log_offset = run_id, -1

    def series(self, run_id: str) -> Series | None:
        t = self._runs.get(run_id)
        return t.series if t else None

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        t = self._runs.get(run_id)
        return list(t.samples) if t else []

    # -- called from the poll worker --
    def poll(self) -> PollResult:
        with self._lock:
            watch, log_id, log_offset = self._watch, self._log_id, self._log_offset
        current = {r.id: r for r in list_runs(self.runs_root)}
        for rid in list(self._runs):
            if rid not in current:
                del self._runs[rid]
        now = self._clock()
        metrics_changed: set[str] = set()
        samples_changed: set[str] = set()
        views = []
        for rid, run in current.items():
            t = self._runs.get(rid)
            if t is None:
                t = self._runs[rid] = _Tracked(run)
            self._refresh_status(t, now)
            if rid in watch:
                if self._tail_metrics(t):
                    metrics_changed.add(rid)
                if self._tail_samples(t):
                    samples_changed.add(rid)
            views.append(t.view)
        text, reset, new_offset = "", False, log_offset
        if log_id in current:
            text, reset, new_offset = _read_log(current[log_id].stdout_path, log_offset)
        with self._lock:
            if self._log_id == log_id:
                self._log_offset = new_offset
        return PollResult(tuple(views), frozenset(metrics_changed), frozenset(samples_changed),
                          log_id, text, reset)

    def _refresh_status(self, t: _Tracked, now: float) -> None:
        try:
            st = t.run.status_path.stat()
            key = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = (0, 0)
        stale = t.view is not None and t.view.state == "running" and now - t.checked_at > LIVENESS_CHECK_S
        if key != t.status_key or stale or t.view is None:
            t.view = RunView.from_status(t.run, t.run.read_status())
            t.status_key, t.checked_at = key, now

    def _tail_metrics(self, t: _Tracked) -> bool:
        if t.metrics is None:
            t.metrics = JsonlTail(t.run.metrics_path)
        recs = t.metrics.read_new()
        if t.metrics.take_reset():
            t.series = Series()  # a resume rewrote the file: swap in a fresh series
        if not recs:
            return False
        if t.tokens_per_iter is None:
            try:
                t.tokens_per_iter = t.run.load_config().tokens_per_iter
            except Exception:
                t.tokens_per_iter = 0
        s = t.series
        for r in recs:
            it = r.get("iter")
            if not isinstance(it, (int, float)):
                continue
            tokens = r.get("tokens") or it * (t.tokens_per_iter or 0)
            if r.get("kind") == "train" and _is_num(r.get("loss")):
                if s.train_iter and _is_num(r.get("tok_s")):
                    s.tok_s_sum += float(r["tok_s"])
                    s.tok_s_n += 1
                s.train_iter.append(it), s.train_loss.append(float(r["loss"]))
                s.train_tokens.append(tokens)
            elif r.get("kind") == "eval" and _is_num(r.get("val_loss")):
                s.eval_iter.append(it), s.eval_val.append(float(r["val_loss"]))
                s.eval_train.append(float(r["train_loss"]) if _is_num(r.get("train_loss")) else float("nan"))
                s.eval_tokens.append(tokens)
        return True

    def _tail_samples(self, t: _Tracked) -> bool:
        if t.samples_tail is None:
            t.samples_tail = JsonlTail(t.run.samples_path)
        recs = t.samples_tail.read_new()
        if t.samples_tail.take_reset():
            t.samples = []
        if recs:
            t.samples = t.samples + recs  # a new list: readers keep a consistent one
        return bool(recs)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def _read_log(path: Path, offset: int) -> tuple[str, bool, int]:
    """New text of stdout.log since `offset` (-1: start at the last 64 KiB)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "", offset != 0, 0
    reset = offset < 0 or size < offset
    if reset:
        offset = max(0, size - LOG_FIRST_BYTES)
    if size == offset:
        return "", reset, offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n")  # whole lines only; a partial one waits
    if end < 0:
        return "", reset, offset
    return data[: end + 1].decode("utf-8", "replace"), reset, offset + end + 1


def latest_samples(samples: list[dict[str, Any]], iteration: int | None = None) -> dict[str, dict]:
    """The latest sample per prompt (at or before `iteration` when given)."""
    out: dict[str, dict] = {}
    for s in samples:
        it = s.get("iter", 0) or 0
        if iteration is not None and it > iteration:
            continue
        prev = out.get(s.get("prompt", ""))
        if prev is None or (prev.get("iter", 0) or 0) <= it:
            out[s.get("prompt", "")] = s
    return out
