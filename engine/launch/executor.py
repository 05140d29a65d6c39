"""The executor seam: how a queued run becomes a process somewhere.

The dispatcher (engine.launch.dispatcher) decides WHICH queued run starts WHEN and, for executors
that do not place runs themselves, on WHICH card (engine.launch.placement). An executor only
starts, stops and watches processes. Two implementations:

  LocalExecutor   child processes on this machine (this module)
  SlurmExecutor   jobs on a Slurm cluster (engine.launch.slurm.executor), built by its
                  `make_executor(options: dict) -> Executor` from the `[executor]` table of
                  experiments.toml (kind = "slurm" + its options); engine.launch.queue
                  imports it only for kind "slurm", so local users never import submitit.

Contract of an Executor (all methods are called by ONE dispatcher per runs directory,
from one thread; the run directory is the only shared state):

  kind: str
      "local" | "slurm"; written into status.json as executor.kind.
  places_itself: bool
      False: the dispatcher picks a card (or the CPU) and passes a Placement, and starts a
      run only when capacity allows. True (Slurm): the scheduler places and queues, so
      `placement` is None and the dispatcher hands over every queued run at once
      (up to `max_in_flight`, when the executor defines that attribute).
  start(run: RunDir, placement: Placement | None, resume: bool) -> None
      Start `python -m engine.train RUN_DIR [--resume]` for `run` (resume: continue from
      run.ckpt_path). Before returning, it MUST have recorded in status.json (through
      run.update_status) state="running", started_at, host (or None if unknown yet),
      executor={"kind": ..., "job_id": ...} and, when known, pid + pid_create_time, so
      that nothing starts the run a second time. stdout/stderr go to run.stdout_path
      (appended: a resumed run keeps its earlier log). May raise RunError with one line
      (the dispatcher then marks the run failed with that reason).
  stop(run: RunDir, grace_s: float) -> None
      Ask the run to stop (SIGTERM / scancel), wait up to grace_s, then force it. Sets
      state "stopped" when the process did not record a final state itself.
  refresh(runs: list[RunDir]) -> None
      Bring status.json up to date with what only the executor can see (the local one
      reaps its exited children and records exit codes of processes that died without
      writing a final state; Slurm merges squeue/sacct states). Called every dispatcher
      tick and by `nanotui status`. Never raises for one bad run.

The training process writes status.json itself (running, progress, then done/failed/
stopped); the executor's writes only fill what the process cannot (it never ran, it
was SIGKILLed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from engine.launch.child import child_env, command_module_args, module_command
from engine.runs import RunDir, RunError, process_matches, process_start_time


@dataclass(frozen=True)
class Placement:
    """Where a run goes: a card (index/uuid/name) or the CPU, and the child's env."""

    device: str                              # "gpu" | "cpu"
    gpu: dict[str, Any] | None = None        # {"index", "uuid", "name"[, "mig", "parent_uuid"]}
    env: dict[str, str] = field(default_factory=dict)
    est_mem_bytes: int = 0

    def describe(self) -> str:
        if self.gpu is None:
            return "CPU"
        mig = f".{self.gpu['mig']}" if self.gpu.get("mig") is not None else ""
        sim = ", simulated: trains on the CPU" if self.gpu.get("simulated") else ""
        return f"GPU {self.gpu['index']}{mig} ({self.gpu['name']}{sim})"


class Executor(Protocol):
    kind: str
    places_itself: bool

    def start(self, run: RunDir, placement: Placement | None, resume: bool,
              started: Callable[[int], None] | None = None) -> None:
        """Start `run`. An executor that spawns a process calls started(pid) as soon as it
        exists and before its status says running, so a dispatcher killed at any point
        has journaled every process that anyone could have seen running."""

    def stop(self, run: RunDir, grace_s: float) -> None: ...

    def refresh(self, runs: list[RunDir]) -> None: ...


