"""Our share of the machine: an inherited CUDA_VISIBLE_DEVICES (indices, GPU and MIG
uuids) or Slurm's allocation limits placement; MIG instances are units with their own
memory; `nanotui gpus` marks what is not ours. Fake cards only."""

from __future__ import annotations

import json

import pytest

from engine.launch.gpu import GIB, default_gpu_source
from engine.launch.placement import PlacementError, Policy, choose
from engine.launch.visible import parse_cuda_visible, share_from_env
from tui.cli import main
from tests.conftest import use_fake_cards

CARDS = {"gpus": [
    {"index": 0, "uuid": "GPU-aaaa0000-0000", "name": "NVIDIA RTX 6000 Ada Generation",
     "memory_total_gb": 48, "memory_used_gb": 1, "utilization": 0},
    {"index": 1, "uuid": "GPU-bbbb1111-1111", "name": "NVIDIA RTX PRO 6000 Blackwell",
     "memory_total_gb": 96, "memory_used_gb": 1, "utilization": 0},
    {"index": 2, "uuid": "GPU-cccc2222-2222", "name": "NVIDIA A100-SXM4-40GB",
     "mig": [
         {"uuid": "MIG-11111111-aaaa", "name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
          "memory_total_gb": 5, "memory_used_gb": 0},
         {"uuid": "MIG-22222222-bbbb", "name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb",
          "memory_total_gb": 20, "memory_used_gb": 0}]},
]}


@pytest.fixture
def cards(tmp_path, monkeypatch):
    return use_fake_cards(tmp_path / "cards.json", CARDS, monkeypatch)


SPREAD = Policy(max_runs_per_gpu=9)


def place_many(need, n=6, policy=SPREAD):
    """Where n runs in a row go (each one's promise counted for the next)."""
    from engine.launch.placement import ActiveRun
    gpus, active, out = default_gpu_source().snapshot(), [], []
    for i in range(n):
        p = choose(need, gpus, active, policy, now=1.0)
        if p is None:
            break
        out.append(p)
        active.append(ActiveRun(f"r{i}", p.gpu["uuid"], need, 1.0, pid=None))
    return out


def test_mig_instances_are_units_with_their_own_memory(cards, monkeypatch):
    units = default_gpu_source().snapshot()
    assert [u.label for u in units] == ["0", "1", "2.0", "2.1"]
    mig = {u.label: u for u in units}
    assert mig["2.1"].memory_total == 20 * GIB and mig["2.1"].parent_uuid == "GPU-cccc2222-2222"
    # only the two MIG slices are ours: an 8 GiB run never goes to the 5 GiB one, and
    # the 20 GiB one holds two 8 GiB promises, not three
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-11111111-aaaa,MIG-22222222-bbbb")
    big = place_many(8 * GIB)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in big] == ["MIG-22222222-bbbb"] * 2
    assert big[0].gpu["mig"] == 1 and big[0].gpu["parent_uuid"] == "GPU-cccc2222-2222"
    assert big[0].describe() == ("GPU 2.1 (NVIDIA A100-SXM4-40GB MIG 3g.20gb, simulated: "
                                 "trains on the CPU)")  # the log line
    small = place_many(4 * GIB, n=9)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in small].count("MIG-11111111-aaaa") == 1
    assert len(small) == 6  # one in 5 GiB, five in 20 GiB
    with pytest.raises(PlacementError, match="more than any allowed"):
        choose(30 * GIB, default_gpu_source().snapshot(), [], Policy())


