"""Plan, queue, stop and resume runs: everything a command does to the queue on disk.

The disk is the queue: `queue_runs` creates run directories in state "queued"; the
dispatcher (engine.launch.dispatcher) starts them. Files at the root of a runs directory
(beside the sweeps; not run directories):
  .dispatch.lock   held (flock) by the one dispatcher of this runs directory
  .queue.lock      held briefly while creating runs and while turning queued -> running,
                   so two launches never create or start the same run twice
  .dispatch.jsonl  one line per process start: {"t", "run", "pid", "resume", "dispatcher"}
  .dispatcher.log  the output of a background (--detach) dispatcher
  .replaced/<sweep>/<run>.<UTC time>   a run directory moved aside by `launch --fresh`
                   (engine.launch.drift); kept, never deleted
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.config import ConfigError
from engine.errors import UserError
from engine.experiments import (Experiments, ExperimentsError, LaunchOptions, RunSpec,
                                load_experiments, validate_runs)
from engine.launch.drift import config_drift, move_aside
from engine.launch.estimate import horizon_for
from engine.launch.executor import Executor, LocalExecutor
from engine.launch.gpu import GpuSource, default_gpu_source
from engine.launch.placement import parse_request
from engine.launch.plan import PlanRow, plan_rows, plan_runs  # noqa: F401 (re-exported)
from engine.launch.preflight import check_cells, check_specs
from engine.runs import (CONFIG, RESUMABLE_STATES, RunDir, RunError, create_run, link_shared)

DISPATCH_LOCK = ".dispatch.lock"
QUEUE_LOCK = ".queue.lock"
JOURNAL = ".dispatch.jsonl"
DISPATCHER_LOG = ".dispatcher.log"

Log = Callable[[str], None]


# ---- locks and the journal -------------------------------------------------------------

LOCK_NOTICE_S = 1.0   # a wait on the queue lock longer than this says who holds it


@contextmanager
def queue_lock(runs_root: Path, notice: Callable[[str], None] | None = None) -> Iterator[None]:
    """The runs directory's queue lock. The holder's pid and command are kept in the lock
    file, so that a wait longer than LOCK_NOTICE_S says who holds it (through `notice`,
    default stderr); the wait polls, so Ctrl-C ends it."""
    runs_root = Path(runs_root)
    path = runs_root / QUEUE_LOCK
    try:
        runs_root.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as e:  # a read-only share or a colleague's runs: views still work
        raise UserError(f"cannot change {runs_root}: {e.strerror} (status, plan and "
                        f"report still read it)") from None
    with f:
        _wait_for_lock(f, path, notice)
        try:
            f.truncate(0)
            f.write(json.dumps({"pid": os.getpid(), "cmd": _command()}) + "\n")
            f.flush()
        except OSError:
            pass  # a full disk: the lock still works, only the notice says less
        try:
            yield
        finally:
            try:
                f.truncate(0)
            except OSError:
                pass
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _command() -> str:
    argv = [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv else ["?"]
    return " ".join(argv)[:160]


def lock_holder(path: Path) -> str:
    """'pid 123 (nanotui launch depth)' as the holder recorded itself, or a vaguer line."""
    try:
        rec = json.loads(Path(path).read_text())
        return f"pid {int(rec['pid'])} ({rec.get('cmd') or '?'})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _wait_for_lock(f, path: Path, notice: Callable[[str], None] | None) -> None:
    t0, said = time.monotonic(), False
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if not said and time.monotonic() - t0 >= LOCK_NOTICE_S:
            said = True
            msg = f"waiting for {path}: held by {lock_holder(path)}"
            if notice is None:  # a terminal: the user can give up with Ctrl-C
                print(f"nanotui: {msg} (Ctrl-C gives up)", file=sys.stderr, flush=True)
            else:
                notice(msg)
        time.sleep(0.05)


def dispatcher_pid(runs_root: Path) -> int | None:
    """The pid of the dispatcher holding this runs directory, or None if none does."""
    path = Path(runs_root) / DISPATCH_LOCK
    try:  # read-only: flock needs no write access, and a view may not create files
        f = open(path)
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None


def read_journal(runs_root: Path) -> list[dict[str, Any]]:
    """Every process start recorded by dispatchers of this runs directory."""
    out = []
    try:
        with open(Path(runs_root) / JOURNAL) as f:
            for line in f:
                if line.endswith("\n"):
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except FileNotFoundError:
        pass
    return out


def append_journal(runs_root: Path, **rec: Any) -> None:
    with open(Path(runs_root) / JOURNAL, "a") as f:
        f.write(json.dumps({"t": time.time(), **rec}) + "\n")


# ---- queue ----------------------------------------------------------------------------------

@dataclass
class QueueResult:
    queued: list[RunDir] = field(default_factory=list)      # new runs, state queued
    waiting: list[RunDir] = field(default_factory=list)     # already queued or running
    done: list[RunDir] = field(default_factory=list)
    needs_resume: list[RunDir] = field(default_factory=list)  # failed/stopped: skipped
    shared: list[tuple[RunDir, RunDir]] = field(default_factory=list)  # (link, owner)
    drift: list[tuple[RunDir, list[str]]] = field(default_factory=list)  # kept old config
    fresh: list[tuple[RunDir, Path]] = field(default_factory=list)  # (restarted, moved to)
    # (run id, line): an explicit schedule that does not fit the horizon (queued anyway)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def selected(self) -> list[RunDir]:
        return self.queued + self.waiting + self.done + self.needs_resume


def prepare_data(specs: list[RunSpec], progress=None, log: Log | None = None) -> None:
    """Prepare each distinct dataset once, before any run starts, so that N runs do not
    all tokenize the same text at the same time."""
    from engine.data import datasets as data
    seen: set[tuple] = set()
    for s in specs:
        cfg = s.cfg
        key = (cfg.data_dir, cfg.dataset, cfg.tokenizer, cfg.val_fraction)
        if key in seen:
            continue
        seen.add(key)
        if log:
            log(f"data: {cfg.data_dir or cfg.dataset} ({cfg.tokenizer})")
        try:
            data.prepared_dir_for(cfg, progress=progress)
        except (ConfigError, RunError):
            raise
        except Exception as e:  # DataError and OS errors: one line, nothing queued
            raise RunError(f"cannot prepare data {cfg.data_dir or cfg.dataset!r}: {e}") from None


def queue_runs_detailed(experiments_path: str | Path, runs_root: str | Path,
                        selection: list[str] | None = None, gpu: str | None = None,
                        prepare: bool = True, progress=None, log: Log | None = None,
                        fresh: bool = False, lock_notice: Log | None = None) -> QueueResult:
    """Create the selected runs in state queued. A run shared with an earlier sweep is
    queued under its owner and linked (engine.runs.link_shared). An existing run whose
    saved config differs from the file keeps its config and is reported in `drift`;
    with fresh=True it is moved aside (REPLACED) and created anew instead. `lock_notice`
    hears who holds the queue lock when the wait is long (default: stderr, with Ctrl-C)."""
    exp = load_experiments(experiments_path)
    specs = exp.select(selection)
    if not specs:
        raise ExperimentsError(f"{exp.path}: no runs selected (the file defines no sweeps)")
    validate_runs(specs)
    # horizons with the vocabulary plan assumes: a run below one step is refused before
    # a download; resolved again below with the prepared data's
    check_specs(specs, None)
    validate_runs(specs)
    if prepare:
        prepare_data(specs, progress, log)
    local = exp.executor.get("kind", "local") == "local"
    check_specs(specs, default_gpu_source().snapshot() if local else None, runs_root)
    validate_runs(specs)   # what cannot work (engine.launch.preflight): refused, nothing queued
    check_cells(specs)
    runs_root = Path(runs_root)
    res = QueueResult()
    by_id = {r.id: r for r in exp.all_runs()}
    with queue_lock(runs_root, notice=lock_notice):
        seen: set[str] = set()
        for s in specs:
            owner = by_id[s.same_as] if s.same_as else s
            if owner.id not in seen:
                seen.add(owner.id)
                _queue_one(owner, runs_root, gpu, fresh, res)
            if s.same_as:
                link = link_shared(runs_root, s.sweep, s.name, RunDir(runs_root / owner.id))
                res.shared.append((link, RunDir(runs_root / owner.id)))
    return res


def _queue_one(s: RunSpec, runs_root: Path, gpu: str | None, fresh: bool,
               res: QueueResult) -> None:
    run = RunDir(runs_root / s.sweep / s.name)
    # resolved again now that the data is prepared: the real vocabulary, not plan's guess
    h = horizon_for(s.cfg)
    if run.exists():
        state = run.read_status().get("state")
        changes = config_drift(run, s.cfg)
        if changes and fresh:
            if state == "running":
                raise RunError(f"cannot start {run.id} fresh: it is running (`nanotui stop "
                               f"{run.id}` first)")
            moved = move_aside(run, runs_root)
            run = create_run(runs_root, s.sweep, s.name, h.config, s.varied,
                             horizon=h.record(), meta=s.meta)
            res.fresh.append((run, moved))
        else:
            if changes:
                res.drift.append((run, changes))
            {"done": res.done, "queued": res.waiting, "running": res.waiting}.get(
                state, res.needs_resume).append(run)
            return
    else:
        run = create_run(runs_root, s.sweep, s.name, h.config, s.varied, horizon=h.record(),
                         meta=s.meta)
    res.warnings.extend((run.id, w) for w in h.warnings())
    # every run records its own request, "auto" included: a dispatcher already running
    # with --gpu N applies it to runs that name no card, never to these
    run.update_status(queued_at=time.time(), gpu_request=parse_request(gpu))
    res.queued.append(run)


def queue_runs(experiments_path: str | Path, runs_root: str | Path,
               selection: list[str] | None = None, gpu: str | None = None,
               prepare: bool = True) -> list[RunDir]:
    """Create the selected runs in state queued (runs that exist are left as they are);
    returns the runs this call queued."""
    return queue_runs_detailed(experiments_path, runs_root, selection, gpu, prepare).queued


# ---- executors --------------------------------------------------------------------------

def make_executor(options: dict[str, Any] | None) -> Executor:
    options = dict(options or {"kind": "local"})
    kind = options.get("kind", "local")
    if kind == "local":
        return LocalExecutor()
    if kind == "slurm":
        from engine.launch.slurm import executor as slurm  # only Slurm users pay for it
        return slurm.make_executor(options)
    raise RunError(f"unknown executor kind {kind!r}; expected local or slurm")


def executor_for(run: RunDir, st: dict[str, Any]) -> Executor:
    ex = st.get("executor") or {}
    if ex.get("kind", "local") == "slurm":
        return make_executor({"kind": "slurm"})
    return LocalExecutor()


# ---- options of the experiments file ---------------------------------------------------

def launch_options(experiments_path: str | Path | None) -> tuple[LaunchOptions, dict[str, Any]]:
    if experiments_path and Path(experiments_path).exists():
        try:
            exp: Experiments = load_experiments(experiments_path)
            return exp.launch, exp.executor
        except ConfigError:
            pass  # a broken file must not stop dispatching runs queued before the edit
    return LaunchOptions(), {"kind": "local"}


def stop_grace(experiments_path: str | Path | None) -> float:
    return launch_options(experiments_path)[0].stop_grace_s


def refresh_executors(runs: list[RunDir]) -> None:
    """Let non-local executors (Slurm) merge their view into status.json; local runs
    need nothing (RunDir.read_status detects a lost process itself)."""
    slurm = [r for r in runs if (r.read_status().get("executor") or {}).get("kind") == "slurm"]
    if slurm:
        try:
            make_executor({"kind": "slurm"}).refresh(slurm)
        except Exception:
            pass  # status must show what the disk says even when Slurm cannot be asked


# ---- stop and resume ----------------------------------------------------------------------

def stop_run(run: RunDir, grace_s: float = 10.0) -> str:
    """Stop a run: a queued one becomes stopped at once; a running one gets SIGTERM (it
    checkpoints and exits), then SIGKILL after grace_s. Returns the final state."""
    runs_root = run.path.parent.parent
    with queue_lock(runs_root):
        st = run.read_status()
        if st.get("state") == "queued":
            run.update_status(state="stopped", reason="stopped before it started",
                              ended_at=time.time())
            return "stopped"
    if st.get("state") != "running":
        return st.get("state", "?")
    executor_for(run, st).stop(run, grace_s)
    return run.read_status().get("state", "?")


def resume_run(run: RunDir, gpu: str | None = None) -> bool:
    """Queue a failed or stopped run again; it continues from its checkpoint when there
    is one (returns True), else starts over (False). `gpu` as `--gpu` (None: keep)."""
    runs_root = run.path.parent.parent
    with queue_lock(runs_root):
        st = run.read_status()
        state = st.get("state")
        if state not in RESUMABLE_STATES:
            what = {"done": "it is done", "running": "it is running",
                    "queued": "it is already queued"}.get(state, f"its state is {state}")
            raise RunError(f"cannot resume {run.id}: {what}")
        if not run.exists():
            raise RunError(f"cannot resume {run.id}: damaged: {CONFIG} is missing (its "
                           f"other files are in {run.path})")
        has_ckpt = run.ckpt_path.exists()
        extra = {} if gpu is None else {"gpu_request": parse_request(gpu)}
        run.update_status(state="queued", resume=has_ckpt, reason=None, exit_code=None,
                          ended_at=None, queued_at=time.time(), **extra)
        return has_ckpt
