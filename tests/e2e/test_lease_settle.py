"""A GPU run's own trainer settles its lease as it exits: its GPU time goes into its user's
usage ledger and the lease goes, with no dispatcher tick, so every other user's fair order
counts it at once (even when the runs directory is private). A trainer killed with SIGKILL
cannot: its dispatcher's next tick settles it. A run is never in the ledger twice.

Real training processes (tiny), fake cards, a shared reservations directory."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from engine.launch.dispatcher import Dispatcher
from engine.launch.executor import LocalExecutor
from engine.launch.gpu import GIB
from engine.launch.queue import dispatcher_pid, queue_runs
from engine.launch.share_view import share_summary
from engine.runs import RunDir
from tests.conftest import tiny_experiments, write_char_data
from tests.e2e.test_policy_users import card, stop_runs, world  # noqa: F401 (fixture)
from tests.e2e.test_policy_users import wait_for as wait_as

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def one_user(tmp_path, monkeypatch):
    res = tmp_path / "res"
    res.mkdir()
    os.chmod(res, 0o1777)
    cards = tmp_path / "cards.json"
    cards.write_text(json.dumps({"gpus": [
        {"index": 0, "uuid": "GPU-settle-0", "name": "NVIDIA L40S",
         "memory_total": 48 * GIB, "memory_used": 0, "utilization": 0}]}))
    monkeypatch.setenv("NANOTUI_RESERVATIONS_DIR", str(res))
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(cards))
    monkeypatch.setenv("NANOTUI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    exp = tmp_path / "experiments.toml"
    exp.write_text(tiny_experiments(
        write_char_data(tmp_path / "data"),
        {"quick": {"fixed": {"max_iters": 5}, "vary": {"seed": [1, 2]}},
         "long": {"fixed": {"max_iters": 100000, "lr_decay_iters": 100000,
                            "eval_interval": 100000}, "vary": {"seed": [1]}}},
        defaults={"n_layer": 1, "n_embd": 32, "eval_iters": 1, "warmup_iters": 1,
                  "dtype": "float32"},
        sampling={"max_new_tokens": 4, "prompts": ["the"]},
        launch={"max_runs_per_gpu": 4}))
    root = tmp_path / "runs"
    d = Dispatcher(root, exp, executor=LocalExecutor(), log=lambda m: None)
    assert d.try_lock()
    yield res, root, exp, d
    for run in (root / "long").glob("*"):
        pid = RunDir(run).read_status().get("pid")
        if pid and RunDir(run).read_status().get("state") == "running":
            os.kill(pid, signal.SIGKILL)
    d.unlock()


def ledger_lines(res) -> list[dict]:
    f = res / f"usage-{os.getuid()}.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def wait_for(what, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what.__doc__}")


def test_a_run_that_ends_is_in_the_ledger_once_and_leaves_no_lease_without_a_tick(one_user):
    res, root, exp, d = one_user
    run, = queue_runs(exp, root, ["quick/seed=1"])
    assert [r.id for r in d.tick()] == ["quick/seed=1"]
    assert len(list(res.glob("*.lease"))) == 1  # the run holds the card

    def settled():
        """the run done, its lease gone"""
        return run.read_status().get("state") == "done" and not list(res.glob("*.lease"))
    wait_for(settled)  # no dispatcher tick from here on
    line, = ledger_lines(res)
    st = run.read_status()
    assert (line["run"], line["uuid"]) == ("quick/seed=1", "GPU-settle-0")
    assert line["lease"].startswith(f"lease-{os.getuid()}-")
    # from its placement (the card is held from then on) to the trainer's exit
    assert line["start"] <= st["started_at"] < st["ended_at"] <= line["end"]
    # every reader counts it now, from the ledger
    me, = share_summary(res)["users"]
    assert me["gpu_runs"] == 0
    assert me["gpu_hours"] == pytest.approx((line["end"] - line["start"]) / 3600, abs=1e-3)
    second, = queue_runs(exp, root, ["quick/seed=2"])
    d.tick()  # the dispatcher's reap finds nothing of the first run to write again
    assert [x["run"] for x in ledger_lines(res)] == ["quick/seed=1"]
    wait_for(lambda: second.read_status().get("state") == "done"
             and not list(res.glob("*.lease")))
    assert [x["run"] for x in ledger_lines(res)] == ["quick/seed=1", "quick/seed=2"]


def test_a_killed_trainer_is_settled_by_its_dispatcher_once(one_user):
    res, root, exp, d = one_user
    run, = queue_runs(exp, root, ["long/seed=1"])
    d.tick()

    def training():
        """the long run training"""
        return (root / "long" / "seed=1" / "metrics.jsonl").exists()
    wait_for(training)
    os.kill(run.read_status()["pid"], signal.SIGKILL)  # it cannot settle its lease
    time.sleep(0.5)
    assert len(list(res.glob("*.lease"))) == 1 and ledger_lines(res) == []
    quick, = queue_runs(exp, root, ["quick/seed=1"])
    d.tick()  # reaps the killed trainer, settles its lease, starts the quick run
    assert [x["run"] for x in ledger_lines(res)] == ["long/seed=1"]

    def settled():
        """the quick run done, its lease gone"""
        return quick.read_status().get("state") == "done" and not list(res.glob("*.lease"))
    wait_for(settled)
    d.tick()
    d.tick()
    lines = ledger_lines(res)
    assert sorted(x["run"] for x in lines) == ["long/seed=1", "quick/seed=1"]
    assert len({x["lease"] for x in lines}) == 2


def test_another_user_sees_an_ended_runs_gpu_hours_at_once_from_a_private_runs_dir(world):
    """Two real Unix users; a's runs directory is private (mode 700) and a's dispatcher
    is frozen (SIGSTOP) before a's run ends, if it has not left already, so only the
    trainer can tell anyone."""
    a, b = world.users
    world.set_cards([card(0)])
    world.policy("max_gpus_per_user = 1\n")
    a.write_experiments("a.toml", "priv", [1], per_gpu=1)
    b.write_experiments("b.toml", "other", [1], per_gpu=1)
    (a.home / "runs").mkdir(mode=0o700)
    os.chown(a.home / "runs", a.uid, a.gid)
    try:
        a.nanotui("a.toml", "launch", "--detach")
        wait_as(lambda: a.status("priv/seed=1").get("state") == "running"
                and (a.home / "runs" / "priv" / "seed=1" / "metrics.jsonl").exists())
        assert b.run("-c", f"open({str(a.home / 'runs/priv/seed=1/status.json')!r})",
                     check=False).returncode != 0  # b cannot read a's runs
        dispatcher = dispatcher_pid(a.home / "runs")
        if dispatcher:  # None: it has left already (nothing queued)
            os.kill(dispatcher, signal.SIGSTOP)
        os.kill(a.status("priv/seed=1")["pid"], signal.SIGTERM)  # a's run ends
        wait_as(lambda: a.status("priv/seed=1").get("state") == "stopped"
                and not list(world.res.glob("*.lease")))
        st = a.status("priv/seed=1")
        seen = json.loads(b.nanotui("b.toml", "status", "--all-users", "--json"))
        by = {u["user"]: u for u in seen["users"]}
        assert by[a.name]["gpu_runs"] == 0
        assert by[a.name]["gpu_hours"] >= round((st["ended_at"] - st["started_at"]) / 3600, 3)
        assert by[a.name]["gpu_hours"] > 0
    finally:
        stop_runs(world)


def test_a_killed_trainers_lease_is_settled_when_its_dispatcher_ends(one_user):
    """A dispatcher with nothing left to queue ends: it settles what no trainer could (a
    SIGKILL) on its way out, not at some later start."""
    res, root, exp, d = one_user
    run, = queue_runs(exp, root, ["long/seed=1"])
    d.tick()

    def training():
        """the long run training"""
        return (root / "long" / "seed=1" / "metrics.jsonl").exists()
    wait_for(training)
    os.kill(run.read_status()["pid"], signal.SIGKILL)
    time.sleep(0.5)
    assert len(list(res.glob("*.lease"))) == 1 and ledger_lines(res) == []
    d.placer.close()
    assert [x["run"] for x in ledger_lines(res)] == ["long/seed=1"]
    assert not list(res.glob("*.lease"))
