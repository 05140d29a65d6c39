"""Cards torch cannot use are never trained on by surprise: the cause in one line, the
wheel that would work, placement refusing them, a placed trainer refusing the CPU. NVML
and torch's CUDA build are replaced at their boundary (this machine's torch is CPU-only)."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import TrainConfig
from engine.launch.dispatcher import device_request
from engine.launch.gpu import GIB, FakeGpuSource, GpuSnapshot
from engine.launch.nvml import NvmlGpuSource
from engine.launch.placement import PlacementError, Policy, choose, why_waiting
from engine.model import device as dev
from engine.model.cuda_compat import TorchCuda, arch_supported, unit_problem, wheel_advice
from engine.train import trainer as TR

REPO = Path(__file__).resolve().parents[2]
CU130 = TorchCuda("2.13.0", "13.0", ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120",
                                     "compute_120"))
CU126 = TorchCuda("2.13.0+cu126", "12.6", ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80",
                                           "sm_86", "sm_90"))
CPU = TorchCuda("2.13.0+cpu", None)
H100 = "GPU 0 (NVIDIA H100 80GB HBM3)"


def test_pypi_cuda13_wheel_on_an_r550_driver_names_both_versions_and_the_cu126_wheel():
    why = unit_problem(H100, (9, 0), (12, 4), CU130)
    assert "built for CUDA 13.0, the driver supports CUDA 12.4" in why
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cu126" in why
    assert unit_problem(H100, (9, 0), (13, 0), CU130) is None       # R580: fine
    assert unit_problem(H100, (9, 0), (12, 2), CU126) is None       # minor-version compat


def test_a_v100_is_outside_the_cuda13_arch_list_and_gets_the_cu126_wheel():
    why = unit_problem("GPU 1 (Tesla V100-SXM2-32GB)", (7, 0), (13, 0), CU130)
    assert "compute capability 7.0" in why and "arch list" in why and "cu126" in why
    assert unit_problem("GPU 1 (Tesla V100-SXM2-32GB)", (7, 0), (12, 4), CU126) is None


def test_cpu_only_torch_and_mig_without_instances_are_causes():
    assert "CPU-only build" in unit_problem(H100, (9, 0), (12, 4), CPU)
    assert "MIG mode with no MIG instance" in unit_problem(H100, None, None, CU130, True)


def test_arch_rules_follow_cuda_binary_and_ptx_compatibility():
    assert arch_supported((8, 6), ("sm_80",))          # same major, newer minor: SASS runs
    assert not arch_supported((8, 0), ("sm_86",))
    assert not arch_supported((9, 0), ("sm_80",))      # new major needs PTX
    assert arch_supported((10, 0), ("compute_90",))    # PTX JIT
    assert arch_supported((9, 0), ("sm_90a",)) and not arch_supported((10, 0), ("sm_90a",))


def test_wheel_advice_table():
    assert "default PyPI wheel" in wheel_advice((13, 0), (9, 0))
    assert "cu126" in wheel_advice((12, 4), (8, 9))
    blackwell = wheel_advice((12, 8), (12, 0))             # Blackwell on a CUDA-12 driver:
    assert "R580" in blackwell and "torch==2.11.0" in blackwell   # no torch 2.13 cu128 build
    assert "cu126" not in blackwell                        # cu126 has no sm_100/sm_120 kernels
    assert "cu126" in wheel_advice((13, 0), (7, 0))       # Volta: CUDA 13 has no sm_70
    assert "R525" in wheel_advice((11, 8), (8, 0))


def nvml(cuda=12040, cap=(9, 0), mig=None):
    """A stand-in pynvml: one H100 on a driver supporting `cuda`; mig: None (off) or the
    list of instance handles (empty: MIG on, no instance)."""
    mem = types.SimpleNamespace(total=80 * GIB, used=GIB)

    def mig_handle(h, j):
        raise RuntimeError("NVML_ERROR_NOT_FOUND")
    return types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: "h", nvmlDeviceGetMemoryInfo=lambda h: mem,
        nvmlDeviceGetUUID=lambda h: "GPU-h100", nvmlDeviceGetName=lambda h: "NVIDIA H100 80GB HBM3",
        nvmlSystemGetCudaDriverVersion=lambda: cuda, nvmlSystemGetDriverVersion=lambda: "550.54.15",
        nvmlDeviceGetCudaComputeCapability=lambda h: cap,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=0),
        nvmlDeviceGetPowerUsage=lambda h: 70000, nvmlDeviceGetTemperature=lambda h, k: 30,
        nvmlDeviceGetMigMode=lambda h: (1, 1) if mig is not None else (0, 0),
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 7,
        nvmlDeviceGetMigDeviceHandleByIndex=mig_handle)


def test_nvml_units_carry_the_cause_and_placement_refuses_them(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", nvml())
    [unit] = NvmlGpuSource(torch_facts=CU130).snapshot()
    assert unit.capability == (9, 0) and unit.driver_cuda == (12, 4)
    assert "built for CUDA 13.0, the driver supports CUDA 12.4" in unit.problem
    with pytest.raises(PlacementError, match="the driver supports CUDA 12.4.*--gpu cpu"):
        choose(GIB, [unit], [], Policy())            # never the CPU by surprise
    with pytest.raises(PlacementError, match="CUDA 12.4"):
        choose(GIB, [unit], [], Policy(), request="0")
    assert choose(GIB, [unit], [], Policy(), request="cpu").device == "cpu"  # deliberate
    [fine] = NvmlGpuSource(torch_facts=CU126).snapshot()
    assert fine.problem is None
    p = choose(GIB, [unit, GpuSnapshot(**{**fine.__dict__, "index": 1, "uuid": "GPU-b"})],
               [], Policy())
    assert p.gpu["uuid"] == "GPU-b"                  # the usable one
    assert p.env["NANOTUI_GPU"] == "GPU-b" and "NANOTUI_GPU_SIMULATED" not in p.env


def test_a_mig_card_without_instances_is_one_unplaceable_unit(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", nvml(mig=[]))
    [unit] = NvmlGpuSource(torch_facts=CU126).snapshot()
    assert unit.mig is None and "no MIG instance" in unit.problem
    with pytest.raises(PlacementError, match="no MIG instance"):
        choose(GIB, [unit], [], Policy())


def test_fake_mig_mode_without_instances_and_fake_cards_are_simulated(tmp_path):
    f = tmp_path / "cards.json"
    f.write_text('{"gpus": [{"index": 0, "uuid": "GPU-a", "name": "NVIDIA A100", '
                 '"memory_total_gb": 40, "mig_mode": true}, {"index": 1, "uuid": "GPU-b", '
                 '"name": "NVIDIA L4", "memory_total_gb": 24}]}')
    a, b = FakeGpuSource.from_file(f).snapshot()
    assert "no MIG instance" in a.problem and b.problem is None and b.simulated
    p = choose(GIB, [a, b], [], Policy())
    assert p.gpu == {"index": 1, "uuid": "GPU-b", "name": "NVIDIA L4", "simulated": True}
    assert p.env["NANOTUI_GPU_SIMULATED"] == "GPU-b" and "NANOTUI_GPU" not in p.env
    assert p.describe() == "GPU 1 (NVIDIA L4, simulated: trains on the CPU)"


def test_a_trainer_placed_on_a_real_card_never_falls_back_to_the_cpu(monkeypatch):
    env = {"NANOTUI_GPU": "GPU-h100", "NANOTUI_GPU_LABEL": H100,
           "NANOTUI_GPU_CAPABILITY": "9.0", "NANOTUI_DRIVER_CUDA": "12.4"}
    with pytest.raises(ValueError, match=r"CPU-only build and cannot use GPU 0 \(NVIDIA H100"):
        dev.resolve_placed_device("auto", env)   # this machine's torch is CPU-only
    with pytest.raises(ValueError, match="device = 'cpu' but the run was placed on GPU 0"):
        dev.resolve_placed_device("cpu", env)
    assert dev.resolve_placed_device("auto", {}) == torch.device("cpu")
    sim = {"NANOTUI_GPU_SIMULATED": "GPU-fake", "NANOTUI_GPU_LABEL": "GPU 0 (fake)"}
    assert dev.resolve_placed_device("auto", sim) == torch.device("cpu")
    assert dev.simulated_gpu(sim) == "GPU 0 (fake)"
    # a CUDA torch whose arch list lacks the card: refused too
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_75", "sm_80", "sm_90"])
    with pytest.raises(ValueError, match="compute capability 7.0"):
        dev.resolve_placed_device("auto", env)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert dev.resolve_placed_device("cuda", env) == torch.device("cuda", 0)


def test_config_device_maps_to_a_placement_request():
    assert device_request("cpu", "auto") == "cpu" and device_request("cpu", "0") == "cpu"
    assert device_request("auto", "1") == "1" and device_request("cuda:0", "auto") == "auto"
    with pytest.raises(PlacementError, match="device = 'cuda:1'.*--gpu cuda:1"):
        device_request("cuda:1", "auto")


def test_a_run_that_does_not_fit_now_says_why_it_waits():
    cards = [GpuSnapshot(0, "GPU-a", "A", int(20 * GIB), int(24 * GIB)),
             GpuSnapshot(1, "GPU-b", "B", int(17.7 * GIB), int(24 * GIB))]
    need = int(9.1 * GIB)
    assert choose(need, cards, [], Policy()) is None
    assert why_waiting(need, cards, [], Policy()) == "waiting: needs 9.1 GiB, GPU 1 has 6.3 GiB free"


def test_peak_table_names_and_mig_slices():
    bf16 = lambda n: dev.peak_flops(n, "bfloat16")  # noqa: E731
    assert bf16("NVIDIA H200 NVL") < bf16("NVIDIA H200")
    assert bf16("NVIDIA H800 PCIe") < bf16("NVIDIA H800")
    assert bf16("NVIDIA RTX A4000") != bf16("NVIDIA A40")
    assert bf16("NVIDIA A100-SXM4-40GB") == 312e12 and bf16("NVIDIA A10") == 125e12
    assert bf16("NVIDIA A100-SXM4-40GB MIG 1g.5gb") == pytest.approx(312e12 / 7)
    assert bf16("NVIDIA A30 MIG 2g.12gb") == pytest.approx(165e12 / 2)
    assert bf16("NVIDIA H100 MIG") is None           # a slice of unknown size: n/a
    assert dev.mfu(1e9, 1e4, "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bfloat16") == \
        pytest.approx(1e13 / (989.4e12 / 7))


def test_batches_are_contiguous_so_pinned_copies_are_one_memcpy():
    data = np.arange(10_000, dtype=np.uint16)
    cfg = TrainConfig(block_size=32, batch_size=4)
    x, y = TR.get_batch(data, cfg, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1])


def _trainer(tmp_path):
    data = (np.arange(5000) % 20).astype(np.uint16)
    cfg = TrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4,
                      vocab_size=20, dtype="float32", cpu_attention="sdpa", compile=False)
    return TR.Trainer(cfg, data, data, 20, torch.device("cpu"), torch.float32,
                      log=lambda s: None)


def test_compile_errors_are_caught_on_the_first_compiled_call_only(tmp_path):
    t = _trainer(tmp_path)
    calls = []

    def compiled(fail_at):
        def run(*a, **k):
            calls.append(1)
            if len(calls) == fail_at:
                raise RuntimeError("boom")
            return t.model(*a, **k)
        return run
    t.compiled, t.compile_status = compiled(fail_at=1), "on"     # fails compiling
    t.train_step()
    assert t.compile_status == "failed" and t.compiled is None     # eager from here on
    t2 = _trainer(tmp_path)
    calls.clear()
    t2.compiled, t2.compile_status = compiled(fail_at=2), "on"    # a later error is the run's
    t2.train_step()
    with pytest.raises(RuntimeError, match="boom"):
        t2.train_step()
    assert t2.compile_status == "on"
    t3 = _trainer(tmp_path)

    def oom(*a, **k):
        raise dev.OUT_OF_MEMORY("CUDA out of memory")
    t3.compiled, t3.compile_status = oom, "on"                     # OOM is never a compile failure
    with pytest.raises(dev.OUT_OF_MEMORY):
        t3.train_step()
    assert t3.compile_status == "on"


# torch APIs the code uses, with the release that added them
VERSIONED_APIS = {r"torch\.OutOfMemoryError": (2, 5), r"torch\.amp\.GradScaler": (2, 3),
                  r"torch\.nn\.attention": (2, 3), r"torch\.compiler\.": (2, 1),
                  r"torch\.serialization\.add_safe_globals": (2, 4)}


def test_the_torch_floor_in_pyproject_covers_every_api_the_code_uses():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(tuple(int(x) for x in re.search(r"torch>=(\d+)\.(\d+)", d).groups())
                 for d in deps if d.startswith("torch"))
    code = "\n".join(p.read_text() for d in ("engine", "tui") for p in (REPO / d).rglob("*.py"))
    for api, since in VERSIONED_APIS.items():
        if re.search(api, code):
            assert floor >= since, f"{api} needs torch >= {since}, pyproject allows {floor}"


def test_an_nvml_init_failure_is_retried_not_cached_forever(monkeypatch):
    import engine.launch.nvml as gpu_mod
    nv = nvml()
    tries = []

    def init():
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("NVML_ERROR_DRIVER_NOT_LOADED")  # e.g. the driver reloading
    nv.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    now = [100.0]
    monkeypatch.setattr(gpu_mod.time, "monotonic", lambda: now[0])
    src = NvmlGpuSource(torch_facts=CU126)
    assert src.snapshot() == []
    now[0] += 5
    assert src.snapshot() == [] and len(tries) == 1      # not hammered at every poll
    now[0] += gpu_mod.NVML_RETRY_S
    assert [u.name for u in src.snapshot()] == ["NVIDIA H100 80GB HBM3"]


def test_out_of_memory_names_the_unit_and_whether_others_hold_the_memory(monkeypatch):
    from engine.train.failures import oom_reason
    monkeypatch.setenv("NANOTUI_GPU", "GPU-h100")
    monkeypatch.setenv("NANOTUI_GPU_LABEL", "GPU 1 (NVIDIA H100 80GB HBM3)")
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 10 * GIB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (GIB, 80 * GIB))
    why = oom_reason(torch.device("cuda", 0))
    assert why.startswith("out of memory on GPU 1 (NVIDIA H100 80GB HBM3): this run held 10.0 GiB")
    assert "other processes about 68.4 GiB" in why and "another card" in why
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 78 * GIB)
    why = oom_reason(torch.device("cuda", 0))
    assert "other processes" not in why and "smaller batch_size" in why
    monkeypatch.delenv("NANOTUI_GPU")
    assert "out of memory on cpu" in oom_reason(torch.device("cpu"))


def test_eval_samples_are_drawn_without_tf32(monkeypatch):
    seen = []
    torch.backends.cuda.matmul.allow_tf32 = True      # as training sets it on a card
    try:
        with dev.no_tf32():
            seen.append(torch.backends.cuda.matmul.allow_tf32)
        assert seen == [False] and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
