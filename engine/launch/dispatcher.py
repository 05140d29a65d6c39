"""The dispatcher: starts queued runs of one runs directory while capacity allows.

A Dispatcher starts queued runs (engine.launch.queue made them) while placement allows
(engine.launch.placement), through an Executor (engine.launch.executor: local processes;
engine.launch.slurm.executor: Slurm jobs). Everything it knows it reads back from
status.json at every tick, so a dispatcher that is killed and started again carries on
where it was. `python -m engine.launch` runs one in the background (`launch --detach`).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.config import ConfigError
from engine.errors import UserError
from engine.launch.child import child_env, module_command
from engine.launch.estimate import estimate
from engine.launch.executor import Executor, Placement
from engine.launch.gpu import GpuSource, default_gpu_source
from engine.launch.placement import (ActiveRun, PlacementError, Policy, UtilHistory,
                                     parse_request, reported_gpu_bytes, why_waiting)
from engine.launch.reservations import SharedPlacer
from engine.runs import (FINAL_STATES, RunDir, RunError, list_runs, process_stopped)
from engine.units import format_seconds
from engine.launch.queue import (DISPATCH_LOCK, DISPATCHER_LOG, Log, append_journal,
                                 dispatcher_pid, launch_options, make_executor, queue_lock)

# ---- the dispatcher ---------------------------------------------------------------------

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
        opts, exec_opts = launch_options(experiments_path)
        if executor_kind and executor_kind != exec_opts.get("kind"):
            exec_opts = {"kind": executor_kind}
        self.policy = Policy(opts.max_runs_per_gpu, opts.max_cpu_runs, opts.gpus)
        self.executor = executor or make_executor(exec_opts)
        self.gpu = parse_request(gpu)
        self.gpu_source = gpu_source or default_gpu_source()
        self.placer = SharedPlacer(self.runs_root, log=log)  # machine-wide promises
        self.util = UtilHistory()                   # for max_runs_per_gpu = "auto"
        self._first_iter: dict[tuple[str, float], int] = {}
        self._warm_at: dict[tuple[str, float], float] = {}
        self.poll_s = poll_s
        self.log = log
        self.progress_every_s = progress_every_s
        self._lock_file = None
        self._last_state: dict[str, str] = {}
        self._said_stopped: dict[str, int] = {}  # run id -> the stopped pid already logged
        self._last_progress = 0.0
        self._last_iter: dict[str, int | None] = {}

    # -- the lock --
    def try_lock(self) -> bool:
        try:
            f = open(self.runs_root / DISPATCH_LOCK, "a+")
        except OSError as e:  # a read-only share: nothing can be dispatched from here
            raise UserError(f"cannot dispatch runs of {self.runs_root}: {e.strerror} "
                            f"(status, plan and report still read it)") from None
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
        started: list[RunDir] = []
        with queue_lock(self.runs_root):
            runs = list_runs(self.runs_root)
            self.executor.refresh(runs)
            statuses = {r.id: r.read_status() for r in runs}
            queued = sorted((r for r in runs if statuses[r.id].get("state") == "queued"),
                            key=lambda r: (statuses[r.id].get("queued_at")
                                           or statuses[r.id].get("created_at") or 0, r.id))
            now = time.time()
            if not queued:
                self.placer.after_tick(0, 0, now)
                return started
            gpus = self.gpu_source.snapshot() if not self.executor.places_itself else []
            self.util.add(gpus, now)
            active = [self._warm(_active(r, st), st, now) for r in runs
                      if (st := statuses[r.id]).get("state") == "running"
                      and (st.get("executor") or {}).get("kind", "local") == "local"]
            self._say_stopped(active)
            started = [run for run in queued if self._start(run, now, gpus, active)]
            self.placer.after_tick(len(queued) - len(started), len(active), now)
        return started

    def _start(self, run: RunDir, now: float, gpus: list, active: list[ActiveRun]) -> bool:
        """Start one queued run if it can start now: placed (or placing itself) and taken
        by the executor. A run that can never start is marked failed with the reason."""
        st = run.read_status()
        if st.get("state") != "queued":
            return False  # an executor took it with another (a Slurm job array)
        try:
            cfg = run.load_config()
        except (ConfigError, RunError, OSError) as e:
            run.update_status(state="failed", reason=f"bad config: {e}", ended_at=now)
            return False
        placement: Placement | None = None
        ticket = None
        if not self.executor.places_itself:
            need = estimate(cfg, "gpu", st.get("cpu_attention")).mem_bytes
            try:
                request = device_request(cfg.device,
                                         parse_request(st.get("gpu_request") or self.gpu))
                placement, ticket = self.placer.place(
                    run.id, need, gpus, active, self.policy, request, now, self.util)
            except PlacementError as e:
                run.update_status(state="failed", reason=str(e), ended_at=now)
                self.log(f"{run.id}: cannot place: {e}")
                return False
            if placement is None:  # no room now; a smaller run behind it may still fit
                why = self.placer.why or why_waiting(need, gpus, active, self.policy,
                                                     request, now, others=self.placer.others)
                if st.get("reason") != why:
                    run.update_status(reason=why)
                return False
        resume = bool(st.get("resume"))
        journaled = []

        def journal(pid: int | None) -> None:  # called within this iteration only
            append_journal(self.runs_root, run=run.id, pid=pid, resume=resume,
                           dispatcher=os.getpid(), gpu=(placement.gpu or {}).get("uuid")
                           if placement else None)
            journaled.append(pid)

        try:
            self.executor.start(run, placement, resume, started=journal)
        except (RunError, ConfigError) as e:
            self.placer.abandon(ticket)
            if getattr(e, "keep_queued", False):
                raise  # e.g. sbatch refused the options: every run would fail alike
            run.update_status(state="failed", reason=str(e), ended_at=time.time())
            self.log(f"{run.id}: {e}")
            return False
        new = run.update_status(resume=None)
        self.placer.started(ticket, new.get("pid"), new.get("pid_create_time"))
        if not journaled:  # an executor without a process of its own (Slurm)
            journal(new.get("pid"))
        active.append(_active(run, new))
        where = placement.describe() if placement else self.executor.kind
        self.log(f"started {run.id} on {where}" + (" (resumed)" if resume else ""))
        return True

    def _say_stopped(self, active: list[ActiveRun]) -> None:
        """A stopped (SIGSTOP) process keeps its slot and its memory while runs wait:
        say so once, with the way out."""
        for a in active:
            if a.pid and process_stopped(a.pid) and self._said_stopped.get(a.run_id) != a.pid:
                self._said_stopped[a.run_id] = a.pid
                self.log(f"{a.run_id}: process {a.pid} is stopped (SIGSTOP or Ctrl-Z) and still "
                         f"holds its slot: `nanotui stop {a.run_id}` ends it, "
                         f"`kill -CONT {a.pid}` lets it go on")

    def _warm(self, a: ActiveRun, st: dict[str, Any], now: float) -> ActiveRun:
        """`a` with warm_at: when this dispatcher first saw its iteration move past the
        one it had at this start (a resumed run starts at its old iteration): packing
        waits for that, since a run still compiling hardly loads its card."""
        key = (a.run_id, a.started_at)
        first = self._first_iter.setdefault(key, st.get("iter") or 0)
        if (st.get("iter") or 0) > first:
            self._warm_at.setdefault(key, now)
        return replace(a, warm_at=self._warm_at.get(key))

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
            self.placer.close()
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


def device_request(device: str, request: str) -> str:
    """The placement request of a run whose config says `device`: "cpu" runs go to the
    CPU whatever the dispatcher's --gpu; "cuda:N" with N > 0 is refused before launch
    (each run sees only its placed unit, as cuda:0; --gpu N picks the card)."""
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda:") and device != "cuda:0":
        raise PlacementError(f"device = {device!r}: nanotui places each run on one card, "
                             f"which the run sees as cuda:0; set device = \"cuda\" (or "
                             f"\"auto\") and choose the card with --gpu "
                             f"{device} or [launch] gpus")
    if device == "mps":
        return "cpu"  # no NVIDIA card to hold: the run is this machine's, like the CPU
    return request


def _active(run: RunDir, st: dict[str, Any]) -> ActiveRun:
    gpu = st.get("gpu") or {}
    return ActiveRun(run.id, gpu.get("uuid"), int(st.get("est_mem_bytes") or 0),
                     float(st.get("started_at") or 0.0), st.get("pid"),
                     reported_bytes=reported_gpu_bytes(st))


def start_background_dispatcher(runs_root: str | Path, experiments_path: str | Path | None,
                                gpu: str = "auto", executor_kind: str | None = None
                                ) -> subprocess.Popen:
    """A dispatcher in its own session that outlives this process and exits when the
    queue is empty; its output goes to RUNS/.dispatcher.log."""
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    cmd = module_command("engine.launch", "--runs", str(runs_root), "--gpu", gpu)
    if experiments_path:
        cmd += ["--experiments", str(experiments_path)]
    if executor_kind:
        cmd += ["--executor", executor_kind]
    with open(runs_root / DISPATCHER_LOG, "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=child_env(os.environ))


def ensure_dispatcher(runs_root: str | Path, experiments_path: str | Path | None,
                      gpu: str = "auto") -> int | None:
    """Start a background dispatcher unless one holds the runs directory; its pid or None."""
    if dispatcher_pid(runs_root):
        return None
    return start_background_dispatcher(runs_root, experiments_path, gpu).pid


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
