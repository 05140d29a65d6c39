"""What Slurm says about our jobs (squeue, then sacct), merged with the run's status.json.

On disk, a run handed to Slurm is in state "running" from submission on (the dispatcher
must not submit it twice) with `executor = {kind = "slurm", job_id}` and `slurm_state`
(PENDING, RUNNING, REQUEUED, ...) kept fresh by `SlurmExecutor.refresh`. Two functions
turn Slurm's view into what a user should see:

  reconcile(status, slurm) -> fields to WRITE: the job ended without the trainer writing
      a final state (cancelled, timeout, out of memory, node failure, ...).
  merge_status(status, slurm=None) -> the status to SHOW: additionally a job that has not
      started yet (PENDING, requeued) shows as "queued" with Slurm's reason.

`describe(status)` is the one-line Slurm note for `nanotui status` and the TUI.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Iterable

# Slurm job states (long names, as squeue %T and sacct print them)
WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
           "CONFIGURING", "SPECIAL_EXIT", "STOPPED", "SUSPENDED", "RESIZING", "SIGNALING",
           "STAGE_OUT"}
ACTIVE = {"RUNNING", "COMPLETING"}
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}

# state the job ended in -> (run state, reason) when the trainer wrote no final state
_ENDED_AS: dict[str, tuple[str, str]] = {
    "CANCELLED": ("stopped", "cancelled (scancel)"),
    "TIMEOUT": ("failed", "timeout: the job hit its Slurm time limit (resume continues "
                          "from ckpt.pt)"),
    "OUT_OF_MEMORY": ("failed", "oom: the job ran out of memory (raise mem in [executor])"),
    "NODE_FAIL": ("failed", "node_fail: the node the job ran on failed"),
    "PREEMPTED": ("stopped", "preempted by Slurm"),
    "BOOT_FAIL": ("failed", "boot_fail: the node failed to boot"),
    "DEADLINE": ("failed", "deadline: the job hit its deadline"),
    "REVOKED": ("stopped", "revoked by Slurm"),
    "FAILED": ("failed", "the Slurm job failed"),
    "COMPLETED": ("failed", "the Slurm job ended without the trainer recording a final "
                            "state (see stdout.log)"),
}


@dataclass(frozen=True)
class SlurmState:
    job_id: str
    state: str                  # PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...
    reason: str | None = None   # squeue's pending reason (Priority, Resources, BeginTime)
    exit_code: str | None = None  # sacct's "code:signal"
    node: str | None = None
    source: str = "squeue"

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def waiting(self) -> bool:
        return self.state in WAITING


def _norm_state(s: str) -> str:
    # sacct writes "CANCELLED by 0"; squeue may write "NODE_FAIL" etc. as they are
    return (s.split() or ["UNKNOWN"])[0].upper().rstrip("+")


def _run(cmd: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def query_squeue(job_ids: Iterable[str]) -> dict[str, SlurmState]:
    """Jobs the controller still knows (pending, running, and ended ones for MinJobAge)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    p = _run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r|%N", "-j", ",".join(ids)])
    if p is None or p.returncode != 0:  # rc 1 "Invalid job id": none of them is known
        return {}
    out = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        jid, state, reason, node = parts[:4]
        out[jid] = SlurmState(jid, _norm_state(state),
                              None if reason in ("None", "") else reason, None,
                              node or None, "squeue")
    return out


