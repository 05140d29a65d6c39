"""Training-speed benchmark of one model shape: the engine half of `nanotui bench`.

Like nanoGPT's bench.py, but it times the real training step (engine.train.trainer.Trainer:
the same model, optimizer, precision, batch fetch and compile path as
`python -m engine.train`) on synthetic tokens, so no dataset is needed. Reports
ms/iter, tokens/s, MFU (where the device's peak is known) and peak memory.
Depends on torch and numpy only.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

from engine.model import device as dev
from engine.config import ConfigError, TrainConfig, check_train_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_VOCAB = 65  # a character-level vocabulary, as nanoGPT's shakespeare_char


def parse_value(text: str) -> Any:
    """A command-line value as a TOML literal (6, 1e-3, true, "x", [..]); Python's
    True/False/None are accepted too; anything else is a bare string (--device=cpu)."""
    aliases = {"True": True, "False": False, "None": None, "none": None, "null": None}
    if text in aliases:
        return aliases[text]
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str], source: str = "bench") -> dict[str, Any]:
    """["--n_layer=6", "--dtype", "bfloat16", ...] -> checked TrainConfig keys and values.
    Unknown keys and wrong types raise ConfigError (one line, with a did-you-mean)."""
    raw: dict[str, Any] = {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) == 2:
            raise ConfigError(f"{source}: unexpected argument {item!r} (expected --key=value)")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if i + 1 >= len(items) or items[i + 1].startswith("--"):
                raise ConfigError(f"{source}: --{key} needs a value (--{key}=VALUE)")
            value, i = items[i + 1], i + 1
        raw[key.replace("-", "_")] = parse_value(value)  # --n-layer works as --n_layer
        i += 1
    return check_train_keys(raw, source)


def bench_config(overrides: dict[str, Any]) -> TrainConfig:
    """TrainConfig defaults (nanoGPT's GPT-2 small shape) with the overrides applied;
    vocab_size defaults to 65 since there is no dataset to take it from."""
    overrides = dict(overrides)
    if overrides.get("vocab_size") is None:
        overrides["vocab_size"] = DEFAULT_VOCAB
    try:
        cfg = TrainConfig(**overrides)
        cfg.validate("bench")
    except ConfigError as e:
        raise ConfigError(str(e).replace("config:", "bench:", 1)) from None
    return cfg


def synthetic_tokens(cfg: TrainConfig, seed: int = 0) -> np.ndarray:
    """Uniform random tokens, enough for distinct windows; uint16 as prepared data is."""
    n = max(64 * (cfg.block_size + 1), 1 << 16)
    dtype = np.uint16 if cfg.vocab_size <= 65535 else np.uint32
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, n).astype(dtype)


def check_counts(iters: int, warmup: int) -> None:
    if iters < 1 or warmup < 0:
        raise ConfigError("bench: --iters must be at least 1 and --warmup at least 0")


def run_bench(cfg: TrainConfig, iters: int = 10, warmup: int = 3,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time `iters` training steps after `warmup` untimed ones (compilation, allocator and
    thread-pool warm-up happen there). Returns the figures as a JSON-ready dict."""
    check_counts(iters, warmup)
    say = log or (lambda s: None)
    trainer, device = _trainer(cfg, say)
    t0 = time.perf_counter()
    for i in range(warmup):
        loss = trainer.train_step(cfg.learning_rate).item()
        say(f"warm-up {i + 1}/{warmup}: loss {loss:.4f}")
    dev.synchronize(device)
    warmup_s = time.perf_counter() - t0
    dev.reset_peak_memory(device)

    times: list[float] = []
    for i in range(iters):
        t0 = time.perf_counter()
        loss = trainer.train_step(cfg.learning_rate).item()  # .item() synchronises
        dev.synchronize(device)
        times.append(time.perf_counter() - t0)
        say(f"iter {i + 1}/{iters}: {times[-1] * 1000:.1f} ms, loss {loss:.4f}")
    if not math.isfinite(loss):
        raise ConfigError(f"bench: the loss became {loss}; lower --learning_rate")
    return _figures(cfg, trainer, device, times, warmup, warmup_s, loss)


def _trainer(cfg: TrainConfig, say: Callable[[str], None]):
    """The training process's own Trainer on synthetic tokens, and what it runs on."""
    from engine.train.trainer import Trainer  # the training loop's own step, not a copy of it
    from engine.train.threads import Governor

    try:
        device = dev.resolve_device(cfg.device)
    except ValueError as e:
        raise ConfigError(f"bench: {e}") from None
    if device.type == "cpu":
        dev.keep_freed_memory()  # as the training process does
    try:  # threads chosen from the free cores as a run's are (engine/train/threads.py)
        threads = Governor(cfg.cpu_threads) if device.type == "cpu" else None
    except ValueError as e:
        raise ConfigError(f"bench: {e}") from None
    data = synthetic_tokens(cfg)
    trainer = Trainer(cfg, data, data, cfg.vocab_size, device, log=say,  # as a run's process
                      threads=threads)
    say(f"{cfg.n_layer} layers, {cfg.n_head} heads, n_embd {cfg.n_embd}, block {cfg.block_size}, "
        f"batch {cfg.batch_size} x {cfg.gradient_accumulation_steps} accum, vocab {cfg.vocab_size}"
        f", dropout {cfg.dropout}: {trainer.model.get_num_params():,} params")
    say(f"device {device} ({dev.device_name(device)}), dtype {dev.dtype_name(trainer.dtype)}, "
        f"{torch.get_num_threads()} CPU threads, compile {'on' if cfg.compile else 'off'}")
    attention = trainer.cpu_attention_line()
    if attention is not None:
        say("CPU attention: " + attention)
    if cfg.compile:
        trainer.compile()
    return trainer, device


def _figures(cfg: TrainConfig, trainer, device, times: list[float], warmup: int,
             warmup_s: float, loss: float) -> dict[str, Any]:
    model, dtype, name = trainer.model, trainer.dtype, dev.device_name(device)
    ms = statistics.median(times) * 1000
    tokens_per_s = cfg.tokens_per_iter / (ms / 1000)
    flops_per_token = model.flops_per_token()
    return {
        "ms_per_iter": ms,                      # median over the timed iterations
        "ms_per_iter_mean": statistics.fmean(times) * 1000,
        "ms_per_iter_min": min(times) * 1000,
        "tokens_per_iter": cfg.tokens_per_iter,
        "tokens_per_s": tokens_per_s,
        "mfu": dev.mfu(flops_per_token, tokens_per_s, name, dtype),  # None: peak unknown
        "achieved_flops": flops_per_token * tokens_per_s,
        "flops_per_token": flops_per_token,
        "peak_mem_bytes": dev.peak_memory_bytes(device),
        "peak_mem_kind": "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss",
        "iters": len(times),
        "warmup": warmup,
        "warmup_s": warmup_s,
        "final_loss": loss,
        "params": model.get_num_params(),
        "device": str(device),
        "device_name": name,
        "dtype": dev.dtype_name(dtype),
        "compile": trainer.compile_status,  # off | on | failed (then it ran eagerly)
        "threads": torch.get_num_threads(),
        "cpu_attention": trainer.cpu_attention_line(),  # which CPU path ran and why (None on GPUs)
        "cpu_choice": trainer.cpu_choice.to_json() if trainer.cpu_choice else None,
        "torch": torch.__version__,
        "config": cfg.to_dict(),
    }


def format_summary(r: dict[str, Any]) -> str:
    """The closing line(s) of `nanotui bench`."""
    if r["mfu"] is not None:
        mfu = f"MFU {r['mfu'] * 100:.1f}%"
    else:
        mfu = f"MFU n/a ({r['achieved_flops'] / 1e12:.3f} TFLOP/s; no peak known for {r['device_name']})"
    mem = r["peak_mem_bytes"]
    mem_s = "n/a" if mem is None else f"{mem / 2**20:,.0f} MiB"
    kind = "allocated" if r["peak_mem_kind"] == "cuda_max_allocated" else "process RSS"
    return (f"{r['ms_per_iter']:.1f} ms/iter (median of {r['iters']}) | "
            f"{r['tokens_per_s']:,.0f} tokens/s | {mfu} | peak memory {mem_s} ({kind})")
