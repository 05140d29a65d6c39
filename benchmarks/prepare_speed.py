"""Dataset preparation speed and memory, side by side with nanoGPT, in one run.

    python benchmarks/prepare_speed.py --nanogpt /path/to/nanoGPT/data/shakespeare_char/prepare.py

Three measurements, each in fresh child processes (peak RSS from os.wait4 of that child):

1. char: nanotui's char prepare vs nanoGPT's shakespeare_char/prepare.py on a --mb MB file
   (the shared TinyStories text repeated), alternating which goes first, medians over
   --repeats. nanoGPT's script is run unmodified from a temporary copy whose input.txt is a
   symlink to the file (it reads input.txt beside itself), so nothing of it is committed.
2. big: nanotui's char prepare of a --big-gb GB file: peak RSS (nanoGPT would need ~12x
   the file size in RAM, so it is not run).
3. gpt2: nanotui's gpt2 prepare (all cores) vs a single-threaded `encode_ordinary` of the
   same --gpt2-mb MB text (nanoGPT's data/shakespeare/prepare.py way), alternating; the
   ratio is of throughput on the same input bytes.

The machine may be shared: figures are medians of alternating runs, compare ratios. Each
run also prints the child's CPU seconds and the load average: on a busy machine (Linux
autogroup scheduling shares the CPU per session, not per thread) a multi-threaded child
cannot get more than its share, so the gpt2 speed-up only shows when cores are free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NANOTUI_SHARED_DATA", REPO.parent / "shared" / "data"))

OURS = """
import sys, json
from engine.data.datasets import prepare, load_meta
d = prepare(sys.argv[1], sys.argv[2], 0.1, out_dir=sys.argv[3])
m = load_meta(d)
print(json.dumps({"train": m["train_tokens"], "val": m["val_tokens"]}))
"""

SINGLE_THREAD_GPT2 = """
import sys, json, numpy as np, tiktoken
from tiktoken.load import load_tiktoken_bpe
enc = tiktoken.Encoding(name="gpt2",
    pat_str=r"'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|\\s++$|\\s+(?!\\S)|\\s",
    mergeable_ranks=load_tiktoken_bpe(sys.argv[2]), special_tokens={"<|endoftext|>": 50256})
