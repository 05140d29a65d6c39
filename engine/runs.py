"""The run-directory contract. Only this module knows the byte layout of a run.

    runs/<sweep>/<run>/
      config.toml     resolved config, written once at creation, with schema_version;
                      rewritten only to extend a finished run (a higher max_iters and
                      the extension's schedule in [run].extensions: engine.train.extension)
      status.json     state, pid + process start time, host, gpu, times, progress;
                      replaced atomically (temp + rename) under a per-run lock
      metrics.jsonl   one JSON object per line, flushed per line
      samples.jsonl   one JSON object per generated sample
      temperature.jsonl   samples of a temperature study (`nanotui sample SWEEP
                      --temperature A,B,...`), apart from the evals' samples
      stdout.log      the training process's stdout and stderr
      ckpt.pt         latest checkpoint; best.pt the best val loss
      eval.jsonl      one record per `nanotui eval` of the finished model on a text file
                      (engine.sample.evaluate): loss, bits per byte, the text's sha256
      imported.json   only in a run brought in by `nanotui import` (engine.interop): where
                      it came from and the settings that have no TrainConfig key

    runs/<sweep>/<run> -> ../<other-sweep>/<run>   a shared run: a symlink to the run
                      directory of another sweep whose configuration is identical. It is
                      trained once, under its owner (the first sweep of experiments.toml
                      that names it, whose config.toml [run] table it carries); list_runs
                      lists owners only, list_shared the links, so nothing starts twice.

States: queued -> running -> done | failed | stopped. A run whose recorded pid is gone
(or now belongs to another process, told apart by its start time) while status.json
says running is reported, and recorded, as failed with reason "lost".
Readers tolerate a truncated last line: a line only counts once its newline is there.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from engine.config import TrainConfig, dump_config, load_config
from engine.errors import UserError
from engine.files import NoSpace, atomic_write_bytes, atomic_write_json, is_no_space, json_default
from engine.jsonl import (JsonlTail, _json_type, metric_record, sample_record,
                          text_eval_record, truncate_jsonl_after)
from engine.text import safe_text

DAMAGE_TAIL_BYTES = 4 << 20  # damage() checks this much of a metrics or samples file's end

STATES = ("queued", "running", "done", "failed", "stopped")
FINAL_STATES = ("done", "failed", "stopped")
RESUMABLE_STATES = ("failed", "stopped")

CONFIG = "config.toml"
STATUS = "status.json"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
TEMPERATURE = "temperature.jsonl"
STDOUT = "stdout.log"
CKPT = "ckpt.pt"
BEST = "best.pt"
IMPORTED = "imported.json"
EVALS = "eval.jsonl"
_LOCK = ".status.lock"


class RunError(UserError, ValueError):
    """A problem with a run directory a user can act on."""


# ---- small helpers ------------------------------------------------------------------

def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every reader can parse the line."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def safe_part(name: str) -> bool:
    """Whether `name` is safe as one path component (no traversal, no separators)."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and not name.startswith(".") and len(name) <= 200
            and name.isprintable())


# ---- process identity ------------------------------------------------------------------

def process_start_time(pid: int) -> float | None:
    """The process's start time (epoch seconds), or None if there is no such process."""
    try:
        import psutil
        return psutil.Process(pid).create_time()
    except Exception:
        return None


def process_matches(pid: int | None, start_time: float | None) -> bool:
    """True if `pid` is alive and is the same process that started at `start_time`."""
    if not pid:
        return False
    now_start = process_start_time(pid)
    if now_start is None:
        return False
    try:
        import psutil
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except Exception:
        return False
    if start_time is None:
        return True
    return abs(now_start - start_time) < 1.0


def process_stopped(pid: int) -> bool:
    """True if the process is stopped (SIGSTOP, Ctrl-Z, a tracer): alive but not running."""
    try:
        import psutil
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except Exception:
        return False


# ---- the run directory --------------------------------------------------------------------

