"""max_runs_per_gpu = "auto": a second run joins a card only while the card's measured
utilization over the last polls stays under the threshold (and its memory fits)."""

from __future__ import annotations

import pytest

from engine.experiments import ExperimentsError, load_experiments
from engine.launch.gpu import GIB, GpuSnapshot
from engine.launch.placement import (
    ActiveRun,
    Policy,
    UtilHistory,
    choose,
    describe_policy,
)
from tests.engine.test_reservations import (RecordingExecutor, data_dir,  # noqa: F401
                                            experiments_text)
from tui.cli import main

AUTO = Policy(max_runs_per_gpu="auto")
T0 = 1000.0  # our first run on card 0 began training then (past start-up and compile)


def card(util, used_gb=4, total_gb=48):
    return GpuSnapshot(0, "GPU-0", "NVIDIA L40S", int(used_gb * GIB), int(total_gb * GIB), util)


def polls(utils, start=T0 + AUTO.pack_settle_s, every=0.5):
    """A history with one poll per utilization value, the first at `start`."""
    h = UtilHistory()
    for i, u in enumerate(utils):
        h.add([card(u)], start + i * every)
    return h


ONE_OF_OURS = [ActiveRun("a", "GPU-0", 2 * GIB, T0 - 40, pid=111, warm_at=T0)]


def second(history, cards=None, policy=AUTO, now=T0 + 200, ours=ONE_OF_OURS):
    return choose(2 * GIB, cards or [card(history.since("GPU-0", 0)[-1])], ours,
                  policy, now=now, history=history)


def test_a_second_run_joins_only_under_the_threshold():
    assert second(polls([20, 25, 30, 22, 18])) is not None
    assert second(polls([20, 25, 95, 22, 18])) is None           # one busy poll is enough
    assert second(polls([20, 60, 30, 22, 18])) is None           # the threshold is exclusive
    assert second(polls([90, 90, 90, 20, 21, 22, 23, 24])) is not None  # the last 5 count


def test_not_while_a_run_there_is_still_compiling_nor_with_too_few_polls():
    from dataclasses import replace
    compiling = [replace(ONE_OF_OURS[0], warm_at=None)]  # the card looks idle, but
    assert second(polls([5] * 10), ours=compiling) is None
    assert second(polls([5] * 5, start=T0 - 20)) is None  # polls from before it trained
    assert second(polls([5, 5, 5, 5])) is None    # four polls, five needed


def test_memory_still_decides_and_the_first_run_needs_no_history():
    full = card(10, used_gb=47)
    assert second(polls([10] * 5), cards=[full]) is None
    assert choose(2 * GIB, [card(99)], [], AUTO, now=T0) is not None  # an empty card


def test_the_default_never_packs_and_a_number_ignores_utilization():
    quiet = polls([1] * 10)
    assert second(quiet, policy=Policy()) is None
    assert second(polls([99] * 10), policy=Policy(max_runs_per_gpu=2)) is not None


def test_auto_in_experiments_and_shown_in_the_plan(tmp_path, capsys):
    exp = tmp_path / "experiments.toml"
    exp.write_text('[defaults]\ndataset = "shakespeare"\nn_layer = 1\nn_head = 2\n'
                   'n_embd = 32\n[launch]\nmax_runs_per_gpu = "auto"\n'
                   '[sweep.s]\nvary = { n_layer = [1, 2] }\n')
    assert load_experiments(exp).launch.max_runs_per_gpu == "auto"
    assert main(["--experiments", str(exp), "plan", "--device", "gpu"]) == 0
    out = capsys.readouterr().out
    assert 'Placement: packing (max_runs_per_gpu = "auto")' in out
    assert f"under {AUTO.pack_util_below}% utilization" in out
    assert "at most 1 run of ours per card" in describe_policy(Policy())
    exp.write_text(exp.read_text().replace('"auto"', '"pack"'))
    with pytest.raises(ExperimentsError, match='at least 1 or "auto"'):
        load_experiments(exp)


def test_the_dispatcher_packs_by_the_load_it_polled(tmp_path, data_dir):  # noqa: F811
    from dataclasses import replace

    from engine.launch.dispatcher import Dispatcher
    from engine.launch.gpu import FakeGpuSource
    from engine.launch.queue import queue_runs
    exp = tmp_path / "experiments.toml"
    exp.write_text(experiments_text(data_dir, "p", per_gpu="auto"))
    root = tmp_path / "runs"
    queue_runs(exp, root)
    source, ex = FakeGpuSource([card(0)]), RecordingExecutor()
    d = Dispatcher(root, exp, executor=ex, gpu_source=source, log=lambda m: None)
    d.policy = replace(d.policy, pack_settle_s=0.0, pack_polls=3)
    assert d.try_lock()
    try:
        (first,) = d.tick()                # an empty card takes the first run at once
        for _ in range(4):
            assert d.tick() == []          # quiet, but the run has not trained yet
        first.update_status(iter=10)       # now it trains
        source.set([card(85)])
        for _ in range(4):
            assert d.tick() == []          # busy: the others wait
        source.set([card(30)])
        assert d.tick() == [] and d.tick() == []   # two quiet polls after busy ones
        (second_run,) = d.tick()           # the third: one more joins
        assert d.tick() == []              # and it must train before the next
        second_run.update_status(iter=3)
        assert d.tick() == [] and d.tick() == []
        assert len(d.tick()) == 1
    finally:
        d.unlock()
    assert ex.started == ["GPU-0"] * 3
