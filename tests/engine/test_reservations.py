"""Machine-wide reservations: dispatchers of different runs directories starting together
never promise the same GPU memory twice; stale entries stop counting; files are safe."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from engine.launch.dispatcher import Dispatcher
from engine.launch.estimate import estimate
from engine.launch.gpu import GIB, FakeGpuSource, GpuSnapshot
from engine.launch.queue import queue_runs
from engine.launch.reservations import Board, ensure_dir
from engine.runs import list_runs, process_start_time
from tests.conftest import tiny_experiments, write_char_data

def experiments_text(data_dir, name: str, per_gpu: int | str = 9) -> str:
    return tiny_experiments(data_dir, {name: {"vary": {"seed": [1, 2, 3, 4]}}},
                            defaults={"n_embd": 32, "max_iters": 5},
                            launch={"max_runs_per_gpu": per_gpu})


@pytest.fixture
def data_dir(tmp_path):
    return write_char_data(tmp_path / "data")


class RecordingExecutor:
    """A started run is 'running' as this test process (alive, not yet on the card)."""

    kind = "local"
    places_itself = False

    def __init__(self):
        self.started: list[str] = []

    def start(self, run, placement, resume, started=None):
        self.started.append(placement.gpu["uuid"])
        run.update_status(state="running", pid=os.getpid(),
                          pid_create_time=process_start_time(os.getpid()),
                          started_at=time.time(), executor={"kind": "local"},
                          gpu=placement.gpu, est_mem_bytes=placement.est_mem_bytes)

    def stop(self, run, grace_s):
        run.update_status(state="stopped")

    def refresh(self, runs):
        pass


def card(used: int) -> GpuSnapshot:
    return GpuSnapshot(0, "GPU-shared-0", "NVIDIA L40S", used, 48 * GIB, 0)


def test_two_dispatchers_of_different_runs_dirs_never_promise_the_same_memory(tmp_path,
                                                                              data_dir):
    dispatchers, execs = [], []
    source = FakeGpuSource()
    for name in ("alice", "bob"):
        exp = tmp_path / f"{name}.toml"
        exp.write_text(experiments_text(data_dir, name))
        root = tmp_path / name / "runs"
        runs = queue_runs(exp, root)
        ex = RecordingExecutor()
        d = Dispatcher(root, exp, executor=ex, gpu_source=source, log=lambda m: None)
        assert d.try_lock()
        dispatchers.append(d)
        execs.append(ex)
    need = estimate(runs[0].load_config(), "gpu").mem_bytes
    base = 48 * GIB - 3 * need - need // 2   # room for three runs, not four
    source.set([card(base)])

    def tick_all_together():
        barrier = threading.Barrier(len(dispatchers))

        def go(d):
            barrier.wait()
            d.tick()
        threads = [threading.Thread(target=go, args=(d,)) for d in dispatchers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(len(ex.started) for ex in execs)

    for _ in range(3):  # whoever wins the lock, three runs start between the two of them
        assert tick_all_together() == 3
    assert len(Board().read()) == 3
    # another user frees memory for two more: exactly two more start, in all
    source.set([card(base - 2 * need)])
    for _ in range(3):
        assert tick_all_together() == 5
    # someone else takes memory: nothing more starts
    source.set([card(base + GIB)])
    assert tick_all_together() == 5
    for d in dispatchers:
        d.unlock()
    states = [r.read_status()["state"] for d in dispatchers for r in list_runs(d.runs_root)]
    assert states.count("running") == 5 and states.count("queued") == 3


def test_stale_and_malformed_reservations_stop_counting(tmp_path):
    board = Board(tmp_path / "res")
    with board.locked():
        live = board.add("GPU-x", GIB, tmp_path / "runs", "a/b")
        dead = board.add("GPU-x", GIB, tmp_path / "runs", "a/c")
        old = board.add("GPU-x", GIB, tmp_path / "runs", "a/d", now=time.time() - 3600)
        future = board.add("GPU-x", GIB, tmp_path / "runs", "a/e", now=time.time() + 3600)
        board.started(dead, 2 ** 22 + 12345, 1.0)  # a pid that is not running
        (board.path / "junk.json").write_text("{not json")
        (board.path / "big.json").write_text(json.dumps({"pad": "x" * 10_000}))
        kept = board.read()
    assert [r.run_id for r in kept] == ["a/b"]
    assert kept[0].pid is None and kept[0].owner_pid == os.getpid()
    # ours and dead: deleted; the live one stays
    assert live.exists() and not dead.exists() and not old.exists() and not future.exists()
    assert not (board.path / "junk.json").exists()
    board.started(live, os.getpid(), process_start_time(os.getpid()))
    assert Board(board.path).read()[0].pid == os.getpid()
    Board.remove(live)
    assert Board(board.path).read() == []


def test_the_directory_is_sticky_and_files_are_not_writable_by_others(tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("NANOTUI_RESERVATIONS_DIR", str(tmp_path / "shared"))
    monkeypatch.setattr(os, "umask", os.umask)  # restore whatever the test sets
    old = os.umask(0o000)
    try:
        board = Board()
        with board.locked():
            f = board.add("GPU-x", GIB, tmp_path, "r")
    finally:
        os.umask(old)
    mode = (tmp_path / "shared").stat().st_mode
    assert stat.S_IMODE(mode) == 0o1777
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    (tmp_path / "link").symlink_to(tmp_path / "shared")
    from engine.errors import UserError
    with pytest.raises(UserError, match="not a directory"):
        ensure_dir(Path(tmp_path / "link"))


def test_an_unusable_directory_turns_reservations_off_with_one_line(tmp_path):
    """A hostile user's symlink (or a full disk) must not stop anyone's placement."""
    from engine.launch.placement import PlacementError, Policy
    from engine.launch.reservations import SharedPlacer
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "res").symlink_to(tmp_path / "elsewhere")
    said = []
    placer = SharedPlacer(tmp_path / "runs", Board(tmp_path / "res"), log=said.append)
    for _ in range(2):
        p, ticket = placer.place("r", GIB, [card(GIB)], [], Policy(), "auto", time.time())
        assert p.gpu["uuid"] == "GPU-shared-0" and ticket is None
    assert len(said) == 1 and "reservations off" in said[0] and "not a directory" in said[0]
    with pytest.raises(PlacementError):  # placement's own errors still reach the run
        placer.place("r", 100 * GIB, [card(GIB)], [], Policy(), "auto", time.time())
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_dispatcher_that_ends_leaves_no_reservation_of_its_ended_runs(tmp_path):
    """Its last runs' reservations went only at its next start: a TA listing the
    directory saw files of runs long over."""
    from engine.launch.reservations import SharedPlacer
    board = Board(tmp_path / "res")
    placer = SharedPlacer(tmp_path / "runs", board=board, log=lambda m: None)
    with board.locked():
        ended = board.add("GPU-x", GIB, tmp_path / "runs", "a/b")
        running = board.add("GPU-x", GIB, tmp_path / "runs", "a/c")
    with board.locked():
        exiting = board.add("GPU-x", GIB, tmp_path / "runs", "a/d")
    board.started(ended, 2 ** 22 + 12345, 1.0)  # its trainer has exited
    board.started(running, os.getpid(), process_start_time(os.getpid()))
    # done, its trainer still exiting (alive): the dispatcher ends as soon as it reads 'done'
    board.started(exiting, os.getpid(), process_start_time(os.getpid()))
    from engine.runs import RunDir
    (tmp_path / "runs" / "a" / "d").mkdir(parents=True)
    RunDir(tmp_path / "runs" / "a/d").update_status(state="done")
    placer.close()
    assert not ended.exists() and running.exists() and not exiting.exists()
