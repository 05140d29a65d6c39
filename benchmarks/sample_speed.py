"""Sampling speed at 1,000 tokens: nanoGPT's sample.py vs nanotui before and after, side by side.

    python benchmarks/sample_speed.py --nanogpt /tmp/nanogpt --before /work/main
    python benchmarks/sample_speed.py --nanogpt /tmp/nanogpt --before /work/main \\
        --n_layer 6 --n_head 6 --n_embd 384 --repeats 1        # shakespeare_char's shape

Each side runs in a worker process of its own, started once and then asked for one timed
round at a time, in rotating order (so each sees the same load on a shared machine):
  nanogpt  nanoGPT's model.py (imported from --nanogpt, never copied), its generate called
           the way sample.py calls it: `num_samples` samples one after the other, fp32,
           torch.no_grad(), temperature 0.8, top_k 200, prompt "\\n".
  before   `generate_samples` of the tree at --before (e.g. the main branch), the path of
           eval samples and `nanotui sample`, with the same settings.
  after    `generate_samples` of this tree, the same call.
All load the same weights (a state dict nanoGPT's model.py initialised with seed 1337: its
parameter names are nanotui's). Context is "full" for nanotui (each token sees
min(length, block_size) tokens, as sample.py): past block_size every side pays one forward
pass over the window per token, so most of 1,000 tokens at block_size 256 is that cost.

Before timing, each side decodes --check tokens greedily (default 400, past block_size
256; --check 1000 takes a few minutes more); nanotui's must equal nanoGPT's token for
token. Figures: the median over --repeats rounds of wall-clock and of CPU time
(time.process_time: less sensitive to other work on a shared machine), as tokens/s
(num_samples x tokens / seconds) and as ratios to nanoGPT and after/before.

Why the default model is small (4 layers, 4 heads, 128 wide, ~0.8M parameters; block 256,
vocab 65, as shakespeare_char): at 6x6x384 one nanoGPT sample of 1,000 tokens takes about
2 minutes on a 2-core CPU, so the old default (that shape, a greedy check and 3 rounds of
three 1,000-token runs) took ~17 minutes at the 9 tokens/s benchmarks/README.md measured
for nanoGPT there, and over an hour on a loaded machine. The
default now finishes in a few minutes; the flags give any other shape.

Why one thread per worker by default: the old script left torch's default (2 threads on
2 cores), and on a machine other work loads, OpenMP's threads wait for each other: one
256-token forward of the default model measured 39-94 ms with 2 threads against 8 ms
with 1 (load average 4-5 on 2 cores). That, with the shape, is why the old default
did not finish in 70 minutes. `--threads 0` keeps torch's default for a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import json
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIDES = ("nanogpt", "before", "after")


class Chars:
    """A 65-character vocabulary stand-in (id 0 is "\\n", as sample.py's start)."""
    vocab_size, eot_token = 65, None
    alphabet = "\n" + "".join(chr(c) for c in range(32, 96))

    def encode(self, text):
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.alphabet[i] for i in ids)


# ---- worker: one side, answering "check" / "run" lines on stdin -----------------------------

