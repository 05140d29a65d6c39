"""Slurm as an executor (the seam in engine.launch.executor): queued runs become Slurm jobs.

Submission goes through submitit: every job runs `TrainJob`, a submitit Checkpointable
that starts `python -m engine.train RUN_DIR [--resume]` as a child and waits for it. The
run directory (on the shared filesystem) is the same contract as for local runs: the
trainer writes status.json, metrics.jsonl, samples.jsonl and ckpt.pt itself, so status,
the TUI and reports work unchanged. Runs of one sweep queued together go as one job
array (submitit's `executor.batch()`).

Time limits and preemption: Slurm sends USR2 `signal_delay_s` before the limit. The
trainer ignores USR2 (set before exec); submitit calls `TrainJob.checkpoint`, which sends
the trainer SIGTERM (it checkpoints and exits), marks the run requeued, and hands
submitit a TrainJob with resume=True; submitit then requeues the job, which continues
from ckpt.pt when Slurm starts it again (up to `max_requeues` times).

On disk a submitted run is "running" with executor = {kind: "slurm", job_id, ...} and
slurm_state (engine.launch.slurm.state explains; `merge_status` shows a pending job as queued).
Files of submitit itself (sbatch script, pickles, its logs) go to RUNS/.slurm/<job id>/.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import time
from pathlib import Path
from typing import Any

from engine.config import ConfigError
from engine.executor_config import SlurmConfig
from engine.launch.child import python_for_shell
from engine.launch.slurm.state import (  # noqa: F401
    ENDED,
    SlurmState,
    describe,
    job_id_of,
    merge_status,
    query_jobs,
    reconcile,
)
# Imported by name here too: jobs already in a queue were pickled as
# engine.launch.slurm.executor.TrainJob, and unpickling looks the class up in this module.
from engine.launch.slurm.job import TrainJob  # noqa: F401
from engine.runs import FINAL_STATES, RunDir, RunError, list_runs

SUBMITIT_DIR = ".slurm"
REFRESH_EVERY_S = 5.0   # squeue/sacct at most this often per executor (clusters dislike polls)


class SlurmSubmitError(ConfigError):
    """sbatch refused the job (unknown partition, missing account, ...): one line. The
    runs are back in state queued when this is raised; `keep_queued` asks the dispatcher
    to stop with this line instead of marking the run failed."""

    keep_queued = True


def make_executor(options: dict[str, Any] | None = None) -> "SlurmExecutor":
    """engine.launch.queue's factory: the `[executor]` table (kind = "slurm", ...) -> executor.

    With Slurm options beyond kind (the dispatcher's executor, built from the experiments
    file), sbatch first checks them (`sbatch --test-only`, nothing is submitted): a wrong
    partition or account is then one line before any run leaves the queue."""
    options = dict(options or {"kind": "slurm"})
    ex = SlurmExecutor(SlurmConfig.from_dict(options, "[executor]"))
    if set(options) - {"kind"}:
        ex.preflight()
    return ex


def slurm_states(runs: list[RunDir]) -> dict[str, SlurmState]:
    """run id -> what Slurm says about its job (runs never submitted are left out)."""
    ids = {r.id: job_id_of(r.read_status()) for r in runs}
    jobs = query_jobs(j for j in ids.values() if j)
    return {rid: jobs[j] for rid, j in ids.items() if j in jobs}


def sbatch_error_line(e: BaseException) -> str:
    """sbatch's own complaint ('sbatch: error: ...') as one line, from submitit's error."""
    text = "\n".join(str(x) for x in (getattr(e, "stderr", None), e, e.__cause__ and
                                      getattr(e.__cause__, "stderr", None)) if x)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("sbatch: error:")]
    # "Batch job submission failed: Invalid account..." is the line that says why
    best = next((ln for ln in errors if "failed" in ln.lower()), errors[-1] if errors else None)
    if best is None:
        best = lines[-1] if lines else type(e).__name__
    return best[:300]


class SlurmExecutor:
    """Runs as Slurm jobs. Slurm queues and places them (places_itself)."""

    kind = "slurm"
    places_itself = True

    def __init__(self, config: SlurmConfig | None = None) -> None:
        self.config = config or SlurmConfig()
        self._last_refresh = 0.0

    # -- submission --
    def preflight(self) -> None:
        """`sbatch --test-only` with our options; SlurmSubmitError with sbatch's line."""
        import shutil
        if shutil.which("sbatch") is None:
            raise SlurmSubmitError("sbatch not found: run nanotui on a Slurm login node "
                                   "(or use [executor] kind = \"local\")")
        cmd = ["sbatch", "--test-only", "--output=/dev/null", "--wrap=true"]
        for key, value in self.config.sbatch_parameters().items():
            if key in ("setup", "signal_delay_s", "array_parallelism"):
                continue
            if key == "additional_parameters":
                cmd += [f"--{k}" if v is True else f"--{k}={v}" for k, v in value.items()]
            else:
                cmd.append(f"--{key.replace('_', '-')}={value}")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SlurmSubmitError(f"sbatch --test-only did not answer: {e}") from None
        if p.returncode != 0:
            lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip()]
            # "sbatch: error: invalid partition specified: gpu" names the value; the
            # account check only says "allocation failure: Invalid account ..."
            said = next((ln for ln in lines if ln.startswith("sbatch: error:")), None)
            why = next((ln for ln in lines if ln.startswith("allocation failure:")), None)
            line = said or (f"sbatch: error: {why.split(':', 1)[1].strip()}" if why else
                            sbatch_error_line(RuntimeError(p.stderr or p.stdout)))
            raise SlurmSubmitError(f"Slurm refuses the [executor] options: {line}")

    def _submitit(self, runs_root: Path, job_name: str):
        import shutil

        import submitit
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise SlurmSubmitError("sbatch/srun not found: run nanotui on a Slurm login node "
                                   "(or use [executor] kind = \"local\")")
        folder = Path(runs_root) / SUBMITIT_DIR / "%j"
        # the job's python unpickles TrainJob in the submission directory: -P, so an
        # engine/ folder there is not imported instead (engine.launch.child)
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.config.max_requeues,
                                    python=self.config.python or python_for_shell())
        ex.update_parameters(job_name=job_name, **self.config.sbatch_parameters())
        return ex

    def submit(self, items: list[tuple[RunDir, bool]]) -> list[str]:
        """Submit (run, resume) pairs, as one job array when there are several; returns
        the job ids. Before sbatch the runs are marked running (so nothing submits them
        twice); if sbatch refuses, they go back to queued and SlurmSubmitError says why."""
        if not items:
            return []
        runs_root = items[0][0].path.parent.parent
        sweeps = sorted({r.sweep for r, _ in items})
        name = f"nanotui:{items[0][0].id}" if len(items) == 1 else f"nanotui:{','.join(sweeps)}"
        before = {r.id: r.read_status() for r, _ in items}
        for r, _ in items:
            r.update_status(state="running", reason=None, slurm_state="PENDING", pid=None,
                            pid_create_time=None, host=None, ended_at=None, exit_code=None,
                            submitted_at=time.time(), executor={"kind": "slurm", "job_id": None})
        jobs = []
        err = io.StringIO()
        try:
            ex = self._submitit(runs_root, name)
            calls = [TrainJob(str(r.path), resume, self.config.signal_delay_s,
                              self.config.max_requeues) for r, resume in items]
            # submitit prints sbatch's stderr itself; we say it once, in one line
            with contextlib.redirect_stderr(err):
                if len(calls) == 1:
                    jobs = [ex.submit(calls[0])]
                else:
                    with ex.batch():
                        jobs = [ex.submit(c) for c in calls]
        except Exception as e:
            for r, _ in items:
                old = before[r.id]
                r.update_status(state=old.get("state", "queued"), reason=old.get("reason"),
                                slurm_state=None, executor=old.get("executor"))
            if isinstance(e, SlurmSubmitError):
                raise
            raise SlurmSubmitError(f"sbatch refused {name[len('nanotui:'):]}: "
                                   f"{sbatch_error_line(e)}") from None
        ids = [str(j.job_id) for j in jobs]
        for (r, _), jid in zip(items, ids):
            ex_now = dict(r.read_status().get("executor") or {})
            ex_now.update(kind="slurm", job_id=jid)
            r.update_status(executor=ex_now, resume=None)
        return ids

    def start(self, run: RunDir, placement: Any, resume: bool,
              started: Any = None) -> None:
        """The seam's start: submit `run`, together with the other queued runs of its
        sweep as one job array (the dispatcher's later start() calls for those find them
        submitted and return). No local process: the dispatcher journals the submission
        after this returns (`started` is not called)."""
        st = run.read_status()
        if st.get("state") == "running" and job_id_of(st):
            return  # submitted with its sweep's array
        items = [(run, bool(resume or st.get("resume")))]
        for other in list_runs(run.path.parent.parent):
            if other.sweep != run.sweep or other.id == run.id:
                continue
            ost = other.read_status()
            if ost.get("state") == "queued":
                items.append((other, bool(ost.get("resume"))))
        self.submit(items)

    # -- stop --
    def stop(self, run: RunDir, grace_s: float = 10.0) -> None:
        """scancel --signal=TERM (the trainer checkpoints and exits), then plain scancel
        after grace_s if the job is still there. The run ends stopped, reason cancelled."""
        st = run.read_status()
        jid = job_id_of(st)
        ex = dict(st.get("executor") or {})
        if jid is None:
            if st.get("state") not in FINAL_STATES:
                run.update_status(state="stopped", reason="cancelled before submission",
                                  ended_at=time.time())
            return
        ex["cancelled"] = True  # a job that starts right now sees this and does nothing
        run.update_status(executor=ex)
        sl = query_jobs([jid]).get(jid)
        if sl is not None and sl.state in ("RUNNING", "COMPLETING"):
            _scancel(["--signal=TERM", jid])
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _job_alive(jid):
                time.sleep(0.5)
        if _job_alive(jid):
            _scancel([jid])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _job_alive(jid):
                time.sleep(0.5)
        sl = query_jobs([jid]).get(jid)
        st = run.read_status()
        reason = f"cancelled by nanotui stop (Slurm job {jid})"
        if st.get("state") != "done":
            fields = {"state": "stopped", "reason": reason}
            if st.get("state") not in FINAL_STATES:
                fields["ended_at"] = time.time()
            if sl is not None:
                fields["slurm_state"] = sl.state
            run.update_status(**fields)

    # -- status --
    def refresh(self, runs: list[RunDir] | None = None, force: bool = False) -> None:
        """Write Slurm's view into status.json of our runs that are not final."""
        now = time.monotonic()
        if not force and now - self._last_refresh < REFRESH_EVERY_S:
            return
        self._last_refresh = now
        mine = []
        for r in runs or []:
            try:
                st = r.read_status()
            except OSError:
                continue
            # also final runs whose recorded Slurm state is not final yet (job ending)
            if job_id_of(st) and (st.get("state") == "running" or (
                    st.get("state") in FINAL_STATES and st.get("slurm_state") not in ENDED)):
                mine.append(r)
        if not mine:
            return
        try:
            states = slurm_states(mine)
        except Exception:
            return  # Slurm unreachable: status.json stays as the trainer wrote it
        for r in mine:
            sl = states.get(r.id)
            if sl is None:
                continue
            st = r.read_status()  # after asking Slurm: a final state written meanwhile wins
            fields = reconcile(st, sl)
            if fields:
                r.update_status(**fields)


def _scancel(args: list[str]) -> None:
    try:
        p = subprocess.run(["scancel", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RunError(f"cannot cancel Slurm job {args[-1]}: {e}") from None
    if p.returncode != 0 and "already completing or completed" not in p.stderr \
            and "Invalid job id" not in p.stderr:
        line = (p.stderr.strip().splitlines() or [f"scancel exited with {p.returncode}"])[-1]
        raise RunError(f"cannot cancel Slurm job {args[-1]}: {line}")


def _job_alive(jid: str) -> bool:
    sl = query_jobs([jid]).get(jid)
    return sl is not None and not sl.ended