@pytest.mark.parametrize("spec, ours", [
    ("1", {"GPU-bbbb1111-1111"}),
    ("GPU-bbbb1111-1111", {"GPU-bbbb1111-1111"}),
    ("GPU-bbbb", {"GPU-bbbb1111-1111"}),                       # a unique prefix, as CUDA
    ("0,GPU-bbbb1111-1111", {"GPU-aaaa0000-0000", "GPU-bbbb1111-1111"}),
    ("1,7,0", {"GPU-bbbb1111-1111"}),                          # CUDA stops at the bad entry
    ("MIG-22222222-bbbb", {"MIG-22222222-bbbb"}),
    ("2", {"MIG-11111111-aaaa", "MIG-22222222-bbbb"}),          # a MIG card: all its slices
])
def test_a_run_never_lands_outside_an_inherited_cuda_visible_devices(cards, monkeypatch,
                                                                     spec, ours):
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    placed = place_many(1 * GIB, n=8)
    assert placed and {p.env["CUDA_VISIBLE_DEVICES"] for p in placed} <= ours
    assert {p.env["CUDA_VISIBLE_DEVICES"] for p in placed} == ours  # and uses all of them
    with pytest.raises(PlacementError, match="not ours"):
        outside = next(u for u in default_gpu_source().snapshot() if u.uuid not in ours)
        choose(GIB, default_gpu_source().snapshot(), [], Policy(), request=outside.uuid)


@pytest.mark.parametrize("spec", ["", "-1", "NoDevFiles"])
def test_hidden_cards_mean_the_cpu(cards, monkeypatch, spec):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    assert choose(GIB, default_gpu_source().snapshot(), [], Policy()).device == "cpu"


