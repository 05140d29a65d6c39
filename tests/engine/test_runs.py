import json
import os
import subprocess
import sys

from engine.config import TrainConfig
from engine.runs import JsonlTail, create_run, find_run, list_runs


def make(tmp_path, name="n_layer=2"):
    return create_run(tmp_path, "depth", name, TrainConfig(max_iters=10), {"n_layer": 2})


def test_create_and_list(tmp_path):
    r = make(tmp_path)
    assert r.id == "depth/n_layer=2"
    assert r.read_status()["state"] == "queued"
    assert r.load_config().max_iters == 10
    assert r.run_table()["varied"] == {"n_layer": 2}
    assert [x.id for x in list_runs(tmp_path)] == ["depth/n_layer=2"]
    assert find_run(tmp_path, "depth/n_layer=2") == r


def test_jsonl_tail_reads_only_complete_new_lines(tmp_path):
    r = make(tmp_path)
    tail = JsonlTail(r.metrics_path)
    assert tail.read_new() == []
    r.log_metric(kind="train", iter=1, loss=2.0)
    with open(r.metrics_path, "a") as f:
        f.write('{"kind": "train", "iter": 2, "lo')  # torn line
    assert [m["iter"] for m in tail.read_new()] == [1]
    with open(r.metrics_path, "a") as f:
        f.write('ss": 1.5}\n')
    assert [m["loss"] for m in tail.read_new()] == [1.5]
    assert tail.read_new() == []


def test_nan_is_written_as_null(tmp_path):
    r = make(tmp_path)
    r.log_metric(kind="train", iter=1, loss=float("nan"))
    assert r.read_metrics()[0]["loss"] is None


def test_prepare_for_resume_drops_torn_and_later_lines(tmp_path):
    r = make(tmp_path)
    for i in range(1, 6):
        r.log_metric(kind="train", iter=i, loss=1.0)
    with open(r.metrics_path, "a") as f:
        f.write('{"kind": "tr')
    r.prepare_for_resume(3)
    assert [m["iter"] for m in r.read_metrics()] == [1, 2, 3]


def test_dead_running_process_reads_as_lost(tmp_path):
    r = make(tmp_path)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    r.update_status(state="running", pid=p.pid, pid_create_time=1.0)
    st = r.read_status()
    assert st["state"] == "failed" and st["reason"] == "lost"
    assert json.loads(r.status_path.read_text())["reason"] == "lost"


def test_live_process_with_other_start_time_reads_as_lost(tmp_path):
    r = make(tmp_path)
    r.update_status(state="running", pid=os.getpid(), pid_create_time=12345.0)
    assert r.read_status()["reason"] == "lost"


def test_live_process_stays_running(tmp_path):
    import psutil
    r = make(tmp_path)
    r.update_status(state="running", pid=os.getpid(),
                    pid_create_time=psutil.Process().create_time())
    assert r.read_status()["state"] == "running"


def test_unsafe_names_rejected(tmp_path):
    import pytest
    from engine.runs import RunError
    for bad in ("..", "../evil", "a/b", ".hidden", ""):
        with pytest.raises(RunError):
            create_run(tmp_path, "s", bad, TrainConfig())
    assert not (tmp_path.parent / "evil").exists()
