"""Which CPU a benchmark ran on, and running one as another class of CPU (--emulate)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from engine.model import device as dev
from engine.model import native


def lscpu_model_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return dev.cpu_model_name()


def real_cpu_line() -> str:
    flags = dev.cpu_flags()
    has = ", ".join(f"{f} {'yes' if f in flags else 'no'}"
                    for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"))
    return f"real CPU: {lscpu_model_name()} ({has})"


def emulate(args) -> None:
    """Re-execute this script in the environment of the emulated class (nothing returns),
    or, once re-executed, check that torch really runs as that class."""
    cls = args.emulate
    if dev.emulated_cpu_class() == cls:
        want = dev.EMULATIONS[cls]["capability"]
        got = torch.backends.cpu.get_cpu_capability()
        if got != want:
            sys.exit(f"train_speed: --emulate {cls}: torch reports CPU capability {got}, not {want}")
        return
    try:
        env = {**os.environ, **dev.emulation_env(cls)}
    except ValueError as e:
        sys.exit(f"train_speed: --emulate {cls}: {e}")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, str(Path(sys.argv[0]).resolve()), *sys.argv[1:]], env)  # the script itself


def class_line() -> str:
    cls = dev.emulated_cpu_class()
    if cls is None:
        return (f"class: {dev.cpu_class()} (the real CPU; torch capability "
                f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {dev.cpu_has_bf16()})")
    e = dev.EMULATIONS[cls]
    env = ", ".join(f"{k}={v}" for k, v in e["env"].items())
    return (f"class: {cls} emulated (torch capability {torch.backends.cpu.get_cpu_capability()}; "
            f"{env}; nanotui kernel {' '.join(native.compile_flags())}; native bf16 off)")
