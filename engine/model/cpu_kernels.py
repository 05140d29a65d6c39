"""CPU training fast paths: causal self-attention with a hand-written backward, and dropout.

Three attention paths on CPU (PATHS): "fused", the C++ kernel (engine/native.py,
FusedCausalAttention below) where it builds and handles the head size; "torch",
CausalAttention here, batched torch ops with a hand-written backward, which is what this
text describes; "sdpa", torch's scaled_dot_product_attention as nanoGPT calls it. Which
one is fastest depends on the CPU (the kernel was tuned on AVX512-BF16 and measured
slower than SDPA on AVX2 at some shapes), so a training run picks by measurement
(engine/model/cpu_tuner.py) and sets it on its model (GPT.set_cpu_attention); models
without a choice use CPU_ATTENTION. `describe()` says which path a run takes.

Why these exist. Profiling a bf16-autocast training step on a 2-core AVX512-BF16 CPU
(torch 2.13, torch.profiler) showed scaled_dot_product_attention's CPU flash kernel taking
~40% of the step (its backward alone ~28%), more than all the linear layers together, and
dropout's bernoulli_ draws dominating once dropout > 0 (SDPA then falls back to its math
path). So on CPU:

- Attention is plain batched matmuls (baddbmm with an additive causal mask and the
  1/sqrt(hs) scale fused in, softmax, bmm), and only the causal part is computed: the
  queries are cut into up to 4 chunks of >= 64 rows, and chunk c only meets the keys up to
  its last row, so the score matrices cover (n+1)/(2n) of T x T (62.5% for 4 chunks).
- Left to autograd, that graph cost more than its matmuls: the gradients of the key/value
  slices were summed with add_ (8-10% of the step), the softmax ran in fp32 between two
  casts, the head transposes were copied twice, and dV = P^T dY multiplied a transposed
  matrix (half the speed of the other layout). CausalAttention's backward instead
  accumulates dK^T and dV^T in place with baddbmm_ in the fast layout, keeps the softmax in
  the matmul dtype (torch's CPU softmax accumulates bf16 in fp32), and reads q/k/v from and
  writes its gradient into the (B, T, 3C) layout of c_attn directly.
- It works through the batch in groups of about 64 heads, so the score matrices of a group
  (~2 MB) stay in cache between the matmul that writes them and the softmax that reads
  them; the whole batch at once measured ~1.5x slower at 32 heads.
- Dropout masks come from 16-bit slices of 64-bit random words: a quarter of the
  generator draws of bernoulli_.

CUDA keeps SDPA (flash) and torch's dropout. The "sdpa" path with CPU_FAST_DROPOUT = False
is the plain path (benchmarks/train_speed.py's ours-plain, to show what each buys).
Tests check that the paths compute the same function and gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from engine.model import native
# torch-free, so the memory estimate counts the probabilities this path keeps
from engine.model.arithmetic import QUERY_CHUNKS, query_chunks  # noqa: F401

# "fused": the C++ kernel (engine/native.py) where it builds and handles the input, else
# "torch": the torch-op CausalAttention below; "sdpa": torch's scaled_dot_product_attention.
PATHS = ("fused", "torch", "sdpa")
CPU_ATTENTION = "fused"  # for models that were given no path (GPT.set_cpu_attention)
CPU_FAST_DROPOUT = True
HEADS_PER_GROUP = 64

_CAUSAL_BIAS: dict[tuple, torch.Tensor] = {}


def causal_bias(rows: int, cols: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(rows, cols) additive mask for the last `rows` queries of `cols` positions: 0 where
    a query may attend (key position <= query position), -inf above; cached per shape."""
    key = (rows, cols, dtype, str(device))
    bias = _CAUSAL_BIAS.get(key)
    if bias is None:
        bias = torch.full((rows, cols), float("-inf"), dtype=dtype, device=device)
        bias = bias.triu(cols - rows + 1)
        _CAUSAL_BIAS[key] = bias
    return bias


