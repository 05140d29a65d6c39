"""What runs inside a Slurm job: `TrainJob`, the callable submitit pickles and each job
calls. It starts `python -m engine.train RUN_DIR [--resume]` as a child, waits for it, and
on Slurm's time-limit warning has the trainer checkpoint and the job requeue itself
(engine.launch.slurm.executor explains the protocol).

Submitted jobs pickle this class by its module path, engine.launch.slurm.job.TrainJob:
moving it makes jobs submitted before the move fail to start (Slurm reports FAILED; the
dispatcher marks the run failed; `nanotui resume` submits it again).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from engine.launch.child import child_env, module_command
from engine.runs import RunDir


# ---- inside the job ------------------------------------------------------------------------

def _ignore_requeue_signal() -> None:
    """In the trainer child, before exec: Slurm signals every process of the job step
    with USR2 at the time-limit warning; only submitit (the parent) should act on it.
    An ignored signal stays ignored across exec."""
    import submitit
    sig = submitit.JobEnvironment._usr_sig()
    signal.signal(sig, signal.SIG_IGN)


def _exited(pid: int) -> bool:
    """Whether our child `pid` has exited, without reaping it (Popen reaps it later;
    a signal handler must not call Popen.wait while the main thread is inside it)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def job_gpu() -> dict[str, Any] | None:
    """The card Slurm gave this job ({index, uuid, name}), matched through NVML (or
    NANOTUI_FAKE_GPUS) by CUDA_VISIBLE_DEVICES; None without a GPU or without NVML. The
    TUI on a login node (no NVML there) shows it from status.json."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if not first:
        return None
    try:
        from engine.launch.gpu import default_gpu_source
        cards = default_gpu_source().snapshot()
    except Exception:
        return None
    for c in cards:
        if first in (str(c.index), c.uuid):
            return {"index": c.index, "uuid": c.uuid, "name": c.name}
    return None


class TrainJob(Checkpointable):
    """The callable each Slurm job runs: one training run, resumable by requeue."""

    def __init__(self, run_path: str, resume: bool, signal_delay_s: int = 120,
                 max_requeues: int = 3) -> None:
        self.run_path = str(run_path)
        self.resume = bool(resume)
        self.signal_delay_s = signal_delay_s
        self.max_requeues = max_requeues
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._proc = None

    def __call__(self) -> int:
        import submitit
        run = RunDir(Path(self.run_path))
        env = submitit.JobEnvironment()
        st = run.read_status()
        ex = dict(st.get("executor") or {})
        if st.get("state") == "done" or ex.get("cancelled"):
            print(f"nanotui: {run.id} is {st.get('state')}; nothing to do", flush=True)
            return 0
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        # After a requeue Slurm did on its own (preemption), continue from the checkpoint.
        resume = self.resume or (restarts > 0 and run.ckpt_path.exists())
        ex.update(kind="slurm", job_id=env.job_id, node=socket.gethostname())
        run.update_status(executor=ex, slurm_state="RUNNING", gpu=job_gpu())
        cmd = module_command("engine.train", self.run_path, *(["--resume"] if resume else []))
        with open(run.stdout_path, "ab") as log:
            log.write((f"\n=== nanotui: {'resuming' if resume else 'starting'} {run.id} in "
                       f"Slurm job {env.job_id} on {socket.gethostname()} at "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n").encode())
            log.flush()
            # Slurm numbers cards like NVML (PCI bus order); make CUDA agree
            env = {**child_env(os.environ), "CUDA_DEVICE_ORDER": os.environ.get(
                "CUDA_DEVICE_ORDER", "PCI_BUS_ID")}
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env,
                                          preexec_fn=_ignore_requeue_signal)
        # poll, not wait(): checkpoint() runs as a signal handler in this thread
        while self._proc.poll() is None:
            time.sleep(0.5)
        code = self._proc.returncode
        if code != 0:
            if run.read_status().get("state") == "running":
                run.update_status(state="failed", ended_at=time.time(), exit_code=code,
                                  reason=(f"killed by signal {-code}" if code < 0 else
                                          f"engine.train.process exited with code {code}; see stdout.log"))
            raise RuntimeError(f"engine.train.process exited with code {code}")  # job state FAILED
        return code

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Time limit / preemption (submitit calls this from its USR2 handler): stop the
        trainer so it writes ckpt.pt, then requeue a job that resumes from it."""
        import submitit
        run = RunDir(Path(self.run_path))
        proc = self._proc
        if proc is not None and proc.returncode is None and not _exited(proc.pid):
            os.kill(proc.pid, signal.SIGTERM)
            # leave a margin before Slurm's own SIGKILL at the limit
            deadline = time.monotonic() + max(5.0, self.signal_delay_s - 15)
            while not _exited(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _exited(proc.pid):
                os.kill(proc.pid, signal.SIGKILL)  # resumes from the last eval's ckpt.pt
                while not _exited(proc.pid):
                    time.sleep(0.1)
        st = run.read_status()
        ex = dict(st.get("executor") or {})
        if st.get("state") == "done" or ex.get("cancelled"):
            return None  # nothing left to do: submitit does not requeue
        if int(ex.get("requeues") or 0) >= self.max_requeues:
            # submitit gives up too (its own countdown); say why in the run's status
            run.update_status(state="stopped", ended_at=time.time(),
                              reason=f"hit the Slurm time limit {self.max_requeues + 1} times "
                                     f"(max_requeues = {self.max_requeues}); `nanotui resume` "
                                     f"continues from ckpt.pt")
            return None
        ex["requeues"] = int(ex.get("requeues") or 0) + 1
        run.update_status(state="running", reason="requeued after the time-limit warning "
                          "(or preemption); resumes from ckpt.pt", slurm_state="REQUEUED",
                          pid=None, pid_create_time=None, host=None, ended_at=None,
                          exit_code=None, executor=ex)
        return submitit.helpers.DelayedSubmission(
            TrainJob(self.run_path, run.ckpt_path.exists(), self.signal_delay_s,
                     self.max_requeues))


# ---- the executor --------------------------------------------------------------------------
