"""Which attention path and precision a CPU training run uses: measured once per kind of
machine and shape, then cached.

Why measure. The fused C++ kernel with bf16 autocast was 2.4-3.7x nanoGPT's step on an
AVX512-BF16 CPU, while on an AVX2 CPU (AMD Zen 3, no AVX-512, no bf16) the same path was
slower than nanoGPT at three of four shapes and the torch-op path or SDPA won instead;
which one wins moves with the CPU class, the head size, dropout and the thread count. A
fixed rule would need measured data on every class of CPU; a measurement on the user's
own CPU needs none.

How. The candidates are the attention paths that can run this shape here
(cpu_kernels.PATHS; "fused" only where the kernel builds and has the head size) times the
precisions: fp32, plus bf16 autocast where the CPU has native bf16 and the run's dtype is
"auto". One model of the run's shape (batch, block, heads, width, vocabulary, dropout) but
at most MEASURE_LAYERS layers (the layers are identical: what differs between candidates
is the cost per layer, and the embedding and head every depth shares) and its AdamW take
turns doing one real training step per candidate (forward, backward, grad clip, AdamW
step): a warm-up round, then `steps` timed rounds with the order rotating, so load from
other processes falls on all candidates alike (fewer timed rounds, never none, where the
warm-up round says they would take over BUDGET_S: a few seconds for the course's shapes).
A candidate's figure is its fastest step; the fastest candidate wins. The run's RNG state
is left as it was.

Cache. One JSON file per key in cache_dir()/cpu-tuning/ (NANOTUI_CACHE_DIR moves it), the
key being the CPU's model name, flags and emulated class, the kernel's sources, the torch
version, the thread count, the shape, the dtype setting, dropout and the candidates. The first process to
need a key measures under a file lock; others starting at the same time wait for it and
reuse its answer. Measurements of different keys (two runs of different shapes starting
together) take turns under one more lock, MEASURE_LOCK: measured side by side, each would
time the other's work too (seen: two shapes tuned at once on 2 cores picked torch ops over
a kernel 1.4x faster). How many cores other work kept busy just before measuring is kept
(the CPU use of the whole machine over BUSY_SAMPLE_S, while this process waits; not the
load average, which still counts a run that ended a minute ago); a busy machine is named
in the log line, and such an entry is only reused while the machine is still busy: the
first start on a quiet machine measures again and replaces it. The thread count in the key
is the one the run trains with (engine/train/threads.py sets it before the tuner runs).
NANOTUI_CPU_RETUNE=1 measures again and replaces the entry.

Overrides. NANOTUI_CPU_KERNEL=fused|torch|sdpa (the environment wins) or the config's
cpu_attention fixes the path; dtype = "float32" | "bfloat16" fixes the precision. What is
left open is still measured; with both fixed nothing is. NANOTUI_CPU_KERNEL=0 keeps the
kernel from being built at all (engine/model/native.py), leaving torch ops and SDPA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import torch

from engine.errors import one_line
from engine.files import atomic_write_json, read_regular_json, regular_lock
from engine.model import cpu_kernels, native
from engine.model import device as dev
from engine.model.gpt import GPT, GPTConfig

TUNER_VERSION = 2     # part of the key: a change in how candidates are measured re-measures
MEASURE_LAYERS = 2
DEFAULT_STEPS = 5     # timed rounds after one warm-up round; NANOTUI_CPU_TUNE_STEPS changes it
BUDGET_S = 8.0        # fewer timed rounds (never none) where the warm-up round says they'd exceed it
OVERRIDE_ENV = "NANOTUI_CPU_KERNEL"
RETUNE_ENV = "NANOTUI_CPU_RETUNE"
LOCK_TIMEOUT_S = 900  # a waiting run gives up after this (another run measuring that long is stuck)
MAX_ENTRY_BYTES = 64 * 1024  # a cache entry is under 1 KB: anything longer is not one
MEASURE_LOCK = "measuring.lock"   # in cpu-tuning/: one measurement at a time, whatever the key
BUSY_CORES = 0.5      # cores other processes kept busy just before measuring: "busy" from here
BUSY_SAMPLE_S = 0.3   # how long that is sampled


@dataclass
class Choice:
    """The attention path and precision of one CPU run, and how they were chosen."""

    path: str                   # cpu_kernels.PATHS
    dtype: torch.dtype
    how: str                    # "measured" | "cached" | "override" | "single candidate" | "untuned"
    why: str = ""               # the override's source, or what fixed the precision
    times_ms: dict[str, float] = field(default_factory=dict)  # "path/dtype": fastest step
    failed: dict[str, str] = field(default_factory=dict)      # "path/dtype": its error
    measured_layers: int = 0
    measured_at: str = ""
    cache_file: str = ""
    busy_cores: float | None = None  # cores other work used just before measuring

    def describe(self, n_head: int, n_embd: int) -> str:
        """One line for stdout.log and `nanotui bench`: path, precision and why."""
        head = f"{cpu_kernels.describe(n_head, n_embd, self.path)}, {dev.dtype_name(self.dtype)}"
        times = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.times_ms.items(), key=lambda kv: kv[1]))
        parts = [self.why] if self.why else []
        model = f"{self.measured_layers}-layer model"
        if self.how == "measured":
            parts.append(f"measured now, ms per step of a {model}: {times}")
        elif self.how == "cached":
            parts.append(f"cached, measured {self.measured_at}, ms per step of a {model}: {times}")
        elif self.how == "single candidate":
            parts.append("the only candidate here")
        parts += [f"{k} failed: {v}" for k, v in sorted(self.failed.items())]
        if self.how in ("measured", "cached") and (self.busy_cores or 0.0) >= BUSY_CORES:
            parts.append(f"measured while other work kept {self.busy_cores:.1f} cores busy: "
                         "the next start on a quiet machine measures again")
        return f"{head} ({'; '.join(parts)})"

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["dtype"] = dev.dtype_name(self.dtype)
        return d


def label(path: str, dtype: torch.dtype) -> str:
    return f"{path}/{dev.dtype_name(dtype)}"


def path_override(config_value: str) -> tuple[str | None, str]:
    """(fixed path or None, where it came from). The environment wins over the config."""
    env = os.environ.get(OVERRIDE_ENV, "").strip().lower()
    if env in cpu_kernels.PATHS:
        return env, f"override: {OVERRIDE_ENV}={env}"
    if env not in ("", "0", "1", "auto"):
        raise ValueError(f"{OVERRIDE_ENV}={env!r}: expected auto, fused, torch, sdpa or 0")
    if config_value != "auto":
        return config_value, f'override: cpu_attention = "{config_value}" in the config'
    return None, ""


def candidates(cfg: GPTConfig, dtype_setting: str, path: str | None) -> list[tuple[str, torch.dtype]]:
    """(path, precision) pairs to measure, in order of preference on a tie."""
    if path is not None:
        paths = [path]
    else:
        paths = [p for p in cpu_kernels.PATHS if cpu_kernels.unavailable(p, cfg.n_head, cfg.n_embd) is None]
    if dtype_setting == "auto":
        dtypes = [torch.bfloat16, torch.float32] if dev.cpu_has_bf16() else [torch.float32]
    else:
        dtypes = [dev.DTYPES[dtype_setting]]
    return [(p, d) for d in dtypes for p in paths]


def cache_key(cfg: GPTConfig, batch_size: int, dtype_setting: str,
              cands: list[tuple[str, torch.dtype]]) -> dict:
    """Everything a measured choice depends on; its hash names the cache file."""
    return {
        "tuner": TUNER_VERSION, "kernel": native.source_digest(), "cpu": dev.cpu_signature(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(), "n_layer": cfg.n_layer, "n_head": cfg.n_head,
        "n_embd": cfg.n_embd, "block_size": cfg.block_size, "vocab_size": cfg.vocab_size,
        "bias": cfg.bias, "batch_size": batch_size, "dtype": dtype_setting,
        "dropout": cfg.dropout, "candidates": [label(p, d) for p, d in cands],
    }


def cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return native.cache_dir() / "cpu-tuning" / f"{digest}.json"


def tune_steps() -> int:
    raw = os.environ.get("NANOTUI_CPU_TUNE_STEPS", "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_STEPS
    except ValueError:
        raise ValueError(f"NANOTUI_CPU_TUNE_STEPS={raw!r}: expected a whole number") from None


def choose(cfg: GPTConfig, batch_size: int, dtype_setting: str = "auto",
           cpu_attention: str = "auto", steps: int | None = None,
           log: Callable[[str], None] | None = None) -> Choice:
    """The path and precision for CPU training of this shape: fixed by an override, read
    from the cache, or measured now (and cached; `log` hears that it is, since it takes a
    few seconds). dtype_setting is the config's dtype ("auto" or a DTYPES name);
    cpu_attention the config's cpu_attention."""
    path, why = path_override(cpu_attention)
    cands = candidates(cfg, dtype_setting, path)
    missing = cpu_kernels.unavailable("fused", cfg.n_head, cfg.n_embd) if path is None else None
    if missing:
        why = f"not a candidate: {missing}"
    if len(cands) == 1:
        how = "override" if path is not None else "single candidate"
        return Choice(cands[0][0], cands[0][1], how, why)
    key = cache_key(cfg, batch_size, dtype_setting, cands)
    file = cache_path(key)
    with ExitStack() as locks:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            locks.enter_context(regular_lock(f"{file}.lock", LOCK_TIMEOUT_S))
        except OSError as e:  # a cache folder that is a file, a planted link or FIFO
            return untuned(cands, why, f"tuning cache unusable ({one_line(e)})", log)
        cached = None if os.environ.get(RETUNE_ENV) == "1" else read_entry(file, key)
        if cached is not None and (cached.busy_cores or 0.0) >= BUSY_CORES \
                and (busy_cores() or 0.0) < BUSY_CORES:
            cached = None  # measured under load: a quiet machine measures what it really is
        if cached is not None:
            cached.why = why
            return cached
        if log is not None:
            log(f"timing {len(cands)} CPU attention paths/precisions for this shape "
                f"(once per machine; cached in {file.parent})")
        try:
            locks.enter_context(regular_lock(file.parent / MEASURE_LOCK, LOCK_TIMEOUT_S))
        except OSError as e:
            return untuned(cands, why, f"tuning lock unusable ({one_line(e)})", log)
        busy, began = busy_cores(), time.time()
        times, failed = measure(cfg, batch_size, cands, steps or tune_steps())
        ended = time.time()
        ok = [c for c in cands if label(*c) in times]
        if not ok:
            raise ValueError("every CPU attention path failed: " + "; ".join(
                f"{k}: {v}" for k, v in failed.items()))
        best = min(ok, key=lambda c: times[label(*c)])  # min keeps the first on a tie
        choice = Choice(best[0], best[1], "measured", why, times, failed,
                        min(cfg.n_layer, MEASURE_LAYERS),
                        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), str(file), busy)
        entry = {"key": key, "path": choice.path, "dtype": dev.dtype_name(choice.dtype),
                 "times_ms": times, "failed": failed, "measured_layers": choice.measured_layers,
                 "measured_at": choice.measured_at, "pid": os.getpid(), "busy_cores": busy,
                 "measured_s": [round(began, 3), round(ended, 3)]}
        try:
            atomic_write_json(file, entry)
        except OSError as e:  # measured, just not kept: the next run measures again
            if log is not None:
                log(f"CPU tuning not cached: {one_line(e)}")
        return choice


