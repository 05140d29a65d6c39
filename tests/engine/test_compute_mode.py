"""Cards in an exclusive compute mode (`nvidia-smi -c EXCLUSIVE_PROCESS`: one process
holds a context at a time; PROHIBITED: none may): read from NVML (the stand-in pynvml
answers as such a card) or a fake card's "compute_mode"; never a second run on an
exclusive card that has a process, never a run on a prohibited one (the reason shown),
the mode shown by `nanotui gpus` and `doctor`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from engine.launch.gpu import GIB, GpuProcess, GpuSnapshot, default_gpu_source
from engine.launch.nvml import NvmlGpuSource
from engine.launch.placement import ActiveRun, PlacementError, Policy, choose, why_waiting
from engine.model.cuda_compat import TorchCuda
from tui.cli import main

STANDIN = Path(__file__).parents[1] / "fixtures" / "nvml_h100_r550" / "pynvml.py"
CARDS = {"gpus": [
    {"index": 0, "uuid": "GPU-excl", "name": "NVIDIA A100 80GB PCIe", "memory_total_gb": 80,
     "memory_used_gb": 3, "utilization": 5, "compute_mode": "exclusive_process",
     "processes": [{"pid": 4242, "used_memory": 3 * GIB}]},
    {"index": 1, "uuid": "GPU-proh", "name": "NVIDIA A100 80GB PCIe", "memory_total_gb": 80,
     "memory_used_gb": 0, "compute_mode": "PROHIBITED"},
    {"index": 2, "uuid": "GPU-dflt", "name": "NVIDIA A100 80GB PCIe", "memory_total_gb": 80,
     "memory_used_gb": 60, "utilization": 95}]}


@pytest.fixture
def cards(tmp_path, monkeypatch):
    p = tmp_path / "cards.json"
    p.write_text(json.dumps(CARDS))
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(p))
    for k in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(k, raising=False)
    return p


def unit(mode, procs=()):
    return GpuSnapshot(0, "GPU-0", "NVIDIA H100 80GB HBM3", GIB, 80 * GIB, 0,
                       processes=tuple(GpuProcess(p, GIB) for p in procs), compute_mode=mode)


def test_the_busy_card_is_chosen_over_an_exclusive_held_one_and_a_prohibited_one(cards):
    p = choose(4 * GIB, default_gpu_source().snapshot(), [], Policy())
    assert p.gpu["uuid"] == "GPU-dflt"   # 95 % busy, but the only one a run may use


def test_gpus_shows_the_mode_and_why_prohibited_is_never_used(cards, capsys):
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    line0 = next(ln for ln in out.splitlines() if ln.startswith("0 "))
    assert line0.endswith("GPU-excl  exclusive-process")
    assert "unusable: GPU 1 (NVIDIA A100 80GB PCIe) is in compute mode PROHIBITED" in out
    assert main(["gpus", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [g["compute_mode"] for g in doc["gpus"]] == ["exclusive_process", "prohibited",
                                                        "default"]


@pytest.mark.parametrize("per_card", [4, "auto"])
def test_never_a_second_run_on_an_idle_exclusive_card(per_card):
    card = unit("exclusive_process")
    first = choose(GIB, [card], [], Policy(max_runs_per_gpu=per_card), now=10.0)
    assert first.gpu["uuid"] == "GPU-0"
    ours = [ActiveRun("a", "GPU-0", GIB, 10.0, pid=77)]   # launched, not in NVML yet
    assert choose(GIB, [card], ours, Policy(max_runs_per_gpu=per_card), now=11.0) is None
    shown = unit("exclusive_process", procs=[77])          # now it is
    assert choose(GIB, [shown], ours, Policy(max_runs_per_gpu=per_card), now=12.0) is None
    assert why_waiting(GIB, [shown], ours, Policy(max_runs_per_gpu=per_card), now=12.0) == (
        "waiting: GPU 0 is in exclusive-process mode and held by a process")
    # another user's process, or another dispatcher's reservation, holds it the same way
    assert choose(GIB, [unit("exclusive_process", procs=[999])], [], Policy()) is None
    other = [ActiveRun("x:y", "GPU-0", GIB, 10.0, None, holder="uid 1001's run")]
    assert choose(GIB, [card], [], Policy(), now=11.0, others=other) is None
    # the same card in the default mode packs as before
    assert choose(GIB, [unit("default", procs=[999])], [], Policy()) is not None


def test_only_prohibited_cards_fail_with_the_reason(cards, monkeypatch):
    gpus = default_gpu_source().snapshot()
    with pytest.raises(PlacementError, match="compute mode PROHIBITED"):
        choose(GIB, gpus, [], Policy(), "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(PlacementError, match="compute mode PROHIBITED"):
        choose(GIB, default_gpu_source().snapshot(), [], Policy())


def standin(monkeypatch, mode, pids=""):
    spec = importlib.util.spec_from_file_location("pynvml", STANDIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    monkeypatch.setenv("NVML_STANDIN_COMPUTE_MODE", str(mode))
    monkeypatch.setenv("NVML_STANDIN_PIDS", pids)
    # a torch that could use the card, so only the compute mode is in question
    return NvmlGpuSource(torch_facts=TorchCuda("2.6.0+cu124", "12.4", ("sm_90",)))


def test_nvml_compute_modes_are_read(monkeypatch):
    (g,) = standin(monkeypatch, 3, "4242").snapshot()
    assert g.compute_mode == "exclusive_process" and g.exclusive and g.problem is None
    assert choose(GIB, [g], [], Policy()) is None
    (g,) = standin(monkeypatch, 2).snapshot()
    assert "compute mode PROHIBITED" in g.problem and "nvidia-smi -i 0 -c DEFAULT" in g.problem
    (g,) = standin(monkeypatch, 0).snapshot()
    assert g.compute_mode == "default" and not g.exclusive


def test_doctor_names_the_mode(cards, capsys):
    main(["doctor", "--no-steps"])
    out = capsys.readouterr().out
    assert "compute mode EXCLUSIVE_PROCESS: one process at a time" in out
    assert "never placed on: GPU 1 (NVIDIA A100 80GB PCIe) is in compute mode PROHIBITED" in out
