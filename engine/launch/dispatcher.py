"""Plan, queue, dispatch, stop and resume runs.

The disk is the queue: `queue_runs` creates run directories in state "queued"; a
Dispatcher starts queued runs while capacity allows (engine.launch.placement), through an
Executor (engine.launch.executor: local processes; engine.launch.slurm.executor: Slurm jobs). Everything the
dispatcher knows it reads back from status.json at every tick, so a dispatcher that is
killed and started again carries on where it was.

Files at the root of a runs directory (beside the sweeps; not run directories):
  .dispatch.lock   held (flock) by the one dispatcher of this runs directory
  .queue.lock      held briefly while creating runs and while turning queued -> running,
                   so two launches never create or start the same run twice
  .dispatch.jsonl  one line per process start: {"t", "run", "pid", "resume", "dispatcher"}
  .dispatcher.log  the output of a background (--detach) dispatcher
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.config import ConfigError
from engine.launch.estimate import estimate
from engine.units import format_seconds
from engine.launch.executor import Executor, LocalExecutor, Placement
from engine.experiments import (Experiments, ExperimentsError, LaunchOptions, RunSpec,
                                load_experiments, validate_runs)
from engine.launch.gpu import GpuSource, default_gpu_source
from engine.launch.placement import ActiveRun, PlacementError, Policy, choose, parse_request
from engine.runs import (FINAL_STATES, RESUMABLE_STATES, RunDir, RunError, create_run,
                         list_runs)

DISPATCH_LOCK = ".dispatch.lock"
QUEUE_LOCK = ".queue.lock"
JOURNAL = ".dispatch.jsonl"
DISPATCHER_LOG = ".dispatcher.log"

Log = Callable[[str], None]


# ---- plan -------------------------------------------------------------------------------

@dataclass
class PlanRow:
    id: str
    sweep: str
    name: str
    varied: dict[str, Any]
    params: int | None = None
    params_total: int | None = None
    vocab_size: int | None = None
    vocab_source: str | None = None
    est_mem_bytes: int | None = None
    est_seconds: float | None = None
    est_device: str | None = None
    max_iters: int | None = None
    tokens: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_rows(specs: list[RunSpec], device: str) -> list[PlanRow]:
    rows = []
    for s in specs:
        row = PlanRow(s.id, s.sweep, s.name, s.varied, error=s.error)
        if s.cfg is not None:
            e = estimate(s.cfg, device)
            row.params, row.params_total = e.params, e.params_total
            row.vocab_size, row.vocab_source = e.vocab_size, e.vocab_source
            row.est_mem_bytes, row.est_seconds, row.est_device = e.mem_bytes, e.seconds, device
            row.max_iters = s.cfg.max_iters
            row.tokens = s.cfg.tokens_per_iter * s.cfg.max_iters
        rows.append(row)
    return rows


def plan_runs(experiments_path: str | Path, selection: list[str] | None = None,
              device: str | None = None, gpu_source: GpuSource | None = None) -> list[PlanRow]:
    """One row per selected run; nothing is created. `device` ("gpu"/"cpu") is what the
    time estimate assumes; by default "gpu" when a card is visible, else "cpu"."""
    exp = load_experiments(experiments_path)
    specs = exp.select(selection)
    if device is None:
        device = "gpu" if (gpu_source or default_gpu_source()).snapshot() else "cpu"
    return plan_rows(specs, device)


# ---- locks and the journal -------------------------------------------------------------

@contextmanager
def queue_lock(runs_root: Path) -> Iterator[None]:
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    with open(runs_root / QUEUE_LOCK, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def dispatcher_pid(runs_root: Path) -> int | None:
    """The pid of the dispatcher holding this runs directory, or None if none does."""
    path = Path(runs_root) / DISPATCH_LOCK
    if not path.exists():
        return None
    with open(path, "a+") as f:
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


def _journal(runs_root: Path, **rec: Any) -> None:
    with open(Path(runs_root) / JOURNAL, "a") as f:
        f.write(json.dumps({"t": time.time(), **rec}) + "\n")


# ---- queue ----------------------------------------------------------------------------------

@dataclass
class QueueResult:
    queued: list[RunDir] = field(default_factory=list)      # new runs, state queued
    waiting: list[RunDir] = field(default_factory=list)     # already queued or running
    done: list[RunDir] = field(default_factory=list)
    needs_resume: list[RunDir] = field(default_factory=list)  # failed/stopped: skipped

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
                        prepare: bool = True, progress=None, log: Log | None = None
                        ) -> QueueResult:
    exp = load_experiments(experiments_path)
    specs = exp.select(selection)
    if not specs:
        raise ExperimentsError(f"{exp.path}: no runs selected (the file defines no sweeps)")
    validate_runs(specs)
    if prepare:
        prepare_data(specs, progress, log)
    runs_root = Path(runs_root)
    res = QueueResult()
    with queue_lock(runs_root):
        for s in specs:
            run = RunDir(runs_root / s.sweep / s.name)
            if run.exists():
                state = run.read_status().get("state")
                {"done": res.done, "queued": res.waiting, "running": res.waiting}.get(
                    state, res.needs_resume).append(run)
                continue
            run = create_run(runs_root, s.sweep, s.name, s.cfg, s.varied)
            fields: dict[str, Any] = {"queued_at": time.time()}
            if gpu and parse_request(gpu) != "auto":
                fields["gpu_request"] = parse_request(gpu)
            run.update_status(**fields)
            res.queued.append(run)
    return res


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
        try:
            from engine.launch.slurm import executor as slurm
        except ImportError as e:
            raise RunError(f"Slurm support is not available here: {e}") from None
        return slurm.make_executor(options)
    raise RunError(f"unknown executor kind {kind!r}; expected local or slurm")


def _executor_for(run: RunDir, st: dict[str, Any]) -> Executor:
    ex = st.get("executor") or {}
    if ex.get("kind", "local") == "slurm":
        return make_executor({"kind": "slurm"})
    return LocalExecutor()


# ---- the dispatcher ---------------------------------------------------------------------

def _launch_options(experiments_path: str | Path | None) -> tuple[LaunchOptions, dict[str, Any]]:
    if experiments_path and Path(experiments_path).exists():
        try:
            exp: Experiments = load_experiments(experiments_path)
            return exp.launch, exp.executor
        except ConfigError:
            pass  # a broken file must not stop dispatching runs queued before the edit
    return LaunchOptions(), {"kind": "local"}


class Dispatcher:
    """Starts queued runs of one runs directory while capacity allows.

    `run()` returns when there is nothing left for it to do: with `follow` (run ids),
    when all of those runs are final; else when no run is queued. While another
    dispatcher holds the runs directory it waits (and takes over if that one dies)."""

    def __init__(self, runs_root: str | Path, experiments_path: str | Path | None = None,
                 gpu: str = "auto", executor: Executor | None = None,
                 executor_kind: str | None = None, gpu_source: GpuSource | None = None,
                 poll_s: float = 0.5, log: Log = print, progress_every_s: float = 15.0):
        self.runs_root = Path(runs_root)
        self.runs_root.mkdir(parents=True, exist_ok=True)
        opts, exec_opts = _launch_options(experiments_path)
        if executor_kind and executor_kind != exec_opts.get("kind"):
            exec_opts = {"kind": executor_kind}
        self.policy = Policy(opts.max_runs_per_gpu, opts.max_cpu_runs, opts.gpus)
        self.executor = executor or make_executor(exec_opts)
        self.gpu = parse_request(gpu)
        self.gpu_source = gpu_source or default_gpu_source()
        self.poll_s = poll_s
        self.log = log
        self.progress_every_s = progress_every_s
        self._lock_file = None
        self._last_state: dict[str, str] = {}
        self._last_progress = 0.0
        self._last_iter: dict[str, int | None] = {}

    # -- the lock --
    def try_lock(self) -> bool:
        f = open(self.runs_root / DISPATCH_LOCK, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f
        return True

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.truncate(0)
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    @property
    def holds_lock(self) -> bool:
        return self._lock_file is not None

    # -- one tick --
    def tick(self) -> list[RunDir]:
        """Start what can start now; returns the runs started. Needs the lock."""
        assert self.holds_lock
        started = []
        with queue_lock(self.runs_root):
            runs = list_runs(self.runs_root)
            self.executor.refresh(runs)
            statuses = {r.id: r.read_status() for r in runs}
            queued = sorted((r for r in runs if statuses[r.id].get("state") == "queued"),
                            key=lambda r: (statuses[r.id].get("queued_at")
                                           or statuses[r.id].get("created_at") or 0, r.id))
            if not queued:
                return started
            now = time.time()
            gpus = self.gpu_source.snapshot() if not self.executor.places_itself else []
            active = [_active(r, st) for r in runs
                      if (st := statuses[r.id]).get("state") == "running"
                      and (st.get("executor") or {}).get("kind", "local") == "local"]
            for run in queued:
                st = run.read_status()
                if st.get("state") != "queued":
                    continue  # an executor took it with another (a Slurm job array)
                try:
                    cfg = run.load_config()
                except (ConfigError, RunError, OSError) as e:
                    run.update_status(state="failed", reason=f"bad config: {e}",
                                      ended_at=now)
                    continue
                placement: Placement | None = None
                if not self.executor.places_itself:
                    need = estimate(cfg, "gpu").mem_bytes
                    try:
                        placement = choose(need, gpus, active, self.policy,
                                           st.get("gpu_request") or self.gpu, now)
                    except PlacementError as e:
                        run.update_status(state="failed", reason=str(e), ended_at=now)
                        self.log(f"{run.id}: cannot place: {e}")
                        continue
                    if placement is None:
                        continue  # no room now; a smaller run behind it may still fit
                resume = bool(st.get("resume"))
                journaled = []

                def journal(pid: int | None) -> None:  # called within this iteration only
                    _journal(self.runs_root, run=run.id, pid=pid, resume=resume,
                             dispatcher=os.getpid(), gpu=(placement.gpu or {}).get("uuid")
                             if placement else None)
                    journaled.append(pid)

                try:
                    self.executor.start(run, placement, resume, started=journal)
                except (RunError, ConfigError) as e:
                    if getattr(e, "keep_queued", False):
                        raise  # e.g. sbatch refused the options: every run would fail alike
                    run.update_status(state="failed", reason=str(e), ended_at=time.time())
                    self.log(f"{run.id}: {e}")
                    continue
                new = run.update_status(resume=None)
                if not journaled:  # an executor without a process of its own (Slurm)
                    journal(new.get("pid"))
                active.append(_active(run, new))
                started.append(run)
                where = placement.describe() if placement else self.executor.kind
                self.log(f"started {run.id} on {where}" + (" (resumed)" if resume else ""))
        return started

    def queued_runs(self) -> list[RunDir]:
        return [r for r in list_runs(self.runs_root) if r.read_status().get("state") == "queued"]

    # -- the loop --
    def run(self, follow: list[str] | None = None) -> int:
        """Dispatch until done (see the class docstring); returns 0."""
        follow_set = set(follow or [])
        waiting_said = False
        try:
            while True:
                if not self.holds_lock and self.try_lock():
                    if waiting_said:
                        self.log("the other dispatcher is gone; dispatching here")
                if self.holds_lock:
                    self.tick()
                elif not waiting_said:
                    pid = dispatcher_pid(self.runs_root)
                    self.log(f"another dispatcher (pid {pid}) is running for "
                             f"{self.runs_root}; the runs are queued with it")
                    waiting_said = True
                self._report(follow_set)
                if follow_set:
                    if self._all_final(follow_set):
                        return 0
                elif not self.queued_runs():
                    if not self.holds_lock:
                        return 0  # the other dispatcher has taken them all
                    # Give the runs directory up under the queue lock: a launch that
                    # queues after this sees no dispatcher and starts one; one that
                    # queued before is seen here.
                    with queue_lock(self.runs_root):
                        if not self.queued_runs():
                            self.unlock()
                            return 0
                time.sleep(self.poll_s)
        finally:
            self.executor.refresh(list_runs(self.runs_root))
            self.unlock()

    def _all_final(self, ids: set[str]) -> bool:
        for rid in ids:
            if RunDir(self.runs_root / rid).read_status().get("state") not in FINAL_STATES:
                return False
        return True

    def _report(self, follow: set[str]) -> None:
        """Progress lines: every state change, and a summary now and then."""
        runs = [r for r in list_runs(self.runs_root) if not follow or r.id in follow]
        now = time.time()
        periodic = now - self._last_progress >= self.progress_every_s
        for r in runs:
            st = r.read_status()
            state = st.get("state", "?")
            if self._last_state.get(r.id) != state:
                if r.id in self._last_state or state != "queued":
                    extra = f": {st['reason']}" if st.get("reason") else ""
                    self.log(f"{r.id}: {state}{extra}")
                self._last_state[r.id] = state
            elif periodic and state == "running" and st.get("iter") != self._last_iter.get(r.id):
                self._last_iter[r.id] = st.get("iter")
                parts = [f"{r.id}: iter {st.get('iter', 0)}/{st.get('max_iters', '?')}"]
                for key, label in (("train_loss", "train"), ("val_loss", "val")):
                    if isinstance(st.get(key), (int, float)):
                        parts.append(f"{label} {st[key]:.4f}")
                if isinstance(st.get("eta_s"), (int, float)):
                    parts.append(f"ETA {format_seconds(st['eta_s'])}")
                self.log(" ".join(parts))
        if periodic:
            self._last_progress = now


def _active(run: RunDir, st: dict[str, Any]) -> ActiveRun:
    gpu = st.get("gpu") or {}
    return ActiveRun(run.id, gpu.get("uuid"), int(st.get("est_mem_bytes") or 0),
                     float(st.get("started_at") or 0.0), st.get("pid"))


def start_background_dispatcher(runs_root: str | Path, experiments_path: str | Path | None,
                                gpu: str = "auto", executor_kind: str | None = None
                                ) -> subprocess.Popen:
    """A dispatcher in its own session that outlives this process and exits when the
    queue is empty; its output goes to RUNS/.dispatcher.log."""
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "engine.launch", "--runs", str(runs_root), "--gpu", gpu]
    if experiments_path:
        cmd += ["--experiments", str(experiments_path)]
    if executor_kind:
        cmd += ["--executor", executor_kind]
    with open(runs_root / DISPATCHER_LOG, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def ensure_dispatcher(runs_root: str | Path, experiments_path: str | Path | None,
                      gpu: str = "auto") -> int | None:
    """Start a background dispatcher unless one holds the runs directory; its pid or None."""
    if dispatcher_pid(runs_root):
        return None
    return start_background_dispatcher(runs_root, experiments_path, gpu).pid


def refresh_executors(runs: list[RunDir]) -> None:
    """Let non-local executors (Slurm) merge their view into status.json; local runs
    need nothing (RunDir.read_status detects a lost process itself)."""
    slurm = [r for r in runs if (r.read_status().get("executor") or {}).get("kind") == "slurm"]
    if slurm:
        try:
            make_executor({"kind": "slurm"}).refresh(slurm)
        except Exception:
            pass  # status must show what the disk says even when Slurm cannot be asked


def stop_grace(experiments_path: str | Path | None) -> float:
    return _launch_options(experiments_path)[0].stop_grace_s


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
    _executor_for(run, st).stop(run, grace_s)
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
        has_ckpt = run.ckpt_path.exists()
        extra = {} if gpu is None else {"gpu_request": None if parse_request(gpu) == "auto"
                                        else parse_request(gpu)}
        run.update_status(state="queued", resume=has_ckpt, reason=None, exit_code=None,
                          ended_at=None, queued_at=time.time(), **extra)
        return has_ckpt


# ---- `python -m engine.launch`: the background dispatcher ----------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m engine.launch",
                                description="Dispatch the queued runs of a runs directory.")
    p.add_argument("--runs", required=True)
    p.add_argument("--experiments")
    p.add_argument("--gpu", default="auto")
    p.add_argument("--executor", choices=["local", "slurm"])
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    try:
        d = Dispatcher(args.runs, args.experiments, args.gpu, executor_kind=args.executor,
                       log=log)
        log(f"dispatcher {os.getpid()} for {args.runs}")
        return d.run()
    except (ConfigError, RunError) as e:
        log(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
