"""nanoGPT's model.py, imported at run time from a checkout given on the command line
(never copied into this repository)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


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
