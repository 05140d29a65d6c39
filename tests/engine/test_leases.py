"""Leases, the usage ledger and wait tickets: live runs counted for as long as they run,
planted files skipped, a finished run's GPU time written to its owner's ledger; the share's
verdict from leases and cards; a dispatcher waiting with the policy's reason."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from engine.launch.dispatcher import Dispatcher
from engine.launch.gpu import GIB, FakeGpuSource, GpuSnapshot
from engine.leases import LeaseBoard, settle_mine
from engine.ledger import record, usage_seconds
from engine.launch.policy import Caps
from engine.launch.queue import queue_runs
from engine.launch.share import ShareKeeper, first_in_line, gate
from engine.launch.waits import MyTicket, read_tickets
from engine.runs import RunDir, list_runs, process_start_time
from tests.conftest import shared_dir, tiny_experiments, write_char_data
from tests.engine.test_reservations import RecordingExecutor

ROOT = os.getuid() == 0


@pytest.fixture
def res(tmp_path, monkeypatch):
    return shared_dir(tmp_path / "res", monkeypatch)


def lease_doc(**kw) -> dict:
    me = os.getpid()
    return {"uid": os.getuid(), "uuid": "GPU-0", "run_id": "s/a", "runs_root": "/r",
            "pid": me, "pid_create_time": process_start_time(me), "owner_pid": me,
            "owner_create_time": process_start_time(me), "host": socket.gethostname(),
            "created_at": time.time(), **kw}


def test_a_lease_lives_as_long_as_its_process_and_planted_files_are_skipped(res, tmp_path):
    board = LeaseBoard(res)
    now = time.time()
    mine = board.add("GPU-0", tmp_path / "runs", "s/a", now)
    board.started(mine, os.getpid(), process_start_time(os.getpid()))
    (res / "future.lease").write_text(json.dumps(lease_doc(created_at=now + 3600)))
    (res / "junk.lease").write_text("{not json")
    os.mkfifo(res / "fifo.lease")
    (tmp_path / "elsewhere.json").write_text(json.dumps(lease_doc(uuid="GPU-1")))
    (res / "link.lease").symlink_to(tmp_path / "elsewhere.json")
    (res / "big.lease").write_text(json.dumps(lease_doc(run_id="x" * 5000)))
    if ROOT:  # a lease claiming our uid in a file another user owns
        (res / "forged.lease").write_text(json.dumps(lease_doc(uuid="GPU-2")))
        os.chown(res / "forged.lease", 65534, 65534)
    live, dead = board.read(now)
    assert [(le.uuid, le.run_id) for le in live] == [("GPU-0", "s/a")] and dead == []
    assert not (res / "junk.lease").exists()  # our own junk goes
    assert not (res / "future.lease").exists()
    assert (res / "fifo.lease").exists() and (res / "link.lease").is_symlink()
    # once the process is gone the lease is dead: its owner reaps it
    (res / "gone.lease").write_text(json.dumps(lease_doc(pid=2 ** 22 + 1, run_id="s/b")))
    live, dead = board.read(now)
    assert [le.run_id for le in dead] == ["s/b"]


def test_a_finished_run_is_written_to_its_owners_ledger_with_its_end(res, tmp_path):
    run = RunDir(tmp_path / "runs" / "s" / "b")
    run.path.mkdir(parents=True)
    now = time.time()
    run.update_status(state="done", ended_at=now - 600)
    (res / "gone.lease").write_text(json.dumps(lease_doc(
        pid=2 ** 22 + 1, run_id="s/b", runs_root=str(tmp_path / "runs"),
        created_at=now - 4200)))
    keeper = ShareKeeper(res, log=lambda m: None)
    assert keeper.live(now) == []
    assert not (res / "gone.lease").exists()
    assert usage_seconds(res, 24 * 3600, now) == {os.getuid(): pytest.approx(3600, abs=1)}
    assert usage_seconds(res, 1800, now) == {os.getuid(): pytest.approx(1200, abs=1)}


def test_the_ledger_counts_lines_for_the_files_owner_and_skips_junk(res):
    now = time.time()
    record(res, now - 7200, now - 3600, "GPU-0", "s/a")
    with open(res / f"usage-{os.getuid()}.jsonl", "a") as f:
        f.write("junk\n" + json.dumps({"start": now, "end": now + 9e6}) + "\n")
    assert usage_seconds(res, 24 * 3600, now) == {os.getuid(): pytest.approx(3600, abs=1)}
    if ROOT:  # a file named for uid 0 but owned by nobody counts for nobody (65534)
        p = res / "usage-0-planted.jsonl"
        p.write_text(json.dumps({"start": now - 100, "end": now}) + "\n")
        os.chown(p, 65534, 65534)
        assert usage_seconds(res, 3600, now)[65534] == pytest.approx(100, abs=1)
        assert usage_seconds(res, 3600, now).get(0, 0.0) == pytest.approx(0, abs=1)


def test_wait_tickets_are_seen_while_their_dispatcher_lives(res):
    t = MyTicket(res)
    now = time.time()
    t.update(3, 1, True, GIB, now)
    [seen] = read_tickets(res, now)
    assert (seen.uid, seen.queued, seen.contending, seen.need) == (os.getuid(), 3, True, GIB)
    (res / f"wait-{os.getuid()}-1.ticket").write_text(json.dumps({
        "uid": os.getuid(), "pid": 2 ** 22 + 1, "create_time": 1.0, "host": socket.gethostname(),
        "queued": 9, "running": 0, "contending": True, "need": 1, "since": now,
        "updated_at": now}))
    assert [x.queued for x in read_tickets(res, now)] == [3]  # a dead dispatcher's: gone
    t.update(0, 1, False, 0, now)
    assert read_tickets(res, now) == []
    if ROOT:  # a ticket claiming our uid in a file another user owns counts for nobody
        forged = res / "wait-0-forged.ticket"
        t.update(1, 0, True, GIB, now)
        forged.write_text(t.path.read_text())
        os.chown(forged, 65534, 65534)
        assert len(read_tickets(res, now)) == 1 and forged.exists()


def unit(i: int, processes=()) -> GpuSnapshot:
    return GpuSnapshot(i, f"GPU-{i}", "NVIDIA L40S", 0, 48 * GIB, 0, processes=processes)


def lease(uid: int, uuid: str):
    from engine.leases import Lease
    return Lease(uid, uuid, "s/a", "/r", 1, 1.0, 1, 1.0, "h", 0.0, None)


def test_the_share_counts_every_users_leases():
    cards = [unit(0), unit(1), unit(2)]
    a, b = 1001, 1002
    g = gate(Caps(max_gpus_per_user=1), a, cards, [lease(a, "GPU-0")], [], [])
    assert g.allowed == {"GPU-0"} and not g.contending
    assert g.reason == "waiting: your share is 1 GPU (policy.toml); yours: GPU 0"
    g = gate(Caps(max_runs_per_user=2), a, cards, [lease(a, "GPU-0"), lease(a, "GPU-1")], [], [])
    assert g.allowed == frozenset() and "your share is 2 GPU runs at once" in g.reason
    # keep_free_gpus = 1: b holds card 0, card 1 is taken, card 2 stays empty for others
    g = gate(Caps(keep_free_gpus=1), a, cards, [lease(b, "GPU-0"), lease(a, "GPU-1")], [], [])
    assert g.allowed == {"GPU-0", "GPU-1"} and g.contending
    g = gate(Caps(keep_free_gpus=2), a, cards, [lease(b, "GPU-0")], [], [])
    assert g.allowed == {"GPU-0"}
    assert g.reason == "waiting: keep_free_gpus = 2 leaves 2 GPUs empty for others (policy.toml)"


def test_a_waiting_user_with_less_gpu_time_goes_first_for_a_while(res):
    from engine.launch.waits import Ticket
    now = time.time()
    theirs = Ticket(1002, 1, None, "h", 1, 0, True, GIB, now - 5, now)
    yielded: dict = {}
    why = first_in_line(1001, {1001: 7200.0, 1002: 360.0}, now, unit(0), [theirs], 24, now,
                        yielded)
    assert why.startswith("waiting: ") and "goes first" in why and "(0.1 h against your 2.0 h" in why
    assert first_in_line(1001, {1001: 0.0, 1002: 360.0}, now, unit(0), [theirs], 24, now,
                         yielded) is None  # we used less
    elsewhere = Ticket(1002, 1, None, "h", 1, 0, True, GIB, now - 5, now, ("GPU-1",))
    assert first_in_line(1001, {1001: 7200.0}, now, unit(0), [elsewhere], 24, now,
                         {}) is None  # their run may not go on this card
    assert first_in_line(1001, {1001: 7200.0}, now, unit(0), [theirs], 24, now + 301,
                         yielded) is None  # they have not taken it in YIELD_GRACE_S
    again = Ticket(1002, 2, None, "h", 1, 0, True, GIB, now + 300, now + 300)
    assert first_in_line(1001, {1001: 7200.0}, now, unit(0), [again], 24, now + 302,
                         yielded) is None  # a new ticket of theirs: the same budget
    assert first_in_line(1001, {1001: 7200.0}, now, unit(0), [again], 24, now + 3700,
                         yielded) is not None  # an hour on: a new one


def experiments(data_dir, n: int) -> str:
    return tiny_experiments(data_dir, {"s": {"vary": {"seed": list(range(1, n + 1))}}},
                            defaults={"n_embd": 32, "max_iters": 5},
                            launch={"max_runs_per_gpu": 1})


def cards_source(tmp_path, n: int) -> FakeGpuSource:
    p = tmp_path / "cards.json"
    p.write_text(json.dumps({"gpus": [{"index": i, "uuid": f"GPU-pol-{i}", "name": "NVIDIA L40S",
                                       "memory_total": 48 * GIB, "memory_used": 0,
                                       "utilization": 0} for i in range(n)]}))
    return FakeGpuSource.from_file(p)


def dispatch(tmp_path, n_runs: int, n_cards: int, log=lambda m: None) -> list[dict]:
    data = write_char_data(tmp_path / "data")
    exp = tmp_path / "experiments.toml"
    exp.write_text(experiments(data, n_runs))
    queue_runs(exp, tmp_path / "runs")
    d = Dispatcher(tmp_path / "runs", exp, executor=RecordingExecutor(),
                   gpu_source=cards_source(tmp_path, n_cards), log=log)
    assert d.try_lock()
    try:
        d.tick()
        return [r.read_status() for r in sorted(list_runs(tmp_path / "runs"), key=lambda r: r.id)]
    finally:
        d.unlock()


def test_a_run_over_its_users_share_waits_with_the_policys_reason(res, tmp_path):
    (res / "policy.toml").write_text("max_gpus_per_user = 1\n")
    runs = dispatch(tmp_path, 2, 2)
    assert [r["state"] for r in runs] == ["running", "queued"]
    assert runs[1]["reason"] == "waiting: your share is 1 GPU (policy.toml); yours: GPU 0"
    assert len(list(res.glob("*.lease"))) == 1


def test_keep_free_gpus_leaves_a_card_empty(res, tmp_path):
    (res / "policy.toml").write_text("keep_free_gpus = 1\n")
    runs = dispatch(tmp_path, 2, 2)
    assert [r["state"] for r in runs] == ["running", "queued"]
    assert runs[1]["reason"] == ("waiting: keep_free_gpus = 1 leaves 1 GPU empty for others "
                                 "(policy.toml)")


def test_a_malformed_policy_with_no_last_good_one_places_nothing_on_gpus(res, tmp_path):
    (res / "policy.toml").write_text("max_gpus_per_user = \n")
    runs = dispatch(tmp_path, 1, 2)
    assert runs[0]["state"] == "queued"
    assert runs[0]["reason"].startswith(f"waiting: {res}/policy.toml:1: max_gpus_per_user: "
                                        f"invalid TOML")
    assert runs[0]["reason"].endswith("(no earlier good policy known: GPUs wait until it is "
                                      "fixed)")


def test_without_a_policy_both_runs_start(res, tmp_path):
    runs = dispatch(tmp_path, 2, 2)
    assert [r["state"] for r in runs] == ["running", "running"]


def test_an_ended_run_is_never_charged_up_to_now(res, tmp_path):
    """A killed trainer (no ended_at): until its status.json was last written; a deleted
    runs directory: nothing, rather than a whole window of GPU time."""
    now = time.time()
    killed = RunDir(tmp_path / "runs" / "s" / "k")
    killed.path.mkdir(parents=True)
    killed.update_status(state="running", pid=2 ** 22 + 1, pid_create_time=1.0)
    os.utime(killed.status_path, (now - 3000, now - 3000))
    for name, run in (("k", "s/k"), ("gone", "s/gone")):
        (res / f"{name}.lease").write_text(json.dumps(lease_doc(
            pid=2 ** 22 + 1, run_id=run, runs_root=str(tmp_path / "runs"),
            created_at=now - 4800)))
    assert ShareKeeper(res, log=lambda m: None).live(now) == []
    assert usage_seconds(res, 24 * 3600, now) == {os.getuid(): pytest.approx(1800, abs=2)}
    assert list(res.glob("*.lease")) == []


def test_the_dispatcher_says_the_policy_it_goes_by_once(res, tmp_path):
    said: list[str] = []
    (res / "policy.toml").write_text("max_runs_per_user = 1\n")
    runs = dispatch(tmp_path, 3, 2, log=said.append)
    assert [r["state"] for r in runs] == ["running", "queued", "queued"]
    assert runs[1]["reason"] == ("waiting: your share is 1 GPU run at once, all running "
                                 "(max_runs_per_user, policy.toml)")
    assert [m for m in said if m.startswith("policy:")] == [
        f"policy: {res}/policy.toml in force; yours: max_runs_per_user = 1"]


def test_a_typo_after_a_good_policy_keeps_its_caps(res, tmp_path):
    """The dispatcher that read a good policy goes on under it when the file turns bad:
    never under no limits."""
    (res / "policy.toml").write_text("max_gpus_per_user = 1\n")
    data = write_char_data(tmp_path / "data")
    exp = tmp_path / "experiments.toml"
    exp.write_text(experiments(data, 3))
    queue_runs(exp, tmp_path / "runs")
    said: list[str] = []
    d = Dispatcher(tmp_path / "runs", exp, executor=RecordingExecutor(),
                   gpu_source=cards_source(tmp_path, 2), log=said.append)
    assert d.try_lock()
    try:
        d.tick()
        (res / "policy.toml").write_text("max_gpus_per_user = 1\nkeep_free = 0\n")
        d.tick()
        d.tick()
    finally:
        d.unlock()
    runs = [r.read_status() for r in sorted(list_runs(tmp_path / "runs"), key=lambda r: r.id)]
    assert [r["state"] for r in runs] == ["running", "queued", "queued"]
    assert runs[1]["reason"] == "waiting: your share is 1 GPU (policy.toml); yours: GPU 0"
    assert said.count(f"policy: {res}/policy.toml:2: keep_free: unknown key (expected one of "
                      f"max_gpus_per_user, max_runs_per_user, keep_free_gpus, "
                      f"usage_window_hours, quiet_hours, users); going on under the last good "
                      f"policy") == 1


def test_a_run_whose_trainer_wrote_its_line_is_not_written_again_by_the_reap(res, tmp_path):
    """The trainer wrote its ledger line and was killed before removing its lease: the
    dispatcher's reap removes the lease and writes nothing."""
    run = RunDir(tmp_path / "runs" / "s" / "b")
    run.path.mkdir(parents=True)
    now = time.time()
    run.update_status(state="done", ended_at=now - 600)
    lease = res / f"lease-{os.getuid()}-1-0123456789ab.lease"
    lease.write_text(json.dumps(lease_doc(pid=2 ** 22 + 1, run_id="s/b", created_at=now - 4200,
                                          runs_root=str(tmp_path / "runs"))))
    assert record(res, now - 4200, now - 600, "GPU-0", "s/b", lease=lease.stem)
    assert not record(res, now - 4200, now - 600, "GPU-0", "s/b", lease=lease.stem)
    assert ShareKeeper(res, log=lambda m: None).live(now) == [] and not lease.exists()
    lines = (res / f"usage-{os.getuid()}.jsonl").read_text().splitlines()
    assert [json.loads(x)["lease"] for x in lines] == [lease.stem]
    assert usage_seconds(res, 24 * 3600, now) == {os.getuid(): pytest.approx(3600, abs=1)}


def test_a_trainer_settles_only_its_own_runs_lease(res, tmp_path):
    board = LeaseBoard(res)
    now = time.time()
    path = board.add("GPU-0", tmp_path / "runs", "s/a", now - 60)
    assert not settle_mine(path, tmp_path / "runs" / "s" / "other", now)
    assert path.exists() and not list(res.glob("usage-*"))
    assert settle_mine(path, tmp_path / "runs" / "s" / "a", now)
    assert not path.exists()
    assert usage_seconds(res, 3600, now) == {os.getuid(): pytest.approx(60, abs=1)}
    assert not settle_mine(path, tmp_path / "runs" / "s" / "a", now)  # settled once