text = open(sys.argv[1], encoding="utf-8").read()
n = len(text)
train, val = enc.encode_ordinary(text[:int(n * 0.9)]), enc.encode_ordinary(text[int(n * 0.9):])
np.array(train, dtype=np.uint16).tofile(sys.argv[3] + "/train.bin")
np.array(val, dtype=np.uint16).tofile(sys.argv[3] + "/val.bin")
print(json.dumps({"train": len(train), "val": len(val)}))
"""


def make_corpus(path: Path, size: int) -> Path:
    """The shared TinyStories text repeated to `size` bytes (whole copies, at least one)."""
    if path.exists() and path.stat().st_size >= size:
        return path
    seed = b"".join((SHARED / "tinystories" / n).read_bytes() for n in ("val.txt", "test.txt"))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        written = 0
        while written < size:
            f.write(seed)
            written += len(seed)
    os.replace(tmp, path)
    return path


def run_child(argv: list[str], cwd: Path, env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one child process; its CPU seconds
    (user + system) go to LAST_CPU, so a report can show how much of the machine it got."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        sys.exit(f"child failed ({p.returncode}): {' '.join(argv[:3])}\n{err[-2000:]}")
    global LAST_CPU
    LAST_CPU = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss * 1024, out


LAST_CPU = 0.0


def ours(corpus: Path, tokenizer: str, work: Path, env: dict | None = None):
    out = Path(tempfile.mkdtemp(dir=work, prefix="ours-"))
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))  # no sha memo, no reuse
    try:
        return run_child([sys.executable, "-c", OURS, str(corpus), tokenizer, str(out / "p")],
                         REPO, {"NANOTUI_DATA_DIR": str(cache), **(env or {})})
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)


def nanogpt_char(script: Path, corpus: Path, work: Path):
    d = Path(tempfile.mkdtemp(dir=work, prefix="nanogpt-"))
    try:
        shutil.copy(script, d / "prepare.py")
        (d / "input.txt").symlink_to(corpus)
        return run_child([sys.executable, "prepare.py"], d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def single_thread_gpt2(corpus: Path, bpe: Path, work: Path):
    d = Path(tempfile.mkdtemp(dir=work, prefix="st-"))
    try:
        return run_child([sys.executable, "-c", SINGLE_THREAD_GPT2, str(corpus), str(bpe), str(d)],
                         REPO)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def side_by_side(name_a, run_a, name_b, run_b, repeats: int):
    """Alternate A/B `repeats` times; return {name: ([walls], [rss], last stdout)}."""
    res = {name_a: ([], [], ""), name_b: ([], [], "")}
    for r in range(repeats):
        order = [(name_a, run_a), (name_b, run_b)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            wall, rss, out = fn()
            res[name][0].append(wall)
            res[name][1].append(rss)
            res[name] = (res[name][0], res[name][1], out)
            print(f"  run {r + 1} {name:28s} {wall:7.2f} s  peak RSS {mib(rss):>9s}  "
                  f"CPU {LAST_CPU:6.2f} s ({LAST_CPU / wall:.2f} cores)  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, help="nanoGPT's data/shakespeare_char/prepare.py")
    ap.add_argument("--mb", type=int, default=200, help="char comparison file size (MB)")
    ap.add_argument("--big-gb", type=float, default=2.0, help="big-file size (GB); 0 skips")
    ap.add_argument("--gpt2-mb", type=int, default=40, help="gpt2 comparison size (MB); 0 skips")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bpe", type=Path, default=SHARED / "gpt2" / "gpt2.tiktoken")
    ap.add_argument("--only", choices=["char", "big", "gpt2"], help="run one measurement")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nanotui-bench")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")


    def want(name: str) -> bool:
        return args.only in (None, name)

    if args.nanogpt and args.mb and want("char"):
        corpus = make_corpus(args.workdir / f"tinystories-{args.mb}MB.txt", args.mb * 10**6)
        size = corpus.stat().st_size
        print(f"\nchar prepare of {corpus} ({size / 1e6:.0f} MB), {args.repeats} alternating runs")
        res = side_by_side("nanotui", lambda: ours(corpus, "char", args.workdir),
                           "nanoGPT shakespeare_char", lambda: nanogpt_char(args.nanogpt.resolve(),
                                                                        corpus, args.workdir),
                           args.repeats)
        (ta, ra, _), (tb, rb, outb) = res["nanotui"], res["nanoGPT shakespeare_char"]
        ma, mb_ = statistics.median(ta), statistics.median(tb)
        print(f"  median: nanotui {ma:.2f} s, {mib(max(ra))} peak | nanoGPT {mb_:.2f} s, "
              f"{mib(max(rb))} peak | speed-up {mb_ / ma:.2f}x | "
              f"{size / ma / 1e6:.0f} vs {size / mb_ / 1e6:.0f} MB/s")

    if args.big_gb and want("big"):
        big = make_corpus(args.workdir / f"tinystories-{args.big_gb:g}GB.txt", int(args.big_gb * 1e9))
        print(f"\nchar prepare of {big} ({big.stat().st_size / 1e9:.2f} GB), nanotui only")
        wall, rss, out = ours(big, "char", args.workdir)
        print(f"  nanotui {wall:.1f} s, peak RSS {mib(rss)}, CPU {LAST_CPU:.1f} s, "
              f"{big.stat().st_size / wall / 1e6:.0f} MB/s, tokens {out.strip()}")

    if args.gpt2_mb and want("gpt2"):
        corpus = make_corpus(args.workdir / f"tinystories-{args.gpt2_mb}MB.txt", args.gpt2_mb * 10**6)
        size = corpus.stat().st_size
        print(f"\ngpt2 prepare of {corpus} ({size / 1e6:.0f} MB), {args.repeats} alternating runs")
        env = {"NANOTUI_TOKENIZER_FILE": str(args.bpe)}
        res = side_by_side("nanotui (all cores)", lambda: ours(corpus, "gpt2", args.workdir, env),
                           "encode_ordinary (1 thread)",
                           lambda: single_thread_gpt2(corpus, args.bpe, args.workdir), args.repeats)
        import json
        (ta, ra, outa), (tb, rb, outb) = res["nanotui (all cores)"], res["encode_ordinary (1 thread)"]
        ka = sum(json.loads(outa).values())
        kb = sum(json.loads(outb).values())
        ma, mb_ = statistics.median(ta), statistics.median(tb)
        print(f"  median: nanotui {ma:.2f} s ({ka / ma / 1e6:.2f} M tok/s, {ka:,} tokens, "
              f"<|endoftext|> = 1 token) | single thread {mb_:.2f} s ({kb / mb_ / 1e6:.2f} M tok/s, "
              f"{kb:,} tokens) | same-input throughput ratio {mb_ / ma:.2f}x, "
              f"tokens/s ratio {(ka / ma) / (kb / mb_):.2f}x | peak RSS {mib(max(ra))} vs "
              f"{mib(max(rb))}")


if __name__ == "__main__":
    main()
