"""Two CPU training runs side by side: tokens/s of both together, with each run's threads
following the free cores (nanotui now: the two see each other and take one core each on
a 2-core machine) against each taking every core (what two runs did before).

    python benchmarks/pair_speed.py --nanogpt /tmp/nanogpt
    python benchmarks/pair_speed.py --nanogpt /tmp/nanogpt --configs 6,8,128 --blocks 2

Each pair is two `train_speed.py` workers of one variant (`ours`: threads followed;
`ours-allcores`: as many threads as cores), started together and stepped together: both
get "step", then both answers are read, so the two always train at the same time. The
first SETTLE_S+1 seconds are warm-up (the runs find each other there, as real runs do at
their first checks). The two modes alternate --blocks times with fresh workers; figures
are medians over the timed rounds of all blocks. Each row says how many cores processes
other than the pair kept busy meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import OtherLoad  # noqa: E402
from cpu_class import real_cpu_line  # noqa: E402
from train_speed import Worker  # noqa: E402
from engine.train import threads  # noqa: E402

MODES = {"followed (now)": "ours", "all cores each (before)": "ours-allcores"}


def pair_rounds(variant: str, args) -> tuple[list[float], float, list[str]]:
    """Wall seconds of each timed round of two workers stepping together, the others'
    load meanwhile, and each worker's thread count at the end."""
    pair = [Worker(variant, args.configs, 0.0, args) for _ in range(2)]
    meter = OtherLoad([w.proc.pid for w in pair]).start()
    rounds: list[float] = []
    warm_until = time.monotonic() + threads.SETTLE_S + 1
    try:
        while len(rounds) < args.repeats:
            t0 = time.perf_counter()
            for w in pair:
                w.proc.stdin.write("step\n")
                w.proc.stdin.flush()
            for w in pair:
                w.answer()
            if time.monotonic() > warm_until:
                rounds.append(time.perf_counter() - t0)
        others = meter.stop()
    finally:
        for w in pair:
            w.close()
    return rounds, others, [f"{w.threads} thread(s) at the end" for w in pair]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (train_speed's workers load it)")
    ap.add_argument("--configs", default="6,8,128", help="n_layer,n_head,n_embd (default 6,8,128)")
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--vocab-size", type=int, default=65)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per block")
    ap.add_argument("--blocks", type=int, default=1, help="the modes alternate this many times")
    args = ap.parse_args()
    args.threads = 0
    # the pair's own registry of CPU runs: they count each other, not other users' runs
    os.environ[threads.REGISTRY_ENV] = tempfile.mkdtemp(prefix="pair-speed-")
    print(real_cpu_line())
    print(f"{args.configs}, batch {args.batch_size}, block {args.block_size}: two runs side by "
          f"side, {args.repeats} timed rounds x {args.blocks} blocks, medians")
    tokens = args.batch_size * args.block_size
    times: dict[str, list[float]] = {m: [] for m in MODES}
    others: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(args.blocks):
        for mode, variant in MODES.items():
            rounds, load, lines = pair_rounds(variant, args)
            times[mode] += rounds
            others[mode].append(load)
            print(f"  {mode}: others {load:.2f} cores; " + " | ".join(lines), flush=True)
    for mode in MODES:
        med = statistics.median(times[mode])
        print(f"{mode:>24}: together {2 * tokens / med:>8,.0f} tok/s, each {tokens / med:>8,.0f} "
              f"(others kept {statistics.median(others[mode]):.2f} cores busy)")
    a, b = (statistics.median(times[m]) for m in MODES)
    print(f"followed / all cores: {b / a:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
