"""A run's horizon and learning-rate schedule, resolved: the one place that turns
max_iters | max_tokens | tokens_per_param | train_flops into optimizer steps and fits the
warm-up and the decay to them. Plan, launch, the budget, the trainer and (through the
`[horizon]` table of config.toml) drift, reports and the TUI read what this returns.

    max_iters         the steps themselves
    max_tokens        D tokens:                 max_iters = ceil(D / tokens_per_iter)
    tokens_per_param  D = k * N, N by the config's param_convention
    train_flops       D = C / training FLOPs per token (6N + attention, as MFU counts)

tokens_per_iter = batch_size * block_size * gradient_accumulation_steps. Unless written,
lr_decay_iters = max_iters (the cosine reaches min_lr on the last step) and warmup_iters =
warmup_frac * max_iters, at most WARMUP_CAP (nanoGPT's 2000).

It lives beside the arithmetic it needs (N and FLOPs per token; no torch), above
engine.experiments: N needs the model's vocabulary, which only the prepared data knows,
so the experiments file checks what needs no vocabulary (one key per level, values) and
every caller that knows a vocabulary (assumed in plan, the real one at launch) resolves
here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from engine.config import (DEFAULT_MAX_ITERS, HORIZON_KEYS, WARMUP_CAP, ConfigError,
                           TrainConfig)
from engine.model.arithmetic import param_count, train_flops_per_token

MAX_HORIZON_ITERS = 10 ** 9   # a billion steps: weeks at the fastest step any GPU takes
DECAY_TOLERANCE = 0.1         # an explicit decay within 10% of the horizon is not "far"
SCHEDULE_KEYS = ("warmup_iters", "lr_decay_iters")


class HorizonError(ConfigError):
    """A horizon that cannot be trained (below one step, above MAX_HORIZON_ITERS) or a
    warm-up that never lets the run learn; one line."""


def get_lr(it: int, cfg: TrainConfig) -> float:
    """Learning rate at step `it` of a resolved config. cosine is nanoGPT's get_lr exactly:
    linear warmup, cosine decay to min_lr at lr_decay_iters, min_lr after. linear decays
    linearly instead; constant keeps the rate after the warmup; decay_lr = false is
    nanoGPT's constant rate with no warmup. The trainer uses get_lr(k) for the step that
    completes iteration k, so with lr_decay_iters = max_iters the last step is at min_lr."""
    lr = cfg.learning_rate
    if not cfg.decay_lr:
        return lr
    if cfg.warmup_iters is None or (cfg.lr_decay_iters is None
                                    and cfg.lr_schedule != "constant"):
        raise ConfigError("get_lr needs a resolved schedule (engine.model.horizon.resolve)")
    if it < cfg.warmup_iters:
        return lr * (it + 1) / (cfg.warmup_iters + 1)
    if cfg.lr_schedule == "constant":
        return lr
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    span = cfg.lr_decay_iters - cfg.warmup_iters
    ratio = (it - cfg.warmup_iters) / span if span > 0 else 1.0
    if cfg.lr_schedule == "cosine":
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    else:  # linear
        coeff = 1.0 - ratio
    return cfg.min_lr + coeff * (lr - cfg.min_lr)


@dataclass(frozen=True)
class Horizon:
    key: str                  # the horizon key that set the length
    value: float              # its value
    max_iters: int
    warmup_iters: int
    lr_decay_iters: int
    derived: tuple[str, ...]  # keys computed here rather than written
    tokens: int               # max_iters * tokens_per_iter: what the run trains on
    tokens_per_param: float
    train_flops: float
    params: int               # N under param_convention
    param_convention: str
    vocab_size: int
    vocab_assumed: bool
    config: TrainConfig = field(repr=False, compare=False)  # the resolved config

    def record(self) -> dict[str, Any]:
        """The `[horizon]` table of a run's config.toml."""
        return {"key": self.key, "value": self.value, "max_iters": self.max_iters,
                "warmup_iters": self.warmup_iters, "lr_decay_iters": self.lr_decay_iters,
                "derived": list(self.derived), "tokens": self.tokens,
                "tokens_per_param": self.tokens_per_param, "train_flops": self.train_flops,
                "params": self.params, "param_convention": self.param_convention,
                "vocab_size": self.vocab_size, "vocab_assumed": self.vocab_assumed}

    @property
    def fitted(self) -> bool:
        """True when warm-up and decay both follow the horizon (neither was written)."""
        return all(k in self.derived for k in SCHEDULE_KEYS)

    def schedule_line(self) -> str:
        """One line for stdout.log and plan: the length, where it came from, the schedule."""
        cfg = self.config
        src = (f"{self.key} = {_num(self.value)}" if self.key != "max_iters" or
               "max_iters" not in self.derived else f"nanoGPT's default {DEFAULT_MAX_ITERS}")
        warm = (f"warm-up {self.warmup_iters} ({cfg.warmup_frac:g} of the horizon"
                f"{', capped' if self.warmup_iters == WARMUP_CAP else ''})"
                if "warmup_iters" in self.derived else f"warm-up {self.warmup_iters} (set)")
        if not cfg.decay_lr or cfg.lr_schedule == "constant":
            decay = "constant rate after warm-up"
        else:
            decay = (f"{cfg.lr_schedule} decay to min_lr {cfg.min_lr:g} at step "
                     f"{self.lr_decay_iters} "
                     f"({'= max_iters' if 'lr_decay_iters' in self.derived else 'set'})")
        return (f"horizon {self.max_iters:,} steps from {src}: {self.tokens:,} tokens, "
                f"{self.tokens_per_param:.3g} tokens/param ({self.param_convention}), "
                f"{self.train_flops:.3g} FLOPs; schedule: {warm}, {decay}")

    def warnings(self) -> list[str]:
        """Explicit schedule values that do not fit the horizon, one line each."""
        cfg, out = self.config, []
        if not cfg.decay_lr:
            return out
        M = self.max_iters
        if "warmup_iters" not in self.derived and self.warmup_iters >= M:
            out.append(f"warmup_iters = {self.warmup_iters} is not shorter than the run's "
                       f"{M} steps: the learning rate ends at {get_lr(M, cfg):.2e}, "
                       f"{get_lr(M, cfg) / cfg.learning_rate:.0%} of its peak (unset "
                       f"warmup_iters to fit it to the horizon)")
        if ("lr_decay_iters" not in self.derived and cfg.lr_schedule != "constant"
                and abs(self.lr_decay_iters - M) > DECAY_TOLERANCE * M):
            out.append(f"lr_decay_iters = {self.lr_decay_iters} ends far from the run's {M} "
                       f"steps: the learning rate ends at {get_lr(M, cfg):.2e} (min_lr "
                       f"{cfg.min_lr:.2e}; unset lr_decay_iters to end the decay with the run)")
        return out


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:.4g}"


