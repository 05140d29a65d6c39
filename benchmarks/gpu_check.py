"""The GPU acceptance check: one command that, on a machine with an NVIDIA GPU and within
about 8 minutes on one card, prints

  1. `nanotui doctor`'s table (each card: bf16, whether compile works, tokens/s);
  2. a 2-minute Shakespeare-char run of nanoGPT's baby GPT (6 layers, 6 heads, n_embd 384,
     block 256, batch 64, dropout 0.2, nanoGPT's config/train_shakespeare_char.py values)
     with bf16 + compile: tokens/s and MFU against engine.model.device's peak table, and
     nanoGPT's train.py on the same card for the same time when --nanogpt is given;
  3. placement under CUDA_VISIBLE_DEVICES: a run started with the variable naming one
     card lands on that card (by uuid), and with it empty goes to the CPU;
  4. the assignment's depth sweep (n_layer 2/4/8/12 at n_head 8, n_embd 256) at a few
     hundred iterations, one run at a time vs max_runs_per_gpu = "auto": wall time and
     aggregate tokens/s (each sweep with a fresh compile cache, so neither inherits the
     other's compiled kernels).

    benchmarks/gpu_check.sh [--nanogpt PATH] [--text input.txt] [--minutes 2]
                            [--sweep-iters 300] [--work DIR]

Without a GPU it says so and exits 0 having measured nothing. Every phase prints its own
wall time; a phase that would overrun the budget is skipped with a line saying so.
The text defaults to $NANOTUI_SHARED_DATA/shakespeare/input.txt (or ../shared/data/...),
else nanotui downloads tiny Shakespeare.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.launch.child import child_env, module_command

BUDGET_S = 8 * 60
BABY = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "batch_size": 64,
        "dropout": 0.2, "learning_rate": 1e-3, "max_iters": 5000, "lr_decay_iters": 5000,
        "min_lr": 1e-4, "beta2": 0.99, "warmup_iters": 100, "eval_interval": 250,
        "eval_iters": 200, "log_interval": 10, "dtype": "bfloat16", "compile": True}
# the assignment's depth sweep (n_layer 2/4/8/12 is varied), nanoGPT's baby-GPT settings
SWEEP = {"n_head": 8, "n_embd": 256, "block_size": 256, "batch_size": 64, "dropout": 0.0,
         "eval_iters": 20, "log_interval": 10, "learning_rate": 1e-3, "dtype": "bfloat16",
         "compile": True}
T0 = time.monotonic()


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
    out = {}
    for f in runs.glob("*/*/status.json"):
        try:
            out[f"{f.parent.parent.name}/{f.parent.name}"] = json.loads(f.read_text())
        except ValueError:
            pass
    return out


# ---- phases ---------------------------------------------------------------------------

def preflight() -> list[dict]:
    try:
        import torch
    except ImportError:
        raise SystemExit("gpu_check: torch is not installed; run `make` first") from None
    if not torch.cuda.is_available():
        say("gpu_check: no NVIDIA GPU visible here (torch.cuda.is_available() is False: no "
            "driver, a CPU-only torch build, or CUDA_VISIBLE_DEVICES hides every card).")
        say("gpu_check: nothing measured. Run it on a machine with a GPU.")
        raise SystemExit(0)
    from engine.launch.gpu import default_gpu_source
    return [u.to_dict() for u in default_gpu_source().snapshot() if u.ours]


def prepare(args, work: Path) -> str:
    text = args.text or next((p for p in (
        Path(os.environ.get("NANOTUI_SHARED_DATA", "/nonexistent")) / "shakespeare/input.txt",
        REPO.parent / "shared/data/shakespeare/input.txt") if p.is_file()), None)
    p = nanotui("prepare", str(text) if text else "shakespeare", "--tokenizer", "char",
                "--json", env={**os.environ, "NANOTUI_DATA_DIR": str(work / "cache")})
    return json.loads(p.stdout)["data_dir"]


def baby_run(work: Path, data_dir: str, card: dict, seconds: float) -> dict:
    """nanotui's trainer on the baby GPT, stopped after `seconds` of training."""
    exp = write_experiments(work / "baby.toml", data_dir, BABY, {"baby": "vary = { seed = [1337] }"})
    runs = work / "runs-baby"
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


