"""The GPU acceptance check: one command that, on a machine with an NVIDIA GPU and within
about 8 minutes on one card, prints

  1. `nanotui doctor`'s table (each card: bf16, whether compile works, tokens/s);
  2. a Shakespeare-char run of nanoGPT's baby GPT (6 layers, 6 heads, n_embd 384, block 256,
     batch 64, dropout 0.2, nanoGPT's config/train_shakespeare_char.py values) with bf16 +
     compile: tokens/s and MFU against engine.model.device's peak table; the same run
     without compile, and from the pair how many iterations compile needs to pay for its
     start-up (the data for compile's default on CUDA); nanoGPT's train.py on the same card
     for the same time when --nanogpt is given;
  3. placement under CUDA_VISIBLE_DEVICES: a run started with the variable naming one
     card lands on that card (by uuid), and with it empty goes to the CPU;
  4. the assignment's depth sweep (n_layer 2/4/8/12 at n_head 8, n_embd 256), one run at a
     time vs max_runs_per_gpu = "auto", with wall time, aggregate tokens/s and the card's
     NVML utilization while it ran (the data for packing's default). The sweep runs
     without compile, so that the pair compares packing and not compile caches, and long
     enough (2000 iterations) for a run to be training when packing looks at the card.

    benchmarks/gpu_check.sh [--nanogpt PATH] [--text input.txt] [--minutes M]
                            [--sweep-iters N] [--budget-min 8] [--skip PHASE,...]
                            [--work DIR] [--rehearse]

Without a GPU it says so and exits 0 having measured nothing. Every phase prints its own
wall time; a phase that would overrun the budget is skipped with a line saying so, and
`--skip` leaves phases out (doctor, baby, eager, nanogpt, placement, serial, packed), so a
short slot can run the check in two calls.
The text defaults to $NANOTUI_SHARED_DATA/shakespeare/input.txt (or ../shared/data/...),
else nanotui downloads tiny Shakespeare.

`--rehearse` runs every phase on the CPU instead, against a fake card (NANOTUI_FAKE_GPUS,
or one written into the work dir) with tiny models, fp32 and no compile, in about a minute:
it proves the script's plumbing (launch, stop, status, placement, packing, nanoGPT's log
parsing) before the few minutes a GPU is lent are spent on it. Its figures are CPU figures
of toy models and say so; they are never GPU results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # -P (gpu_check.sh) adds neither

from engine.launch.child import child_env, module_command  # noqa: E402
from engine.runs import list_runs  # noqa: E402
from nanogpt_ref import run_train_py  # noqa: E402

PHASES = ("doctor", "baby", "eager", "nanogpt", "placement", "serial", "packed")
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
BUDGET_S = 8 * 60.0  # --budget-min


def say(msg: str = "") -> None:
    print(msg, flush=True)


def elapsed() -> float:
    return time.monotonic() - T0


def nanotui(*args: str, env: dict | None = None, check: bool = True, timeout: float = 900,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(module_command("tui", *args), capture_output=True, text=True,
                       env=child_env(env or os.environ), timeout=timeout, cwd=cwd, check=False)
    if check and p.returncode != 0:
        raise SystemExit(f"gpu_check: nanotui {' '.join(args)} failed:\n{p.stdout}{p.stderr}")
    return p


def toml_value(v) -> str:
    return json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else repr(v)


def write_experiments(path: Path, data_dir: str, defaults: dict, sweeps: dict[str, str],
                      launch: str = "") -> Path:
    lines = ["[defaults]", f'data_dir = "{data_dir}"']
    lines += [f"{k} = {toml_value(v)}" for k, v in defaults.items()]
    lines += ["[sampling]", "max_new_tokens = 16", "[launch]", "stop_grace_s = 30.0", launch]
    for name, body in sweeps.items():
        lines += [f"[sweep.{name}]", body]
    path.write_text("\n".join(lines) + "\n")
    return path


def status(runs: Path) -> dict[str, dict]:
    """Each run's status as nanotui reads it (a dead "running" process reads as failed)."""
    return {r.id: r.read_status() for r in list_runs(runs)}


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
    elif not torch.cuda.is_available():
        say("gpu_check: no NVIDIA GPU visible here (torch.cuda.is_available() is False: no "
            "driver, a CPU-only torch build, or CUDA_VISIBLE_DEVICES hides every card).")
        say("gpu_check: nothing measured. Run it on a machine with a GPU.")
        raise SystemExit(0)
    return [u.to_dict() for u in default_gpu_source().snapshot() if u.ours]


def prepare(args, work: Path) -> str:
    text = args.text or next((p for p in (
        Path(os.environ.get("NANOTUI_SHARED_DATA", "/nonexistent")) / "shakespeare/input.txt",
        REPO.parent / "shared/data/shakespeare/input.txt") if p.is_file()), None)
    p = nanotui("prepare", str(text) if text else "shakespeare", "--tokenizer", "char",
                "--json", env={**os.environ, "NANOTUI_DATA_DIR": str(work / "cache")})
    return json.loads(p.stdout)["data_dir"]


