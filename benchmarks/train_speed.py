"""CPU training speed, nanotui vs nanoGPT, side by side in one run.

    python benchmarks/train_speed.py --nanogpt /work/nanogpt
    python benchmarks/train_speed.py --nanogpt /work/nanogpt --emulate avx2
    python benchmarks/train_speed.py --nanogpt /work/nanogpt --configs 6,8,256 --dropout 0 \\
        --variants nanogpt,ours,nanogpt-tuned,ours-plain --repeats 9
    python benchmarks/train_speed.py --nanogpt /work/nanogpt --quick   # a smoke run

--emulate avx2 runs everything (nanoGPT's side too) as on an AVX2 CPU without AVX-512, the
class of most laptops: the script re-executes itself with torch, MKL and oneDNN limited to
AVX2 (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA), nanotui's kernel
built for x86-64-v3 and native bf16 reported absent (engine.model.device.EMULATIONS);
--emulate avx512 likewise for AVX-512 without bf16. A class the real CPU lacks cannot be
emulated and is refused. The header names the real CPU (lscpu) and each row its class.

For each (n_layer, n_head, n_embd) and dropout, at batch 12, block 256, vocab 65, every
variant runs in a worker process of its own (set up as its real training process would
be) and the workers take turns doing one training iteration each (forward + backward +
grad clip + AdamW step + next batch), the order rotating each round, so a machine shared
with other work slows all variants alike; figures are medians over --repeats rounds
after --warmup rounds. Variants:

  nanogpt     nanoGPT's model.py (imported from --nanogpt, never copied) and its train.py
              loop as it runs on CPU: fp32 (train.py uses no autocast on CPU), eager
              (compile=False, as its README says for CPU), non-fused AdamW, its get_batch,
              in a plain Python process as `python train.py` is.
  ours        nanotui's real step: engine.train.trainer.Trainer.train_step, the code path of
              `python -m engine.train`, with dtype auto and the attention path and precision
              its tuner picks (engine/model/cpu_tuner.py: measured once, cached; the pick is
              printed under each row; --retune measures again), its threads following the
              free cores (engine/train/threads.py, checked after every step as a run does at
              its log points), in a process set up as engine.train.process sets itself up
              (device.keep_freed_memory).
  ours-allcores  `ours` with as many threads as cores whatever the load: what a run did
              before its threads followed the free cores.
  ours-passive, ours-spin  `ours-allcores` with OpenMP's threads sleeping at once while
              they wait (OMP_WAIT_POLICY=PASSIVE) or after a short spin (GOMP_SPINCOUNT=
              10000 instead of libgomp's 300000): what a wait policy costs and saves.
  nanogpt-tuned  nanoGPT's step in a process with nanotui's allocator setting: what that
              setting alone gives, so it is not mistaken for model-code speed.
  ours-plain  nanotui with the CPU fast paths off (SDPA attention, torch dropout, no fused
              AdamW) and no allocator setting: bf16 autocast alone (fp32 without native bf16).
  ours-fp32   nanotui's step in float32, the attention path tuned for it.
  ours-compile  Trainer.compile() (torch.compile, inductor); compile time is reported.

Besides wall-clock tokens/s, the CPU time of each step (time.process_time, all threads)
is compared: on a shared machine wall time also measures the other tenants, CPU time
much less so (run with --threads 1 for the cleanest CPU-time comparison).
--load quiet,busy measures each cell twice: as the machine is, and with one core kept
busy by a spinner process the script starts and stops itself (a fresh set of workers for
each, started after the spinner, as a run starting on a busy machine); the two alternate
--blocks times and the medians pool the blocks. Each row says how many cores processes
other than the benchmark's own kept busy meanwhile (the machine is rarely quiet).
The same synthetic tokens feed every variant. Loss values are printed so equal work is
visible (all variants start from the same seed; bf16 differs by rounding only).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import engine.model.gpt as our_model  # noqa: E402
from cpu_class import class_line, emulate, real_cpu_line  # noqa: E402
from load import OtherLoad, Spinner  # noqa: E402
from nanogpt_ref import load_nanogpt  # noqa: E402
from engine.model import cpu_kernels  # noqa: E402
from engine.model import device as dev  # noqa: E402
from engine.config import TrainConfig  # noqa: E402
from engine.train import threads  # noqa: E402
from engine.train.trainer import Trainer  # noqa: E402

DEFAULT_CONFIGS = "2,8,256 6,8,256 6,8,128 6,32,256"
LR, WEIGHT_DECAY, BETAS, GRAD_CLIP = 1e-3, 0.1, (0.9, 0.99), 1.0


class NanoGPTStep:
    """nanoGPT train.py's inner loop on CPU (gradient_accumulation_steps = 1)."""

    def __init__(self, ng, cfg: TrainConfig, data: np.ndarray):
        torch.manual_seed(cfg.seed)
        conf = ng.GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size,
                            n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                            dropout=cfg.dropout, bias=cfg.bias)
        with contextlib.redirect_stdout(io.StringIO()):  # its parameter-count prints
            self.model = ng.GPT(conf)
            self.opt = self.model.configure_optimizers(WEIGHT_DECAY, LR, BETAS, "cpu")
        self.cfg, self.data = cfg, data
        self.ctx = contextlib.nullcontext()  # train.py: no autocast when device_type == 'cpu'
        self.X, self.Y = self.get_batch()

    def get_batch(self):
        T, data = self.cfg.block_size, self.data
        ix = torch.randint(len(data) - T, (self.cfg.batch_size,))
        x = torch.stack([torch.from_numpy(data[i:i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
        return x, y

    def __call__(self) -> float:
        with self.ctx:
            _, loss = self.model(self.X, self.Y)
        self.X, self.Y = self.get_batch()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


class OurStep:
    """engine.train.trainer.Trainer.train_step, optionally with the CPU fast paths switched off."""

    def __init__(self, cfg: TrainConfig, data: np.ndarray, plain: bool = False,
                 compile: bool = False):
        self.plain = plain
        if plain:
            cfg = cfg.replace(cpu_attention="sdpa",
                              dtype="bfloat16" if dev.cpu_has_bf16() else "float32")
        with self.switches():
            self.trainer = Trainer(cfg, data, data, cfg.vocab_size, log=lambda s: None,
                                   threads=threads.Governor(cfg.cpu_threads))
        self.choice = self.trainer.cpu_attention_line()
        self.compile_s = None
        if compile:
            self.trainer.compile()
            t0 = time.perf_counter()
            self()  # compiles forward and backward
            self.compile_s = time.perf_counter() - t0

    @contextlib.contextmanager
    def switches(self):
        saved = (cpu_kernels.CPU_ATTENTION, cpu_kernels.CPU_FAST_DROPOUT, our_model.FUSED_ADAMW_DEVICES)
        if self.plain:
            cpu_kernels.CPU_ATTENTION, cpu_kernels.CPU_FAST_DROPOUT = "sdpa", False
            our_model.FUSED_ADAMW_DEVICES = ("cuda",)
        try:
            yield
        finally:
            cpu_kernels.CPU_ATTENTION, cpu_kernels.CPU_FAST_DROPOUT, our_model.FUSED_ADAMW_DEVICES = saved

    def __call__(self) -> float:
        with self.switches():
            loss = self.trainer.train_step(LR).item()
        self.trainer.threads.check()  # as engine.train.process does at its log points
        return loss


VARIANTS = ("nanogpt", "nanogpt-tuned", "ours", "ours-allcores", "ours-passive", "ours-spin",
            "ours-plain", "ours-fp32", "ours-compile")
# read by libgomp when it loads: set in the worker's environment, never afterwards
VARIANT_ENV = {"ours-passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "ours-spin": {"GOMP_SPINCOUNT": "10000"}}


def make_variant(name: str, ng, cfg: TrainConfig, data: np.ndarray):
    if (name.startswith("ours") and name != "ours-plain") or name == "nanogpt-tuned":
        dev.keep_freed_memory()  # what engine.train.process does at start-up on CPU
    if name in ("nanogpt", "nanogpt-tuned"):
        return NanoGPTStep(ng, cfg, data)
    if name == "ours":
        return OurStep(cfg, data)
    if name in ("ours-allcores", "ours-passive", "ours-spin"):
        return OurStep(cfg.replace(cpu_threads=len(threads.affinity_cores())), data)
    if name == "ours-plain":
        return OurStep(cfg, data, plain=True)
    if name == "ours-fp32":
        return OurStep(cfg.replace(dtype="float32"), data)
    if name == "ours-compile":
        return OurStep(cfg, data, compile=True)
    sys.exit(f"train_speed: unknown variant {name!r}")


def bench_config(spec: str, dropout: float, args) -> TrainConfig:
    n_layer, n_head, n_embd = (int(x) for x in spec.split(","))
    return TrainConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                       block_size=args.block_size, batch_size=args.batch_size,
                       vocab_size=args.vocab_size, dropout=dropout, bias=False, device="cpu",
                       dtype="auto", learning_rate=LR, weight_decay=WEIGHT_DECAY,
                       beta1=BETAS[0], beta2=BETAS[1], grad_clip=GRAD_CLIP)


def synthetic_data(vocab_size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab_size, 1 << 20).astype(np.uint16)


def worker(args) -> int:
    """One variant in this process: build it, then run one step per 'step' line on stdin
    and answer 'wall_s cpu_s loss threads' on stdout."""
    ng = load_nanogpt(args.nanogpt, "train_speed")
    cfg = bench_config(args.configs, float(args.dropout), args)
    step = make_variant(args.worker, ng, cfg, synthetic_data(args.vocab_size))
    gov = getattr(getattr(step, "trainer", None), "threads", None)
    choice = getattr(step, "choice", None) or "-"
    if gov is not None:
        choice = f"{gov.line()}; {choice}"
    print(f"ready {getattr(step, 'compile_s', None)} {choice}", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        c0, t0 = time.process_time(), time.perf_counter()
        loss = step()
        print(f"{time.perf_counter() - t0} {time.process_time() - c0} {loss} "
              f"{torch.get_num_threads()}", flush=True)
    return 0


class Worker:
    """The parent's handle on one variant's worker process."""

    def __init__(self, variant: str, spec: str, dropout: float, args):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant,
               "--nanogpt", str(args.nanogpt), "--configs", spec, "--dropout", str(dropout), "--batch-size", str(args.batch_size),
               "--block-size", str(args.block_size), "--vocab-size", str(args.vocab_size),
               "--threads", str(args.threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **VARIANT_ENV.get(variant, {})})
        ready = self.proc.stdout.readline().split(maxsplit=2)
        if len(ready) < 3 or ready[0] != "ready":
            sys.exit(f"train_speed: the {variant} worker failed to start")
        self.compile_s = None if ready[1] == "None" else float(ready[1])
        self.choice = None if ready[2].strip() == "-" else ready[2].strip()

    def step(self) -> tuple[float, float, float]:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self.answer()

    def answer(self) -> tuple[float, float, float]:
        wall, cpu, loss, threads_now = self.proc.stdout.readline().split()
        self.threads = int(threads_now)  # the variant's threads after this step
        return float(wall), float(cpu), float(loss)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure(variants: list[str], spec: str, dropout: float, args,
            load: str = "quiet") -> dict[str, dict]:
    """Alternating rounds of every variant in fresh workers, started after the spinner
    when load is "busy" (as runs starting on a busy machine)."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    losses: dict[str, list[float]] = {v: [] for v in variants}
    with (Spinner() if load == "busy" else contextlib.nullcontext()) as spinner:
        workers = {v: Worker(v, spec, dropout, args) for v in variants}
        pids = [w.proc.pid for w in workers.values()] + ([spinner.pid] if spinner else [])
        meter = OtherLoad(pids).start()
        _rounds(workers, variants, args, times, cpu, losses)
        others = meter.stop()
        for w in workers.values():
            w.close()
    tokens_per_iter = args.batch_size * args.block_size
    out = {}
    for v in variants:
        med = statistics.median(times[v])
        out[v] = {"ms": med * 1000, "tok_s": tokens_per_iter / med,
                  "cpu_ms": statistics.median(cpu[v]) * 1000,
                  "spread": (max(times[v]) - min(times[v])) / med,
                  "loss": losses[v][-1], "others": others,
                  "compile_s": workers[v].compile_s, "choice": workers[v].choice}
    return out


def _rounds(workers: dict, variants: list[str], args, times, cpu, losses) -> None:
    try:
        for r in range(args.warmup + args.repeats):
            order = variants[r % len(variants):] + variants[:r % len(variants)]  # rotate
            for v in order:
                dt, dc, loss = workers[v].step()
                losses[v].append(loss)
                if r >= args.warmup:
                    times[v].append(dt)
                    cpu[v].append(dc)
    except BaseException:
        for w in workers.values():
            w.proc.kill()
        raise


QUICK = {"configs": "2,8,256", "dropout": "0,0.2", "warmup": 1, "repeats": 2,
         "batch_size": 4, "block_size": 64}
DEFAULTS = {"configs": DEFAULT_CONFIGS, "dropout": "0,0.2", "warmup": 2, "repeats": 5,
            "batch_size": 12, "block_size": 256}


def pool(results: list[dict[str, dict]]) -> dict[str, dict]:
    """Blocks of one cell and load as one: the median of their medians."""
    if len(results) == 1:
        return results[0]
    out = {}
    for v, first in results[0].items():
        out[v] = dict(first)
        for k in ("ms", "tok_s", "cpu_ms", "others"):
            out[v][k] = statistics.median(r[v][k] for r in results)
        out[v]["spread"] = max(r[v]["spread"] for r in results)
    return out


def print_row(cls: str, spec: str, p: float, load: str, res: dict, variants: list[str],
              base: str, ratios: dict[str, list[float]]) -> None:
    """One cell at one load; `others`: cores processes outside the benchmark kept busy."""
    row = f"{cls:>14} {spec:>12} {p:>7.1f} {load:>5} {res[base]['others']:>6.2f} " + " ".join(
        f"{res[v]['tok_s']:>12,.0f} ±{res[v]['spread'] * 50:>3.0f}%" for v in variants)
    row += " " + " ".join(f"{res[base]['ms'] / res[v]['ms']:>17.2f}x" for v in variants[1:])
    for v in variants[1:]:
        ratios[v].append(res[base]["ms"] / res[v]["ms"])
    print(row, flush=True)
    for v in variants:
        if res[v]["choice"]:
            print(" " * 37 + f"{v}: {res[v]['choice']}", flush=True)
    # CPU seconds per step (all threads): what a step costs when the cores are
    # shared, where wall-clock time mostly measures the other tenants.
    extra = ["CPU-time ratio " + ", ".join(
        f"{v}/{base} {res[base]['cpu_ms'] / res[v]['cpu_ms']:.2f}x" for v in variants[1:])]
    extra += [f"{v} loss {res[v]['loss']:.3f}" for v in variants]
    extra += [f"{v} compile {res[v]['compile_s']:.0f}s" for v in variants
              if res[v]["compile_s"] is not None]
    print(" " * 21 + "; ".join(extra), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (its model.py)")
    ap.add_argument("--configs",
                    help=f"space-separated n_layer,n_head,n_embd (default: {DEFAULT_CONFIGS!r})")
    ap.add_argument("--dropout", help="comma-separated (default 0,0.2)")
    ap.add_argument("--variants", default="nanogpt,ours",
                    help="comma-separated, the first is the baseline: " + ", ".join(VARIANTS))
    ap.add_argument("--batch-size", type=int, help="default 12")
    ap.add_argument("--block-size", type=int, help="default 256")
    ap.add_argument("--vocab-size", type=int, default=65)
    ap.add_argument("--warmup", type=int, help="untimed rounds first (default 2)")
    ap.add_argument("--repeats", type=int, help="timed rounds (default 5)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch.set_num_threads; nanotui's via NANOTUI_CPU_THREADS (0: leave)")
    ap.add_argument("--load", default="quiet",
                    help="comma-separated: quiet (as the machine is), busy (one core spun)")
    ap.add_argument("--blocks", type=int, default=1,
                    help="alternate the loads this many times, fresh workers each (default 1)")
    ap.add_argument("--emulate", choices=sorted(dev.EMULATIONS),
                    help="run as this CPU class (see above); refused where the CPU lacks it")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    ap.add_argument("--retune", action="store_true",
                    help="nanotui's tuner measures again instead of reading its cache")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one variant
    args = ap.parse_args()
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.emulate:
        emulate(args)
    if args.retune:
        os.environ["NANOTUI_CPU_RETUNE"] = "1"  # the workers inherit it
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ[threads.ENV] = str(args.threads)  # nanotui's workers inherit it
    if args.worker:
        return worker(args)
    load_nanogpt(args.nanogpt, "train_speed")  # fail early on a wrong path
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"train_speed: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    base = variants[0]
    print(real_cpu_line())
    print(class_line())
    cls = dev.emulated_cpu_class()
    cls = f"{cls}-emulated" if cls else dev.cpu_class()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"batch {args.batch_size}, block {args.block_size}, vocab {args.vocab_size}; "
          f"medians of {args.repeats} alternating rounds after {args.warmup} warm-up; "
          f"ratios vs {base}")
    loads = [x.strip() for x in args.load.split(",") if x.strip()]
    if not loads or set(loads) - {"quiet", "busy"}:
        sys.exit(f"train_speed: --load {args.load!r}: expected quiet, busy or quiet,busy")
    header = f"{'class':>14} {'config':>12} {'dropout':>7} {'load':>5} {'others':>6} " + " ".join(
        f"{v + ' tok/s':>18}" for v in variants)
    header += " " + " ".join(f"{v + '/' + base:>18}" for v in variants[1:])
    print(header)
    ratios: dict[str, list[float]] = {v: [] for v in variants[1:]}
    for spec in args.configs.split():
        for p in (float(x) for x in args.dropout.split(",")):
            res = {}
            for _ in range(args.blocks):  # the loads alternate; medians pool the blocks
                for load in loads:
                    got = measure(variants, spec, p, args, load)
                    res.setdefault(load, []).append(got)
            for load in loads:
                print_row(cls, spec, p, load, pool(res[load]), variants, base, ratios)
    for v, rs in ratios.items():
        print(f"{cls}: {v}/{base} median over {len(rs)} cells {statistics.median(rs):.2f}x "
              f"(min {min(rs):.2f}x, max {max(rs):.2f}x)")
    print(f"load average at the end {os.getloadavg()[0]:.1f} "
          "(± is half the max-min spread of the timed rounds, relative to the median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
