"""How nanotui starts its own Python children (trainers, the background dispatcher, the
trainer inside a Slurm job) so that the user's working directory cannot replace them.

`python -m engine.train` puts the working directory first on sys.path: a folder there
named `engine/` with a `train.py` (a student's own trainer, an old checkout) would run
instead of nanotui's. So every child is started

  - with `-P` on Python >= 3.11 (no working directory, no script directory on sys.path;
    PYTHONPATH is kept, as users expect), or, on 3.10, through a tiny `-c` bootstrap that
    drops the '' entry `-c` adds before importing anything, then runs the module with
    runpy exactly as `-m` would;
  - (the Slurm job's own process, which unpickles nanotui's job, gets -P through
    submitit's `python` option: python_for_shell)
  - with the directory holding the `engine` package that the launching process imported
    first on PYTHONPATH (unless it is a site-packages directory, found anyway), so the
    child runs the same nanotui as its parent even from a checkout that was never
    installed.
"""

from __future__ import annotations

import os
import shlex
import site
import sys
from collections.abc import Mapping
from pathlib import Path

import engine

# `import sys` is safe (a builtin module); nothing else may be imported before the
# working directory leaves sys.path.
_BOOTSTRAP = ("import sys; del sys.path[0]; import runpy; m = sys.argv.pop(1); "
              "runpy.run_module(m, run_name='__main__', alter_sys=True)")


def module_command(module: str, *args: str, safe_path_flag: bool | None = None) -> list[str]:
    """argv for `python -m MODULE ARGS...` that ignores the working directory.
    `safe_path_flag` forces one form (tests); default: -P where the interpreter has it."""
    if safe_path_flag is None:
        safe_path_flag = sys.version_info >= (3, 11)
    if safe_path_flag:
        return [sys.executable, "-P", "-m", module, *args]
    return [sys.executable, "-c", _BOOTSTRAP, module, *args]


def python_for_shell() -> str:
    """This interpreter as a shell word for commands others build around it (submitit's
    `PYTHON -u -m submitit.core._submit`): with -P where it exists; on 3.10 such a
    command cannot be bootstrapped, and runs as before."""
    exe = shlex.quote(sys.executable)
    return f"{exe} -P" if sys.version_info >= (3, 11) else exe


def command_module_args(argv: list[str], module: str) -> list[str]:
    """The arguments after MODULE in a command built by module_command."""
    return list(argv[argv.index(module) + 1:])


def package_root() -> Path:
    """The directory that holds the `engine` package this process runs."""
    return Path(engine.__file__).resolve().parent.parent


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with nanotui's own package root first on PYTHONPATH (see the module doc)."""
    out = dict(env)
    root = str(package_root())
    site_dirs = {str(Path(p).resolve()) for p in
                 [*site.getsitepackages(), site.getusersitepackages()] if p}
    if root in site_dirs:
        return out
    parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not parts or parts[0] != root:
        out["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return out