def baby_run(work: Path, data_dir: str, card: dict, seconds: float, cfg: dict,
             tag: str) -> dict:
    """nanotui's trainer on the baby GPT (`cfg`), stopped after `seconds` of training.
    startup_s: launch to the first logged iteration (imports, data, compile)."""
    exp = write_experiments(work / f"baby-{tag}.toml", data_dir, cfg,
                            {"baby": "vary = { seed = [1337] }"})
    runs = work / f"runs-baby-{tag}"
    proc = subprocess.Popen(module_command("tui", "--experiments", str(exp), "--runs", str(runs),
                                           "launch", "baby", "--gpu", card["uuid"]),
                            env=child_env(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    t_start, t_train = time.monotonic(), None
    while proc.poll() is None:
        st = next(iter(status(runs).values()), {})
        if t_train is None and (st.get("iter") or 0) > 0:
            t_train = time.monotonic()
        if t_train is not None and time.monotonic() - t_train >= seconds:
            nanotui("--experiments", str(exp), "--runs", str(runs), "stop", "baby", check=False)
            break
        if time.monotonic() - t_start > seconds + 300:
            break
        time.sleep(1.0)
    proc.wait(timeout=120)
    st = next(iter(status(runs).values()), {})
    return {"iter": st.get("iter"), "tok_s": st.get("tok_s"), "mfu": st.get("mfu"),
            "val_loss": st.get("val_loss"), "compile": st.get("compile"),
            "startup_s": (t_train - t_start) if t_train else None, "state": st.get("state"),
            "reason": st.get("reason")}


def nanogpt_run(nanogpt: Path, work: Path, data_dir: str, card: dict, seconds: float,
                cfg: dict, rehearse: bool) -> dict:
    """nanoGPT's own train.py with its shakespeare_char config, bf16 + compile, on the same
    card and data. Rehearsing, the toy `cfg`'s model and batch override it, on the CPU."""
    args = ["--compile=True", "--dtype=bfloat16"]
    if rehearse:
        args += ["--device=cpu", "--compile=False", "--dtype=float32", "--eval_iters=5"]
        args += [f"--{k}={cfg[k]}" for k in ("n_layer", "n_head", "n_embd", "block_size",
                                              "batch_size", "eval_interval")]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": card["uuid"], "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    r = run_train_py(nanogpt, work / "nanogpt", Path(data_dir), seconds, args, env)
    if not r["ms"]:
        say("  nanoGPT timed no iteration; its last lines:\n    " + "\n    ".join(r["tail"]))
    med = statistics.median(r["ms"]) if r["ms"] else None
    tok_s = cfg["batch_size"] * cfg["block_size"] / (med / 1000) if med else None
    return {"tok_s": tok_s, "ms_per_iter": med, "iters_timed": len(r["ms"]),
            "startup_s": r["startup_s"]}


def placement_check(work: Path, data_dir: str, cards: list[dict]) -> list[str]:
    tiny = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
            "max_iters": 20, "eval_interval": 20, "eval_iters": 2, "log_interval": 5,
            "compile": False}
    exp = write_experiments(work / "place.toml", data_dir, tiny,
                            {"place": "vary = { seed = [1, 2] }"})
    out = []
    target = cards[-1]
    for name, visible, want in (("card", target["uuid"], target["uuid"]), ("hidden", "", None)):
        runs = work / f"runs-place-{name}"
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        nanotui("--experiments", str(exp), "--runs", str(runs), "launch", "place/seed=1",
                env=env)
        st = next(iter(status(runs).values()))
        got = (st.get("gpu") or {}).get("uuid")
        ok = got == want and st.get("state") == "done"
        out.append(f"  CUDA_VISIBLE_DEVICES={visible!r:44} -> "
                   f"{got or 'CPU'} ({st.get('device')}) {'OK' if ok else 'WRONG'}")
    return out


class UtilSampler(threading.Thread):
    """The card's NVML utilization every half second while a sweep runs (packing adds a
    run only while it reads under pack_util_below, 60 %), kept while any run trains."""

    def __init__(self, uuid: str, runs: Path) -> None:
        super().__init__(daemon=True)
        self.uuid, self.runs, self.samples = uuid, runs, []
        self.done = threading.Event()

    def run(self) -> None:
        from engine.launch.gpu import default_gpu_source
        source = default_gpu_source()
        while not self.done.wait(0.5):
            training = any(s.get("state") == "running" and (s.get("iter") or 0) > 0
                           for s in status(self.runs).values())
            unit = next((u for u in source.snapshot() if u.uuid == self.uuid), None)
            if training and unit is not None and unit.utilization is not None:
                self.samples.append(unit.utilization)

    def summary(self) -> str:
        if not self.samples:
            return "utilization: no sample while training"
        q = statistics.quantiles(self.samples, n=10) if len(self.samples) > 1 else self.samples * 9
        under = sum(u < 60 for u in self.samples) / len(self.samples)
        return (f"utilization while training: median {statistics.median(self.samples):.0f} %, "
                f"p10 {q[0]:.0f} %, max {max(self.samples)} %, under 60 % in "
                f"{under:.0%} of {len(self.samples)} samples")


def sweep(work: Path, data_dir: str, card: dict, iters: int, packed: bool, cfg: dict) -> dict:
    """The sweep (`cfg`) on one card (pinned by uuid), one at a time or packed."""
    base = {**cfg, "max_iters": iters, "lr_decay_iters": iters,
            "warmup_iters": min(100, iters // 10), "eval_interval": iters}
    tag = "packed" if packed else "serial"
    launch = 'max_runs_per_gpu = "auto"' if packed else "max_runs_per_gpu = 1"
    exp = write_experiments(work / f"sweep-{tag}.toml", data_dir, base,
                            {"depth": "vary = { n_layer = [2, 4, 8, 12] }"}, launch)
    runs = work / f"runs-{tag}"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{tag}")}
    sampler = UtilSampler(card["uuid"], runs)
    sampler.start()
    t = time.monotonic()
    try:
        nanotui("--experiments", str(exp), "--runs", str(runs), "launch", "depth", "--gpu",
                card["uuid"], env=env)
    finally:
        sampler.done.set()
    wall = time.monotonic() - t
    sts = status(runs).values()
    tokens = sum((s.get("iter") or 0) * base["batch_size"] * base["block_size"] for s in sts)
    overlap = max(sum(1 for s in sts if s.get("started_at", 0) <= t0 < (s.get("ended_at") or 0))
                  for t0 in [s.get("started_at", 0) for s in sts])
    return {"wall_s": wall, "tok_s": tokens / wall, "max_together": overlap,
            "done": sum(s.get("state") == "done" for s in sts), "util": sampler.summary()}


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
    ap.add_argument("--budget-min", type=float, default=8.0,
                    help="skip a phase that would end past this many minutes (default 8)")
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
        say("gpu_check: CUDA works but no card is ours (CUDA_VISIBLE_DEVICES / Slurm): "
            "nothing to place on.")
        return 1
    os.environ["NANOTUI_DATA_DIR"] = str(work / "cache")
    baby_cfg, sweep_cfg = (REHEARSAL_BABY, REHEARSAL_SWEEP) if args.rehearse else (BABY, SWEEP)
    sweep_iters = args.sweep_iters or (300 if args.rehearse else 2000)
    seconds = 60 * (args.minutes or (0.1 if args.rehearse else 1.0 if args.nanogpt else 2.0))
    say(f"gpu_check: work dir {work}")

    if phase("doctor", "nanotui doctor", 60, skip):
        say(nanotui("doctor", check=False).stdout.rstrip())
    data_dir = prepare(args, work)
    card = cards[0]

    from engine.model.device import peak_flops
    peak = peak_flops(card["name"], "bfloat16")
    shape = "/".join(str(baby_cfg[k]) for k in ("n_layer", "n_head", "n_embd"))
    what = f"baby GPT {shape}, block {baby_cfg['block_size']}, batch {baby_cfg['batch_size']}"
    where = f"GPU {card['label']} ({card['name']})"
    how = "bf16 + compile" if baby_cfg["compile"] else f"{baby_cfg['dtype']}, no compile"
    ours = eager = None
    if phase("baby", f"{what}, {how}, {seconds:.0f} s on {where}", seconds + 90, skip):
        ours = baby_run(work, data_dir, card, seconds, baby_cfg, "compiled")
        show_baby("nanotui", ours, peak, args.rehearse)
    if phase("eager", f"the same without compile, {seconds / 2:.0f} s", seconds / 2 + 30, skip):
        eager = baby_run(work, data_dir, card, seconds / 2, {**baby_cfg, "compile": False}, "eager")
        show_baby("eager", eager, peak, args.rehearse)
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
    need = 150.0
    for packed in (False, True):
        name = "packed" if packed else "serial"
        title = ("packed (max_runs_per_gpu = \"auto\")" if packed else "one at a time")
        if phase(name, f"depth sweep, 4 runs x {sweep_iters} iters, {title}", need, skip):
            r = sweep(work, data_dir, card, sweep_iters, packed, sweep_cfg)
            say(f"  wall {r['wall_s']:.0f} s  aggregate {r['tok_s']:,.0f} tokens/s  "
                f"at most {r['max_together']} at once  {r['done']}/4 done")
            say(f"  {r['util']}")
            need = r["wall_s"] + 10  # packed takes at most about as long as serial
    say(f"\ngpu_check: finished in {elapsed():.0f} s"
        + (" (a REHEARSAL on the CPU: nothing above is a GPU figure)" if args.rehearse else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
