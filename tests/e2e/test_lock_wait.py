"""A wait on runs/.queue.lock says who holds it (pid and command) after about a second,
and Ctrl-C ends the wait with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import interruptible
from tests.e2e.test_train_process import REPO
from tests.engine.test_reading import fixture_run

pytestmark = [pytest.mark.e2e]

HOLD = """
import sys, time
from engine.launch.queue import queue_lock
with queue_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_wait_names_the_holder_and_ctrl_c_ends_it(tmp_path):
    root = tmp_path / "runs"
    run = fixture_run(root, state="stopped")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = subprocess.Popen([sys.executable, "-m", "tui", "--runs", str(root), "resume",
                                   run.id], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
        line = waiter.stderr.readline()   # blocks until the notice (or exit)
        assert f"held by pid {holder.pid} (-c {root})" in line, line
        assert "Ctrl-C gives up" in line
        waiter.send_signal(signal.SIGINT)
        out, err = waiter.communicate(timeout=20)
        assert waiter.returncode == 130 and "nanotui: interrupted" in err
        assert "Traceback" not in err
        assert run.read_status()["state"] == "stopped"   # nothing half done
    finally:
        holder.kill()
        holder.wait()
