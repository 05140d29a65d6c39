"""The dispatcher with an in-process executor: queueing, exactly-once starts, placement
of several runs in one tick, stop/resume of queued runs. Real processes: tests/e2e."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from engine.launch.gpu import GIB, FakeGpuSource, GpuSnapshot
from engine.launch.dispatcher import Dispatcher
from engine.launch.queue import (dispatcher_pid, queue_runs, queue_runs_detailed, read_journal,
                                 resume_run, stop_run)
from engine.runs import RunDir, RunError, list_runs, process_start_time
from tui.cli import main
from tests.conftest import tiny_experiments, write_char_data

def experiments_text(data_dir, per_gpu=1) -> str:
    return tiny_experiments(
        data_dir, {"a": {"vary": {"n_layer": [1, 2, 3]}},
                   # not the same model as a/n_layer=1 (that would be shared)
                   "b": {"fixed": {"max_iters": 4}, "vary": {"n_embd": [32, 64]}}},
        defaults={"n_embd": 32, "max_iters": 5}, launch={"max_runs_per_gpu": per_gpu})


@pytest.fixture
def data_dir(tmp_path):
    return write_char_data(tmp_path / "data")


@pytest.fixture
def exp(tmp_path, data_dir):
    def make(per_gpu=1):
        p = tmp_path / "experiments.toml"
        p.write_text(experiments_text(data_dir, per_gpu))
        return p
    return make


class FakeExecutor:
    """Records starts; a started run is 'running' as this test process (alive)."""

    kind = "local"
    places_itself = False

    def __init__(self):
        self.started: list[tuple[str, object, bool]] = []
        self.lock = threading.Lock()

    def start(self, run, placement, resume, started=None):
        with self.lock:
            self.started.append((run.id, placement, resume))
        run.update_status(state="running", pid=os.getpid(),
                          pid_create_time=process_start_time(os.getpid()),
                          started_at=time.time(), executor={"kind": "local"},
                          gpu=placement.gpu if placement else None,
                          est_mem_bytes=placement.est_mem_bytes if placement else 0)

    def stop(self, run, grace_s):
        run.update_status(state="stopped")

    def refresh(self, runs):
        pass


def finish_all(root: Path) -> None:
    for r in list_runs(root):
        if r.read_status()["state"] == "running":
            r.update_status(state="done")


def test_queue_creates_runs_once_and_skips_existing(tmp_path, exp):
    root = tmp_path / "runs"
    res = queue_runs_detailed(exp(), root, ["a"])
    assert [r.id for r in res.queued] == ["a/n_layer=1", "a/n_layer=2", "a/n_layer=3"]
    st = res.queued[0].read_status()
    assert st["state"] == "queued" and st["max_iters"] == 5
    assert res.queued[0].run_table()["varied"] == {"n_layer": 1}
    res.queued[0].update_status(state="done")
    res.queued[1].update_status(state="failed", reason="lost")
    again = queue_runs_detailed(exp(), root, ["a", "b/n_embd=64"])
    assert [r.id for r in again.queued] == ["b/n_embd=64"]
    assert [r.id for r in again.done] == ["a/n_layer=1"]
    assert [r.id for r in again.needs_resume] == ["a/n_layer=2"]
    assert [r.id for r in again.waiting] == ["a/n_layer=3"]


def test_invalid_run_queues_nothing(tmp_path, exp):
    p = exp()
    p.write_text(p.read_text() + "[sweep.bad]\nvary = { n_embd = [33] }\n")
    with pytest.raises(Exception, match="not divisible"):
        queue_runs(p, tmp_path / "runs")
    assert list_runs(tmp_path / "runs") == []


def test_missing_data_is_one_clear_error(tmp_path):
    p = tmp_path / "e.toml"
    p.write_text('[defaults]\ndata_dir = "/nonexistent/x"\n[sweep.s]\nvary = { n_layer = [1] }\n')
    from engine.errors import UserError
    with pytest.raises(UserError, match="data_dir /nonexistent/x: no such file or directory"):
        queue_runs(p, tmp_path / "runs")
    assert list_runs(tmp_path / "runs") == []


def gpus_with_room_for(n_runs_on_0: int, need: int):
    free0 = need * n_runs_on_0 + GIB // 2
    return FakeGpuSource([
        GpuSnapshot(0, "GPU-0", "big idle", 48 * GIB - free0, 48 * GIB, 0),
        GpuSnapshot(1, "GPU-1", "busy", 10 * GIB, 48 * GIB, 80)])


def test_one_tick_places_two_runs_without_overfilling_a_card(tmp_path, exp):
    from engine.launch.estimate import estimate
    root = tmp_path / "runs"
    runs = queue_runs(exp(per_gpu=4), root, ["b"])
    need = estimate(runs[0].load_config()).mem_bytes
    ex = FakeExecutor()
    d = Dispatcher(root, exp(per_gpu=4), executor=ex, gpu_source=gpus_with_room_for(1, need),
                   log=lambda m: None)
    assert d.try_lock()
    started = d.tick()
    d.unlock()
    assert len(started) == 2
    cards = [p.gpu["index"] for _, p, _ in ex.started]
    assert cards == [0, 1]  # the idle card first, then the busy one: card 0 had room for one
    st = runs[0].read_status()
    assert st["gpu"] == {"index": 0, "uuid": "GPU-0", "name": "big idle", "simulated": True}
    assert st["est_mem_bytes"] == need
    assert [p.env["CUDA_VISIBLE_DEVICES"] for _, p, _ in ex.started] == ["GPU-0", "GPU-1"]


def test_cpu_cap_and_gpu_request(tmp_path, exp):
    root = tmp_path / "runs"
    queue_runs(exp(), root, ["a"])
    queue_runs(exp(), root, ["b/n_embd=32"], gpu="cpu")
    ex = FakeExecutor()
    d = Dispatcher(root, exp(), executor=ex, gpu_source=FakeGpuSource([]), log=lambda m: None)
    assert d.try_lock()
    assert len(d.tick()) == 1  # max_cpu_runs = 1
    assert len(d.tick()) == 0
    finish_all(root)
    assert len(d.tick()) == 1
    d.unlock()
    assert all(p.device == "cpu" for _, p, _ in ex.started)


def test_dispatcher_lock_is_exclusive(tmp_path, exp):
    root = tmp_path / "runs"
    a = Dispatcher(root, exp(), executor=FakeExecutor(), log=lambda m: None)
    b = Dispatcher(root, exp(), executor=FakeExecutor(), log=lambda m: None)
    assert dispatcher_pid(root) is None
    assert a.try_lock() and not b.try_lock()
    assert dispatcher_pid(root) == os.getpid()
    a.unlock()
    assert b.try_lock()
    b.unlock()


def test_two_dispatchers_start_each_run_exactly_once(tmp_path, exp):
    root = tmp_path / "runs"
    queue_runs(exp(per_gpu=9), root)
    gpus = FakeGpuSource([GpuSnapshot(i, f"GPU-{i}", "c", 0, 96 * GIB, 0) for i in range(2)])
    execs = [FakeExecutor(), FakeExecutor()]
    ds = [Dispatcher(root, exp(per_gpu=9), executor=e, gpu_source=gpus, poll_s=0.05,
                     log=lambda m: None) for e in execs]
    threads = [threading.Thread(target=d.run) for d in ds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    started = [rid for e in execs for rid, _, _ in e.started]
    assert sorted(started) == sorted(r.id for r in list_runs(root))
    assert len(read_journal(root)) == 5


def test_stop_queued_and_resume(tmp_path, exp):
    root = tmp_path / "runs"
    r = queue_runs(exp(), root, ["a/n_layer=1"])[0]
    assert stop_run(r) == "stopped"
    assert r.read_status()["state"] == "stopped"
    assert resume_run(r) is False  # no checkpoint: starts over
    st = r.read_status()
    assert st["state"] == "queued" and st["resume"] is False
    with pytest.raises(RunError, match="already queued"):
        resume_run(r)
    r.ckpt_path.write_bytes(b"x")
    r.update_status(state="failed", reason="lost")
    assert resume_run(r, gpu="1") is True
    assert r.read_status()["gpu_request"] == "1"
    ex = FakeExecutor()
    d = Dispatcher(root, exp(), executor=ex, gpu_source=FakeGpuSource(
        [GpuSnapshot(0, "GPU-0", "c", 0, 96 * GIB), GpuSnapshot(1, "GPU-1", "c", 0, 96 * GIB)]),
        log=lambda m: None)
    assert d.try_lock() and len(d.tick()) == 1
    d.unlock()
    (rid, placement, resume), = ex.started
    assert resume is True and placement.gpu["index"] == 1
    assert r.read_status().get("resume") is None


def test_placement_error_fails_the_run_with_a_reason(tmp_path, exp):
    root = tmp_path / "runs"
    r = queue_runs(exp(), root, ["a/n_layer=1"], gpu="7")[0]
    d = Dispatcher(root, exp(), executor=FakeExecutor(), gpu_source=FakeGpuSource(
        [GpuSnapshot(0, "GPU-0", "c", 0, 96 * GIB)]), log=lambda m: None)
    assert d.try_lock()
    d.tick()
    d.unlock()
    st = r.read_status()
    assert st["state"] == "failed" and "--gpu 7: no such GPU" in st["reason"]


def test_commands_on_queued_runs(tmp_path, exp, capsys):
    root = tmp_path / "runs"
    queue_runs(exp(), root, ["a"])
    args = ["--experiments", str(exp()), "--runs", str(root)]
    assert main(args + ["status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in doc["runs"]] == ["queued"] * 3
    assert main(args + ["status"]) == 0
    assert "no dispatcher" in capsys.readouterr().out
    assert main(args + ["stop", "a/n_layer=2"]) == 0
    assert main(args + ["stop", "a/n_layr=2"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert RunDir(root / "a" / "n_layer=2").read_status()["state"] == "stopped"
    assert main(args + ["resume", "a/n_layer=1"]) == 2  # queued: cannot resume
    assert "already queued" in capsys.readouterr().err


def test_demo_corpus_and_files(tmp_path):
    from engine.data.demo import corpus, write_demo
    from engine.experiments import load_experiments
    c = corpus(50_000, seed=3)
    assert c == corpus(50_000, seed=3) and c != corpus(50_000, seed=4)
    assert 50_000 <= len(c) < 52_000 and c.startswith("") and "\n\n" in c
    exp_path = write_demo(tmp_path / "demo")
    assert (tmp_path / "demo" / "stories.txt").stat().st_size > 200_000
    exp = load_experiments(exp_path)
    runs = exp.select(["quick"])
    assert [r.name for r in runs] == ["n_layer=1", "n_layer=2"]
    assert all(r.error is None for r in runs)
    assert runs[0].cfg.dataset == str((tmp_path / "demo" / "stories.txt").resolve())
    # a second demo keeps the files (and so the runs made from them)
    (tmp_path / "demo" / "stories.txt").write_text("kept")
    write_demo(tmp_path / "demo")
    assert (tmp_path / "demo" / "stories.txt").read_text() == "kept"


def test_launch_with_an_absent_gpu_is_one_line_and_queues_nothing(tmp_path, exp, capsys):
    root = tmp_path / "runs"
    assert main(["--experiments", str(exp()), "--runs", str(root), "launch", "--gpu", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gpu 3: no such GPU" in err
    assert list_runs(root) == []


def test_executor_error_with_keep_queued_stops_the_dispatcher(tmp_path, exp):
    from engine.config import ConfigError

    class Refused(ConfigError):
        keep_queued = True

    class Refusing(FakeExecutor):
        places_itself = True

        def start(self, run, placement, resume, started=None):
            raise Refused("sbatch: invalid partition 'gpux'")

    root = tmp_path / "runs"
    queue_runs(exp(), root, ["a"])
    d = Dispatcher(root, exp(), executor=Refusing(), log=lambda m: None)
    with pytest.raises(Refused, match="invalid partition"):
        d.run()
    assert {r.read_status()["state"] for r in list_runs(root)} == {"queued"}
    assert dispatcher_pid(root) is None


def test_local_start_is_journaled_before_its_status_says_running(tmp_path, exp):
    """A dispatcher killed right after a run shows `running` must already have journaled
    that process (seen on a loaded CI machine: the status came first, the journal ~1 s
    later, and a SIGKILL in between lost the record)."""
    from engine.launch.executor import LocalExecutor
    root = tmp_path / "runs"
    run = queue_runs(exp(), root, ["a/n_layer=1"])[0]
    seen = []

    def started(pid):
        seen.append((pid, run.read_status()["state"]))

    ex = LocalExecutor()
    ex.start(run, None, False, started=started)
    try:
        st = run.read_status()
        assert seen == [(st["pid"], "queued")]  # called before the status was written
        assert st["state"] == "running"
    finally:
        ex.stop(run, grace_s=5)
    d = Dispatcher(root, exp(), executor=FakeExecutor(), log=lambda m: None)
    queue_runs(exp(), root, ["b/n_embd=32"])
    d.run()
    assert [j["run"] for j in read_journal(root)] == ["b/n_embd=32"]  # fakes: after start


def test_a_dispatcher_started_with_a_card_applies_each_runs_own_request(tmp_path, exp):
    """A run queued with "auto" (the TUI's default) while a `--gpu 1` dispatcher runs is
    placed by auto placement, not sent to wait for card 1."""
    root = tmp_path / "runs"
    auto = queue_runs(exp(), root, ["a/n_layer=1"], gpu="auto")[0]
    pinned = queue_runs(exp(), root, ["a/n_layer=2"], gpu="1")[0]
    assert auto.read_status()["gpu_request"] == "auto"
    assert pinned.read_status()["gpu_request"] == "1"
    ex = FakeExecutor()
    busy = GpuSnapshot(1, "GPU-1", "c", 60 * GIB, 96 * GIB, utilization=100)  # card 1 busy
    d = Dispatcher(root, exp(per_gpu=4), "1", executor=ex, log=lambda m: None,
                   gpu_source=FakeGpuSource([GpuSnapshot(0, "GPU-0", "c", 0, 96 * GIB), busy]))
    assert d.try_lock()
    d.tick()
    d.unlock()
    placed = {rid: placement.gpu["index"] for rid, placement, _ in ex.started}
    assert placed == {auto.id: 0, pinned.id: 1}
