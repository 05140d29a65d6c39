"""A running run whose live process has written nothing for far longer than its own
rhythm reads as `stalled`, with how long, in `nanotui status` and its --json."""

from __future__ import annotations

import json
import os
import time

import psutil

from engine.report.liveness import stall_threshold
from engine.report.reading import read_run
from tests.engine.test_reading import fixture_run
from tui.cli import main as nanotui


def _silent_running_run(root, silent_s: float, **rhythm):
    """A run 'running' in this (live) test process whose last write was silent_s ago."""
    run = fixture_run(root, state="running", pid=os.getpid(),
                      pid_create_time=psutil.Process().create_time(), **rhythm)
    past = time.time() - silent_s
    for p in (run.metrics_path, run.stdout_path, run.status_path):
        p.touch()
        os.utime(p, (past, past))
    st = json.loads(run.status_path.read_text())
    st["updated_at"] = past
    run.status_path.write_text(json.dumps(st))
    os.utime(run.status_path, (past, past))
    return run


def test_the_threshold_is_a_multiple_of_the_runs_own_rhythm_with_a_floor(monkeypatch):
    monkeypatch.setenv("NANOTUI_STALL_MULTIPLE", "10")
    monkeypatch.setenv("NANOTUI_STALL_FLOOR_S", "60")
    assert stall_threshold({"write_every_s": 1.0, "eval_s": 2.0}) == 60   # the floor
    assert stall_threshold({"write_every_s": 30.0, "eval_s": 90.0}) == 1200
    assert stall_threshold({}) == 1200  # no timing yet: the floor stands in for each


def test_a_silent_run_is_stalled_with_how_long_and_a_recent_one_is_running(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NANOTUI_STALL_MULTIPLE", "3")
    monkeypatch.setenv("NANOTUI_STALL_FLOOR_S", "5")
    root = tmp_path / "runs"
    quiet = _silent_running_run(root / "a", 200, write_every_s=10.0, eval_s=20.0)
    busy = _silent_running_run(root / "b", 60, write_every_s=10.0, eval_s=20.0)
    r = read_run(quiet)
    assert r.state == "stalled" and 199 <= r.stalled_s < 230 and r.eta_s is None
    assert "silent for 3m2" in r.reason and "stalled after 1m30s" in r.reason
    assert read_run(busy).state == "running"
    assert nanotui(["--runs", str(root / "a"), "status", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["runs"][0]
    assert row["state"] == "stalled" and row["stalled_s"] >= 199
    assert nanotui(["--runs", str(root / "a"), "status"]) == 0
    out = capsys.readouterr().out
    assert "stalled" in out and f"`nanotui stop {quiet.id}` ends it" in out


def test_the_training_process_says_running_before_it_sets_up(tmp_path, monkeypatch,
                                                              one_torch_thread):
    """A dispatcher killed between its spawn and its own status write must not leave a
    live run showing `queued` (and open to a second start) while it loads its data."""
    from test_train import tiny_run  # tests/engine is on sys.path

    from engine.train import process as T
    run = tiny_run(tmp_path, max_iters=2)
    assert read_run(run).state == "queued"
    seen = {}

    class Spy(T.TrainingRun):
        def __init__(self, run_, *a, **kw):
            seen.update(read_run(run_).to_dict())
            super().__init__(run_, *a, **kw)
    monkeypatch.setattr(T, "TrainingRun", Spy)
    assert T.main([str(run.path)]) == 0
    assert seen["state"] == "running" and seen["pid"] == os.getpid()
    assert read_run(run).state == "done"


def test_status_says_a_stalled_run_holds_a_slot_while_others_wait(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NANOTUI_STALL_FLOOR_S", "5")
    root = tmp_path / "runs"
    quiet = _silent_running_run(root, 400, write_every_s=1.0, eval_s=1.0)
    fixture_run(root, name="n_layer=4", state="queued")
    assert nanotui(["--runs", str(root), "status"]) == 0
    out = capsys.readouterr().out
    assert f"1 stalled run still holds a slot while 1 wait: `nanotui stop {quiet.id}`" in out
