"""nanoGPT from a checkout given on the command line (never copied into this repository):
its model.py imported at run time, or its train.py run on data nanotui prepared."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ITER_LINE = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")


def load_nanogpt(path: Path, script: str):
    """nanoGPT's model.py as a module; exits with one line naming `script` if `path` is
    not a nanoGPT checkout."""
    file = Path(path).expanduser() / "model.py"
    if not file.is_file():
        sys.exit(f"{script}: {file} not found: --nanogpt must point at a nanoGPT checkout")
    spec = importlib.util.spec_from_file_location("nanogpt_model", file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_train_py(nanogpt: Path, workdir: Path, data_dir: Path, seconds: float,
                 args: list[str], env: dict[str, str]) -> dict:
    """nanoGPT's train.py with config/train_shakespeare_char.py and `args`, on the char
    dataset nanotui prepared in `data_dir` (its ids are prepare.py's: sorted characters),
    stopped `seconds` after its first logged iteration. Returns `ms`, the iteration times
    it logged from iteration 20 on (past compile and warm-up), `startup_s` (start to first
    logged iteration) and `tail`, its last lines, which say why when it timed nothing."""
    nanogpt = Path(nanogpt).expanduser()
    d = workdir / "data" / "shakespeare_char"
    d.mkdir(parents=True, exist_ok=True)
    chars = json.loads((data_dir / "meta.json").read_text())["chars"]
    for name in ("train.bin", "val.bin"):
        (d / name).write_bytes((data_dir / name).read_bytes())
    with open(d / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                     "stoi": {c: i for i, c in enumerate(chars)}}, f)
    # train.py reads configurator.py and data/<dataset> from its working directory
    (workdir / "configurator.py").write_bytes((nanogpt / "configurator.py").read_bytes())
    cmd = [sys.executable, str(nanogpt / "train.py"),
           str(nanogpt / "config" / "train_shakespeare_char.py"), *args,
           f"--out_dir={workdir / 'out'}"]
    proc = subprocess.Popen(cmd, cwd=workdir, env={**env, "PYTHONPATH": str(nanogpt)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    ms: list[float] = []
    tail: list[str] = []
    t_start, t_train = time.monotonic(), None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-8:]
        m = ITER_LINE.match(line)
        if m:
            t_train = t_train or time.monotonic()
            if int(m[1]) >= 20:
                ms.append(float(m[3]))
        if t_train and time.monotonic() - t_train >= seconds:
            break
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended by itself
    proc.wait(timeout=60)
    return {"ms": ms, "tail": tail,
            "startup_s": (t_train - t_start) if t_train else None}