def untuned(cands: list[tuple[str, torch.dtype]], why: str, reason: str,
            log: Callable[[str], None] | None) -> Choice:
    """The choice where the cache cannot be used safely: not measured (measuring beside
    another run's measurement would time its work too), fp32 where it is a candidate and
    the first path in order of preference."""
    path, dtype = next((c for c in cands if c[1] == torch.float32), cands[0])
    if log is not None:
        log(f"CPU attention not tuned: {reason}")
    return Choice(path, dtype, "untuned", "; ".join(x for x in (why, reason) if x))


def read_entry(file: Path, key: dict) -> Choice | None:
    """The cached choice for `key`, or None when there is none or it does not fit (another
    key's file, a damaged or older-format file: measured again and replaced)."""
    try:
        d = read_regular_json(file, MAX_ENTRY_BYTES)
        if d["key"] != key or d["path"] not in cpu_kernels.PATHS or d["dtype"] not in dev.DTYPES:
            return None
        times = {str(k): float(v) for k, v in d["times_ms"].items()}
        failed = {str(k): str(v) for k, v in d["failed"].items()}
        busy = d.get("busy_cores")
        return Choice(d["path"], dev.DTYPES[d["dtype"]], "cached", "", times, failed,
                      int(d["measured_layers"]), str(d["measured_at"]), str(file),
                      float(busy) if busy is not None else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def busy_cores() -> float | None:
    """Cores the machine's other processes keep busy now: its CPU use over BUSY_SAMPLE_S,
    during which this process sleeps. None where psutil cannot tell."""
    try:
        return round(psutil.cpu_percent(interval=BUSY_SAMPLE_S) / 100 * (psutil.cpu_count() or 1), 2)
    except (OSError, RuntimeError):
        return None


def measure(cfg: GPTConfig, batch_size: int, cands: list[tuple[str, torch.dtype]],
            steps: int) -> tuple[dict[str, float], dict[str, str]]:
    """Fastest training step (ms) of each candidate on one shared model of the run's shape
    at up to MEASURE_LAYERS layers: a warm-up round, then `steps` rotating rounds; and the
    error of each candidate that raised (torch has CPU kernels that fail under some ISA
    limits), which is left out from then on."""
    small = dataclasses.replace(cfg, n_layer=min(cfg.n_layer, MEASURE_LAYERS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT(small)
        model.train()
        opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), "cpu")
        x = torch.randint(small.vocab_size, (batch_size, small.block_size))
        y = torch.randint(small.vocab_size, (batch_size, small.block_size))
        best = {label(*c): float("inf") for c in cands}
        failed: dict[str, str] = {}
        rounds, r, start = 1 + steps, 0, time.perf_counter()
        while r < rounds:
            for path, dtype in cands[r % len(cands):] + cands[:r % len(cands)]:
                if label(path, dtype) in failed:
                    continue
                model.set_cpu_attention(path)
                t0 = time.perf_counter()
                try:
                    _train_step(model, opt, dtype, x, y)
                except RuntimeError as e:
                    failed[label(path, dtype)] = one_line(e)
                    opt.zero_grad(set_to_none=True)
                    continue
                if r > 0:
                    ms = (time.perf_counter() - t0) * 1000
                    best[label(path, dtype)] = min(best[label(path, dtype)], ms)
            if r == 0:  # a big shape: fewer timed rounds, at least one
                per_round = time.perf_counter() - start
                rounds = 1 + max(1, min(steps, int(BUDGET_S / per_round) - 1))
            r += 1
    return {k: round(v, 2) for k, v in best.items() if k not in failed}, failed


def _train_step(model: GPT, opt: torch.optim.Optimizer, dtype: torch.dtype,
                x: torch.Tensor, y: torch.Tensor) -> float:
    """What Trainer.train_step does per optimizer step on CPU, one micro-batch."""
    with dev.autocast_context(torch.device("cpu"), dtype):
        _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()