def train_command(run: RunDir, resume: bool) -> list[str]:
    """The trainer's argv; engine.launch.child says why it is not a bare `python -m`."""
    return module_command("engine.train", str(run.path), *(["--resume"] if resume else []))


class LocalExecutor:
    """Training processes on this machine, each in its own session (a new process
    group), so they outlive the dispatcher, the UI and a Ctrl-C in the terminal."""

    kind = "local"
    places_itself = False

    def __init__(self) -> None:
        self._children: dict[str, subprocess.Popen] = {}  # run id -> our child

    def start(self, run: RunDir, placement: Placement | None, resume: bool,
              started: Callable[[int], None] | None = None) -> None:
        env = child_env(os.environ)
        if placement is not None:
            env.update(placement.env)
        where = placement.describe() if placement else "CPU"
        header = (f"\n=== nanotui: {'resuming' if resume else 'starting'} {run.id} on {where} "
                  f"at {time.strftime('%Y-%m-%d %H:%M:%S')}; "
                  f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')} ===\n")
        try:
            with open(run.stdout_path, "ab") as log:
                log.write(header.encode())
                log.flush()
                proc = subprocess.Popen(train_command(run, resume), stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, close_fds=True)
        except OSError as e:
            raise RunError(f"cannot start {run.id}: {e}") from None
        self._children[run.id] = proc
        if started is not None:
            started(proc.pid)
        # Written right after the spawn; the child (which takes a second or more to import
        # torch) writes the same pid again when it starts.
        run.update_status(
            state="running", reason=None, exit_code=None, ended_at=None,
            pid=proc.pid, pid_create_time=process_start_time(proc.pid),
            host=socket.gethostname(), started_at=time.time(),
            executor={"kind": "local", "job_id": None},
            gpu=placement.gpu if placement else None,
            est_mem_bytes=placement.est_mem_bytes if placement else 0)

    def stop(self, run: RunDir, grace_s: float = 10.0) -> None:
        st = run.read_status()
        pid, t0 = st.get("pid"), st.get("pid_create_time")
        if st.get("state") == "running" and process_matches(pid, t0):
            _signal_group(pid, signal.SIGTERM)
            _signal_group(pid, signal.SIGCONT)  # a stopped (SIGSTOP) process acts on it only once continued
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and process_matches(pid, t0):
                self._reap()
                time.sleep(0.1)
            if process_matches(pid, t0):
                _signal_group(pid, signal.SIGKILL)
                for _ in range(50):
                    self._reap()
                    if not process_matches(pid, t0):
                        break
                    time.sleep(0.1)
        self._reap()
        st = run.read_status()
        if st.get("state") not in ("done", "stopped"):
            run.update_status(state="stopped", reason="stopped by user", ended_at=time.time())

    def refresh(self, runs: list[RunDir] | None = None) -> None:
        self._reap()

    def running_children(self) -> int:
        self._reap()
        return len(self._children)

    def _reap(self) -> None:
        """Collect exited children; record a failure the child could not write itself."""
        for run_id, proc in list(self._children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._children[run_id]
            run = RunDir(Path(_run_path(proc)))
            # read_status turns a dead "running" process into failed/lost; when it was our
            # child we know better: record its exit code as the reason.
            st = run.read_status()
            if st.get("pid") != proc.pid:
                continue
            if st.get("state") == "failed" and st.get("reason") == "lost":
                reason = (f"killed by signal {-code}" if code < 0 else
                          f"exited with code {code} without recording a final state; "
                          f"see stdout.log")
                run.update_status(reason=reason, exit_code=code)
            elif st.get("exit_code") is None:
                run.update_status(exit_code=code)


def _run_path(proc: subprocess.Popen) -> str:
    return command_module_args(list(proc.args), "engine.train")[0]


def _signal_group(pid: int, sig: int) -> None:
    """Signal the run's whole process group (it is a session leader: pgid == pid); a
    process started by hand, in another's group, gets the signal alone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