@dataclass(frozen=True)
class RunDir:
    """One run directory. `id` is "<sweep>/<name>", e.g. "depth/n_layer=8"."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sweep(self) -> str:
        return self.path.parent.name

    @property
    def id(self) -> str:
        return f"{self.sweep}/{self.name}"

    config_path = property(lambda self: self.path / CONFIG)
    status_path = property(lambda self: self.path / STATUS)
    metrics_path = property(lambda self: self.path / METRICS)
    samples_path = property(lambda self: self.path / SAMPLES)
    temperature_path = property(lambda self: self.path / TEMPERATURE)
    stdout_path = property(lambda self: self.path / STDOUT)
    ckpt_path = property(lambda self: self.path / CKPT)
    best_path = property(lambda self: self.path / BEST)

    def exists(self) -> bool:
        return self.config_path.is_file()

    def load_config(self) -> TrainConfig:
        return load_config(self.config_path)

    def run_table(self) -> dict[str, Any]:
        """The [run] table of config.toml (sweep, name, varied); {} when absent."""
        from engine.config import load_toml
        return load_toml(self.config_path).get("run", {})

    def record_extension(self, cfg: TrainConfig, extension: dict[str, Any]) -> None:
        """Rewrite config.toml for an extension: `cfg` (the saved config with the new
        max_iters) and `extension` appended to the [run] table's extensions."""
        table = self.run_table()
        table["extensions"] = [*table.get("extensions", []), extension]
        atomic_write_bytes(self.config_path, dump_config(cfg, run=table).encode())

    # -- status --
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path / _LOCK, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_status_file(self) -> dict[str, Any]:
        """status.json, validated: a file of the wrong shape reads as a failed run whose
        reason names the file and what is wrong, never as an exception (atomic replace
        means only a hand edit or a damaged disk gets here)."""
        try:
            st = json.loads(self.status_path.read_text())
        except FileNotFoundError:
            return {"state": "queued"}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"state": "failed", "reason": "damaged: status.json: not valid JSON"}
        if not isinstance(st, dict):
            return {"state": "failed",
                    "reason": f"damaged: status.json: expected an object, not {_json_type(st)}"}
        # reasons hold torch's and users' text, shown on terminals
        st = {k: safe_text(v) if isinstance(v, str) else v for k, v in st.items()}
        if st.get("state", "queued") not in STATES:
            return {**st, "state": "failed",
                    "reason": f"damaged: status.json: unknown state {st.get('state')!r}"}
        return st

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into status.json atomically; returns the new status."""
        with self._locked():
            st = self._read_status_file()
            st.update({k: safe_text(v) if isinstance(v, str) else _finite(v)
                       for k, v in fields.items()})
            st["updated_at"] = time.time()
            atomic_write_json(self.status_path, st)
            return st

    def read_status(self) -> dict[str, Any]:
        """The run's status, with a dead 'running' process turned into failed/lost.

        Only processes on this host can be checked; a run on another host (a Slurm node)
        is taken at its word here (engine.launch.slurm.executor merges the scheduler's view).
        """
        st = self._read_status_file()
        if st.get("state") == "running" and st.get("host") in (None, socket.gethostname()):
            if st.get("executor", {}).get("kind", "local") == "local" and not process_matches(
                    st.get("pid"), st.get("pid_create_time")):
                lost = dict(state="failed", reason="lost", ended_at=time.time(),
                            updated_at=time.time())
                try:
                    with self._locked():
                        st = self._read_status_file()  # re-check under the lock
                        if st.get("state") == "running" and not process_matches(
                                st.get("pid"), st.get("pid_create_time")):
                            st.update(lost)
                            atomic_write_json(self.status_path, st)
                except OSError:
                    # a read-only share, a colleague's runs, a full disk: the reading
                    # still says lost, nothing is written
                    if st.get("state") == "running":
                        st = {**st, **lost}
        if st.get("state") != "running" and not self.config_path.is_file():
            st = {**st, "state": "failed", "reason": "damaged: config.toml: missing"}
        return st

    def damage(self, tails: tuple[JsonlTail, ...] | None = None) -> tuple[str, ...]:
        """What is wrong with this run's files, one "file: why" each: config.toml missing
        or unreadable, and the first bad line the tails found (fresh tails over metrics and
        samples, read to the end, when none are given)."""
        from engine.config import ConfigError
        out = []
        if not self.config_path.is_file():
            out.append(f"{CONFIG}: missing")
        else:
            try:
                self.load_config()
            except (ConfigError, OSError, ValueError) as e:
                out.append(f"{CONFIG}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        if tails is None:  # the latest lines only: a view of a long run stays fast
            tails = (JsonlTail(self.metrics_path, metric_record, DAMAGE_TAIL_BYTES),
                     JsonlTail(self.samples_path, sample_record, DAMAGE_TAIL_BYTES))
            for t in tails:
                for _ in t.iter_new():
                    pass
        return tuple(out) + tuple(t.damage for t in tails if t.damage)

    # -- metrics and samples --
    def append_jsonl(self, path: Path, obj: dict[str, Any]) -> None:
        self.append_many(path, [obj])

    def append_many(self, path: Path, objs: Iterable[dict[str, Any]]) -> None:
        """Records appended one line each (flushed per call, not per line: an import of a
        million records opens the file once)."""
        try:
            with open(path, "a") as f:
                for obj in objs:
                    f.write(json.dumps({k: _finite(v) for k, v in obj.items()},
                                       default=json_default) + "\n")
                f.flush()
        except OSError as e:
            if is_no_space(e):
                raise NoSpace(path) from e
            raise

    def log_metric(self, **fields: Any) -> None:
        self.append_jsonl(self.metrics_path, fields)

    def log_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        self.append_many(self.metrics_path, records)

    def log_sample(self, **fields: Any) -> None:
        self.append_jsonl(self.samples_path, fields)

    def metrics_tail(self) -> JsonlTail:
        return JsonlTail(self.metrics_path, check=metric_record)

    def samples_tail(self) -> JsonlTail:
        return JsonlTail(self.samples_path, check=sample_record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return self.metrics_tail().read_new()

    def read_samples(self) -> list[dict[str, Any]]:
        return self.samples_tail().read_new()

    def log_temperature_sample(self, **fields: Any) -> None:
        self.append_jsonl(self.temperature_path, fields)

    def read_temperature_samples(self) -> list[dict[str, Any]]:
        return JsonlTail(self.temperature_path, check=sample_record).read_new()

    def log_text_eval(self, **fields: Any) -> None:
        self.append_jsonl(self.path / EVALS, fields)

    def read_text_evals(self) -> list[dict[str, Any]]:
        return JsonlTail(self.path / EVALS, check=text_eval_record).read_new()

    def prepare_for_resume(self, iter_num: int) -> None:
        """Before a resumed process appends: drop a torn last line and every record past
        the checkpoint's iteration, so the metrics continue without a gap or a repeat."""
        for path in (self.metrics_path, self.samples_path):
            truncate_jsonl_after(path, iter_num)


# ---- creating and listing runs -----------------------------------------------------------

def create_run(runs_root: Path, sweep: str, name: str, cfg: TrainConfig,
               varied: dict[str, Any] | None = None, exist_ok: bool = True,
               horizon: dict[str, Any] | None = None,
               meta: dict[str, Any] | None = None) -> RunDir:
    """Create runs_root/sweep/name with config.toml and a queued status. `cfg` is
    resolved (its max_iters set) and `horizon` its `[horizon]` record; `meta` adds to
    the [run] table what the sweep's kind says (engine.sweep_kinds: kind, tuned keys).

    An existing run is left as it is (its config is never rewritten) when exist_ok."""
    for part in (sweep, name):
        if not safe_part(part):
            raise RunError(f"unsafe run name part {part!r}")
    run = RunDir(Path(runs_root) / sweep / name)
    if run.exists():
        if exist_ok:
            return run
        raise RunError(f"run {run.id} already exists")
    run.path.mkdir(parents=True, exist_ok=True)
    table = {**(meta or {}), "sweep": sweep, "name": name, "varied": varied or {}}
    text = dump_config(cfg, run=table, horizon=horizon)
    atomic_write_bytes(run.config_path, text.encode())
    run.update_status(state="queued", created_at=time.time(), max_iters=cfg.max_iters, iter=0)
    return run


def list_runs(runs_root: Path) -> list[RunDir]:
    """Every run under runs_root, sorted by id: directories holding a config.toml, and
    those that lost theirs but kept a status.json (listed, and read as damaged).
    Shared runs' links are not listed (their owner is): see list_shared."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    dirs = {p.parent for name in (CONFIG, STATUS) for p in root.glob(f"*/*/{name}")}
    return sorted((RunDir(d) for d in dirs if not d.is_symlink() and safe_part(d.name)
                   and safe_part(d.parent.name)), key=lambda r: r.id)


def list_shared(runs_root: Path) -> list[tuple[RunDir, RunDir]]:
    """(link, owner) for every shared run: runs/<sweep>/<run> linked to the identical run
    of another sweep. Reading the link reads the owner's files."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.glob("*/*")):
        if p.is_symlink() and (p / CONFIG).is_file():
            out.append((RunDir(p), RunDir(p.resolve())))
    return out


def link_shared(runs_root: Path, sweep: str, name: str, owner: RunDir) -> RunDir:
    """Make runs_root/sweep/name a shared run of `owner` (a relative symlink, so a moved
    runs directory keeps working). An existing link to the owner is left as it is."""
    for part in (sweep, name):
        if not safe_part(part):
            raise RunError(f"unsafe run name part {part!r}")
    link = Path(runs_root) / sweep / name
    if link.is_symlink() and link.resolve() == owner.path.resolve():
        return RunDir(link)
    if link.exists() or link.is_symlink():
        raise RunError(f"run {sweep}/{name} already exists and is not a link to {owner.id}")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(owner.path, link.parent), link)
    return RunDir(link)


def find_run(runs_root: Path, ref: str) -> RunDir:
    """A run by id ("depth/n_layer=8") or by path."""
    p = Path(ref)
    if (p / CONFIG).is_file():
        return RunDir(p.resolve())
    run = RunDir(Path(runs_root) / ref)
    if ref.count("/") == 1 and all(safe_part(x) for x in ref.split("/")) and (
            run.exists() or run.status_path.is_file()):  # a damaged run (no config) is a run
        return run
    raise RunError(f"no run {ref!r} under {runs_root}")
