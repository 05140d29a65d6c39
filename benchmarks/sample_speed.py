"""Sampling speed, nanotui (KV cache) vs nanoGPT's sample.py (no cache), side by side.

    python benchmarks/sample_speed.py --nanogpt /work/nanogpt
    python benchmarks/sample_speed.py --nanogpt /work/nanogpt --tokens 1000 --repeats 3

One model of nanoGPT's shakespeare_char shape (6 layers, 6 heads, n_embd 384, block 256,
vocab 65, no bias) is built with nanoGPT's model.py (imported from --nanogpt, never
copied); its state dict loads unchanged into nanotui's GPT (the parameter names are the
same), so both generate from identical weights. Each round runs nanoGPT's
`model.generate` the way its sample.py does on CPU (fp32, no autocast, temperature 0.8,
top_k 200, prompt "\\n") and nanotui's `GPT.generate` the way `nanotui sample` does (fp32,
KV cache) in both context settings: "full" (the default: every token sees
min(length, block_size) tokens, as sample.py; past block_size one forward pass over the
window per token) and "rebuild" (the opt-in speed setting, and the default before: the
cache rebuilt from half a window past block_size). Which goes first rotates; figures are
medians of wall-clock and of CPU time (time.process_time: less sensitive to other work
on a shared machine).

Before timing, greedy decoding (top_k=1) of --check tokens (default: --tokens, past
block_size) from nanoGPT and from nanotui's default is compared: they must pick the same
tokens all the way; the rebuild setting is shown beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nanogpt_ref import load_nanogpt  # noqa: E402
from engine.model.gpt import CONTEXTS, GPT, GPTConfig  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (its model.py)")
    ap.add_argument("--tokens", type=int, default=1000, help="new tokens per sample (default 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--check", type=int, default=None,
                    help="greedy tokens compared first (default: --tokens)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    ap.add_argument("--n_layer", type=int, default=6)
    ap.add_argument("--n_head", type=int, default=6)
    ap.add_argument("--n_embd", type=int, default=384)
    ap.add_argument("--block_size", type=int, default=256)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ng = load_nanogpt(args.nanogpt, "sample_speed")
    shape = dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                 block_size=args.block_size, vocab_size=65, dropout=0.0, bias=False)
    torch.manual_seed(1337)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = ng.GPT(ng.GPTConfig(**shape)).eval()
    ours = GPT(GPTConfig(**shape)).eval()
    ours.load_state_dict(theirs.state_dict())  # identical names: a strict load
    prompt = torch.zeros((1, 1), dtype=torch.long)  # sample.py's start "\n" is id 0 in a char vocab

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}; model {args.n_layer}x{args.n_head}x{args.n_embd}, "
          f"block {args.block_size}, {ours.get_num_params():,} params")
    n = args.tokens if args.check is None else args.check
    if n:
        with torch.no_grad():
            a = theirs.generate(prompt, n, temperature=1.0, top_k=1)
        for context in CONTEXTS:
            b = ours.generate(prompt, n, temperature=1.0, top_k=1, context=context)
            same = int((a == b).all(dim=0).int().cumprod(0).sum())
            print(f"greedy check, context {context:7s}: {same}/{n + 1} leading tokens identical "
                  f"to nanoGPT (block_size {args.block_size}) "
                  f"({'OK' if same == n + 1 else 'differs'})")

    def run_theirs():
        with torch.no_grad():  # sample.py's loop: torch.no_grad(), fp32 on CPU
            return theirs.generate(prompt, args.tokens, temperature=0.8, top_k=200)

    def run_ours(context):
        return lambda: ours.generate(prompt, args.tokens, temperature=0.8, top_k=200,
                                     generator=torch.Generator().manual_seed(1337),
                                     context=context)

    runs = {"nanogpt": run_theirs, "full": run_ours("full"), "rebuild": run_ours("rebuild")}
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for r in range(args.repeats):
        order = list(runs)[r % 3:] + list(runs)[:r % 3]
        for k in order:
            c0, t0 = time.process_time(), time.perf_counter()
            out = runs[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            assert out.shape == (1, args.tokens + 1)
            print(f"  round {r + 1} {k:8s} {args.tokens / wall[k][-1]:8.1f} tokens/s", flush=True)
    w = {k: args.tokens / statistics.median(v) for k, v in wall.items()}
    c = {k: args.tokens / statistics.median(v) for k, v in cpu.items()}
    print(f"nanoGPT sample.py (no cache):          {w['nanogpt']:8.1f} tokens/s  "
          f"({c['nanogpt']:.1f} per CPU-s)")
    for k, what in (("full", "after: context full, default"), ("rebuild", "before: context rebuild")):
        print(f"nanotui ({what}):{' ' * (29 - len(what))}{w[k]:8.1f} tokens/s  ({c[k]:.1f} per "
              f"CPU-s)  {w[k] / w['nanogpt']:.2f}x nanoGPT wall-clock, "
              f"{c[k] / c['nanogpt']:.2f}x CPU time")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
