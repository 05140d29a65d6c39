"""Placement on fake snapshots: pure functions, no processes."""

from __future__ import annotations

import pytest

from engine.launch.gpu import GIB, GpuProcess, GpuSnapshot
from engine.launch.placement import ActiveRun, PlacementError, Policy, choose

NOW = 1000.0


def card(i, used_gb=1, total_gb=48, util=0, procs=()):
    return GpuSnapshot(i, f"GPU-{i}", f"card {i}", int(used_gb * GIB), int(total_gb * GIB),
                       util, 40, 50.0, tuple(GpuProcess(p, GIB) for p in procs))


def test_busy_card_is_avoided():
    gpus = [card(0, used_gb=20, util=95), card(1, used_gb=2, util=5)]
    p = choose(2 * GIB, gpus, [], Policy())
    assert p.gpu["index"] == 1
    assert p.env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "GPU-1",
                     "NANOTUI_GPU": "GPU-1", "NANOTUI_GPU_LABEL": "GPU 1 (card 1)"}


def test_full_card_is_skipped_even_when_idle():
    gpus = [card(0, used_gb=47, util=0), card(1, used_gb=30, util=60)]
    assert choose(4 * GIB, gpus, [], Policy()).gpu["index"] == 1


def test_two_runs_in_the_same_second_do_not_both_take_the_card_with_room_for_one():
    # card 0 has 6 GiB free, card 1 has 3 GiB free; each run needs 4 GiB
    gpus = [card(0, used_gb=42, util=0), card(1, used_gb=45, util=0)]
    pol = Policy(max_runs_per_gpu=4)
    first = choose(4 * GIB, gpus, [], pol, now=NOW)
    assert first.gpu["index"] == 0
    active = [ActiveRun("a", "GPU-0", 4 * GIB, NOW, pid=111)]  # not allocated yet
    assert choose(4 * GIB, gpus, active, pol, now=NOW) is None  # wait, not card 0
    # once it shows among the card's processes its memory is in memory_used: no double count
    gpus2 = [card(0, used_gb=46, util=30, procs=(111,))]
    assert choose(1.5 * GIB, gpus2, active, pol, now=NOW + 1) is not None


def test_promises_expire():
    gpus = [card(0, used_gb=42)]
    active = [ActiveRun("a", "GPU-0", 4 * GIB, NOW, pid=111)]
    pol = Policy(max_runs_per_gpu=4, promise_ttl_s=60)
    assert choose(4 * GIB, gpus, active, pol, now=NOW + 10) is None
    assert choose(4 * GIB, gpus, active, pol, now=NOW + 61) is not None


def test_max_runs_per_gpu():
    gpus = [card(0), card(1)]
    act = [ActiveRun("a", "GPU-0", GIB, NOW, 1), ActiveRun("b", "GPU-1", GIB, NOW, 2)]
    assert choose(GIB, gpus, act, Policy(max_runs_per_gpu=1), now=NOW) is None
    assert choose(GIB, gpus, act, Policy(max_runs_per_gpu=2), now=NOW) is not None


def test_our_runs_spread_over_cards():
    gpus = [card(0), card(1)]
    act = [ActiveRun("a", "GPU-0", GIB, NOW, 1)]
    assert choose(GIB, gpus, act, Policy(max_runs_per_gpu=3), now=NOW).gpu["index"] == 1


def test_allow_list_by_index_and_uuid():
    gpus = [card(0, util=0), card(1, util=90), card(2, util=50)]
    assert choose(GIB, gpus, [], Policy(gpus=(1,))).gpu["index"] == 1
    assert choose(GIB, gpus, [], Policy(gpus=("GPU-2", 1))).gpu["index"] == 2
    assert choose(GIB, gpus, [], Policy(gpus=("1",))).gpu["index"] == 1
    with pytest.raises(PlacementError, match=r"\[launch\] gpus = 7: no such GPU"):
        choose(GIB, gpus, [], Policy(gpus=(7,)))


def test_overrides():
    gpus = [card(0, util=0), card(1, util=90)]
    assert choose(GIB, gpus, [], Policy(), "1").gpu["index"] == 1
    assert choose(GIB, gpus, [], Policy(), "GPU-1").gpu["uuid"] == "GPU-1"
    # an explicit card still respects capacity: wait rather than overfill
    act = [ActiveRun("a", "GPU-1", GIB, NOW, 1)]
    assert choose(GIB, gpus, act, Policy(), "1", now=NOW) is None
    cpu = choose(GIB, gpus, [], Policy(), "cpu")
    assert cpu.device == "cpu" and cpu.gpu is None and cpu.env["CUDA_VISIBLE_DEVICES"] == ""
    with pytest.raises(PlacementError, match="--gpu 5: no such GPU"):
        choose(GIB, gpus, [], Policy(), "5")
    with pytest.raises(PlacementError, match="more than GPU 0 has"):
        choose(100 * GIB, gpus, [], Policy(), "0")


def test_too_big_for_every_card_is_an_error_not_a_wait():
    with pytest.raises(PlacementError, match="more than any allowed GPU"):
        choose(200 * GIB, [card(0), card(1)], [], Policy())


def test_cpu_when_no_gpus_capped():
    assert choose(GIB, [], [], Policy()).device == "cpu"
    act = [ActiveRun("a", None, GIB, NOW, 1)]
    assert choose(GIB, [], act, Policy(max_cpu_runs=1)) is None
    assert choose(GIB, [], act, Policy(max_cpu_runs=2)).device == "cpu"
    # GPU runs do not count against the CPU cap
    assert choose(GIB, [], [ActiveRun("g", "GPU-0", GIB, NOW, 1)], Policy()).device == "cpu"


def test_cpu_runs_never_outnumber_the_cores_nor_their_threads_the_cores(monkeypatch):
    import engine.launch.placement as placement
    monkeypatch.setattr(placement, "affinity_cores", lambda: [0, 1])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    policy = Policy(max_cpu_runs=4)
    one = [ActiveRun("a", None, GIB, NOW, 1)]
    two = one + [ActiveRun("b", None, GIB, NOW, 2)]
    assert choose(GIB, [], one, policy).env["NANOTUI_CPU_SHARE"] == "1"
    assert choose(GIB, [], two, policy) is None  # a third run would share a core
    assert choose(GIB, [], [], Policy(max_cpu_runs=1)).env["NANOTUI_CPU_SHARE"] == "2"
    assert "CPU: at most 2 at a time (max_cpu_runs = 4, capped at the cores)" in \
        placement.describe_policy(policy)
