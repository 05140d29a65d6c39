"""What produced a run's numbers, recorded in status.json when its process starts, so a
course or paper report can say it: nanotui's version and git commit (when run from a
checkout), Python, torch and CUDA versions, the device, the host and the command."""

from __future__ import annotations

import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from engine.version import nanotui_version

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def git_commit(root: Path = PACKAGE_ROOT) -> str | None:
    """The checkout's commit (with "-dirty" for uncommitted changes), None outside one."""
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty else "")


def provenance(device_name: str) -> dict[str, Any]:
    return {"nanotui": nanotui_version(), "git_commit": git_commit(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device_name": device_name,
            "host": socket.gethostname(),
            "command": shlex.join([sys.executable, *_arguments()])}


def _arguments() -> list[str]:
    """The interpreter's arguments as typed (`-m engine.train RUN_DIR`, not the path of
    the module's __main__.py that sys.argv shows), so the command can be run again."""
    return list(sys.orig_argv[1:])