def keep_mask(shape, p: float, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool mask, True with probability 1 - p (p resolved to 1/65536), built from 16-bit
    slices of random int64 words: a quarter of the generator draws of bernoulli_."""
    n = math.prod(shape)
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64,
                          device=device, generator=generator)
    r = words.view(torch.int16)[:n].view(shape)
    return r >= (-32768 + round(p * 65536))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as F.dropout, with the cheaper mask on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not CPU_FAST_DROPOUT:
        return F.dropout(x, p, True)
    scale = keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * scale


class Dropout(nn.Dropout):
    """nn.Dropout (same name in printouts, no parameters) using the CPU fast mask."""

    def forward(self, x):
        return dropout(x, self.p, self.training)


def batch_groups(B: int, n_head: int) -> list[tuple[int, int]]:
    """Batch ranges of about HEADS_PER_GROUP heads each, as even as possible."""
    n = max(1, min(B, round(B * n_head / HEADS_PER_GROUP)))
    bounds = [B * i // n for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(b, T, C) -> contiguous (b * n_head, T, hs)."""
    b, T, C = x.shape
    return x.reshape(b, T, n_head, C // n_head).transpose(1, 2).reshape(b * n_head, T, -1)


class CausalAttention(torch.autograd.Function):
    """y = causal softmax(q k^T / sqrt(hs)) v, with attention dropout, from the (B, T, 3C)
    output of c_attn to the (B, T, C) input of c_proj. Runs in qkv's dtype (bf16 under
    autocast: autocast is off inside, the softmax accumulates in fp32 either way)."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, n_head: int, dropout_p: float):
        B, T, C3 = qkv.shape
        C = C3 // 3
        hs = C // n_head
        keep_scale = 1.0 / (1.0 - dropout_p)
        y = qkv.new_empty(B, T, C)
        y4 = y.view(B, T, n_head, hs)
        # per group: its q, k, v in head layout (the backward reuses these copies), then
        # per chunk: softmax probabilities, dropout mask
        saved = []
        keep = ctx.needs_input_grad[0]
        for b0, b1 in batch_groups(B, n_head):
            q, k, v = (_heads(t, n_head) for t in qkv[b0:b1].split(C, dim=2))
            if keep:
                saved += [q, k, v]
            for a, b in query_chunks(T):
                # scores into fresh memory (beta=0: nothing read), then -inf above the
                # diagonal, which lies in the last b - a columns only
                s = q.new_empty(q.size(0), b - a, b).baddbmm_(
                    q[:, a:b], k[:, :b].transpose(1, 2), beta=0.0, alpha=1.0 / math.sqrt(hs))
                s[:, :, a:b].add_(causal_bias(b - a, b - a, s.dtype, s.device))
                p = torch.softmax(s, dim=-1)
                mask = None
                if dropout_p > 0.0:
                    mask = keep_mask(p.shape, dropout_p, p.device)
                    yc = torch.bmm(p * mask, v[:, :b]).mul_(keep_scale)
                else:
                    yc = torch.bmm(p, v[:, :b])
                y4[b0:b1, a:b] = yc.view(b1 - b0, n_head, b - a, hs).transpose(1, 2)
                if keep:
                    saved += [p, mask]
        ctx.n_head, ctx.dropout_p, ctx.shape = n_head, dropout_p, qkv.shape
        ctx.save_for_backward(*saved)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        with torch.autocast(dy.device.type, enabled=False):
            return CausalAttention._backward(ctx, dy)

    @staticmethod
    def _backward(ctx, dy: torch.Tensor):
        saved = iter(ctx.saved_tensors)
        n_head, dropout_p = ctx.n_head, ctx.dropout_p
        B, T, C3 = ctx.shape
        C = C3 // 3
        hs = C // n_head
        scale = 1.0 / math.sqrt(hs)
        keep_scale = 1.0 / (1.0 - dropout_p)
        dqkv = None
        for b0, b1 in batch_groups(B, n_head):
            nb = b1 - b0
            q, k, v = next(saved), next(saved), next(saved)
            if dqkv is None:
                dy = dy.to(q.dtype)
                dqkv = q.new_empty(B, T, C3)
            dyh = _heads(dy[b0:b1], n_head)
            dq = torch.empty_like(q)
            dkt = q.new_zeros(nb * n_head, hs, T)  # dK^T and dV^T: accumulated over
            dvt = q.new_zeros(nb * n_head, hs, T)  # chunks in the fast matmul layout
            for a, b in query_chunks(T):
                p, mask = next(saved), next(saved)
                dyc = dyh[:, a:b]
                # dP, pre-multiplied by the score scale (the softmax backward is linear in
                # dP), so dQ and dK need no scaling pass of their own
                dp = torch.empty_like(p).baddbmm_(dyc, v[:, :b].transpose(1, 2), beta=0.0,
                                                  alpha=scale * keep_scale)
                if mask is None:
                    dvt[:, :, :b].baddbmm_(dyc.transpose(1, 2), p)
                else:
                    dvt[:, :, :b].baddbmm_(dyc.transpose(1, 2), p * mask, alpha=keep_scale)
                    dp.mul_(mask)
                ds = torch.ops.aten._softmax_backward_data(dp, p, -1, p.dtype)
                dq[:, a:b] = torch.bmm(ds, k[:, :b])
                dkt[:, :, :b].baddbmm_(q[:, a:b].transpose(1, 2), ds)
            d = dqkv[b0:b1].view(nb, T, 3, n_head, hs)
            d[:, :, 0] = dq.view(nb, n_head, T, hs).transpose(1, 2)
            d[:, :, 1] = dkt.view(nb, n_head, hs, T).permute(0, 3, 1, 2)
            d[:, :, 2] = dvt.view(nb, n_head, hs, T).permute(0, 3, 1, 2)
        return dqkv, None, None


class FusedCausalAttention(torch.autograd.Function):
    """CausalAttention by the C++ kernel: it saves only qkv (c_attn's output, kept by
    autograd anyway), y (c_proj's input, likewise) and one fp32 per query row, where the
    torch-op path saves every T x T probability matrix (and dropout mask). The dropout
    mask is a hash of a seed drawn from torch's generator, so torch.manual_seed and
    checkpointed RNG state make it repeatable; the backward regenerates it."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, n_head: int, dropout_p: float):
        seed = int(torch.randint(0, 2**63 - 1, (1,)).item()) if dropout_p > 0.0 else 0
        y, lse = native.attention_forward(qkv, n_head, dropout_p, seed)
        ctx.n_head, ctx.dropout_p, ctx.seed = n_head, dropout_p, seed
        ctx.save_for_backward(qkv, y, lse)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        qkv, y, lse = ctx.saved_tensors
        dqkv = native.attention_backward(qkv, y, dy, lse, ctx.n_head, ctx.dropout_p, ctx.seed)
        return dqkv, None, None


def unavailable(path: str, n_head: int, n_embd: int) -> str | None:
    """Why `path` cannot run attention of this shape here (None: it can). Only the fused
    kernel can be missing (no compiler, a failed build, NANOTUI_CPU_KERNEL=0) or lack the
    head size."""
    if path != "fused":
        return None
    if native.load() is None:
        return f"fused kernel unavailable: {native.why_not().splitlines()[0][:200]}"
    if not native.supports_head_size(n_embd // n_head):
        return f"the fused kernel has no head size {n_embd // n_head}"
    return None


PATH_NAMES = {"fused": "fused C++ kernel", "torch": "torch ops",
              "sdpa": "torch scaled_dot_product_attention"}


def describe(n_head: int, n_embd: int, path: str | None = None) -> str:
    """Which attention a CPU training run with this shape and path (default CPU_ATTENTION)
    takes, and why, for its log."""
    path = path or CPU_ATTENTION
    why = unavailable(path, n_head, n_embd)
    if why:
        return f"torch ops ({why})"
    return PATH_NAMES.get(path, "torch ops")


def causal_attention(qkv: torch.Tensor, n_head: int, dropout_p: float = 0.0,
                     path: str | None = None) -> torch.Tensor:
    """Causal self-attention from (B, T, 3C) to (B, T, C) on CPU: the fused kernel where it
    applies (path "fused", default CPU_ATTENTION), else CausalAttention. Autocast is off
    inside: both compute in qkv's dtype (bf16 under autocast)."""
    path = path or CPU_ATTENTION
    with torch.autocast(qkv.device.type, enabled=False):
        if path == "fused" and native.supports(qkv, n_head):
            return FusedCausalAttention.apply(qkv, n_head, dropout_p)
        return CausalAttention.apply(qkv, n_head, dropout_p)
