"""Pre-flight estimates for a run: vocabulary, parameter counts, memory, time.

No torch here: `nanotui plan` should answer in a blink. Parameter counts and FLOPs come
from engine.model.arithmetic (exact); memory and time are rough and say what they assume.

Vocabulary: a char tokenizer's vocabulary is only known once the data is prepared. In
order: cfg.vocab_size; the prepared data's meta.json (cfg.data_dir, or a prepared copy of
cfg.dataset in the data cache); else DEFAULT_VOCAB: shakespeare char 65 (nanoGPT's),
tinystories char 83 (the characters of the TinyStories validation + test files in the
shared data), gpt2 50304 (nanoGPT's padded GPT-2 vocabulary, which the assignment's
parameter counts use). A text file's char vocabulary defaults to 256 until prepared.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.config import TrainConfig
from engine.data.nanogpt import nanogpt_data_meta
from engine.data.tokenizers import GPT2_TOKENS
from engine.model.arithmetic import (flops_per_token, model_vocab, padded_vocab, param_counts,
                                     query_chunks)
from engine.model.horizon import Horizon, resolve, resolved_config
from engine.model.cuda_compat import CUDA_CONTEXT_BYTES
from engine.runs import RunDir

DEFAULT_VOCAB = {("shakespeare", "char"): 65, ("tinystories", "char"): 83}
UNKNOWN_CHAR_VOCAB = 256

# Throughput assumed for time estimates, in training FLOP/s actually achieved (not peak).
# GPU: a course card (RTX 6000 Ada class) reaches roughly 10% of its bf16 peak on these
# small models, which are launch- and memory-bound.
# CPU: the quick sweep measured 46-49 GFLOP/s on an idle 2-core AVX512-BF16 EPYC
# (tok/s x flops/token, evals excluded; earlier 5-10 GFLOP/s readings were on a box
# loaded 5x over).
ASSUMED_FLOPS = {"gpu": 30e12, "cpu": 40e9}
# Sampling at every eval is one forward pass per generated token: latency-bound.
SECONDS_PER_SAMPLED_TOKEN = {"gpu": 0.001, "cpu": 0.002}


@dataclass(frozen=True)
class Estimate:
    vocab_size: int
    vocab_source: str        # "config" | "prepared" | "assumed"
    params: int              # nanoGPT's count (without position embeddings)
    params_total: int
    flops_per_token: float   # training (forward + backward)
    mem_bytes: int           # memory the run is expected to need on `device`
    seconds: float           # on the assumed device
    device: str              # "gpu" | "cpu": what `seconds` assumes

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _meta(d: Path) -> dict | None:
    try:
        meta = nanogpt_data_meta(d) or json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("vocab_size") else None


def vocab_for(cfg: TrainConfig) -> tuple[int, str]:
    """(the model's vocabulary size, where it came from); padded exactly as training pads
    it (engine.model.arithmetic), so plan and the trained run count the same parameters."""
    if cfg.vocab_size:
        return cfg.vocab_size, "config"
    from engine.data.datasets import find_prepared  # exact lookup: never prepares or downloads
    if cfg.data_dir:
        d: Path | None = Path(cfg.data_dir).expanduser()
    else:
        try:
            d = find_prepared(cfg)
        except Exception:  # an unreadable source: the plan still shows an assumed vocabulary
            d = None
    meta = _meta(d) if d is not None else None
    if meta is not None:
        return model_vocab(cfg, meta), "prepared"
    if cfg.tokenizer == "gpt2":
        return padded_vocab(GPT2_TOKENS, "gpt2"), "assumed"
    return DEFAULT_VOCAB.get((cfg.dataset, "char"), UNKNOWN_CHAR_VOCAB), "assumed"


# Bytes saved for the backward pass per token, per layer, per channel (counted from what
# autograd keeps: LayerNorm inputs, matmul inputs, q/k/v and the attention output of a
# fused kernel, the MLP's 4C GELU input and output). Under autocast the matmul inputs are
# kept in 16 bits and the residual stream in fp32: 38 B; in fp32 everything is 4 B: 68 B.
# Checked against torch.autograd.graph.saved_tensors_hooks within 25 %
# (tests/engine/test_estimate_memory.py). Dropout keeps a mask per dropout: ~3 B more per
# channel (of 1-byte bools) plus the attention's.
SAVED_PER_CHANNEL = {"float32": 68, "half": 38}
DROPOUT_PER_CHANNEL = 10
# Attention paths that keep T x T tensors (the others save O(T) per head):
# - "torch", the torch-op CPU path (engine.model.cpu_kernels.CausalAttention): each query
#   chunk's probabilities in the compute dtype (4 B, 2 B under bf16) and, with dropout, a
#   1-byte mask; only the causal chunks (query_chunks: 62.5 % of T x T at 4 chunks).
# - "sdpa" on the CPU with dropout: scaled_dot_product_attention falls back to its math
#   path, which keeps the softmax output, the dropout mask and the dropped probabilities
#   at 4 B each, in fp32 also under bf16 autocast (measured: 11.8-12.5 B per score).
#   Without dropout CPU SDPA runs its flash kernel: no T^2 term.
# On CUDA, SDPA's flash and memory-efficient kernels take these shapes (dropout
# included): no T^2 term. Checked against saved_tensors_hooks within 25 %
# (tests/engine/test_estimate_memory.py, T = 512).
SDPA_MATH_PER_SCORE = 12
T2_PATHS = ("torch", "sdpa")


def expected_attention(cfg: TrainConfig, device: str, recorded: str | None = None) -> str:
    """The attention path a run of `cfg` takes on `device` ("gpu": "flash"), for the
    estimate: the path the run recorded (status.json cpu_attention), else the one the
    config or NANOTUI_CPU_KERNEL fixes, else the fused kernel, which a CPU run takes
    wherever it builds unless the tuner measured another path faster (engine.model.
    cpu_tuner: that needs torch, which the estimate does not import)."""
    if device == "gpu":
        return "flash"
    env = os.environ.get("NANOTUI_CPU_KERNEL", "")
    if env == "0" and not recorded:
        return "torch"  # no kernel built: the tuner picks torch ops or SDPA
    for path in (recorded, env if env in T2_PATHS + ("fused",) else None, cfg.cpu_attention):
        if path and path != "auto":
            return path
    return "fused"


def recorded_attention(runs_root: str | Path | None, run_id: str) -> str | None:
    """The CPU attention path the run `run_id` recorded in its status.json (cpu_attention)
    when it trained, for estimate(): the T^2 term then follows what the run really uses
    (a drifted, resumed or extended run, a plan of one that exists). None: no such run,
    or it has not trained on the CPU."""
    if runs_root is None:
        return None
    run = RunDir(Path(runs_root) / run_id)
    if not run.exists():
        return None
    path = run.read_status().get("cpu_attention")
    return path if isinstance(path, str) and path else None


def attention_bytes(cfg: TrainConfig, dtype: str, attention: str) -> int:
    """The T x T tensors one micro-batch's attention keeps for the backward (see
    T2_PATHS); 0 for the paths that keep none."""
    B, T, H, L = cfg.batch_size, cfg.block_size, cfg.n_head, cfg.n_layer
    if attention == "torch":
        scores = sum((b - a) * b for a, b in query_chunks(T))
        per = (4 if dtype == "float32" else 2) + (1 if cfg.dropout > 0 else 0)
        return B * H * L * scores * per
    if attention == "sdpa" and cfg.dropout > 0:
        return B * H * L * T * T * SDPA_MATH_PER_SCORE
    return 0


def activation_bytes(cfg: TrainConfig, vocab: int, dtype: str | None = None,
                     attention: str = "flash") -> int:
    """What one micro-batch's forward keeps for its backward: the layers' saved tensors,
    the attention's T x T tensors on the paths that keep them (attention_bytes;
    `attention` as expected_attention says), and the fp32 logits with their softmax and
    gradient. `dtype`: the precision the run computes in ("float32", or anything 16-bit);
    default the config's, "auto" counting as 16-bit (bf16 or fp16 on every CUDA card)."""
    dtype = dtype or cfg.dtype
    B, T, C, L = cfg.batch_size, cfg.block_size, cfg.n_embd, cfg.n_layer
    per = SAVED_PER_CHANNEL["float32" if dtype == "float32" else "half"]
    per += DROPOUT_PER_CHANNEL if cfg.dropout > 0 else 0
    return int(B * T * L * per * C + B * T * vocab * 4 * 3
               + attention_bytes(cfg, dtype, attention))


