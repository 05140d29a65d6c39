"""The GPU acceptance check: one command that, on a machine with an NVIDIA GPU and within
one 9-minute call on one H100 (the phases' budgets are printed first), prints

  1. `nanotui doctor`'s table (each card: bf16, whether compile works, tokens/s);
  2. a Shakespeare-char run of nanoGPT's baby GPT (6 layers, 6 heads, n_embd 384, block 256,
     batch 64, dropout 0.2, nanoGPT's config/train_shakespeare_char.py values) with bf16 +
     compile: tokens/s and MFU against engine.model.device's peak table; the same run
     without compile, and from the pair how many iterations compile needs to pay for its
     start-up (the data for compile's default on CUDA); nanoGPT's train.py on the same card
     for the same time when --nanogpt is given;
  3. placement under CUDA_VISIBLE_DEVICES: a run started with the variable naming one
     card lands on that card (by uuid) and trains there, and with it empty goes to the CPU;
  4. profile, memory, fp16 (benchmarks/gpu_check_phases.py, in a child pinned to the
     card): pageable copies and host syncs per step under torch.profiler, the real peak
     memory of two shapes against the placement estimate, 30 float16 steps through the
     GradScaler;
  5. the assignment's depth sweep (n_layer 2/4/8/12 at n_head 8, n_embd 256), one run at a
     time vs max_runs_per_gpu = "auto", with wall time, aggregate tokens/s and the card's
     NVML utilization while it ran (the data for packing's default), without compile so
     that the pair compares packing and not compile caches.

    benchmarks/gpu_check.sh [--nanogpt PATH] [--text input.txt] [--minutes M]
                            [--sweep-iters N] [--budget-min 8.5] [--skip PHASE,...]
                            [--work DIR] [--rehearse]

The last line is the verdict: "gpu_check: PASS", or "gpu_check: FAIL (...)" after a list
of what failed, with exit status 1: a failed or lost run, a run that trained elsewhere
than it was placed (WRONG placement, a DEVICE MISMATCH), a compile that fell back to
eager, doctor reporting something missing, cards torch cannot use (its CUDA build, the
driver, the card's capability), no usable GPU at all, a phase that ran past its time
(its trainers are killed). A phase that would overrun the budget is skipped with a line
saying so, and `--skip` leaves phases out (doctor, baby, eager, nanogpt, placement,
profile, memory, fp16, serial, packed), so a short slot can run the check in two calls.
The text defaults to $NANOTUI_SHARED_DATA/shakespeare/input.txt (or ../shared/data/...),
else a generated one: Python's standard library source (no network needed).

`--rehearse` runs every phase on the CPU instead, against a fake card (NANOTUI_FAKE_GPUS,
or one written into the work dir) with tiny models, fp32 and no compile, in a few minutes:
it proves the script's plumbing (launch, stop, status, placement, packing, nanoGPT's log
parsing) before the few minutes a GPU is lent are spent on it. Its figures are CPU figures
of toy models and say so; they are never GPU results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # -P (gpu_check.sh) adds neither

from gpu_check_runs import (FAILURES, baby_run, fail, generated_text,  # noqa: E402
                            kill_leftover_runs, nanogpt_run, nanotui, placement_check, say,
                            sweep)

PHASES = ("doctor", "baby", "eager", "nanogpt", "placement", "profile", "memory", "fp16",
          "serial", "packed")
BABY = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "batch_size": 64,
        "dropout": 0.2, "learning_rate": 1e-3, "max_iters": 5000, "lr_decay_iters": 5000,
        "min_lr": 1e-4, "beta2": 0.99, "warmup_iters": 100, "eval_interval": 250,
        "eval_iters": 200, "log_interval": 10, "dtype": "bfloat16", "compile": True}
# the assignment's depth sweep (n_layer 2/4/8/12 is varied), nanoGPT's baby-GPT settings;
# eager, so serial vs packed compares packing, not who inherited compiled kernels
SWEEP = {"n_head": 8, "n_embd": 256, "block_size": 256, "batch_size": 64, "dropout": 0.0,
         "eval_iters": 20, "log_interval": 10, "learning_rate": 1e-3, "dtype": "bfloat16",
         "compile": False}
# --rehearse: the same phases on the CPU with a fake card, tiny models, fp32, no compile
TOY = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "batch_size": 8,
       "dtype": "float32", "compile": False}
REHEARSAL_BABY = {**BABY, **TOY, "eval_interval": 50, "eval_iters": 5}
REHEARSAL_SWEEP = {**SWEEP, **TOY, "n_embd": 32, "block_size": 32, "eval_iters": 2}
FAKE_CARD = {"gpus": [{"index": 0, "uuid": "GPU-00000000-rehearsal-0000-000000000000",
                       "name": "NVIDIA H200 (fake: gpu_check --rehearse)",
                       "memory_total_gb": 141, "memory_used_gb": 1, "utilization": 0,
                       "temperature": 30, "power_w": 80.0, "processes": []}]}
T0 = time.monotonic()
BUDGET_S = 8.5 * 60.0  # --budget-min: one 9-minute call on one H100, with slack
# what each phase is given on a GPU, in seconds (printed first; with the default
# 2-minute baby run the total fits BUDGET_S); the sweeps shrink to what is left
PHASE_BUDGET_S = {"doctor": 60, "prepare": 15, "baby": 90 + 60, "eager": 45 + 30,
                  "placement": 40, "profile": 30, "memory": 30, "fp16": 20,
                  "serial": 50, "packed": 50}
def elapsed() -> float:
    return time.monotonic() - T0


# ---- phases ---------------------------------------------------------------------------

def preflight(rehearse: bool, work: Path | None) -> list[dict]:
    try:
        import torch
    except ImportError:
        raise SystemExit("gpu_check: torch is not installed; run `make` first") from None
    from engine.launch.gpu import FAKE_ENV, default_gpu_source
    if rehearse:
        if not os.environ.get(FAKE_ENV):
            fake = work / "fake_gpus.json"
            fake.write_text(json.dumps(FAKE_CARD))
            os.environ[FAKE_ENV] = str(fake)
        say(f"gpu_check: REHEARSAL on the CPU with the fake cards of {FAKE_ENV}="
            f"{os.environ[FAKE_ENV]}: toy models, fp32, no compile. No figure below is a "
            "GPU figure.")
    else:
        from engine.launch.nvml import NvmlGpuSource
        units = [u for u in default_gpu_source().snapshot() if u.ours]
        for u in units:
            if u.problem:
                fail(f"GPU {u.label} cannot be used: {u.problem}")
        if not torch.cuda.is_available():
            nv = NvmlGpuSource()
            say("gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False; "
                f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, NVML "
                f"{'driver ' + (nv.driver_version() or '?') if nv.available() else 'absent'}).")
            fail("no GPU torch can use here: nothing measured")
            raise SystemExit(finish(rehearse))
        if any(u.problem for u in units):
            raise SystemExit(finish(rehearse))
    return [u.to_dict() for u in default_gpu_source().snapshot() if u.ours]


def prepare(args, work: Path) -> str:
    text = args.text or next((p for p in (
        Path(os.environ.get("NANOTUI_SHARED_DATA", "/nonexistent")) / "shakespeare/input.txt",
        REPO.parent / "shared/data/shakespeare/input.txt") if p.is_file()), None)
    if text is None:
        text = generated_text(work / "stdlib.txt")
        say(f"gpu_check: no tiny Shakespeare here (--text): training on {text}, Python's "
            f"standard library source ({text.stat().st_size:,} characters)")
    p = nanotui("prepare", str(text), "--tokenizer", "char",
                "--json", env={**os.environ, "NANOTUI_DATA_DIR": str(work / "cache")})
    return json.loads(p.stdout)["data_dir"]


# ---- the report -------------------------------------------------------------------------

def phase(name: str, title: str, need_s: float, skip: set[str]) -> bool:
    if name in skip:
        say(f"\n== {title}: left out (--skip {name})")
        return False
    left = BUDGET_S - elapsed()
    if left < need_s:
        say(f"\n== {title}: skipped ({left:.0f} s of the {BUDGET_S / 60:g}-minute budget "
            f"left, about {need_s:.0f} s needed)")
        return False
    say(f"\n== {title}  (t = {elapsed():.0f} s)")
    return True


def show_baby(who: str, r: dict, peak: float | None, rehearse: bool) -> None:
    mfu = (f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None
           else "n/a (a CPU run)" if rehearse else "n/a (no peak)")
    val = f"{r['val_loss']:.4f}" if r.get("val_loss") is not None else "-"
    say(f"  {who:8}: {r['tok_s'] or 0:>10,.0f} tokens/s  MFU {mfu} of {(peak or 0) / 1e12:.0f} "
        f"TFLOP/s  iter {r['iter']}  val {val}  compile {r['compile']}  start-up "
        f"{r['startup_s'] or 0:.0f} s  ({r['state']}{': ' + r['reason'] if r.get('reason') else ''})")


def compile_verdict(compiled: dict, eager: dict, tokens_per_iter: int) -> str:
    """How many iterations a compiled run needs before its longer start-up has paid."""
    if not (compiled.get("tok_s") and eager.get("tok_s") and compiled.get("startup_s")
            and eager.get("startup_s")):
        return "  compile : no verdict (a run did not train)"
    speed = compiled["tok_s"] / eager["tok_s"]
    extra = compiled["startup_s"] - eager["startup_s"]
    saved = tokens_per_iter / eager["tok_s"] - tokens_per_iter / compiled["tok_s"]  # s/iter
    head = f"  compile : {speed:.2f}x the eager tokens/s for {extra:+.0f} s of start-up"
    if saved <= 0:
        return head + ": it never pays"
    return head + (f": pays after about {max(extra, 0) / saved:,.0f} iterations (the baby "
                   f"GPT trains {BABY['max_iters']})")


def main() -> int:
    global BUDGET_S
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout to run side by side")
    ap.add_argument("--text", type=Path, help="tiny Shakespeare input.txt (default: shared data)")
    ap.add_argument("--minutes", type=float, help="training time of the compiled baby-GPT run "
                    "and of nanoGPT's (default 2; 1 with --nanogpt, to stay inside the "
                    "budget); the eager run trains half as long")
    ap.add_argument("--sweep-iters", type=int, help="iterations of each sweep run (default "
                    "2000; 300 rehearsing)")
    ap.add_argument("--budget-min", type=float, default=8.5,
                    help="skip a phase that would end past this many minutes (default 8.5: "
                    "one 9-minute call)")
    ap.add_argument("--skip", default="", help=f"phases to leave out, comma-separated: "
                    f"{', '.join(PHASES)}")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--rehearse", action="store_true", help="run every phase on the CPU "
                    "with a fake card and toy models, to check the script before a GPU is lent")
    args = ap.parse_args()
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if skip - set(PHASES):
        ap.error(f"--skip: no phase {', '.join(sorted(skip - set(PHASES)))}; "
                 f"phases: {', '.join(PHASES)}")
    BUDGET_S = args.budget_min * 60
    def work_dir() -> Path:
        work = args.work or Path(tempfile.mkdtemp(prefix="nanotui-gpu-check-"))
        work.mkdir(parents=True, exist_ok=True)
        return work
    work = work_dir() if args.rehearse else None  # no scratch left behind without a GPU
    cards = preflight(args.rehearse, work)
    work = work or work_dir()
    if not cards:
        fail("CUDA works but no card is ours (CUDA_VISIBLE_DEVICES / Slurm): nothing to "
             "place on")
        return finish(args.rehearse)
    os.environ["NANOTUI_DATA_DIR"] = str(work / "cache")
    baby_cfg, sweep_cfg = (REHEARSAL_BABY, REHEARSAL_SWEEP) if args.rehearse else (BABY, SWEEP)
    sweep_iters = args.sweep_iters or (300 if args.rehearse else 400)
    seconds = 60 * (args.minutes or (0.1 if args.rehearse else 1.0 if args.nanogpt else 1.5))
    say(f"gpu_check: work dir {work}")
    say("gpu_check: phase budgets (s): " + ", ".join(
        f"{k} {v:.0f}" for k, v in budgets(seconds).items() if k not in skip)
        + f"; total {sum(v for k, v in budgets(seconds).items() if k not in skip):.0f} of "
          f"{BUDGET_S:.0f}")

    if phase("doctor", "nanotui doctor", 60, skip):
        doc = nanotui("doctor", check=False)
        say(doc.stdout.rstrip())
        if doc.returncode != 0:
            fail(f"nanotui doctor reports something missing (exit {doc.returncode})")
    data_dir = prepare(args, work)
    card = cards[0]

    from engine.model.device import peak_flops
    peak = peak_flops(card["name"], "bfloat16")
    shape = "/".join(str(baby_cfg[k]) for k in ("n_layer", "n_head", "n_embd"))
    what = f"baby GPT {shape}, block {baby_cfg['block_size']}, batch {baby_cfg['batch_size']}"
    where = f"GPU {card['label']} ({card['name']})"
    how = "bf16 + compile" if baby_cfg["compile"] else f"{baby_cfg['dtype']}, no compile"
    ours = eager = None
    if phase("baby", f"{what}, {how}, {seconds:.0f} s on {where}", seconds + 60, skip):
        ours = baby_run(work, data_dir, card, seconds, baby_cfg, "compiled")
        show_baby("nanotui", ours, peak, args.rehearse)
        check_run("baby", ours, baby_cfg, args.rehearse)
    if phase("eager", f"the same without compile, {seconds / 2:.0f} s", seconds / 2 + 30, skip):
        eager = baby_run(work, data_dir, card, seconds / 2, {**baby_cfg, "compile": False}, "eager")
        show_baby("eager", eager, peak, args.rehearse)
        check_run("eager", eager, {**baby_cfg, "compile": False}, args.rehearse)
        if ours:
            say(compile_verdict(ours, eager, baby_cfg["batch_size"] * baby_cfg["block_size"]))
    if args.nanogpt and phase("nanogpt", "nanoGPT train.py, same card, same data",
                              seconds + 90, skip):
        ref = nanogpt_run(args.nanogpt.expanduser(), work, data_dir, card, seconds,
                          baby_cfg, args.rehearse)
        say(f"  nanoGPT : {ref['tok_s'] or 0:>10,.0f} tokens/s  ({ref['ms_per_iter'] or 0:.1f}"
            f" ms/iter median of {ref['iters_timed']})  start-up {ref['startup_s'] or 0:.0f} s")
        if ref["tok_s"] and ours and ours["tok_s"]:
            say(f"  ratio   : nanotui / nanoGPT = {ours['tok_s'] / ref['tok_s']:.2f}")
    if phase("placement", "placement under CUDA_VISIBLE_DEVICES", 40, skip):
        for line in placement_check(work, data_dir, cards):
            say(line)
    device_phases(card, args.rehearse, skip)
    need = PHASE_BUDGET_S["serial"]
    for packed in (False, True):
        name = "packed" if packed else "serial"
        title = ("packed (max_runs_per_gpu = \"auto\")" if packed else "one at a time")
        if phase(name, f"depth sweep, 4 runs x {sweep_iters} iters, {title}", need, skip):
            r = sweep(work, data_dir, card, sweep_iters, packed, sweep_cfg)
            say(f"  wall {r['wall_s']:.0f} s  aggregate {r['tok_s']:,.0f} tokens/s  "
                f"at most {r['max_together']} at once  {r['done']}/4 done")
            say(f"  {r['util']}")
            if r["done"] != 4:
                fail(f"{name} sweep: {r['done']}/4 runs done")
            need = r["wall_s"] + 10  # packed takes at most about as long as serial
    return finish(args.rehearse)


def budgets(seconds: float) -> dict[str, float]:
    return {**PHASE_BUDGET_S, "baby": seconds + 60, "eager": seconds / 2 + 30}


def check_run(name: str, r: dict, cfg: dict, rehearse: bool) -> None:
    """A baby run must have trained where it was placed, compiled when asked."""
    if r.get("state") not in ("stopped", "done"):
        fail(f"{name} run ended {r.get('state')}" + (f": {r['reason']}" if r.get("reason") else ""))
        return
    device = str(r.get("device") or "")
    if rehearse and not (r["gpu"].get("simulated") and device == "cpu"):
        fail(f"{name} run: placed on {r['gpu'] or 'the CPU'}, trained on {device}: expected "
             f"the simulated card, trained on the CPU")
    if not rehearse and not device.startswith("cuda"):
        fail(f"{name} run: DEVICE MISMATCH: placed on {r['gpu'].get('uuid')}, trained on "
             f"{device or '?'}")
    if cfg.get("compile") and r.get("compile") != "on":
        fail(f"{name} run: compile fell back to eager (compile {r.get('compile')}; see its "
             f"stdout.log)")


def device_phases(card: dict, rehearse: bool, skip: set[str]) -> None:
    """profile, memory and fp16 in one child pinned to the card (gpu_check_phases.py)."""
    wanted = [p for p in ("profile", "memory", "fp16")
              if phase(p, PHASE_TITLES[p], PHASE_BUDGET_S[p], skip)]
    if not wanted:
        return
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": card["uuid"], "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    limit = sum(PHASE_BUDGET_S[p] for p in wanted) * (6 if rehearse else 2)
    try:
        p = subprocess.run([sys.executable, "-P", str(REPO / "benchmarks" / "gpu_check_phases.py"),
                            "--device", "cpu" if rehearse else "cuda", "--only", ",".join(wanted)],
                           env=env, capture_output=True, text=True, timeout=limit, check=False)
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        fail(f"device phases ({', '.join(wanted)}) ran past {limit:.0f} s (killed)")
        return
    except (ValueError, IndexError):
        fail(f"device phases printed no result: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        return
    for name in wanted:
        r = res.get(name, {})
        if not r.get("ok"):
            fail(f"{name}: {r.get('error', 'no result')}")
            continue
        show_device_phase(name, r["result"], r["seconds"], rehearse)


PHASE_TITLES = {"profile": "profiler: pageable copies and host syncs per step",
                "memory": "peak memory against the placement estimate, two shapes",
                "fp16": "30 float16 steps through the GradScaler"}


def show_device_phase(name: str, r, seconds: float, rehearse: bool) -> None:
    gib = 2 ** 30
    if name == "profile":
        say(f"  {r['steps']} steps: pageable host->device copies "
            f"{'n/a on the CPU' if r['pageable_htod'] is None else r['pageable_htod']}, host "
            f"syncs {r['host_syncs']}  ({seconds:.0f} s)")
        if r["pageable_htod"]:
            fail(f"profile: {r['pageable_htod']} pageable host->device copies in "
                 f"{r['steps']} steps (batches should be pinned)")
    elif name == "memory":
        for m in r:
            if m["peak_bytes"] is None:
                say(f"  {m['shape']} {m['dtype']}: estimate {m['estimate_bytes'] / gib:.2f} GiB,"
                    f" peak n/a on the CPU")
                continue
            say(f"  {m['shape']} {m['dtype']}: peak {m['peak_bytes'] / gib:.2f} GiB, estimate "
                f"{m['estimate_bytes'] / gib:.2f} GiB ({m['ratio']:.2f}x)")
            if m["ratio"] < 0.8:
                fail(f"memory: the estimate for {m['shape']} is {m['ratio']:.2f}x the real "
                     f"peak: placement would overfill cards")
    else:
        say(f"  {r['steps']} steps: scaler {'on' if r['scaler'] else 'off'}, scale "
            f"{r['scale']}, {r['skipped']} overflowed, loss {r['first_loss']:.3f} -> "
            f"{r['last_loss']:.3f}")
        if not r["finite"] or (not rehearse and not r["scaler"]):
            fail("fp16: " + ("a non-finite loss" if not r["finite"] else "no GradScaler"))


def finish(rehearse: bool) -> int:
    """The verdict, last: 1 and a FAIL line when any check failed."""
    say(f"\ngpu_check: finished in {elapsed():.0f} s"
        + (" (a REHEARSAL on the CPU: nothing above is a GPU figure)" if rehearse else ""))
    kill_leftover_runs()
    if FAILURES:
        for f in FAILURES:
            say(f"  - {f}")
        say(f"gpu_check: FAIL ({len(FAILURES)} failed check{'s' * (len(FAILURES) != 1)})")
        return 1
    say("gpu_check: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
