"""`nanotui bench --key=value ...`: time training steps of one model shape (nanoGPT's
bench.py as a command). Any TrainConfig key is an option with nanoGPT's name."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys

HELP = "time training iterations of one model shape on synthetic data (ms/iter, tokens/s, MFU, memory)"

EPILOG = """\
Any training-config key can be given as --key=value with nanoGPT's names, e.g.
  nanotui bench --n_layer=6 --n_head=8 --n_embd=256 --block_size=256 --batch_size=12 --device=cpu
  nanotui bench --dtype=float32 --compile=true --iters=20 --json
Values are TOML literals (6, 1e-3, true, "text"); bare words are strings. Unset keys take
TrainConfig's defaults (nanoGPT's: 12 layers, 12 heads, n_embd 768, block 1024, batch 12);
vocab_size defaults to 65. Data is synthetic random tokens: no dataset is needed.
--device=auto (the default) takes a GPU of ours with room for the estimate, as the
dispatcher places runs (never simply cuda:0), else the CPU; stderr says which and why."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--iters", type=int, default=10, metavar="N",
                   help="timed training iterations (default 10; the median is reported)")
    p.add_argument("--warmup", type=int, default=3, metavar="N",
                   help="untimed iterations first, compilation included (default 3)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (ms_per_iter, tokens_per_s, mfu, peak_mem_bytes, "
                        "device, dtype, config, ...) instead of text")
    _collect_unknown_options(p)


def _collect_unknown_options(p: argparse.ArgumentParser) -> None:
    """Keep the --key=value options argparse does not know in args.overrides instead of
    rejecting them: they are TrainConfig keys, checked (with a did-you-mean) by the engine.
    The subcommand's parser is asked by its parent through parse_known_args, so wrapping
    that method on this parser instance is enough."""
    parse_known = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = parse_known(args, namespace)
        ns.overrides = list(getattr(ns, "overrides", None) or []) + list(extras)
        return ns, []
    p.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _place(args: argparse.Namespace, cfg):
    """--device auto goes through placement (engine.launch.outside): a card of ours with
    room for the estimate, never simply cuda:0; the choice and its reason on stderr."""
    if cfg.device != "auto":
        return None
    from engine.launch.estimate import estimate
    from engine.launch.outside import auto_device
    placed = auto_device(estimate(cfg).mem_bytes, "nanotui bench", args.experiments)
    print(f"bench: {placed.reason}", file=sys.stderr, flush=True)
    return placed


def run(args: argparse.Namespace) -> int:
    from engine.train.bench import (bench_config, check_counts, format_summary,
                                    parse_overrides, run_bench)

    overrides = parse_overrides(getattr(args, "overrides", []) or [])
    cfg = bench_config(overrides)
    log = None if args.json else (lambda s: print(s, flush=True))
    check_counts(args.iters, args.warmup)  # bad input before any placement is said
    placed = _place(args, cfg)
    if placed is not None:
        cfg = dataclasses.replace(cfg, device=placed.device)
    with placed or contextlib.nullcontext():
        result = run_bench(cfg, iters=args.iters, warmup=args.warmup, log=log)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_summary(result))
    return 0