def worker(args) -> int:
    if args.side != "nanogpt":  # this process imports `engine` from the tree it times
        sys.path.insert(0, str(Path(args.tree).resolve()))
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = json.loads(args.shape)
    state = torch.load(args.weights, weights_only=True)
    prompt, tok = "\n", Chars()
    if args.side == "nanogpt":
        sys.path.insert(0, str(HERE))
        from nanogpt_ref import load_nanogpt
        ng = load_nanogpt(Path(args.nanogpt), "sample_speed")
        with contextlib.redirect_stdout(io.StringIO()):
            model = ng.GPT(ng.GPTConfig(**shape))
        where = ng.__file__
    else:
        import engine
        from engine.model.gpt import GPT, GPTConfig
        from engine.sample.generate import generate_samples
        model = GPT(GPTConfig(**shape))
        where = engine.__file__
    model.load_state_dict(state)
    model.eval()

    def sample(n: int, temperature: float, top_k: int | None) -> list[str]:
        if args.side == "nanogpt":  # sample.py's loop
            torch.manual_seed(1337)
            x = torch.tensor([tok.encode(prompt)], dtype=torch.long)
            with torch.no_grad():
                return [tok.decode(model.generate(x, n, temperature=max(temperature, 1e-8),
                                                  top_k=top_k)[0, 1:].tolist())
                        for _ in range(args.samples)]
        return [s["completion"] for s in generate_samples(
            model, tok, [prompt], args.samples, n, temperature, top_k, None, 1337)]

    print(json.dumps({"ready": where, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "check":  # greedy: nanoGPT's top_k=1 is the argmax, as temperature 0
            texts = sample(int(cmd[1]), 1.0 if args.side == "nanogpt" else 0.0, 1)
            print(json.dumps({"text": texts[0]}), flush=True)
        elif cmd[0] == "run":
            c0, t0 = time.process_time(), time.perf_counter()
            texts = sample(args.tokens, 0.8, 200)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert len(texts) == args.samples and all(len(t) == args.tokens for t in texts)
            print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
    return 0


# ---- driver ------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (its model.py)")
    ap.add_argument("--before", type=Path, required=True,
                    help="the nanotui tree timed as 'before' (e.g. a worktree of main)")
    ap.add_argument("--tokens", type=int, default=1000, help="new tokens per sample (default 1000)")
    ap.add_argument("--samples", type=int, default=3,
                    help="samples per round (default 3, as the course's eval prompts)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--check", type=int, default=400,
                    help="greedy tokens compared first (default 400: past block_size 256; 0 skips)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per worker (default 1; 0: torch's default)")
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_head", type=int, default=4)
    ap.add_argument("--n_embd", type=int, default=128)
    ap.add_argument("--block_size", type=int, default=256)
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.side = args.worker
        return worker(args)
    if not (args.nanogpt / "model.py").is_file():
        sys.exit(f"sample_speed: {args.nanogpt}/model.py not found: --nanogpt must point at "
                 f"a nanoGPT checkout")
    if not (args.before / "engine" / "sample" / "generate.py").is_file():
        sys.exit(f"sample_speed: {args.before} is not a nanotui tree "
                 f"(no engine/sample/generate.py)")

    sys.path.insert(0, str(HERE))
    import torch
    from nanogpt_ref import load_nanogpt
    shape = dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                 block_size=args.block_size, vocab_size=65, dropout=0.0, bias=False)
    ng = load_nanogpt(args.nanogpt, "sample_speed")
    torch.manual_seed(1337)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = ng.GPT(ng.GPTConfig(**shape))
    params = sum(p.numel() for p in ref.parameters())
    tmp = tempfile.TemporaryDirectory(prefix="sample_speed-")
    weights = Path(tmp.name) / "weights.pt"
    torch.save(ref.state_dict(), weights)
    del ref

    trees = {"nanogpt": None, "before": args.before, "after": REPO}
    procs = {}
    for side in SIDES:
        cmd = [sys.executable, __file__, "--nanogpt", str(args.nanogpt),
               "--before", str(args.before),
               "--worker", side, "--tree", str(trees[side] or ""), "--weights", str(weights),
               "--shape", json.dumps(shape), "--tokens", str(args.tokens),
               "--samples", str(args.samples), "--threads", str(args.threads)]
        env = dict(os.environ, PYTHONPATH=str(trees[side] or ""))
        procs[side] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=env)

    def ask(side: str, line: str | None = None) -> dict:
        p = procs[side]
        if line:
            p.stdin.write(line + "\n")
            p.stdin.flush()
        out = p.stdout.readline()
        if not out:
            sys.exit(f"sample_speed: the {side} worker died (exit {p.wait()})")
        return json.loads(out)

    try:
        ready = {side: ask(side) for side in SIDES}
        print(f"torch {torch.__version__}, {ready['after']['threads']} threads per worker, "
              f"load average {os.getloadavg()[0]:.1f}; model {args.n_layer}x{args.n_head}x"
              f"{args.n_embd}, block {args.block_size}, vocab 65, {params:,} params; "
              f"{args.samples} samples x {args.tokens} tokens per round")
        for side in SIDES:
            print(f"  {side:7s} {ready[side]['ready']}")
        n = args.check
        if n:
            want = ask("nanogpt", f"check {n}")["text"]
            for side in ("before", "after"):
                got = ask(side, f"check {n}")["text"]
                same = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), len(want))
                print(f"greedy check, {side}: {same}/{n} tokens identical to nanoGPT's "
                      f"({'OK' if same == n else 'differs'})", flush=True)
        wall = {s: [] for s in SIDES}
        cpu = {s: [] for s in SIDES}
        for r in range(args.repeats):
            for side in SIDES[r % 3:] + SIDES[:r % 3]:
                t = ask(side, "run")
                wall[side].append(t["wall"])
                cpu[side].append(t["cpu"])
                print(f"  round {r + 1} {side:7s} {args.samples * args.tokens / t['wall']:8.1f} "
                      f"tokens/s", flush=True)
    finally:
        for p in procs.values():
            with contextlib.suppress(OSError):
                p.stdin.close()
            p.wait()
        tmp.cleanup()
    total = args.samples * args.tokens
    w = {s: total / statistics.median(v) for s, v in wall.items()}
    c = {s: total / statistics.median(v) for s, v in cpu.items()}
    print(f"medians of {args.repeats} rounds (tokens/s; wall-clock, and per CPU-second):")
    for side in SIDES:
        print(f"  {side:7s} {w[side]:8.1f} wall  {c[side]:8.1f} CPU   "
              f"{w[side] / w['nanogpt']:5.2f}x nanoGPT wall, {c[side] / c['nanogpt']:5.2f}x CPU")
    print(f"  after / before: {w['after'] / w['before']:.2f}x wall, "
          f"{c['after'] / c['before']:.2f}x CPU")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