def query_sacct(job_ids: Iterable[str]) -> dict[str, SlurmState]:
    """The accounting record (latest attempt of each job); {} without accounting."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    # ask for whole arrays: tasks never started are one record "123_[1-2%3]"
    bases = sorted({j.split("_")[0] for j in ids})
    p = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode,Reason,NodeList",
              "-j", ",".join(bases)])
    if p is None or p.returncode != 0:
        return {}
    out = {}
    for line in p.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5 or not parts[0]:
            continue
        jids, state, code, reason, node = parts[:5]
        node = None if node in ("", "None assigned") else node
        for jid in expand_array_id(jids):
            out[jid] = SlurmState(jid, _norm_state(state),
                                  None if reason in ("None", "") else reason, code or None,
                                  node, "sacct")
    return {j: st for j, st in out.items() if j in ids}


def expand_array_id(job_id: str) -> list[str]:
    """'123_[0-2,5%4]' -> ['123_0', '123_1', '123_2', '123_5']; other ids as they are."""
    if "_[" not in job_id:
        return [job_id]
    base, rest = job_id.split("_[", 1)
    out = []
    for part in rest.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def query_jobs(job_ids: Iterable[str]) -> dict[str, SlurmState]:
    """squeue for what the controller knows, sacct for the rest (and for ended jobs, whose
    exit code only sacct has)."""
    ids = set(job_ids)
    states = query_squeue(ids)
    rest = {j for j in ids if j not in states or states[j].ended}
    for jid, st in query_sacct(rest).items():
        if jid in ids and (jid not in states or st.ended):
            states[jid] = st
    return states


def job_id_of(status: dict[str, Any]) -> str | None:
    ex = status.get("executor") or {}
    if ex.get("kind") != "slurm" or not ex.get("job_id"):
        return None
    return str(ex["job_id"])


def reconcile(status: dict[str, Any], slurm: SlurmState | None) -> dict[str, Any]:
    """Fields to write into status.json so the disk agrees with Slurm; {} if it does."""
    if slurm is None or job_id_of(status) != slurm.job_id:
        return {}
    fields: dict[str, Any] = {}
    if status.get("slurm_state") != slurm.state:
        fields["slurm_state"] = slurm.state
    # Only "running" runs have a live job (submission writes running); a queued run with
    # an old job id was resumed, and that old job's end says nothing about it now.
    if status.get("state") == "running" and slurm.ended:
        new_state, reason = _ENDED_AS.get(slurm.state, ("failed", f"Slurm: {slurm.state}"))
        if slurm.state == "FAILED" and slurm.exit_code:
            reason += f" (exit code {slurm.exit_code.split(':')[0]}; see stdout.log)"
        fields.update(state=new_state, reason=reason, ended_at=time.time())
        if slurm.exit_code and slurm.exit_code.split(":")[0].isdigit():
            fields["exit_code"] = int(slurm.exit_code.split(":")[0])
    elif (status.get("state") in ("stopped", "failed") and slurm.waiting
          and not (status.get("executor") or {}).get("cancelled")):
        # Slurm requeued the job itself (preemption, node failure with --requeue) after
        # the trainer stopped on its SIGTERM: it will start again and resume from ckpt.pt.
        fields.update(state="running", reason="requeued by Slurm; resumes from ckpt.pt",
                      ended_at=None, exit_code=None)
    return fields


def merge_status(status: dict[str, Any], slurm: SlurmState | None = None) -> dict[str, Any]:
    """The status to show: status.json with Slurm's view merged in. Without `slurm`, uses
    the slurm_state recorded by the last refresh (no subprocess: cheap for the TUI)."""
    st = dict(status)
    st.update(reconcile(st, slurm))
    sstate = st.get("slurm_state")
    if job_id_of(st) and st.get("state") == "running" and sstate in WAITING:
        # handed to Slurm but not started (yet, or again after a requeue)
        why = "requeued" if sstate.startswith("REQUEUE") or (st.get("reason") or "").startswith(
            "requeued") else sstate.lower()
        pend = slurm.reason if slurm is not None and slurm.reason else None
        st["state"] = "queued"
        st["reason"] = f"{why} ({pend})" if pend else why
    return st


def describe(status: dict[str, Any]) -> str:
    """'slurm 123_1 PENDING' / 'slurm 123 RUNNING' / '' for runs not on Slurm."""
    jid = job_id_of(status)
    if jid is None:
        return ""
    s = f"slurm {jid}"
    if status.get("slurm_state"):
        s += f" {status['slurm_state']}"
    requeues = (status.get("executor") or {}).get("requeues")
    if requeues:
        s += f" (requeued {requeues}x)"
    return s
