"""The GPT model: nanoGPT's architecture, plus generation with a KV cache.

Token + learned position embeddings, pre-LayerNorm blocks of causal self-attention
(through scaled_dot_product_attention) and a GELU MLP of width 4*n_embd, a final
LayerNorm and an output head tied to the token embedding. Initialisation follows
GPT-2/nanoGPT, including the 1/sqrt(2*n_layer) scaling of residual projections.
Depends on torch only.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from engine.model import cpu_kernels
from engine.model.arithmetic import flops_per_token
from engine.model.cpu_kernels import Dropout


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's cannot drop only the bias)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, in buffers allocated
    once for `capacity` positions (block_size by default) and filled in place, so a new
    token costs no copy of the whole cache (torch.cat per step was ~7% of a decode step).

    Positions are absolute: the token in cache slot t was embedded with wpe[t], and the
    cache holds a window of the sequence that ends at its newest token. Once that window
    would outgrow block_size, the cache cannot simply drop its oldest entry: every cached
    key was computed at a position that would be wrong for a window starting later, and
    the model never saw positions >= block_size. By default GPT.generate then does what
    nanoGPT does (a forward pass over the last block_size tokens per new token); with
    context="rebuild", an opt-in speed setting, it rebuilds the cache instead: the last
    block_size // 2 tokens are re-encoded from scratch at positions 0..n-1 (one prefill)
    and generation continues from there. Every forward pass is thus exactly a computation
    the model was trained on (an uncached forward over the cached window gives the same
    logits; tests check it), at the cost of one prefill per block_size // 2 new tokens,
    and each token beyond block_size sees between block_size // 2 and block_size - 1
    tokens of context (nanoGPT's uncached sample.py always sees block_size - 1; it pays a
    full forward pass per token for that).
    """

    def __init__(self, n_layer: int, capacity: int | None = None):
        self.k: list[torch.Tensor | None] = [None] * n_layer  # (B, nh, capacity, hs) buffers
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.capacity = capacity  # None: GPT.forward sets block_size
        self.length = 0           # positions filled (the same in every layer)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the (B, nh, T, hs) keys/values of positions length..length+T-1 of one
        layer; return views of all cached positions including them. GPT.forward calls
        advance(T) once every layer has stored its part."""
        if self.k[layer] is None:
            B, nh, _, hs = k.shape
            self.k[layer] = k.new_empty((B, nh, self.capacity, hs))
            self.v[layer] = v.new_empty((B, nh, self.capacity, hs))
        end = self.length + k.size(2)
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, t: int) -> None:
        self.length += t


# CPU training fast paths (attention with a hand-written backward, cheap dropout masks)
# live in engine/cpu_kernels.py; fused AdamW is used where torch has it.
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.cpu_attention: str | None = None  # cpu_kernels.PATHS; None: CPU_ATTENTION

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.size()
        dropout_p = self.dropout if self.training else 0.0
        path = self.cpu_attention or cpu_kernels.CPU_ATTENTION
        if cache is None and x.device.type == "cpu" and path != "sdpa":
            y = cpu_kernels.causal_attention(self.c_attn(x), self.n_head, dropout_p, path)
            return self.resid_dropout(self.c_proj(y))
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        # A query at position i may attend to keys 0..i. With a cache holding P earlier
        # keys, the T new queries sit at positions P..P+T-1: a single new query (T == 1)
        # sees everything, a prefill (P == 0) is plain causal.
        S = k.size(2)
        if T == S:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.ln_1(x), cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output head reuses the token embedding matrix.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream,
        # so the residual's variance does not grow with depth.
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def set_cpu_attention(self, path: str) -> None:
        """The attention path of training and evaluation on CPU (cpu_kernels.PATHS);
        generation with a KV cache always uses SDPA."""
        if path not in cpu_kernels.PATHS:
            raise ValueError(f"unknown CPU attention path {path!r}")
        for block in self.transformer.h:
            block.attn.cpu_attention = path

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count. nanoGPT's convention (non_embedding=True) subtracts the position
        embeddings only: the token embedding is the (tied) output head, so it stays in."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, cache: KVCache | None = None):
        """Logits for every position when `targets` is given (with the mean cross-entropy
        loss), else for the last position only: generation needs nothing more."""
        b, t = idx.size()
        start = 0
        if cache is not None:
            start = cache.length
            if cache.capacity is None:
                cache.capacity = self.config.block_size
        limit = self.config.block_size if cache is None else min(cache.capacity, self.config.block_size)
        assert start + t <= limit, (
            f"cannot forward {start + t} positions, block size is {self.config.block_size}")
        pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.advance(t)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=-1)
            return logits, loss
        return self.lm_head(x[:, [-1], :]), None

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with decay on matrices (>= 2 dims) only: not on biases and LayerNorm gains.
        The fused kernel (one pass over all parameters) is used on CUDA, and on CPU where
        torch >= 2.4 has one too."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused_ok = "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused_ok and device_type in FUSED_ADAMW_DEVICES else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12*L*H*Q*T."""
        cfg = self.config
        return flops_per_token(cfg.n_layer, cfg.n_embd, seq_len or cfg.block_size,
                               self.get_num_params())

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 context: str = "full", uniforms: torch.Tensor | None = None):
        """Continue every row of `idx` (B, T) by max_new_tokens tokens, as one batch.

        context "full" (default): every new token sees min(length, block_size) tokens, as
        nanoGPT's sample.py: through the KV cache (one position per step) while the
        sequence fits block_size, past it a forward pass over the last block_size tokens
        per step, nanoGPT's own cost. "rebuild": an opt-in speed setting: past
        block_size the cache is rebuilt from the last block_size // 2 tokens (see
        KVCache), so later tokens see between half and all of block_size.

        Randomness: token t of row b is drawn by inverse CDF from uniforms[b, t]
        (sample_next); `uniforms` (B, max_new_tokens) in [0, 1) lets each row come from its
        own seed (engine.sample.generate), else they are drawn up front from `generator`.
        The loop never reads a value back to the host (no .item(), no stop test): on a GPU
        the tokens are queued as fast as Python issues the kernels; one flag, read after
        the loop, says whether every logit was finite (ValueError if not)."""
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, not {context!r}")
        was_training = self.training
        self.eval()
        bs = self.config.block_size
        B, T = idx.shape
        if temperature != 0 and uniforms is None:
            where = generator.device if generator is not None else idx.device
            uniforms = torch.rand((B, max_new_tokens), generator=generator, device=where)
        if uniforms is not None:
            uniforms = uniforms.to(idx.device)
        out = idx.new_empty((B, T + max_new_tokens))  # filled in place: no torch.cat per token
        out[:, :T] = idx
        cache: KVCache | None = None
        finite = torch.ones((), dtype=torch.bool, device=idx.device)  # read once, at the end
        for t in range(max_new_tokens):
            n = T + t  # tokens so far
            if not use_cache or (context == "full" and n > bs):
                logits, _ = self(out[:, max(0, n - bs):n])
            else:
                if cache is None or cache.length + 1 > bs:
                    keep = bs if cache is None else bs // 2  # first prefill, or a refresh
                    cache = KVCache(self.config.n_layer)
                    x = out[:, n - min(n, keep):n]
                else:
                    x = out[:, n - 1:n]
                logits, _ = self(x, cache=cache)
            u = None if uniforms is None else uniforms[:, t]
            finite &= torch.isfinite(logits[:, -1, :]).all()
            out[:, n:n + 1] = sample_next(logits[:, -1, :], temperature, top_k, top_p, uniforms=u)
        self.train(was_training)
        if max_new_tokens and not bool(finite):  # the sampler would pick token 0 silently
            raise ValueError("the model's logits are NaN or inf: its weights are not finite")
        return out


