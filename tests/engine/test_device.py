import subprocess
import statistics
import sys
from pathlib import Path

import pytest
import torch

from engine.model import device as dev


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("cuda", 0)


def test_explicit_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        dev.resolve_device("cuda:1")
    assert dev.resolve_device("cpu") == torch.device("cpu")


def test_auto_dtype(monkeypatch):
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda", 0), torch.device("mps")
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    assert dev.resolve_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: False)
    assert dev.resolve_dtype("auto", cpu) == torch.float32
    # real torch says bf16 is "supported" on a T4 or V100 too (emulated, no tensor
    # cores): only the capability decides
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for cap, want in (((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                      ((7, 5), torch.float16), ((7, 0), torch.float16)):  # H100, A100, T4, V100
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=cap: c)
        assert dev.resolve_dtype("auto", cuda) == want, cap
    assert dev.resolve_dtype("auto", mps) == torch.float32
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16),
                     ("float16", torch.float16)):
        assert dev.resolve_dtype(name, cpu) == dt            # the config can force any


def test_this_machine_reads_its_bf16_flags_from_cpuinfo():
    flags = open("/proc/cpuinfo").read()
    assert dev.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_grad_scaler_only_for_fp16_on_cuda():
    assert dev.needs_grad_scaler(torch.device("cuda", 0), torch.float16)
    assert not dev.needs_grad_scaler(torch.device("cuda", 0), torch.bfloat16)
    assert not dev.needs_grad_scaler(torch.device("cpu"), torch.float16)


def test_autocast_context_runs_matmuls_in_the_chosen_dtype():
    a = torch.randn(4, 4)
    with dev.autocast_context(torch.device("cpu"), torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with dev.autocast_context(torch.device("cpu"), torch.float32):
        assert (a @ a).dtype == torch.float32


@pytest.mark.parametrize("name,dtype,peak", [
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.4e12),
    ("NVIDIA H100 PCIe", torch.bfloat16, 756e12),
    ("NVIDIA H200", torch.bfloat16, 989.4e12),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312e12),   # not the A10 entry
    ("NVIDIA A10", torch.bfloat16, 125e12),
    ("NVIDIA RTX 6000 Ada Generation", torch.bfloat16, 364.2e12),
    ("NVIDIA RTX A6000", torch.float16, 154.8e12),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", torch.bfloat16, 503.8e12),
    ("NVIDIA GeForce RTX 4090", torch.bfloat16, 165.2e12),
    ("NVIDIA GeForce RTX 5090", "bfloat16", 209.5e12),
    ("NVIDIA L40S", torch.float32, 91.6e12),
    ("Tesla T4", torch.float16, 65e12),
    ("Tesla T4", torch.bfloat16, None),                   # no bf16 tensor cores
    ("AMD EPYC", torch.bfloat16, None),                    # CPUs: unknown, no MFU
])
def test_peak_flops_table(name, dtype, peak):
    assert dev.peak_flops(name, dtype) == peak


def test_mfu_is_achieved_over_peak_or_none():
    assert dev.mfu(1e9, 312e3 / 1000, "NVIDIA A100-SXM4-40GB", torch.bfloat16) == pytest.approx(1e-3)
    assert dev.mfu(1e9, 1e3, "AMD EPYC", torch.float32) is None


def test_device_name_of_cpu_is_the_model_name():
    assert dev.device_name(torch.device("cpu"))


FAULTS_SCRIPT = """
import resource, sys, torch
from engine.model import device
from engine.model.gpt import GPT, GPTConfig
if sys.argv[1] == "keep":
    assert device.keep_freed_memory()
torch.manual_seed(0)
model = GPT(GPTConfig(block_size=256, vocab_size=65, n_layer=2, n_head=8, n_embd=256))
x = torch.randint(65, (12, 256))
def step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _, loss = model(x, x)
    loss.backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[step() for _ in range(6)])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc settings: Linux only")
def test_keep_freed_memory_stops_page_faults_after_the_first_steps():
    """Training steps after warm-up reuse the memory of earlier ones instead of having
    the kernel fault their activations in again (each variant in a fresh process: the
    setting is process-wide)."""
    def faults(mode: str) -> list[int]:
        out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parents[2])
        return [int(n) for n in out.stdout.split()]

    keep = faults("keep")
    # steady state: most steps fault nothing (a step now and then faults a few MB in, with
    # or without the fused attention kernel). glibc's defaults are not compared here: its
    # adaptive mmap threshold makes them anywhere from ~1k to ~50k faults per step from
    # run to run; test_keep_freed_memory_keeps_a_freed_block checks the setting itself.
    assert statistics.median(keep[2:]) < keep[0] // 20


MALLOC_SCRIPT = """
import ctypes, resource, sys
from engine.model import device
if sys.argv[1] == "keep":
    assert device.keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def touch(n=64 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[touch() for _ in range(3)])
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc settings: Linux only")
def test_keep_freed_memory_keeps_a_freed_block():
    """A freed 64 MB block (above glibc's largest adaptive mmap threshold, 32 MB) goes back
    to the kernel by default and is faulted in again on reuse; with the setting it stays."""
    def faults(mode: str) -> list[int]:
        out = subprocess.run([sys.executable, "-c", MALLOC_SCRIPT, mode], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parents[2])
        return [int(n) for n in out.stdout.split()]

    pages = (64 << 20) // 4096
    assert all(n > pages * 0.9 for n in faults("default"))
    first, *again = faults("keep")
    assert first > pages * 0.5 and all(n < pages * 0.01 for n in again)
