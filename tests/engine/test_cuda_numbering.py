"""Two numberings of the same cards: NVML's (`nanotui gpus`, nvidia-smi, gpustat; what
--gpu N and `[launch] gpus = [N]` take) and torch's cuda:N in a shell with
CUDA_VISIBLE_DEVICES set (what `--gpu cuda:N` takes). Four fake cards, the user's share
"3,2": torch's cuda:0 is card 3. A number outside the share is refused with one line,
nothing queued."""

from __future__ import annotations

import json

import pytest

from engine.launch.gpu import GIB, default_gpu_source
from engine.launch.placement import PlacementError, Policy, choose
from tests.conftest import tiny_experiments, use_fake_cards, write_char_data
from tui.cli import main

UUIDS = ["GPU-aaaa0000-0000", "GPU-bbbb1111-1111", "GPU-cccc2222-2222", "GPU-dddd3333-3333"]
CARDS = {"gpus": [{"index": i, "uuid": u, "name": "NVIDIA H100 80GB HBM3",
                   "memory_total_gb": 80, "memory_used_gb": 1, "utilization": 0}
                  for i, u in enumerate(UUIDS)]}


@pytest.fixture
def four(tmp_path, monkeypatch):
    return use_fake_cards(tmp_path / "cards.json", CARDS, monkeypatch)


def gpus_lines(capsys) -> dict[str, str]:
    assert main(["gpus"]) == 0
    return {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()
            if ln[:1].isdigit()}