CONTEXTS = ("full", "rebuild")   # GPT.generate's context settings


def sample_next(logits, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None,
                uniforms: torch.Tensor | None = None):
    """One token per row from (B, V) logits with temperature, top-k and nucleus (top-p);
    temperature 0 is greedy decoding (the argmax), with no randomness at all.

    Row b takes the first token whose cumulative probability exceeds uniforms[b] (drawn
    from `generator` when not given): inverse-CDF sampling, written here rather than
    torch.multinomial because multinomial checks its input with two .item() calls (two
    host syncs per token on a GPU) and draws all rows from one generator, so a row's
    token would depend on the rows beside it. Here a row depends only on its own
    logits and its own uniform."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        v, _ = torch.topk(logits, top_k)
        logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        remove = cum - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token crossing p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, sorted_idx, sorted_logits)
    if uniforms is None:
        where = generator.device if generator is not None else logits.device
        uniforms = torch.rand(logits.size(0), generator=generator, device=where)
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    total = cdf[:, -1:]
    pick = torch.searchsorted(cdf, uniforms.to(cdf).view(-1, 1) * total, right=True)
    # u * total may round up to total itself: then the last token with any probability
    # (never one that top-k or top-p removed)
    last = (cdf < total).sum(dim=-1, keepdim=True)
    return torch.minimum(pick, last)
