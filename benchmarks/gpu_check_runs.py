"""The runs of the GPU check (benchmarks/gpu_check.py): nanotui launched as a user would,
its status read back, every failed check recorded in FAILURES, and every runs directory
remembered so that nothing keeps training after the check (kill_leftover_runs)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

from engine.launch.child import child_env, module_command
from engine.runs import list_runs


def say(msg: str = "") -> None:
    print(msg, flush=True)

FAILURES: list[str] = []   # every failed check; any makes the exit status 1
RUNS_DIRS: list[Path] = []  # every runs directory started, for the cleanup at exit


def fail(what: str) -> None:
    FAILURES.append(what)
    say(f"  FAIL: {what}")


def kill_leftover_runs() -> None:
    """Trainers and dispatchers this check started that still run (a phase that timed
    out, an interrupted check): stopped, so no card stays busy after the slot."""
    import signal
    from engine.runs import process_matches
    for runs in RUNS_DIRS:
        for rid, st in status(runs).items() if runs.is_dir() else ():
            pid = st.get("pid")
            if st.get("state") == "running" and process_matches(pid, st.get("pid_create_time")):
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(pid, sig)
                    except OSError:
                        pass
                    time.sleep(2 if sig == signal.SIGTERM else 0)
                say(f"gpu_check: stopped leftover run {rid} (pid {pid})")


def nanotui(*args: str, env: dict | None = None, check: bool = True, timeout: float = 900,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(module_command("tui", *args), capture_output=True, text=True,
                           env=child_env(env or os.environ), timeout=timeout, cwd=cwd,
                           check=False)
    except subprocess.TimeoutExpired:
        kill_leftover_runs()
        raise SystemExit(f"gpu_check: FAIL: nanotui {' '.join(args)} ran past {timeout:.0f} s")
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


def generated_text(path: Path, size: int = 1_200_000) -> Path:
    """A default text where no Shakespeare is at hand (a device without the shared data or
    network): the Python standard library's own source, the same bytes on every machine
    with this Python."""
    import sysconfig
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, n = [], 0
    for f in sorted(stdlib.glob("*.py")):
        try:
            t = f.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(t)
        n += len(t)
        if n >= size:
            break
    path.write_text("".join(parts)[:size])
    return path


def baby_run(work: Path, data_dir: str, card: dict, seconds: float, cfg: dict,
             tag: str) -> dict:
    """nanotui's trainer on the baby GPT (`cfg`), stopped after `seconds` of training.
    startup_s: launch to the first logged iteration (imports, data, compile)."""
    exp = write_experiments(work / f"baby-{tag}.toml", data_dir, cfg,
                            {"baby": "vary = { seed = [1337] }"})
    runs = work / f"runs-baby-{tag}"
    RUNS_DIRS.append(runs)
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
            say(f"  {tag}: no result within {seconds + 300:.0f} s: stopping it")
            kill_leftover_runs()
            proc.kill()
            break
        time.sleep(1.0)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        kill_leftover_runs()
    st = next(iter(status(runs).values()), {})
    return {"iter": st.get("iter"), "tok_s": st.get("tok_s"), "mfu": st.get("mfu"),
            "val_loss": st.get("val_loss"), "compile": st.get("compile"),
            "device": st.get("device"), "gpu": st.get("gpu") or {},
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
    from nanogpt_ref import run_train_py  # only with --nanogpt
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
        RUNS_DIRS.append(runs)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        nanotui("--experiments", str(exp), "--runs", str(runs), "launch", "place/seed=1",
                env=env)
        st = next(iter(status(runs).values()))
        gpu = st.get("gpu") or {}
        got = gpu.get("uuid")
        # where it trained must match where it was placed: a card (a simulated one
        # trains on the CPU and says so), or the CPU
        trained = str(st.get("device") or "")
        device_ok = (trained == "cpu" if want is None or gpu.get("simulated")
                     else trained.startswith("cuda"))
        ok = got == want and st.get("state") == "done" and device_ok
        shown = f"{trained}, simulated card" if gpu.get("simulated") else trained
        out.append(f"  CUDA_VISIBLE_DEVICES={visible!r:44} -> "
                   f"{got or 'CPU'} ({shown}) {'OK' if ok else 'WRONG'}")
        if not ok:
            fail(f"placement with CUDA_VISIBLE_DEVICES={visible!r}: placed on "
                 f"{got or 'the CPU'}, trained on {trained or '?'}, state {st.get('state')}"
                 + (f" ({st.get('reason')})" if st.get("reason") else ""))
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
    RUNS_DIRS.append(runs)
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
