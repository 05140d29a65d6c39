"""The one model arithmetic: vocabulary padding, parameter counts, FLOPs per token.

No torch here, so `nanotui plan` answers in a blink; the counts are exact for
engine.model.gpt.GPT (the tests build the model and compare). Training, plan, estimates,
bench and reports all use these functions, so a parameter count or a vocabulary size has
one value everywhere.
"""

from __future__ import annotations

from typing import Any

from engine.config import (DEFAULT_PARAM_CONVENTION, PARAM_CONVENTIONS,  # noqa: F401 (re-exported)
                           ConfigError, TrainConfig)

PAD_MULTIPLE = 64        # padded up to a multiple of 64 for faster matmuls: 50257 -> 50304
QUERY_CHUNKS = 4         # engine.model.cpu_kernels' torch-op attention: query row chunks


def query_chunks(T: int) -> list[tuple[int, int]]:
    """Up to QUERY_CHUNKS row ranges of >= 64 queries covering 0..T-1 (the torch-op CPU
    attention meets chunk c with keys 0..its last row only)."""
    n = min(QUERY_CHUNKS, max(1, T // 64))
    bounds = [T * i // n for i in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def padded_vocab(n: int, tokenizer: str | None) -> int:
    """The model's vocabulary for a tokenizer with `n` tokens. GPT-2's is padded to a
    multiple of 64 (nanoGPT's 50304, the size the course's parameter counts assume);
    char vocabularies are used as they are."""
    return (n + PAD_MULTIPLE - 1) // PAD_MULTIPLE * PAD_MULTIPLE if tokenizer == "gpt2" else n



def model_vocab(cfg: TrainConfig, meta: dict[str, Any]) -> int:
    """The model's vocabulary: the config's vocab_size when set (never below the data's),
    else the prepared data's (meta.json), padded as padded_vocab says."""
    data_n = meta.get("vocab_size")
    if cfg.vocab_size is not None:
        if data_n is not None and cfg.vocab_size < int(data_n):
            raise ConfigError(f"vocab_size = {cfg.vocab_size} is smaller than the data's {data_n}")
        return cfg.vocab_size
    if data_n is None:
        raise ConfigError("meta.json has no vocab_size and the config sets none")
    return padded_vocab(int(data_n), meta.get("tokenizer"))


def param_counts(cfg: TrainConfig, vocab: int) -> tuple[int, int]:
    """(nanoGPT's count, total) for the nanoGPT architecture with a tied output head.

    Per block: ln_1 + ln_2 (C each), attention qkv 3C^2 + proj C^2, MLP 4C^2 + 4C^2;
    with bias: + 3C + C + 4C + C + 2C for the LayerNorms. Then ln_f, wte (V*C, tied to
    lm_head) and wpe (T*C, which nanoGPT's count, `get_num_params()`, leaves out)."""
    C, L, T = cfg.n_embd, cfg.n_layer, cfg.block_size
    per_block = 12 * C * C + 2 * C + (11 * C if cfg.bias else 0)
    total = vocab * C + T * C + L * per_block + C + (C if cfg.bias else 0)
    return total - T * C, total


def flops_per_token(n_layer: int, n_embd: int, seq_len: int, params: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM appendix B as in nanoGPT's
    estimate_mfu: 6N + 12 L H Q T, where H * Q = n_embd."""
    return 6 * params + 12 * n_layer * n_embd * seq_len


# The parameter-count conventions a scaling law can use (defined beside TrainConfig, whose
# param_convention names one). They differ a lot for small models with a GPT-2 vocabulary
# (a 3.3 M-parameter depth model is ~3.2 M embedding), and the convention moves the fitted
# exponents and the optimal tokens per parameter, so every count that is compared names
# its convention.


def param_count(cfg: TrainConfig, vocab: int, convention: str = DEFAULT_PARAM_CONVENTION) -> int:
    """The parameter count under one of PARAM_CONVENTIONS (the one home of N for
    horizons, plans, reports and fits)."""
    nanogpt, total = param_counts(cfg, vocab)
    if convention == "nanogpt":
        return nanogpt
    if convention == "total":
        return total
    if convention == "non_embedding":
        return nanogpt - vocab * cfg.n_embd
    raise ConfigError(f"param convention {convention!r} is not one of "
                      f"{', '.join(PARAM_CONVENTIONS)}")


def train_flops_per_token(cfg: TrainConfig, vocab: int) -> float:
    """Training FLOPs per token of `cfg` at its block size: flops_per_token with nanoGPT's
    parameter count, as MFU uses it (attention included)."""
    return flops_per_token(cfg.n_layer, cfg.n_embd, cfg.block_size, param_counts(cfg, vocab)[0])
