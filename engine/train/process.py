"""The training process of one run: `python -m engine.train RUN_DIR [--resume]`.

Reads RUN_DIR/config.toml, trains a GPT on a prepared dataset (nanoGPT format:
train.bin/val.bin + meta.json) and writes, through engine.runs only, metrics.jsonl,
samples.jsonl, status.json, and the checkpoints ckpt.pt (latest, at every eval) and
best.pt (best val loss), each replaced atomically. The loop reads like nanoGPT's
train.py: it is engine.train.session's TrainingRun; its pieces (load_data, get_batch,
build_model, get_lr, Trainer.train_step, Trainer.estimate_loss, checkpoints) live in
engine.train.trainer. This module is the process around it: arguments, the run's
"already running" and "queued" checks, signals while setting up, each way a run ends, and
at exit its GPU lease settled into the usage ledger (engine.leases).

Iteration numbers count completed optimizer steps: the train record with "iter": 5 is
logged after the 5th step, and the eval at iter N (and ckpt.pt saved there) sees the
model after N steps. So a checkpoint at N matches exactly the records with iter <= N,
which is what RunDir.prepare_for_resume keeps.

Exit status: 0 done or stopped (SIGTERM/SIGINT: finish the step, checkpoint, stop),
1 failed while training (NaN/inf loss, an unexpected error; the last good checkpoint is
kept), 2 bad input (one line on stderr, nothing in the run directory damaged).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from engine import leases
from engine.errors import UserError, one_line
from engine.model import device as dev
from engine.files import NoSpace, is_no_space, release_space, remove_stale_temp_files, reserve_space
from engine.runs import RunDir, process_matches
from engine.train.control import (  # noqa: F401  (TIMING_WARMUP_STEPS: part of the contract)
    TIMING_WARMUP_STEPS, SetupStopped, stop_setup)
from engine.train.failures import oom_reason
from engine.train.session import NonFinite, TrainingRun


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.train",
                                description="Train one run: RUN_DIR holds config.toml.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/ckpt.pt")
    args = p.parse_args(argv)
    run = RunDir(Path(args.run_dir).resolve())

    def fail_input(msg: str, record: bool = True) -> int:
        print(f"engine.train: error: {msg}", file=sys.stderr, flush=True)
        if record and run.exists():
            run.update_status(state="failed", reason=msg, exit_code=2, ended_at=time.time())
        return 2

    if not run.exists():
        return fail_input(f"{run.path}: not a run directory (no config.toml)", record=False)
    st = run.read_status()
    if st.get("state") == "running" and st.get("host") == socket.gethostname() \
            and st.get("pid") != os.getpid() \
            and process_matches(st.get("pid"), st.get("pid_create_time")):
        return fail_input(f"run {run.id} is already running (pid {st.get('pid')})", record=False)
    if st.get("state") == "queued":
        # Say so before setting up (data, model, CPU tuning take a while): a dispatcher
        # killed between spawn and its own status write must not leave a live run "queued".
        import psutil
        run.update_status(state="running", reason=None, pid=os.getpid(), host=socket.gethostname(),
                          pid_create_time=psutil.Process().create_time())
    # A stop while setting up (preparing a dataset can take minutes) ends the process at
    # once; from the first step on, SIGTERM waits for the step and checkpoints (Stop).
    previous = signal.signal(signal.SIGTERM, stop_setup)
    try:
        return _train(run, args.resume, fail_input)
    finally:
        signal.signal(signal.SIGTERM, previous)
        _settle_lease(run)


def _settle_lease(run: RunDir) -> None:
    """The GPU this process held is free: its time goes to the usage ledger and its lease
    goes (engine.leases), so other users' fair order sees it now, not at our dispatcher's
    next tick (which settles it instead when this process is killed outright)."""
    path = os.environ.get(leases.ENV)
    if not path:
        return
    try:
        leases.settle_mine(Path(path), run.path, time.time())
    except OSError as e:
        _say(f"engine.train: usage ledger not written: {one_line(e)}", sys.stderr)


def _say(msg: str, file=None) -> None:
    """Print, even on a full disk (stdout.log is on it): a log line is never a reason to fail."""
    try:
        print(msg, file=file or sys.stdout, flush=True)
    except OSError:
        pass


def _train(run: RunDir, resume: bool, fail_input: Callable[[str], int]) -> int:
    remove_stale_temp_files(run.path)  # this process is the run's only writer from here on
    reserve = reserve_space(run.path)  # freed to record a full disk, and at every exit
    try:
        return _train_session(run, resume, fail_input, reserve)
    finally:
        release_space(reserve)


def _out_of_space(session: "TrainingRun", e: BaseException, reserve) -> int:
    """The disk is full: free the reserve so the final status, which says so, fits. The
    checkpoints on disk are the last whole ones (atomic writes remove their temp file)."""
    release_space(reserve)
    filename = getattr(e, "filename", None)
    reason = str(e) if isinstance(e, NoSpace) else str(NoSpace(Path(filename or session.run.path)))
    _say(f"engine.train: failed: {reason}", sys.stderr)
    try:
        session.finish("failed", reason, 1)
    except OSError:
        _say("engine.train: could not record the failure: the disk is still full", sys.stderr)
    return 1


def _train_session(run: RunDir, resume: bool, fail_input: Callable[[str], int], reserve) -> int:
    try:
        session = TrainingRun(run, resume, log=_say)
    except (UserError, OSError, ValueError) as e:
        return fail_input(one_line(e))
    except SetupStopped:
        print("engine.train: stopped before training started", file=sys.stderr, flush=True)
        run.update_status(state="stopped", reason="stopped before training started",
                          exit_code=0, ended_at=time.time())
        return 0
    except KeyboardInterrupt:
        print("engine.train: interrupted while starting", file=sys.stderr, flush=True)
        return 2
    except Exception as e:  # a bug or a resource problem while setting up
        traceback.print_exc()
        msg = one_line(e)
        print(f"engine.train: failed: {msg}", file=sys.stderr, flush=True)
        run.update_status(state="failed", reason=msg, exit_code=1, ended_at=time.time())
        return 1
    try:
        return session.execute()
    except NonFinite as e:
        reason = f"{e} (the last good checkpoint is kept; try a lower learning_rate)"
        print(f"engine.train: failed: {reason}", file=sys.stderr, flush=True)
        session.finish("failed", reason, 1)
        return 1
    except dev.OUT_OF_MEMORY as e:
        del e
        reason = oom_reason(session.device)
        print(f"engine.train: failed: {reason}", file=sys.stderr, flush=True)
        session.finish("failed", reason, 1)
        return 1
    except Exception as e:
        if is_no_space(e):
            return _out_of_space(session, e, reserve)
        traceback.print_exc()  # an unexpected error: the traceback goes to stdout.log
        reason = one_line(e)
        print(f"engine.train: failed: {reason}", file=sys.stderr, flush=True)
        session.finish("failed", reason, 1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
