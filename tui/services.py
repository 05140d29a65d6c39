"""The engine as the TUI sees it: one injected facade.

`Services` bundles what the app talks to: the runs directory, the experiments file, a GPU
source, a launcher, a sampler and a reporter. `create_app` builds the real ones from the
engine; tests pass fakes with the same few methods (the Protocols below). What a run *is*
comes from the engine's one reading (engine.report.reading, through tui.store).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from engine.errors import UserError
from engine.launch import dispatcher, queue
from engine.launch.gpu import GpuSource, default_gpu_source
from engine.runs import RunDir
from engine.text import safe_text


class ServiceUnavailable(UserError):
    """What was asked cannot be done yet (a run with no checkpoint); the message is one line."""


@dataclass(frozen=True)
class SweepInfo:
    name: str
    description: str = ""
    runs: tuple[str, ...] = ()   # run ids, "sweep/name"


class Launcher(Protocol):
    def sweeps(self) -> list[SweepInfo]: ...
    def plan(self, selection: list[str]) -> list[queue.PlanRow]: ...
    def queue(self, selection: list[str], gpu: str = "auto", fresh: bool = False,
              log: Callable[[str], None] | None = None) -> queue.QueueResult: ...
    def start_dispatcher(self, gpu: str) -> None: ...
    def stop(self, run: RunDir) -> None: ...
    def resume(self, run: RunDir) -> None: ...
    def extend_target(self, run: RunDir) -> tuple[int, int | None]: ...
    def extend(self, run: RunDir, max_iters: int) -> str: ...


class Sampler(Protocol):
    def temperature_study(self, run: RunDir, temperatures: list[float]) -> list[dict]:
        """engine.sample.temperature: the run sampled at each temperature, saved in its
        temperature.jsonl; one row of diversity scores per temperature."""
        from engine.sample.temperature import temperature_study
        return temperature_study(run, temperatures, device=self.device)

    def generate(self, run: RunDir, prompt: str, temperature: float, top_k: int | None,
                 max_new_tokens: int = 200, seed: int = 1337) -> dict[str, Any]: ...
    def temperature_study(self, run: RunDir, temperatures: list[float]) -> list[dict]: ...


class Reporter(Protocol):
    def write(self, sweeps: list[str], out_dir: Path) -> Path: ...
    def write_course(self, sweeps: list[str], out_dir: Path) -> list[Path]: ...


@dataclass
class Services:
    runs_root: Path
    experiments_path: Path
    gpu_source: GpuSource
    launcher: Launcher
    sampler: Sampler | None = None
    reporter: Reporter | None = None

    @classmethod
    def default(cls, runs_root: Path, experiments_path: Path) -> "Services":
        gpus = default_gpu_source()
        return cls(Path(runs_root), Path(experiments_path), gpus,
                   EngineLauncher(Path(runs_root), Path(experiments_path), gpus),
                   EngineSampler(), EngineReporter(Path(runs_root)))


class EngineLauncher:
    """engine.launch (queue, dispatcher) and engine.experiments behind the Launcher methods."""

    def __init__(self, runs_root: Path, experiments_path: Path, gpu_source: GpuSource | None = None):
        self.runs_root = runs_root
        self.experiments_path = experiments_path
        self.gpu_source = gpu_source

    def sweeps(self) -> list[SweepInfo]:
        from engine.experiments import load_experiments
        exps = load_experiments(self.experiments_path)
        return [SweepInfo(s.name, safe_text(s.description or ""), tuple(r.id for r in s.runs))
                for s in exps.sweeps.values()]

    def plan(self, selection: list[str]) -> list[queue.PlanRow]:
        """The launch plan; runs that exist with a drifted saved config say so (drift)."""
        return queue.plan_runs(self.experiments_path, selection, gpu_source=self.gpu_source,
                               runs_root=self.runs_root)

    def queue(self, selection: list[str], gpu: str = "auto", fresh: bool = False,
              log: Callable[[str], None] | None = None) -> queue.QueueResult:
        """Create the runs (queued, each remembering the card asked for); prepares data.
        Existing runs whose saved config drifted from the file are kept and reported,
        or with fresh=True moved aside and created anew (engine.launch.drift). `log` hears
        what the wait is for when another process holds the queue lock."""
        return queue.queue_runs_detailed(self.experiments_path, self.runs_root, selection,
                                         gpu=gpu, fresh=fresh, lock_notice=log)

    def start_dispatcher(self, gpu: str = "auto") -> None:
        """A background dispatcher (its own session: it outlives the app) unless one runs."""
        dispatcher.ensure_dispatcher(self.runs_root, self.experiments_path, gpu)

    def stop(self, run: RunDir) -> None:
        queue.stop_run(run, grace_s=queue.stop_grace(self.experiments_path))

    def resume(self, run: RunDir) -> None:
        queue.resume_run(run)
        dispatcher.ensure_dispatcher(self.runs_root, self.experiments_path)

    def extend_target(self, run: RunDir) -> tuple[int, int | None]:
        """(the run's max_iters, the one the experiments file gives it now)."""
        from engine.launch.extend import target_max_iters
        return run.load_config().max_iters, target_max_iters(self.experiments_path, run)

    def extend(self, run: RunDir, max_iters: int) -> str:
        """Train a finished run on to max_iters (engine.launch.extend); what it will do."""
        from engine.launch.extend import extend_run
        ext = extend_run(run, max_iters)
        dispatcher.ensure_dispatcher(self.runs_root, self.experiments_path)
        return ext.describe()


class EngineSampler:
    """engine.sample.generate: one loaded model per run, reloaded when its checkpoint changes."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._models: dict[Path, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def generate(self, run: RunDir, prompt: str, temperature: float, top_k: int | None,
                 max_new_tokens: int = 200, seed: int = 1337) -> dict[str, Any]:
        # imported here, in the worker that samples: it imports torch, which the app's
        # start must not wait for
        from engine.sample.generate import generate_samples, load_model, sampling_precision
        if not run.ckpt_path.exists():
            raise ServiceUnavailable(f"{run.id} has no checkpoint yet (written at its first eval)")
        with self._lock:
            mtime = run.ckpt_path.stat().st_mtime
            cached = self._models.get(run.path)
            if cached is None or cached[0] != mtime:
                self._models[run.path] = (mtime, load_model(run.path, self.device))
            loaded = self._models[run.path][1]
            if loaded.tokenizer is None:
                raise ServiceUnavailable(f"{run.id}: no tokenizer ({loaded.why_no_tokenizer})")
            out = generate_samples(loaded.model, loaded.tokenizer, [prompt], num_samples=1,
                                   max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=None, seed=seed,
                                   precision=sampling_precision(loaded))
        rec = dict(out[0])
        rec["iter"] = loaded.iter_num
        return rec


class EngineReporter:
    def __init__(self, runs_root: Path):
        self.runs_root = runs_root

    def write(self, sweeps: list[str], out_dir: Path) -> Path:
        from engine.report.write import write_report
        result = write_report(self.runs_root, sweeps, out_dir)
        first = Path(result.out_dir) / sweeps[0] / "report.md"
        return first if len(sweeps) == 1 and first.exists() else Path(result.out_dir)

    def write_course(self, sweeps: list[str], out_dir: Path) -> list[Path]:
        """The course report over `sweeps` (each sweep's own report too): its report.md
        and report.html; with one sweep, that sweep's report.md."""
        from engine.report.write import write_report
        result = write_report(self.runs_root, sweeps, out_dir)
        if result.course is None:
            return [s.report_md for s in result.sweeps]
        return [result.course.report_md, result.course.report_html]
