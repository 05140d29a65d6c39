"""`nanotui verify BUNDLE --rerun RUN [--iters K]`: train a bundled run again and compare.

The run is retrained from its bundled config.toml in a fresh process (`python -m
engine.train`), on CPU, with
  - the same prepared data, found in this machine's data cache by the bundle's
    meta.json (source_sha256, tokenizer, val_fraction must all match: the bytes the
    student trained on, not a re-download that may differ);
  - the recorded precision (status.json `dtype`) and CPU attention path (the
    "CPU attention:" line of stdout.log), so the tuner cannot pick another kernel;
  - the recorded CPU thread count (`recorded_threads`), fixed for the whole rerun: a
    matmul summed over 2 threads rounds differently from 1 (docs/training.md), and with
    `cpu_threads = auto` the verifier's load would otherwise choose. torch splits work by
    its thread count, not by the cores under it, so N threads on fewer cores give the same
    bits, only slower (it says so). A run whose count changed within the compared
    iterations, or whose count is unknown, cannot be reproduced bit for bit: refused;
  - max_iters = K when given (the schedule keys lr_decay_iters and warmup_iters stay as
    bundled, so the first K steps see the same learning rates).
Training on CPU is deterministic for a seed, path, precision and thread count (resume is
bit-exact),
so on the same CPU model the losses must be equal to the last bit. On another CPU
model (other SIMD paths, other reduction order) they may drift: the band is then
BAND_NATS per recorded loss, stated in every message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from engine.config import TrainConfig
from engine.data.tokenizers import cache_root
from engine.handin.archive import Bundle
from engine.handin.bundle import BundleError
from engine.handin.verify import RunNumbers
from engine.model.cpu_kernels import PATH_NAMES
from engine.model.cpu_tuner import OVERRIDE_ENV
from engine.model.device import device_name
from engine.runs import METRICS, RunDir, create_run
from engine.train.threads import ENV as THREADS_ENV
from engine.train.threads import affinity_cores

BAND_NATS = 0.02
# the trainer's "CPU attention: <PATH_NAMES[path]>, <precision> (why)" line
PATHS = {name: path for path, name in PATH_NAMES.items()}
ATTENTION_LINE = re.compile(r"^CPU attention: (" + "|".join(re.escape(n) for n in PATHS) + ")", re.M)


def find_data(meta: dict[str, Any], search: list[Path] | None = None) -> Path | None:
    """A prepared dir whose meta.json has the bundle's source, tokenizer and split: one of
    `search` (a prepared dir or a folder of them), then the data cache's."""
    roots = [*(search or []), cache_root() / "prepared"]
    want = (meta.get("source_sha256"), meta.get("tokenizer"), meta.get("val_fraction"))
    for root in roots:
        for m in [Path(root) / "meta.json", *sorted(Path(root).glob("*/meta.json"))]:
            if not m.is_file():
                continue
            try:
                have = json.loads(m.read_text())
            except (OSError, ValueError):
                continue
            if (have.get("source_sha256"), have.get("tokenizer"), have.get("val_fraction")) == want \
                    and have.get("train_tokens") == meta.get("train_tokens"):
                return m.parent
    return None


def recorded_attention(stdout_log: str) -> str | None:
    m = ATTENTION_LINE.search(stdout_log)
    return PATHS[m.group(1)] if m else None


# the trainer's "CPU threads: 2 threads (why)" line, at start and at every change, and
# its per-step lines, which say how far training had got when a count changed
THREADS_LINE = re.compile(r"^CPU threads: (\d+) threads? ")
STEP_LINE = re.compile(r"^(?:iter|step) (\d+):")


def recorded_threads(stdout_log: str, status: dict[str, Any], cfg: TrainConfig,
                     k: int) -> tuple[int | None, str]:
    """(the CPU thread count the first k iterations trained with, "") or (None, why they
    cannot be reproduced bit for bit). stdout.log says what the run used and when it
    changed; without its lines, a count fixed in the config, else status.json's, but only
    where that was fixed too (an "auto" count there is merely the last one)."""
    counts: list[tuple[int, int]] = []   # (count, the last iteration logged before it)
    last = 0
    for line in stdout_log.splitlines():
        if m := STEP_LINE.match(line):
            last = int(m.group(1))
        elif m := THREADS_LINE.match(line):
            counts.append((int(m.group(1)), last))
    if counts:
        n = counts[0][0]
        for changed, after in counts[1:]:
            # logged after iteration `after`: its train step used the old count, the eval
            # that may follow it the new one, so iterations before it are safe to compare
            if changed != n and after <= k:
                safe = f"; --iters {after - 1} compares the part before" if after > 1 else ""
                return None, (f"the recorded run changed its CPU threads from {n} to {changed} "
                              f"after iter {after} (cpu_threads = auto follows the load), so "
                              f"{k} iters cannot be reproduced bit for bit{safe}")
        return n, ""
    if cfg.cpu_threads != "auto":
        return int(cfg.cpu_threads), ""
    why = str(status.get("cpu_threads_why") or "")
    if isinstance(status.get("cpu_threads"), int) and why.startswith("fixed"):
        return status["cpu_threads"], ""
    return None, ("its CPU thread count is not recorded (no \"CPU threads:\" line in stdout.log, "
                  "cpu_threads = auto), so its losses cannot be reproduced bit for bit")


