"""A run that waits because another user's dispatcher reserved a card's memory says so:
the reason names the card, the user and the reservation's age, in `nanotui status`."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from engine.launch.dispatcher import Dispatcher
from engine.launch.gpu import GIB, FakeGpuSource, GpuSnapshot
from engine.launch.queue import queue_runs
from engine.runs import process_start_time
from tests.engine.test_reservations import RecordingExecutor, experiments_text
from tests.conftest import write_char_data
from tui.cli import main

OTHER_UID = 1234


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another uid's file needs root")
def test_a_run_kept_waiting_by_another_uids_reservation_names_it(tmp_path, monkeypatch, capsys):
    res = tmp_path / "res"
    res.mkdir(mode=0o1777)
    monkeypatch.setenv("NANOTUI_RESERVATIONS_DIR", str(res))
    data = write_char_data(tmp_path / "data")
    exp = tmp_path / "experiments.toml"
    exp.write_text(experiments_text(data, "s"))
    root = tmp_path / "runs"
    queue_runs(exp, root)
    # another user's live reservation holds 46 of the card's 48 GiB (its dispatcher is
    # alive: this process stands in for it), made 8 minutes ago (reservations live 10)
    now = time.time()
    entry = res / f"{OTHER_UID}-1-abc.json"
    entry.write_text(json.dumps({
        "uuid": "GPU-shared-0", "bytes": 46 * GIB, "pid": None, "pid_create_time": None,
        "owner_pid": os.getpid(), "owner_create_time": process_start_time(os.getpid()),
        "host": socket.gethostname(), "uid": OTHER_UID, "runs_root": "/home/x/runs",
        "run_id": "big/n_layer=48", "created_at": now - 8 * 60 - 5, "ttl_s": 3600}))
    os.chown(entry, OTHER_UID, -1)
    card = GpuSnapshot(0, "GPU-shared-0", "NVIDIA L40S", 2 * GIB, 48 * GIB, 0)
    ex = RecordingExecutor()
    d = Dispatcher(root, exp, executor=ex, gpu_source=FakeGpuSource([card]), log=lambda m: None)
    assert d.try_lock()
    d.tick()
    d.unlock()
    assert ex.started == []
    assert main(["--experiments", str(exp), "--runs", str(root), "status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    rows = rows["runs"] if isinstance(rows, dict) else rows
    reasons = {r.get("reason") for r in rows if r.get("state") == "queued"}
    assert len(reasons) == 1
    reason = reasons.pop()
    assert "GPU 0" in reason and f"uid {OTHER_UID}'s run" in reason
    assert "reservation, 8 min old" in reason and "46.0 GiB" in reason
    assert main(["--experiments", str(exp), "--runs", str(root), "status"]) == 0
    assert f"uid {OTHER_UID}'s run" in capsys.readouterr().out
