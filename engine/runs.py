"""The run-directory contract. Only this module knows the byte layout of a run.

    runs/<sweep>/<run>/
      config.toml     resolved config, written once at creation, with schema_version
      status.json     state, pid + process start time, host, gpu, times, progress;
                      replaced atomically (temp + rename) under a per-run lock
      metrics.jsonl   one JSON object per line, flushed per line
      samples.jsonl   one JSON object per generated sample
      stdout.log      the training process's stdout and stderr
      ckpt.pt         latest checkpoint; best.pt the best val loss

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
from typing import Any, Callable, Iterator

from engine.config import TrainConfig, dump_config, load_config
from engine.errors import UserError
from engine.files import atomic_write_bytes, atomic_write_json, json_default

STATES = ("queued", "running", "done", "failed", "stopped")
FINAL_STATES = ("done", "failed", "stopped")
RESUMABLE_STATES = ("failed", "stopped")

CONFIG = "config.toml"
STATUS = "status.json"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
STDOUT = "stdout.log"
CKPT = "ckpt.pt"
BEST = "best.pt"
_LOCK = ".status.lock"


class RunError(UserError, ValueError):
    """A problem with a run directory a user can act on."""


# ---- small helpers ------------------------------------------------------------------

def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every reader can parse the line."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _json_type(x: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(x), type(x).__name__)


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
        if st.get("state", "queued") not in STATES:
            return {**st, "state": "failed",
                    "reason": f"damaged: status.json: unknown state {st.get('state')!r}"}
        return st

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into status.json atomically; returns the new status."""
        with self._locked():
            st = self._read_status_file()
            st.update({k: _finite(v) for k, v in fields.items()})
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
                with self._locked():
                    st = self._read_status_file()  # re-check under the lock
                    if st.get("state") == "running" and not process_matches(
                            st.get("pid"), st.get("pid_create_time")):
                        st.update(state="failed", reason="lost", ended_at=time.time(),
                                  updated_at=time.time())
                        atomic_write_json(self.status_path, st)
        return st

    # -- metrics and samples --
    def append_jsonl(self, path: Path, obj: dict[str, Any]) -> None:
        line = json.dumps({k: _finite(v) for k, v in obj.items()}, default=json_default)
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()

    def log_metric(self, **fields: Any) -> None:
        self.append_jsonl(self.metrics_path, fields)

    def log_sample(self, **fields: Any) -> None:
        self.append_jsonl(self.samples_path, fields)

    def metrics_tail(self) -> "JsonlTail":
        return JsonlTail(self.metrics_path, check=metric_record)

    def samples_tail(self) -> "JsonlTail":
        return JsonlTail(self.samples_path, check=sample_record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return self.metrics_tail().read_new()

    def read_samples(self) -> list[dict[str, Any]]:
        return self.samples_tail().read_new()

    def prepare_for_resume(self, iter_num: int) -> None:
        """Before a resumed process appends: drop a torn last line and every record past
        the checkpoint's iteration, so the metrics continue without a gap or a repeat."""
        for path in (self.metrics_path, self.samples_path):
            truncate_jsonl_after(path, iter_num)


def truncate_jsonl_after(path: Path, iter_num: int) -> None:
    """Keep complete lines whose "iter" is <= iter_num; rewrite atomically."""
    if not path.exists():
        return
    keep: list[str] = []
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # torn last line
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and _num_or_zero(rec.get("iter")) <= iter_num:
                keep.append(raw.decode())
    atomic_write_bytes(path, "".join(keep).encode())


def _num_or_zero(x: Any) -> float:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else 0


def metric_record(rec: dict[str, Any]) -> dict[str, Any] | None:
    """A metrics.jsonl record as readers may rely on it: a numeric iter, numbers or null
    for the losses; None (skipped) otherwise."""
    if not isinstance(rec.get("iter"), (int, float)) or isinstance(rec.get("iter"), bool):
        return None
    for k in ("loss", "train_loss", "val_loss", "tok_s", "tokens", "t"):
        v = rec.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return None
    return rec


def sample_record(rec: dict[str, Any]) -> dict[str, Any] | None:
    """A samples.jsonl record: text a string and metrics an object (a record with scores of
    another shape keeps its text and loses the scores); None (skipped) without text."""
    if not isinstance(rec.get("text"), str):
        return None
    if not isinstance(rec.get("metrics", {}), dict):
        rec = {**rec, "metrics": {}}
    return rec


class JsonlTail:
    """Reads a JSON-lines file incrementally: each call returns only records whose
    complete lines arrived since the last call. A partial last line waits for its
    newline; a line that does not parse, or is not a JSON object, is skipped. The cost of a call is the size of
    what is new, not of the file."""

    def __init__(self, path: Path,
                 check: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None):
        self.path = Path(path)
        self.check = check  # validates (or mends) each record; None drops it
        self.offset = 0
        self.reset = False
        self._inode: int | None = None

    def read_new(self) -> list[dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if self._inode is not None and (st.st_ino != self._inode or st.st_size < self.offset):
            self.offset = 0  # replaced or truncated (a resume rewrote it): read again
            self.reset = True
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(st.st_size - self.offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for raw in data[: end + 1].splitlines():
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict):  # a line of another shape ([1,2,3]) is skipped too
                rec = self.check(rec) if self.check else rec
                if rec is not None:
                    out.append(rec)
        return out

    def take_reset(self) -> bool:
        """True once after the file was replaced or truncated (callers drop old data)."""
        r, self.reset = self.reset, False
        return r


# ---- creating and listing runs -----------------------------------------------------------

def create_run(runs_root: Path, sweep: str, name: str, cfg: TrainConfig,
               varied: dict[str, Any] | None = None, exist_ok: bool = True) -> RunDir:
    """Create runs_root/sweep/name with config.toml and a queued status.

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
    text = dump_config(cfg, run={"sweep": sweep, "name": name, "varied": varied or {}})
    atomic_write_bytes(run.config_path, text.encode())
    run.update_status(state="queued", created_at=time.time(), max_iters=cfg.max_iters, iter=0)
    return run


def list_runs(runs_root: Path) -> list[RunDir]:
    """Every run under runs_root (directories holding a config.toml), sorted by id."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    return sorted((RunDir(p.parent) for p in root.glob(f"*/*/{CONFIG}")), key=lambda r: r.id)


def find_run(runs_root: Path, ref: str) -> RunDir:
    """A run by id ("depth/n_layer=8") or by path."""
    p = Path(ref)
    if (p / CONFIG).is_file():
        return RunDir(p.resolve())
    run = RunDir(Path(runs_root) / ref)
    if run.exists() and ref.count("/") == 1 and all(safe_part(x) for x in ref.split("/")):
        return run
    raise RunError(f"no run {ref!r} under {runs_root}")
