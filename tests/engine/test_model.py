"""The GPT model: nanoGPT's parameter counts, cached generation equal to uncached, the
cache beyond block_size, sampling filters, seeds, and the CPU fast paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import engine.model.gpt as model_mod
from engine.model import cpu_kernels
from engine.model import native
from engine.model.cpu_kernels import causal_attention, keep_mask
from engine.model.gpt import GPT, GPTConfig, KVCache, sample_next

# (n_layer, n_head, n_embd) -> (params at vocab 65, params at vocab 50304); block 256, no bias.
ASSIGNMENT_COUNTS = {
    # depth: n_head=8 n_embd=256
    (2, 8, 256): (1_590_784, 14_451_968),
    (4, 8, 256): (3_164_672, 16_025_856),
    (8, 8, 256): (6_312_448, 19_173_632),
    (12, 8, 256): (9_460_224, 22_321_408),
    # width: n_layer=6 n_head=8
    (6, 8, 128): (1_189_632, 7_620_224),
    (6, 8, 192): (2_669_184, 12_315_072),
    (6, 8, 256): (4_738_560, 17_599_744),
    (6, 8, 384): (10_646_784, 29_938_560),
    # heads: n_layer=6 n_embd=256, any n_head
    (6, 1, 256): (4_738_560, 17_599_744),
    (6, 4, 256): (4_738_560, 17_599_744),
    (6, 16, 256): (4_738_560, 17_599_744),
    (6, 32, 256): (4_738_560, 17_599_744),
}
CASES = [(shape, vocab, counts[i]) for shape, counts in ASSIGNMENT_COUNTS.items()
         for i, vocab in enumerate((65, 50304))]


@pytest.mark.parametrize("shape,vocab,expected", CASES,
                         ids=[f"L{s[0]}-H{s[1]}-E{s[2]}-V{v}" for s, v, _ in CASES])
def test_param_counts_match_nanogpt(shape, vocab, expected):
    n_layer, n_head, n_embd = shape
    # The meta device builds the shapes without allocating or initialising 30M weights.
    with torch.device("meta"):
        m = GPT(GPTConfig(block_size=256, vocab_size=vocab, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd, bias=False))
    assert m.get_num_params() == expected
    assert m.get_num_params(non_embedding=False) == expected + 256 * n_embd


def tiny(block_size=32, dropout=0.0, seed=0, vocab=17):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(block_size=block_size, vocab_size=vocab, n_layer=2, n_head=2, n_embd=32,
                      dropout=dropout, bias=False))
    return m.eval()


def test_cached_logits_equal_uncached_position_by_position():
    m = tiny()
    idx = torch.randint(17, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = m(idx, targets=idx)  # logits at every position, no cache
        cache = KVCache(m.config.n_layer)
        prefill, _ = m(idx[:, :5], cache=cache)
        torch.testing.assert_close(prefill[:, -1], full[:, 4], rtol=1e-5, atol=1e-5)
        for t in range(5, 32):
            step, _ = m(idx[:, t:t + 1], cache=cache)
            torch.testing.assert_close(step[:, -1], full[:, t], rtol=1e-5, atol=1e-5)
        assert cache.length == 32


def test_cached_forward_of_several_new_tokens_is_causal():
    m = tiny()
    idx = torch.randint(17, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full, _ = m(idx, targets=idx)
        cache = KVCache(m.config.n_layer)
        m(idx[:, :12], cache=cache)
        # 8 new tokens at once after 12 cached ones: the partial-causal mask path
        logits, _ = m(idx[:, 12:], cache=cache)
    torch.testing.assert_close(logits[:, -1], full[:, -1], rtol=1e-5, atol=1e-5)


def test_cached_and_uncached_generation_sample_the_same_tokens_within_block():
    m = tiny(block_size=64)
    prompt = torch.randint(17, (2, 7), generator=torch.Generator().manual_seed(3))
    a = m.generate(prompt, 50, temperature=1.0, generator=torch.Generator().manual_seed(9))
    b = m.generate(prompt, 50, temperature=1.0, generator=torch.Generator().manual_seed(9),
                   use_cache=False)
    assert a.shape == (2, 57)
    assert torch.equal(a, b)


def record_logits(monkeypatch):
    """Patch sample_next to keep the logits generate() samples each token from."""
    seen = []
    real = model_mod.sample_next

    def spy(logits, *args, **kwargs):
        seen.append(logits.clone())
        return real(logits, *args, **kwargs)
    monkeypatch.setattr(model_mod, "sample_next", spy)
    return seen


@pytest.mark.parametrize("context", ["rebuild", "full"])
def test_generation_beyond_block_size_matches_the_documented_window(monkeypatch, context):
    """"rebuild", KVCache's documented rule: the cache holds a window ending at the newest
    token that grows by one per step; when it would exceed block_size it is rebuilt from
    the last block_size // 2 tokens at positions 0..n-1. "full" (the default): the window
    is min(length, block_size), as nanoGPT's sample.py. Each step's logits must equal an
    uncached forward over exactly that window."""
    bs = 16
    m = tiny(block_size=bs)
    prompt = torch.randint(17, (2, 5), generator=torch.Generator().manual_seed(4))
    seen = record_logits(monkeypatch)
    n_new = 3 * bs
    out = m.generate(prompt, n_new, temperature=1.0, generator=torch.Generator().manual_seed(5),
                     context=context)
    assert out.shape == (2, 5 + n_new) and len(seen) == n_new
    window = min(prompt.size(1), bs)
    refreshes = 0
    with torch.no_grad():
        for i, logits in enumerate(seen):
            end = prompt.size(1) + i  # tokens known when sampling token i
            expected, _ = m(out[:, end - window:end])
            torch.testing.assert_close(logits, expected[:, -1], rtol=1e-5, atol=1e-5)
            if window + 1 > bs:
                if context == "rebuild":
                    window, refreshes = bs // 2, refreshes + 1
            else:
                window += 1
    assert refreshes >= 4 if context == "rebuild" else refreshes == 0 and window == bs


def test_prompt_longer_than_block_size_is_cropped():
    m = tiny(block_size=16)
    prompt = torch.randint(17, (1, 40), generator=torch.Generator().manual_seed(6))
    out = m.generate(prompt, 10, top_k=1)
    assert out.shape == (1, 50) and torch.equal(out[:, :40], prompt)
    uncached = m.generate(prompt, 1, top_k=1, use_cache=False)
    assert torch.equal(out[:, 40], uncached[:, 40])  # first token: same last-16 window


def greedy(m, prompt, n):
    out = prompt
    with torch.no_grad():
        for _ in range(n):
            logits, _ = m(out[:, -m.config.block_size:])
            out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out


def test_top_k_1_and_tiny_top_p_are_greedy():
    m = tiny(block_size=32)
    prompt = torch.randint(17, (2, 4), generator=torch.Generator().manual_seed(7))
    expected = greedy(m, prompt, 20)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(m.generate(prompt, 20, temperature=1.5, top_k=1, generator=g), expected)
    assert torch.equal(m.generate(prompt, 20, temperature=1.5, top_p=1e-6, generator=g), expected)


def test_top_k_and_top_p_only_sample_allowed_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    k3 = sample_next(logits, top_k=3, generator=g).flatten()
    assert set(k3.tolist()) == {0, 1, 2}
    # softmax of these logits: 0.636, 0.234, 0.086, ...: p=0.8 keeps the two tokens that
    # reach 0.8 (the one crossing p included), p=0.5 keeps the first only.
    p8 = sample_next(logits, top_p=0.8, generator=g).flatten()
    assert set(p8.tolist()) == {0, 1}
    assert set(sample_next(logits, top_p=0.5, generator=g).flatten().tolist()) == {0}
    # the kept tokens keep their relative odds: 0.636 : 0.234
    frac0 = (p8 == 0).float().mean().item()
    assert 0.68 < frac0 < 0.78


def test_temperature_sharpens():
    logits = torch.tensor([[1.0, 0.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    hot = (sample_next(logits, temperature=2.0, generator=g) == 0).float().mean().item()
    cold = (sample_next(logits, temperature=0.25, generator=g) == 0).float().mean().item()
    assert hot < 0.7 < 0.95 < cold


def test_seeded_generation_is_reproducible():
    m = tiny()
    prompt = torch.zeros((1, 1), dtype=torch.long)
    a = m.generate(prompt, 40, generator=torch.Generator().manual_seed(123))
    b = m.generate(prompt, 40, generator=torch.Generator().manual_seed(123))
    c = m.generate(prompt, 40, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generate_restores_training_mode():
    m = tiny().train()
    m.generate(torch.zeros((1, 1), dtype=torch.long), 3)
    assert m.training


# ---- CPU fast paths: same function as the reference implementations ---------------------

def sdpa_reference(qkv, n_head, attn_mask=None, dropout_scale=None):
    """Attention through torch's own ops from the (B, T, 3C) c_attn output to (B, T, C)."""
    B, T, C3 = qkv.shape
    q, k, v = (t.view(B, T, n_head, -1).transpose(1, 2) for t in qkv.split(C3 // 3, dim=2))
    if dropout_scale is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:  # explicit softmax so a given dropout mask can be applied to the probabilities
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = (torch.softmax(att, dim=-1) * dropout_scale) @ v
    return y.transpose(1, 2).reshape(B, T, C3 // 3)


@pytest.fixture(params=["fused", "matmul"])
def attention_path(request, monkeypatch):
    """Runs a test on the C++ kernel (engine/native.py) and on the torch-op fallback."""
    if request.param == "fused" and native.load() is None:
        pytest.skip(f"fused CPU attention kernel unavailable: {native.why_not()}")
    monkeypatch.setattr(cpu_kernels, "CPU_ATTENTION", request.param)
    return request.param


@pytest.mark.parametrize("B,n_head,hs,T", [(3, 2, 16, 24), (3, 8, 8, 24), (3, 2, 8, 128),
                                           (3, 2, 32, 200), (3, 1, 64, 256), (20, 8, 8, 64),
                                           (2, 3, 16, 1), (2, 2, 128, 17), (3, 1, 4, 256)])
def test_cpu_attention_equals_sdpa(attention_path, B, n_head, hs, T):
    """Outputs and gradients, including query chunks (T >= 128), uneven chunks (T = 200),
    several batch groups (20 x 8 heads), T not a multiple of the kernel's 16-key vectors,
    every head size the kernel handles, and one it does not (4: the fallback runs)."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, T, 3 * n_head * hs, generator=g, requires_grad=True)
    qkv64 = qkv.detach().double().requires_grad_()
    ours = causal_attention(qkv, n_head)
    ref = sdpa_reference(qkv64, n_head)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(ours.square().sum(), qkv)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), qkv64)
    # the kernel's softmax backward uses dO . O per row (as FlashAttention does), whose
    # fp32 rounding is relative to the gradient's scale rather than to each element
    atol = 1e-5 * max(1.0, ref_grad.abs().max().item())
    torch.testing.assert_close(grad, ref_grad.float(), rtol=1e-4, atol=atol)


def test_cpu_attention_groups_and_chunks_cover_everything():
    for B, H in [(1, 1), (12, 8), (12, 32), (5, 64), (20, 8)]:
        groups = cpu_kernels.batch_groups(B, H)
        assert groups[0][0] == 0 and groups[-1][1] == B
        assert all(a < b for a, b in groups)
        assert all(b == c for (_, b), (c, _) in zip(groups, groups[1:]))  # contiguous
    for T in (1, 63, 64, 200, 256, 1024):
        chunks = cpu_kernels.query_chunks(T)
        assert chunks[0][0] == 0 and chunks[-1][1] == T and len(chunks) <= 4


@pytest.mark.slow  # gradcheck over 12,288 inputs: 1,510 s of a 47-minute quick run on a loaded box
def test_cpu_attention_dropout_matches_reference_with_the_same_mask(monkeypatch):
    """With attention dropout the hand-written backward must still be the gradient of
    softmax(qk^T) * mask / (1 - p) @ v: masks are made repeatable per shape for the check."""
    p = 0.25
    masks = {}

    def fixed_mask(shape, p, device, generator=None):
        if tuple(shape) not in masks:
            g = torch.Generator().manual_seed(len(masks))
            masks[tuple(shape)] = torch.rand(shape, generator=g) >= p
        return masks[tuple(shape)]

    monkeypatch.setattr(cpu_kernels, "keep_mask", fixed_mask)
    B, n_head, hs, T = 2, 2, 8, 64  # one group, one chunk: one mask of shape (4, 64, 64)
    qkv = torch.randn(B, T, 3 * n_head * hs, dtype=torch.float64, requires_grad=True,
                      generator=torch.Generator().manual_seed(1))
    ours = causal_attention(qkv, n_head, dropout_p=p)
    (mask,) = masks.values()
    ref = sdpa_reference(qkv, n_head, dropout_scale=mask.view(B, n_head, T, T) / (1 - p))
    torch.testing.assert_close(ours, ref)
    assert torch.autograd.gradcheck(lambda x: causal_attention(x, n_head, dropout_p=p), (qkv,))


def test_cpu_attention_in_bf16_is_close_to_fp32(attention_path):
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(4, 256, 3 * 64, generator=g, requires_grad=True)
    qkv16 = qkv.detach().bfloat16().requires_grad_()
    dy = torch.randn(4, 256, 64, generator=g)
    ref = sdpa_reference(qkv, 4)
    ours = causal_attention(qkv16, 4)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref, rtol=0.02, atol=0.02)
    (grad,) = torch.autograd.grad(ref, qkv, dy)
    (grad16,) = torch.autograd.grad(ours, qkv16, dy.bfloat16())
    assert (grad16.float() - grad).norm() / grad.norm() < 0.02


def test_cpu_attention_paths_give_the_same_model_loss_and_grads(attention_path, monkeypatch):
    m = tiny(block_size=32).train()
    idx = torch.randint(17, (4, 32), generator=torch.Generator().manual_seed(8))
    _, loss_a = m(idx, targets=idx)
    grads_a = torch.autograd.grad(loss_a, list(m.parameters()))
    monkeypatch.setattr(cpu_kernels, "CPU_ATTENTION", "sdpa")
    _, loss_b = m(idx, targets=idx)
    grads_b = torch.autograd.grad(loss_b, list(m.parameters()))
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_loss_is_close_to_fp32():
    m = tiny(block_size=32).train()
    idx = torch.randint(17, (4, 32), generator=torch.Generator().manual_seed(8))
    _, fp32 = m(idx, targets=idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, bf16 = m(idx, targets=idx)
    assert bf16.dtype == torch.float32
    assert abs(bf16.item() - fp32.item()) < 0.02


def test_keep_mask_rate_and_dropout_expectation():
    g = torch.Generator().manual_seed(0)
    mask = keep_mask((1000, 1000), 0.2, "cpu", generator=g)
    assert mask.dtype == torch.bool
    assert abs(mask.float().mean().item() - 0.8) < 0.002
    # neighbouring elements are independent (no structure from slicing the words)
    pairs = (mask[:, 0::2] & mask[:, 1::2]).float().mean().item()
    assert abs(pairs - 0.64) < 0.003
    x = torch.ones(1000, 1000)
    y = cpu_kernels.dropout(x, 0.2, training=True)
    assert abs(y.mean().item() - 1.0) < 0.01
    assert set(torch.unique(y).tolist()) == {0.0, 1.25}
    assert cpu_kernels.dropout(x, 0.2, training=False) is x


def test_dropout_is_active_in_training_only():
    m = tiny(dropout=0.3)
    idx = torch.randint(17, (2, 32), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        e1, _ = m.eval()(idx, targets=idx)
        e2, _ = m(idx, targets=idx)
        t1, _ = m.train()(idx, targets=idx)
        t2, _ = m(idx, targets=idx)
    assert torch.equal(e1, e2)
    assert not torch.equal(t1, t2)


def test_training_step_reduces_loss_on_a_fixed_batch():
    m = tiny(block_size=16, dropout=0.1).train()
    opt = m.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    idx = torch.randint(17, (4, 17), generator=torch.Generator().manual_seed(10))
    x, y = idx[:, :-1], idx[:, 1:]
    first = None
    for _ in range(15):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = m(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        first = first if first is not None else loss.item()
    assert loss.item() < first - 0.5


def test_weight_decay_groups_and_flops():
    m = tiny()
    opt = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    n = m.get_num_params()
    assert m.flops_per_token() == 6 * n + 12 * 2 * 2 * 16 * 32
