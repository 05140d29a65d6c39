"""The fused CPU attention kernel's build and loading (engine/native.py): cached builds,
the same result on any number of threads, and a clean fallback without a compiler."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.model import native

ROOT = Path(__file__).resolve().parents[2]

needs_kernel = pytest.mark.skipif(native.load() is None,
                                  reason=f"fused CPU attention unavailable: {native.why_not()}")


@needs_kernel
def test_build_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOTUI_CACHE_DIR", str(tmp_path))
    first = native.build()
    assert first.parent == tmp_path and first.name.startswith("kernels-")
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
        "from engine.model import cpu_kernels, native\n"
        "from engine.model.gpt import GPT, GPTConfig\n"
        "m = GPT(GPTConfig(block_size=16, vocab_size=11, n_layer=1, n_head=2, n_embd=32))\n"
        "idx = torch.randint(11, (2, 16))\n"
        "_, loss = m(idx, targets=idx)\n"
        "loss.backward()\n"
        "print('loss', loss.item(), 'kernel', native.load() is not None, native.why_not())\n"
        "print(cpu_kernels.describe(2, 32))\n"
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
    from engine.model import cpu_kernels
    assert cpu_kernels.describe(8, 128) == "fused C++ kernel"
    assert "no head size 12" in cpu_kernels.describe(2, 24)
    monkeypatch.setattr(cpu_kernels, "CPU_ATTENTION", "sdpa")
    assert cpu_kernels.describe(8, 128) == "torch scaled_dot_product_attention"


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


@needs_kernel
def test_dropout_mask_rate_repeatability_and_independence():
    m = native.dropout_keep_mask(64, 256, 0.2, seed=7)
    assert abs(m.float().mean().item() - 0.8) < 0.002
    assert torch.equal(m, native.dropout_keep_mask(64, 256, 0.2, seed=7))
    other = native.dropout_keep_mask(64, 256, 0.2, seed=8)
    assert abs((m == other).float().mean().item() - (0.8**2 + 0.2**2)) < 0.003  # independent
    x = m.float() - 0.8
    for dim in (0, 1, 2):  # neighbouring pairs, queries and keys are uncorrelated
        a, b = x.narrow(dim, 0, x.size(dim) - 1), x.narrow(dim, 1, x.size(dim) - 1)
        assert abs((a * b).mean().item()) < 0.002
    assert native.dropout_keep_mask(2, 16, 0.0, seed=1).all()


def _reference_with_mask(x64: torch.Tensor, n_head: int, keep: torch.Tensor, p: float):
    B, T, C3 = x64.shape
    q, k, v = (t.view(B, T, n_head, -1).transpose(1, 2) for t in x64.split(C3 // 3, dim=2))
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    att = torch.softmax(att, dim=-1) * keep.view(B, n_head, T, T) / (1 - p)
    return (att @ v).transpose(1, 2).reshape(B, T, C3 // 3)


@needs_kernel
@pytest.mark.parametrize("dtype,dot_products", [(torch.float32, False),
                                                (torch.bfloat16, False), (torch.bfloat16, True)])
@pytest.mark.parametrize("hs,T", [(16, 64), (32, 37), (8, 20)])
def test_attention_dropout_equals_the_reference_with_the_same_mask(dtype, dot_products, hs, T):
    if dot_products and not native.bf16_dot_products(True):
        pytest.skip("this CPU or compiler has no AVX512-BF16 dot products")
    B, n_head, p, seed = 2, 3, 0.3, 1234
    g = torch.Generator().manual_seed(hs * T)
    qkv = torch.randn(B, T, 3 * n_head * hs, generator=g).to(dtype)
    dy = torch.randn(B, T, n_head * hs, generator=g).to(dtype)
    x64 = qkv.double().requires_grad_()
    ref = _reference_with_mask(x64, n_head, native.dropout_keep_mask(B * n_head, T, p, seed), p)
    (ref_grad,) = torch.autograd.grad(ref, x64, dy.double())
    try:
        native.bf16_dot_products(dot_products)
        y, lse = native.attention_forward(qkv, n_head, p, seed)
        grad = native.attention_backward(qkv, y, dy, lse, n_head, p, seed)
    finally:
        native.bf16_dot_products(True)
    tol = 1e-5 if dtype == torch.float32 else 6e-3
    assert ((y.double() - ref).norm() / ref.norm()).item() < tol
    assert ((grad.double() - ref_grad).norm() / ref_grad.norm()).item() < tol


@needs_kernel
def test_model_attention_dropout_follows_torch_seed():
    from engine.model.cpu_kernels import causal_attention
    qkv = torch.randn(2, 32, 3 * 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    a = causal_attention(qkv, 2, dropout_p=0.5)
    b = causal_attention(qkv, 2, dropout_p=0.5)
    torch.manual_seed(5)
    assert torch.equal(causal_attention(qkv, 2, dropout_p=0.5), a)  # repeatable by seed
    assert not torch.equal(a, b)                                    # a new mask each call


def test_unwritable_cache_falls_back_and_says_why(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    r = _train_one_step({"NANOTUI_CACHE_DIR": str(blocker / "cache")})
    assert r.returncode == 0, r.stderr
    assert "kernel False" in r.stdout and "torch ops (fused kernel unavailable:" in r.stdout
    assert r.stderr.strip() == ""
