"""SIGKILL a training run again and again at random moments, most of them inside the
checkpoint writes it makes at every eval: every resume works, each checkpoint on disk
loads, and once the run finishes no temp file is left. The training runs in forked
children of this (torch-loaded) process, so a start costs no torch import."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from engine.model.checkpoint import load_checkpoint
from engine.train import process as T
from tests.engine.test_train import tiny_run

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_torch_thread")]

KILLS = 12


def fork_train(run, resume: bool) -> int:
    pid = os.fork()
    if pid == 0:  # the child: train, then leave without pytest's exit handlers
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1), os.dup2(devnull, 2)
            code = T.main([str(run.path)] + (["--resume"] if resume else []))
        finally:
            os._exit(code)
    return pid


def wait_for_checkpoint_write(run, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(n.startswith((".ckpt.pt.", ".best.pt.")) for n in os.listdir(run.path)):
            return
    pytest.fail("no checkpoint write seen")


def temp_files(run) -> list[str]:
    return sorted(p.name for p in run.path.iterdir() if p.name.endswith(".tmp"))


def test_kill_9_in_a_loop_during_checkpoints_then_resume_finishes_clean(tmp_path):
    rng = random.Random(16)
    run = tiny_run(tmp_path, max_iters=400, eval_interval=2, eval_iters=1, log_interval=1)
    killed_with_temp = 0
    for i in range(KILLS):
        pid = fork_train(run, resume=i > 0)
        while not run.metrics_path.exists():   # past the start-up: training has begun
            time.sleep(0.005)
        if i % 2:
            time.sleep(rng.uniform(0.05, 0.4))   # anywhere: a step, an eval, a write
        else:
            wait_for_checkpoint_write(run)       # inside ckpt.pt's or best.pt's write
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"kill {i}: the run ended before it was killed"
        killed_with_temp += any(n.startswith((".ckpt.pt.", ".best.pt.")) for n in temp_files(run))
        if run.ckpt_path.exists():
            load_checkpoint(run.ckpt_path)            # whole, whatever the moment
        assert run.read_status()["state"] == "failed"  # lost: the UI sees it is gone
    pid = fork_train(run, resume=True)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    st = run.read_status()
    assert st["state"] == "done" and st["iter"] == 400
    assert temp_files(run) == []
    train = [m["iter"] for m in run.read_metrics() if m["kind"] == "train"]
    assert train == list(range(1, 401))   # no gap, no repeat across a dozen resumes
    assert load_checkpoint(run.ckpt_path)["iter_num"] == 400
    print(f"{KILLS} kills, {killed_with_temp} inside a checkpoint write (its temp file swept "
          f"by the next start)")
