"""The fused CPU attention kernel's build and loading (engine/native.py): cached builds,
the same result on any number of threads, and a clean fallback without a compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import native

ROOT = Path(__file__).resolve().parents[2]

needs_kernel = pytest.mark.skipif(native.load() is None,
                                  reason=f"fused CPU attention unavailable: {native.why_not()}")


@needs_kernel
def test_build_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOTUI_CACHE_DIR", str(tmp_path))
    first = native.build()
    assert first.parent == tmp_path and first.name.startswith("attention-")
    mtime = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == mtime  # not rebuilt
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [first.name, first.name + ".lock"]  # no temp files left


@needs_kernel
def test_result_does_not_depend_on_the_thread_count():
    """Heads are split over threads, each head computed whole by one: bit-identical."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(5, 70, 3 * 3 * 16, generator=g).bfloat16()
    dy = torch.randn(5, 70, 3 * 16, generator=g).bfloat16()
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            y, lse = native.attention_forward(qkv, 3)
            results.append((y, lse, native.attention_backward(qkv, y, dy, lse, 3)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@needs_kernel
def test_unsupported_head_size_is_reported():
    qkv = torch.randn(1, 8, 3 * 12)
    assert not native.supports(qkv, 1)  # head size 12
    assert native.supports(torch.randn(1, 8, 3 * 16), 1)
    assert not native.supports(torch.randn(1, 8, 3 * 16, dtype=torch.float64), 1)


def _train_one_step(env: dict) -> subprocess.CompletedProcess:
    code = (
        "import torch\n"
        "from engine import cpu_kernels, native\n"
        "from engine.model import GPT, GPTConfig\n"
        "m = GPT(GPTConfig(block_size=16, vocab_size=11, n_layer=1, n_head=2, n_embd=32))\n"
        "idx = torch.randint(11, (2, 16))\n"
        "_, loss = m(idx, targets=idx)\n"
        "loss.backward()\n"
        "print('loss', loss.item(), 'kernel', native.load() is not None, native.why_not())\n"
        "print(cpu_kernels.describe(2, 32, 0.0))\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def test_without_a_compiler_training_falls_back_and_says_why(tmp_path):
    r = _train_one_step({"CXX": str(tmp_path / "no-such-compiler"),
                         "NANOTUI_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    assert "loss" in r.stdout and "kernel False" in r.stdout
    assert "torch ops (fused kernel unavailable: no C++ compiler found" in r.stdout
    assert r.stderr.strip() == ""


def test_kernel_can_be_switched_off(tmp_path):
    r = _train_one_step({"NANOTUI_CPU_KERNEL": "0", "NANOTUI_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "kernel False disabled by NANOTUI_CPU_KERNEL=0" in r.stdout
    assert "torch ops (fused kernel unavailable: disabled by NANOTUI_CPU_KERNEL=0)" in r.stdout
    assert r.stderr.strip() == ""
    assert not list(tmp_path.iterdir())  # nothing built


@needs_kernel
def test_describe_names_the_path_a_run_takes(monkeypatch):
    from engine import cpu_kernels
    assert cpu_kernels.describe(8, 128, 0.0) == "fused C++ kernel"
    assert "attention dropout" in cpu_kernels.describe(8, 128, 0.2)
    assert "no head size 12" in cpu_kernels.describe(2, 24, 0.0)
    monkeypatch.setattr(cpu_kernels, "CPU_ATTENTION", "sdpa")
    assert cpu_kernels.describe(8, 128, 0.0) == "torch scaled_dot_product_attention"


def _sdpa64(qkv: torch.Tensor, n_head: int) -> torch.Tensor:
    B, T, C3 = qkv.shape
    q, k, v = (t.view(B, T, n_head, -1).transpose(1, 2) for t in qkv.split(C3 // 3, dim=2))
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(B, T, C3 // 3)


@needs_kernel
@pytest.mark.parametrize("dot_products", [True, False])
@pytest.mark.parametrize("hs,T", [(16, 256), (16, 37), (32, 1), (32, 100), (64, 33), (8, 50)])
def test_bf16_kernel_error_is_bf16_rounding(dot_products, hs, T):
    """bf16 in and out, fp32 inside: against float64 SDPA on the same (bf16-valued) inputs
    the error is the output's bf16 rounding plus, with the bf16 dot products, the rounding
    of P and dS to bf16 (as FlashAttention's). Both variants run where the CPU has them."""
    if dot_products and not native.bf16_dot_products(True):
        pytest.skip("this CPU or compiler has no AVX512-BF16 dot products")
    n_head = 3
    g = torch.Generator().manual_seed(hs + T)
    qkv = torch.randn(2, T, 3 * n_head * hs, generator=g).bfloat16()
    dy = torch.randn(2, T, n_head * hs, generator=g).bfloat16()
    x64 = qkv.double().requires_grad_()
    ref = _sdpa64(x64, n_head)
    (ref_grad,) = torch.autograd.grad(ref, x64, dy.double())
    try:
        native.bf16_dot_products(dot_products)
        y, lse = native.attention_forward(qkv, n_head)
        grad = native.attention_backward(qkv, y, dy, lse, n_head)
    finally:
        native.bf16_dot_products(True)
    assert y.dtype == grad.dtype == torch.bfloat16
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(y, ref) < 4e-3
    assert rel(grad, ref_grad) < 6e-3