@pytest.mark.parametrize("spec", ["3,2", "GPU-dddd3333-3333,GPU-cccc"])
def test_gpus_shows_both_numbers_in_the_order_cuda_gives(four, monkeypatch, capsys, spec):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    lines = gpus_lines(capsys)
    assert lines["3"].split()[1] == "cuda:0" and lines["2"].split()[1] == "cuda:1"
    assert "not ours" in lines["0"] and lines["0"].split()[1] == "—"
    assert main(["gpus", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [g["cuda_index"] for g in doc["gpus"]] == [None, None, 1, 0]


def test_cuda_n_places_on_torchs_card_and_a_bare_n_is_nvmls(four, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    gpus = default_gpu_source().snapshot()
    assert choose(GIB, gpus, [], Policy(), "cuda:0").gpu["uuid"] == UUIDS[3]
    assert choose(GIB, gpus, [], Policy(), "CUDA:1").gpu["uuid"] == UUIDS[2]
    assert choose(GIB, gpus, [], Policy(), "2").gpu["uuid"] == UUIDS[2]
    with pytest.raises(PlacementError, match=r"GPU 0 is not ours.*ours: GPU 2 \(cuda:1\), "
                                             r"GPU 3 \(cuda:0\)"):
        choose(GIB, gpus, [], Policy(), "0")
    with pytest.raises(PlacementError, match="cuda:2: no such GPU in torch's numbering"):
        choose(GIB, gpus, [], Policy(), "cuda:2")


def test_without_a_share_cuda_n_is_the_nvml_order_of_identical_cards(four, capsys):
    lines = gpus_lines(capsys)
    assert [lines[str(i)].split()[1] for i in range(4)] == [f"cuda:{i}" for i in range(4)]


def test_launch_refuses_numbers_outside_the_share_before_queuing(four, monkeypatch, tmp_path,
                                                                capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    runs = tmp_path / "runs"
    exp = tmp_path / "experiments.toml"
    data = write_char_data(tmp_path / "data")
    base = ["--experiments", str(exp), "--runs", str(runs), "launch", "--detach"]
    exp.write_text(tiny_experiments(data, {"s": {"vary": {"n_layer": [1]}}}))
    for gpu, said in (("1", "--gpu 1: GPU 1 is not ours"),
                      ("cuda:2", "--gpu cuda:2: no such GPU"),
                      ("7", "--gpu 7: no such GPU in NVML's numbering")):
        assert main([*base, "--gpu", gpu]) == 2
        err = capsys.readouterr().err
        assert said in err and "ours: GPU 2 (cuda:0), GPU 3 (cuda:1)" in err
        assert len(err.strip().splitlines()) == 1
    exp.write_text(tiny_experiments(data, {"s": {"vary": {"n_layer": [1]}}},
                                    launch={"gpus": [0, "cuda:1"]}))
    assert main(base) == 2
    assert "[launch] gpus = 0: GPU 0 is not ours" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())


def test_launch_gpus_list_may_use_torchs_numbering(four, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    gpus = default_gpu_source().snapshot()
    assert choose(GIB, gpus, [], Policy(gpus=("cuda:1",))).gpu["uuid"] == UUIDS[3]
    with pytest.raises(PlacementError, match=r"\[launch\] gpus = 1: GPU 1 is not ours"):
        choose(GIB, gpus, [], Policy(gpus=(1, "cuda:1")))


def test_a_mig_instance_has_no_cuda_number(tmp_path, monkeypatch, capsys):
    cards = {"gpus": [CARDS["gpus"][0], {
        "index": 1, "uuid": "GPU-eeee", "name": "NVIDIA A100-SXM4-40GB",
        "mig": [{"uuid": "MIG-1111", "name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb",
                 "memory_total_gb": 20}]}, {**CARDS["gpus"][2], "index": 2}]}
    p = tmp_path / "cards.json"
    p.write_text(json.dumps(cards))
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(p))
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lines = gpus_lines(capsys)
    # what CUDA numbers after a MIG card depends on its version: no cuda:N is offered
    assert [lines[k].split()[1] for k in ("0", "1.0", "2")] == ["cuda:0", "—", "—"]
    with pytest.raises(PlacementError, match="no such GPU"):
        choose(GIB, default_gpu_source().snapshot(), [], Policy(), "cuda:1")
    # the instance CUDA_VISIBLE_DEVICES names first is what torch calls cuda:0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1111")
    lines = gpus_lines(capsys)
    assert lines["1.0"].split()[1] == "cuda:0" and "not ours" in lines["0"]


def test_mixed_cards_take_cudas_own_order_or_offer_no_cuda_number(four, monkeypatch, tmp_path):
    """No CUDA_VISIBLE_DEVICES, two models, no PCI_BUS_ID: CUDA's FASTEST_FIRST may
    number the Blackwell first; the order is asked from torch, and when it cannot be,
    cuda:N is not guessed."""
    from engine.launch import gpu
    from engine.launch.gpu import FakeGpuSource, VisibleGpuSource
    mixed = {"gpus": [CARDS["gpus"][0], {**CARDS["gpus"][1],
                                         "name": "NVIDIA RTX PRO 6000 Blackwell"}]}
    p = tmp_path / "mixed.json"
    p.write_text(json.dumps(mixed))
    monkeypatch.setattr(gpu, "probe_cuda_order", lambda env: [UUIDS[1], UUIDS[0]])
    src = VisibleGpuSource(FakeGpuSource.from_file(p), probe_cuda=True, env={})
    assert {u.label: u.cuda_index for u in src.snapshot()} == {"0": 1, "1": 0}
    monkeypatch.setattr(gpu, "probe_cuda_order", lambda env: None)
    src = VisibleGpuSource(FakeGpuSource.from_file(p), probe_cuda=True, env={})
    units = src.snapshot()
    assert [u.cuda_index for u in units] == [None, None] and all(u.ours for u in units)


def test_cuda_n_is_queued_as_the_card_it_names_in_this_shell(four, monkeypatch, tmp_path,
                                                             capsys):
    """The dispatcher that starts the run may have another CUDA_VISIBLE_DEVICES (one
    started earlier from another shell): the run records the uuid, not "cuda:0"."""
    from types import SimpleNamespace

    from engine.launch import dispatcher
    from engine.runs import list_runs
    monkeypatch.setattr(dispatcher, "start_background_dispatcher",
                        lambda *a, **kw: SimpleNamespace(pid=12345))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    runs = tmp_path / "runs"
    exp = tmp_path / "experiments.toml"
    exp.write_text(tiny_experiments(write_char_data(tmp_path / "data"),
                                    {"s": {"vary": {"n_layer": [1]}}}))
    assert main(["--experiments", str(exp), "--runs", str(runs), "launch", "--detach",
                 "--gpu", "cuda:0"]) == 0
    run, = list_runs(runs)
    assert run.read_status()["gpu_request"] == UUIDS[3]