def nanogpt_run(nanogpt: Path, work: Path, data_dir: str, card: dict, seconds: float) -> dict:
    """nanoGPT's own train.py with its shakespeare_char config on the same card and data
    (ids identical to its prepare.py), stopped after `seconds` of training."""
    d = work / "nanogpt" / "data" / "shakespeare_char"
    d.mkdir(parents=True, exist_ok=True)
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    chars = meta["chars"]
    for name in ("train.bin", "val.bin"):
        (d / name).write_bytes((Path(data_dir) / name).read_bytes())
    with open(d / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                     "stoi": {c: i for i, c in enumerate(chars)}}, f)
    cmd = [sys.executable, str(nanogpt / "train.py"), str(nanogpt / "config/train_shakespeare_char.py"),
           "--compile=True", "--dtype=bfloat16", f"--out_dir={work / 'nanogpt' / 'out'}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": card["uuid"], "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
           "PYTHONPATH": str(nanogpt)}
    proc = subprocess.Popen(cmd, cwd=work / "nanogpt", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ms: list[float] = []
    t_start, t_train = time.monotonic(), None
    pat = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
    for line in proc.stdout:
        m = pat.match(line)
        if m:
            t_train = t_train or time.monotonic()
            if int(m[1]) >= 20:  # past compile and warm-up
                ms.append(float(m[3]))
        if t_train and time.monotonic() - t_train >= seconds:
            break
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended by itself (an error: its last lines are not kept)
    proc.wait(timeout=60)
    med = statistics.median(ms) if ms else None
    tok_s = BABY["batch_size"] * BABY["block_size"] / (med / 1000) if med else None
    return {"tok_s": tok_s, "ms_per_iter": med, "iters_timed": len(ms),
            "startup_s": (t_train - t_start) if t_train else None}


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


def sweep(work: Path, data_dir: str, card: dict, iters: int, packed: bool) -> dict:
    """The sweep on one card (pinned by uuid), one at a time or packed."""
    base = {**SWEEP, "max_iters": iters, "lr_decay_iters": iters,
            "warmup_iters": min(100, iters // 10), "eval_interval": iters}
    tag = "packed" if packed else "serial"
    launch = 'max_runs_per_gpu = "auto"' if packed else "max_runs_per_gpu = 1"
    exp = write_experiments(work / f"sweep-{tag}.toml", data_dir, base,
                            {"depth": "vary = { n_layer = [2, 4, 8, 12] }"}, launch)
    runs = work / f"runs-{tag}"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{tag}")}
    t = time.monotonic()
    nanotui("--experiments", str(exp), "--runs", str(runs), "launch", "depth", "--gpu",
            card["uuid"], env=env)
    wall = time.monotonic() - t
    sts = status(runs).values()
    tokens = sum((s.get("iter") or 0) * base["batch_size"] * base["block_size"] for s in sts)
    overlap = max(sum(1 for s in sts if s.get("started_at", 0) <= t0 < (s.get("ended_at") or 0))
                  for t0 in [s.get("started_at", 0) for s in sts])
    return {"wall_s": wall, "tok_s": tokens / wall, "max_together": overlap,
            "done": sum(s.get("state") == "done" for s in sts)}


# ---- the report -------------------------------------------------------------------------

def phase(name: str, need_s: float):
    left = BUDGET_S - elapsed()
    if left < need_s:
        say(f"\n== {name}: skipped ({left:.0f} s of the {BUDGET_S // 60}-minute budget "
            f"left, about {need_s:.0f} s needed)")
        return False
    say(f"\n== {name}  (t = {elapsed():.0f} s)")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout to run side by side")
    ap.add_argument("--text", type=Path, help="tiny Shakespeare input.txt (default: shared data)")
    ap.add_argument("--minutes", type=float, help="training time of each baby-GPT run "
                    "(default 2; 1.5 with --nanogpt, to stay inside the budget)")
    ap.add_argument("--sweep-iters", type=int, default=300)
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    cards = preflight()
    if not cards:
        say("gpu_check: CUDA works but no card is ours (CUDA_VISIBLE_DEVICES / Slurm): "
            "nothing to place on.")
        return 1
    work = args.work or Path(tempfile.mkdtemp(prefix="nanotui-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["NANOTUI_DATA_DIR"] = str(work / "cache")
    seconds = 60 * (args.minutes or (1.5 if args.nanogpt else 2.0))
    say(f"gpu_check: work dir {work}")

    say("\n== nanotui doctor")
    say(nanotui("doctor", check=False).stdout.rstrip())
    data_dir = prepare(args, work)
    card = cards[0]

    from engine.model.device import peak_flops
    peak = peak_flops(card["name"], "bfloat16")
    if phase(f"baby GPT 6/6/384, block 256, batch 64, bf16 + compile, {seconds:.0f} s on "
             f"GPU {card['label']} ({card['name']})", seconds + 60):
        ours = baby_run(work, data_dir, card, seconds)
        mfu = f"{ours['mfu'] * 100:.1f}%" if ours.get("mfu") is not None else "n/a (no peak)"
        say(f"  nanotui : {ours['tok_s'] or 0:>10,.0f} tokens/s  MFU {mfu} of "
            f"{(peak or 0) / 1e12:.0f} TFLOP/s  iter {ours['iter']}  val {ours['val_loss']}  "
            f"compile {ours['compile']}  start-up+compile {ours['startup_s'] or 0:.0f} s  "
            f"({ours['state']}{': ' + ours['reason'] if ours.get('reason') else ''})")
        if args.nanogpt and phase("nanoGPT train.py, same card, same data", seconds + 60):
            ref = nanogpt_run(args.nanogpt.expanduser(), work, data_dir, card, seconds)
            say(f"  nanoGPT : {ref['tok_s'] or 0:>10,.0f} tokens/s  ({ref['ms_per_iter'] or 0:.1f}"
                f" ms/iter median of {ref['iters_timed']})  start-up+compile "
                f"{ref['startup_s'] or 0:.0f} s")
            if ref["tok_s"] and ours["tok_s"]:
                say(f"  ratio   : nanotui / nanoGPT = {ours['tok_s'] / ref['tok_s']:.2f}")
    if phase("placement under CUDA_VISIBLE_DEVICES", 40):
        for line in placement_check(work, data_dir, cards):
            say(line)
    for packed in (False, True):
        name = "packed (max_runs_per_gpu = \"auto\")" if packed else "one at a time"
        if phase(f"depth sweep, 4 runs x {args.sweep_iters} iters, {name}", 150):
            r = sweep(work, data_dir, card, args.sweep_iters, packed)
            say(f"  wall {r['wall_s']:.0f} s  aggregate {r['tok_s']:,.0f} tokens/s  "
                f"at most {r['max_together']} at once  {r['done']}/4 done")
    say(f"\ngpu_check: finished in {elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