def test_slurm_allocation_without_cuda_visible_devices(cards, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_GPUS", "0-1")
    monkeypatch.setenv("SLURM_STEP_GPUS", "1")
    placed = place_many(GIB, n=4)
    assert {p.env["CUDA_VISIBLE_DEVICES"] for p in placed} == {"GPU-bbbb1111-1111"}
    monkeypatch.delenv("SLURM_STEP_GPUS")
    placed = place_many(GIB, n=4)
    assert {p.gpu["index"] for p in placed} == {0, 1}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what Slurm sets in the step wins
    assert {p.gpu["index"] for p in place_many(GIB, n=4)} == {0}


def test_indices_follow_cuda_order_when_given(cards):
    units = default_gpu_source().snapshot()
    fastest_first = ["GPU-bbbb1111-1111", "GPU-aaaa0000-0000", "GPU-cccc2222-2222"]
    assert parse_cuda_visible("0", units, fastest_first) == {"GPU-bbbb1111-1111"}
    share = share_from_env({"CUDA_VISIBLE_DEVICES": "0"}, units)
    assert share.allowed == {"GPU-aaaa0000-0000"} and "CUDA_VISIBLE_DEVICES" in share.describe()


def test_gpus_command_marks_cards_that_are_not_ours(cards, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb1111-1111")
    assert main(["gpus"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()
             if ln[:1].isdigit()}
    assert "not ours" in lines["0"] and "not ours" not in lines["1"]
    assert "not ours" in lines["2.0"] and "MIG 1g.5gb" in lines["2.0"]
    assert main(["gpus", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [g["ours"] for g in doc["gpus"]] == [False, True, False, False]
    assert doc["share"]["source"] == "CUDA_VISIBLE_DEVICES"


def test_cuda_order_is_asked_once_where_indices_are_ambiguous(cards, monkeypatch):
    """Mixed cards, an index, no CUDA_DEVICE_ORDER: CUDA's FASTEST_FIRST may put the
    Blackwell first; the real order is asked (once) and index 0 means that card."""
    from engine.launch import gpu
    from engine.launch.gpu import FakeGpuSource, VisibleGpuSource
    asked = []
    order = ["GPU-bbbb1111-1111", "GPU-aaaa0000-0000", "GPU-cccc2222-2222"]
    monkeypatch.setattr(gpu, "probe_cuda_order", lambda env: asked.append(1) or order)
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    src = VisibleGpuSource(FakeGpuSource.from_file(cards), probe_cuda=True, env=env)
    for _ in range(3):
        ours = [u.uuid for u in src.snapshot() if u.ours]
    assert ours == ["GPU-bbbb1111-1111"] and asked == [1] and src.share.note is None
    # the order cannot be asked: NVML's is used, and the share says so
    monkeypatch.setattr(gpu, "probe_cuda_order", lambda env: None)
    src = VisibleGpuSource(FakeGpuSource.from_file(cards), probe_cuda=True, env=env)
    assert [u.uuid for u in src.snapshot() if u.ours] == ["GPU-aaaa0000-0000"]
    assert "prefer GPU-<uuid>" in src.share.note
    # uuids, or PCI_BUS_ID order, need no asking
    for env in ({"CUDA_VISIBLE_DEVICES": "GPU-aaaa0000-0000"},
                {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}):
        src = VisibleGpuSource(FakeGpuSource.from_file(cards), probe_cuda=True, env=env)
        assert [u.uuid for u in src.snapshot() if u.ours] == ["GPU-aaaa0000-0000"]
        assert src.share.note is None


def test_launch_refuses_a_card_that_is_not_ours_before_queuing(cards, monkeypatch, tmp_path,
                                                               capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    runs = tmp_path / "runs"
    assert main(["--experiments", str(tmp_path / "none.toml"), "--runs", str(runs),
                 "launch", "--gpu", "0"]) == 2
    err = capsys.readouterr().err
    assert "GPU 0 is not ours" in err and "ours: GPU 1 (cuda:0)" in err
    assert not runs.exists() or not any(runs.iterdir())


def test_an_order_that_names_other_devices_is_not_used(cards, monkeypatch):
    from engine.launch import gpu
    from engine.launch.gpu import FakeGpuSource, VisibleGpuSource
    monkeypatch.setattr(gpu, "probe_cuda_order", lambda env: ["GPU-somewhere-else"])
    src = VisibleGpuSource(FakeGpuSource.from_file(cards), probe_cuda=True,
                           env={"CUDA_VISIBLE_DEVICES": "0"})
    assert [u.uuid for u in src.snapshot() if u.ours] == ["GPU-aaaa0000-0000"]
    assert src.share.note


def test_a_mig_unit_can_be_asked_for_by_label_or_uuid(cards):
    units = default_gpu_source().snapshot()
    for ref in ("2.1", "MIG-22222222-bbbb"):
        p = choose(GIB, units, [], Policy(), request=ref)
        assert p.env["CUDA_VISIBLE_DEVICES"] == "MIG-22222222-bbbb"
    with pytest.raises(PlacementError, match="more than GPU 2.0 has"):
        choose(8 * GIB, units, [], Policy(), request="2.0")  # the 5 GiB slice


def test_cuda_order_is_kept_per_boot_so_each_start_does_not_probe_torch(cards, tmp_path):
    """On a box of mixed cards every `nanotui gpus`, TUI and dispatcher start would ask
    torch in a child (seconds): the answer is kept in the user's cache for this boot, the
    cards and the driver; other cards mean a new probe."""
    from engine.launch.gpu import FakeGpuSource
    from engine.launch.visible import cached_cuda_order
    units = FakeGpuSource.from_file(cards).snapshot()
    order = ["GPU-bbbb1111-1111", "GPU-aaaa0000-0000", "GPU-cccc2222-2222"]
    asked = []
    cache = tmp_path / "cache" / "cuda-order.json"

    def probe(env):
        asked.append(1)
        return order
    for _ in range(3):
        assert cached_cuda_order({}, units, probe, cache) == order
    assert asked == [1] and cache.is_file()
    # a different set of cards is never answered from the cache
    assert cached_cuda_order({}, units[:2], lambda env: asked.append(2) or order[1::-1],
                             cache) == order[1::-1]
    assert asked == [1, 2]
    # a failed probe is not kept: the next start asks again
    cache.unlink()
    assert cached_cuda_order({}, units, lambda env: None, cache) is None
    assert not cache.exists()
    # a damaged cache file is a miss, not an error
    cache.write_text("{not json")
    assert cached_cuda_order({}, units, probe, cache) == order and asked == [1, 2, 1]