def horizon_key(cfg: TrainConfig) -> str:
    """The key that sets `cfg`'s length: max_iters when set (a file's max_iters, or a
    saved config's resolved value), else the one other horizon key set, else max_iters
    (nanoGPT's default)."""
    if cfg.max_iters is not None:
        return "max_iters"
    return next((k for k in HORIZON_KEYS[1:] if getattr(cfg, k) is not None), "max_iters")


def resolve(cfg: TrainConfig, vocab: int, vocab_assumed: bool = False) -> Horizon:
    """Resolve `cfg`'s horizon and schedule with the model vocabulary `vocab`. Raises
    HorizonError for a horizon below one step or above MAX_HORIZON_ITERS, and for an
    explicit warm-up of at least 10x the horizon (the run cannot learn)."""
    key = horizon_key(cfg)
    tpi = cfg.tokens_per_iter
    N = param_count(cfg, vocab, cfg.param_convention)
    fpt = train_flops_per_token(cfg, vocab)
    derived = [k for k in SCHEDULE_KEYS if getattr(cfg, k) is None]
    if key == "max_iters":
        if cfg.max_iters is None:
            derived.insert(0, "max_iters")
        iters = cfg.max_iters or DEFAULT_MAX_ITERS
        value: float = iters
    else:
        derived.insert(0, "max_iters")
        value = getattr(cfg, key)
        D = {"max_tokens": value, "tokens_per_param": value * N,
             "train_flops": value / fpt}[key]
        if D < tpi:
            raise HorizonError(f"{key} = {_num(value)} is {D:,.0f} tokens, less than one "
                               f"optimizer step ({tpi:,} tokens: batch_size x block_size x "
                               f"gradient_accumulation_steps)")
        iters = math.ceil(D / tpi - 1e-9)
    if iters > MAX_HORIZON_ITERS:
        what = f"{key} = {_num(value)}" + (f" is {iters:.3g} steps," if key != "max_iters" else ":")
        raise HorizonError(f"{what} more than {MAX_HORIZON_ITERS:,} steps, which no run "
                           f"finishes")
    warmup = (cfg.warmup_iters if cfg.warmup_iters is not None
              else min(WARMUP_CAP, int(cfg.warmup_frac * iters)))
    decay = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else iters
    if cfg.decay_lr and warmup >= 10 * iters:
        raise HorizonError(f"warmup_iters = {warmup} is at least 10x the run's {iters} steps: "
                           f"the learning rate stays below a tenth of its peak; unset "
                           f"warmup_iters (warm-up follows the horizon) or shorten it")
    resolved = cfg.replace(max_iters=iters, warmup_iters=warmup, lr_decay_iters=decay)
    tokens = iters * tpi
    return Horizon(key, value, iters, warmup, decay, tuple(derived), tokens, tokens / N,
                   tokens * fpt, N, cfg.param_convention, vocab, vocab_assumed, resolved)


def resolved_config(cfg: TrainConfig, vocab: int) -> TrainConfig:
    """`cfg` itself when its length and schedule are all set (a saved run's config, which
    launch resolved), else resolved here."""
    if None in (cfg.max_iters, cfg.warmup_iters, cfg.lr_decay_iters):
        return resolve(cfg, vocab).config
    return cfg


def saved_horizon(cfg: TrainConfig, record: dict[str, Any], vocab: int) -> Horizon:
    """The Horizon of a run's saved config: resolved again from the keys the user wrote
    (those `record`, the `[horizon]` table, does not list as derived), so it names the
    key that set the length; the saved values win where they differ (a config edited
    since launch)."""
    derived = record.get("derived") if isinstance(record.get("derived"), list) else []
    spec = cfg.replace(**{k: None for k in derived if k in ("max_iters",) + SCHEDULE_KEYS})
    try:
        h = resolve(spec, vocab)
    except ConfigError:
        h = None
    if h is not None and (h.max_iters, h.warmup_iters, h.lr_decay_iters) == (
            cfg.max_iters, cfg.warmup_iters, cfg.lr_decay_iters):
        return h
    return resolve(cfg, vocab)
