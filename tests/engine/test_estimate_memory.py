"""The memory estimate the dispatcher places runs by, against what autograd really keeps
for the backward pass (torch.autograd.graph.saved_tensors_hooks, on the CPU), for fp32 and
bf16: with the fused attention a GPU takes (no T^2 term), and at T = 512 with the paths
that keep T x T probabilities (the torch-op CPU path; SDPA's math fallback, which CPU
SDPA takes with dropout)."""

from __future__ import annotations

import pytest
import torch

from engine.config import TrainConfig
from engine.launch.estimate import activation_bytes, estimate, expected_attention
from engine.model import device as dev
from engine.model.gpt import GPT, GPTConfig

SHAPES = [dict(n_layer=2, n_head=4, n_embd=128, block_size=128, batch_size=8),
          dict(n_layer=4, n_head=4, n_embd=256, block_size=256, batch_size=4)]


def saved_bytes(cfg: TrainConfig, dtype: torch.dtype, path: str = "sdpa") -> int:
    """Bytes of the distinct storages autograd saves in one forward (parameters aside)."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                      n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=False))
    m.set_cpu_attention(path)
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t
    x = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.block_size))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with dev.autocast_context(torch.device("cpu"), dtype):
            m(x, x)
    return sum(seen.values())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"L{s['n_layer']}C{s['n_embd']}")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_activation_estimate_is_within_25_percent_of_the_saved_tensors(shape, dtype):
    cfg = TrainConfig(**shape, vocab_size=65, dtype=dtype, dropout=0.0)
    measured = saved_bytes(cfg, dev.DTYPES[dtype])
    est = activation_bytes(cfg, 65)
    assert 0.75 <= est / measured <= 1.25, (est, measured)


def test_fp32_runs_are_estimated_larger_than_mixed_precision():
    mixed = TrainConfig(**SHAPES[1], vocab_size=65, dtype="auto")
    fp32 = TrainConfig(**SHAPES[1], vocab_size=65, dtype="float32")
    assert activation_bytes(fp32, 65) > 1.6 * activation_bytes(mixed, 65)


LONG = dict(n_layer=2, n_head=4, n_embd=64, block_size=512, batch_size=4)


@pytest.mark.parametrize("path, dropout", [("torch", 0.0), ("torch", 0.1), ("sdpa", 0.1),
                                           ("sdpa", 0.0), ("fused", 0.1)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_t2_term_of_paths_that_keep_probabilities_is_counted(path, dropout, dtype):
    """T = 512 at width 64: the torch-op path keeps about as much in its probabilities as
    everything else together, SDPA's math fallback (dropout) five times as much."""
    cfg = TrainConfig(**LONG, vocab_size=65, dtype=dtype, dropout=dropout, cpu_attention=path)
    measured = saved_bytes(cfg, dev.DTYPES[dtype], path)
    est = activation_bytes(cfg, 65, attention=expected_attention(cfg, "cpu"))
    assert 0.75 <= est / measured <= 1.25, (est, measured)


def test_cpu_estimates_follow_the_recorded_or_configured_path(monkeypatch):
    monkeypatch.delenv("NANOTUI_CPU_KERNEL", raising=False)
    cfg = TrainConfig(**LONG, vocab_size=65, dropout=0.1)
    fused = estimate(cfg, "cpu").mem_bytes
    assert estimate(cfg, "cpu", attention="sdpa").mem_bytes > fused + 4 * 2 * 4 * 512 * 512 * 11
    assert estimate(cfg, "gpu", attention="sdpa").mem_bytes == estimate(cfg, "gpu").mem_bytes
    monkeypatch.setenv("NANOTUI_CPU_KERNEL", "torch")
    assert estimate(cfg, "cpu").mem_bytes > fused