def memory_bytes(cfg: TrainConfig, params_total: int, vocab: int, device: str = "gpu",
                 attention: str | None = None) -> int:
    """Peak memory, roughly: fp32 weights + grads + AdamW's two moments (16 B/param), the
    activations kept for the backward pass (activation_bytes: by precision and attention
    path), plus, on a GPU, the CUDA context (a CPU run has none)."""
    context = CUDA_CONTEXT_BYTES if device == "gpu" else 0
    attention = attention or expected_attention(cfg, device)
    return int(16 * params_total + activation_bytes(cfg, vocab, attention=attention) + context)


def horizon_for(cfg: TrainConfig) -> Horizon:
    """cfg's horizon resolved with its vocabulary (vocab_for: the prepared data's, or
    assumed and marked so)."""
    vocab, source = vocab_for(cfg)
    return resolve(cfg, vocab, vocab_assumed=source == "assumed")


def seconds(cfg: TrainConfig, fpt: float, params: int, device: str,
            flops_per_s: float | None = None) -> float:
    """Training tokens x FLOPs/token, plus evaluation (forward only: a third of the
    training FLOPs per token) over both splits at every eval, divided by the throughput
    (`flops_per_s` measured, else the assumed); plus the samples drawn at every eval at an
    assumed latency per token. `cfg` is resolved (engine.model.horizon)."""
    train_tokens = cfg.tokens_per_iter * cfg.max_iters
    # every eval_interval from 0, and the last step's when it is not one of them
    evals = cfg.max_iters // cfg.eval_interval + 1 + (cfg.max_iters % cfg.eval_interval != 0)
    eval_tokens = evals * 2 * cfg.eval_iters * cfg.batch_size * cfg.block_size
    total = fpt * train_tokens + fpt / 3 * eval_tokens
    sp = cfg.sampling
    sampled = evals * len(sp.prompts) * sp.num_samples * sp.max_new_tokens
    return (total / (flops_per_s or ASSUMED_FLOPS[device])
            + sampled * SECONDS_PER_SAMPLED_TOKEN[device])


def estimate(cfg: TrainConfig, device: str = "gpu", attention: str | None = None) -> Estimate:
    """`attention`: the path a run recorded (status.json cpu_attention), if any."""
    vocab, source = vocab_for(cfg)
    cfg = resolved_config(cfg, vocab)
    params, total = param_counts(cfg, vocab)
    fpt = flops_per_token(cfg.n_layer, cfg.n_embd, cfg.block_size, params)
    mem = memory_bytes(cfg, total, vocab, device, expected_attention(cfg, device, attention))
    return Estimate(vocab, source, params, total, fpt, mem, seconds(cfg, fpt, params, device),
                    device)



def sampling_bytes(cfg: TrainConfig, params_total: int, vocab: int, num_samples: int = 1,
                   device: str = "gpu") -> int:
    """Memory to sample from a model: fp32 weights, the KV cache of every sample at full
    context (2 x layers x block_size x n_embd, fp32), one step's fp32 logits, and on a GPU
    the CUDA context."""
    context = CUDA_CONTEXT_BYTES if device == "gpu" else 0
    kv = 2 * cfg.n_layer * num_samples * cfg.block_size * cfg.n_embd * 4
    return int(4 * params_total + kv + num_samples * vocab * 4 + context)