def rerun(bundle: Bundle, numbers: RunNumbers, iters: int | None = None,
          data_search: list[Path] | None = None, log=print) -> tuple[list[str], str]:
    """Retrain one run of the bundle: (problems, one line saying what was compared)."""
    rid = numbers.id
    if numbers.config is None or numbers.meta is None:
        return [f"{rid}: cannot rerun: its config.toml or meta.json did not load"], ""
    # absolute: the rerun trains in a folder of its own, where a relative --data means nothing
    data = find_data(numbers.meta, [Path(p).resolve() for p in data_search or []])
    if data is None:
        return [f"{rid}: cannot rerun: no prepared data here with source sha256 "
                f"{numbers.meta.get('source_sha256')} ({numbers.meta.get('tokenizer')}); "
                "`nanotui prepare` the same source first"], ""
    base = f"runs/{rid}"
    status = json.loads(bundle.files[f"{base}/status.json"])
    stdout = bundle.files.get(f"{base}/stdout.log", b"").decode("utf-8", "replace")
    dtype = status.get("dtype") if status.get("dtype") in ("float32", "bfloat16", "float16") else "float32"
    path = recorded_attention(stdout) or "auto"
    cfg: TrainConfig = numbers.config
    k = iters if iters is not None else cfg.max_iters
    if k < 1 or k > cfg.max_iters:
        raise BundleError(f"--iters must be between 1 and the run's max_iters ({cfg.max_iters})")
    here = device_name(torch.device("cpu"))
    on_cpu = str(status.get("device") or cfg.device).startswith("cpu")
    same_cpu = on_cpu and status.get("device_name") == here
    threads, why = recorded_threads(stdout, status, cfg, k) if on_cpu else (None, "")
    if threads is None and same_cpu:
        return [f"{rid}: cannot rerun: {why}"], ""
    cores = len(affinity_cores())
    cfg = dataclasses.replace(cfg, data_dir=str(data), max_iters=k, device="cpu", dtype=dtype,
                              cpu_attention=path, compile=False,
                              cpu_threads=threads if threads is not None else cfg.cpu_threads)
    log(f"rerun {rid}: {k} iters on {here}, dtype {dtype}, CPU attention {path}, "
        + (f"{threads} CPU thread{'s' * (threads != 1)} as recorded"
           + (f" on {cores} core{'s' * (cores != 1)} (slower, the same bits)" if threads > cores else "")
           if threads is not None else f"CPU threads {cfg.cpu_threads}")
        + f", data {data}")
    with tempfile.TemporaryDirectory(prefix="nanotui-rerun-") as tmp:
        sweep, name = rid.split("/", 1)
        run = create_run(Path(tmp) / "runs", sweep, name, cfg)
        # the config's attention path and thread count win over the verifier's environment
        env = {k: v for k, v in os.environ.items() if k not in (OVERRIDE_ENV, THREADS_ENV)}
        proc = subprocess.run([sys.executable, "-m", "engine.train", str(run.path)], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, cwd=tmp)
        if proc.returncode != 0:
            # the trainer's own log, else what it said before it had one (a bad config)
            said = run.stdout_path.read_text(errors="replace") if run.stdout_path.is_file() else ""
            tail = (said.strip() or proc.stderr.decode(errors="replace").strip()).splitlines()[-1:]
            return [f"{rid}: rerun failed (exit {proc.returncode}): {' '.join(tail)}"], ""
        problems, note = compare(rid, bundle.files.get(f"{base}/{METRICS}", b""), run, k, same_cpu)
        if threads is not None:
            note += f", {threads} CPU thread{'s' * (threads != 1)} as recorded"
        return problems, note


def compare(rid: str, recorded: bytes, run: RunDir, k: int, same_cpu: bool) -> tuple[list[str], str]:
    """Recorded vs retrained losses for every train and eval record up to iteration k."""
    def curve(recs):
        out = {}
        for r in recs:
            if r.get("iter", k + 1) <= k and r.get("kind") in ("train", "eval"):
                key = "loss" if r["kind"] == "train" else "val_loss"
                out[(r["kind"], r["iter"])] = r.get(key)
        return out
    old = curve(json.loads(line) for line in recorded.decode().splitlines() if line.strip())
    new = curve(run.read_metrics())
    problems = []
    if not old:
        return [f"{rid}: no recorded losses up to iteration {k} to compare"], ""
    rule = "exactly (same CPU model)" if same_cpu else f"within {BAND_NATS} nats (another CPU model)"
    for key in sorted(old, key=lambda x: (x[1], x[0])):
        a, b = old[key], new.get(key)
        if b is None:
            problems.append(f"{rid}: {key[0]} loss at iter {key[1]}: recorded, not reproduced")
        elif a is None or (a != b if same_cpu else abs(a - b) > BAND_NATS):
            problems.append(f"{rid}: {key[0]} loss at iter {key[1]}: recorded {a}, rerun {b} "
                            f"; must match {rule}")
    return problems, f"{rid}: rerun of {k} iters compared {len(old)} recorded losses {rule}"
