"""nanotui installed from a built wheel, outside the repository (as pip, pipx or uv would
install it): `nanotui --version`, `nanotui init` in an empty directory, then `nanotui plan`.

The wheel is built from a copy of the sources (the checkout stays untouched) and installed
without dependencies into a fresh venv that borrows this venv's packages (torch, textual...)
through a .pth file, so the test needs no network and the package code that runs is the
wheel's, not the checkout's."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from engine.version import nanotui_version

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("engine", "tui", "pyproject.toml", "README.md", "experiments.toml")


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{cmd}: {p.stdout}\n{p.stderr}"
    return p


def test_init_and_plan_from_a_built_wheel(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools")
    src = tmp_path / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path / "dist")], cwd=src)
    wheel = next((tmp_path / "dist").glob("nanotui-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    purelib = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=tmp_path).stdout.strip())
    (purelib / "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
         str(wheel)], cwd=tmp_path)
    nanotui = str(env_dir / "bin" / "nanotui")

    work = tmp_path / "course"
    work.mkdir()
    where = run([str(py), "-c", "import tui; print(tui.__file__)"], cwd=work).stdout
    assert where.startswith(str(purelib)), where  # the wheel's code, not the checkout's
    assert run([nanotui, "--version"], cwd=work).stdout == f"nanotui {nanotui_version()}\n"
    run([nanotui, "init"], cwd=work)
    assert (work / "experiments.toml").read_bytes() == \
        (REPO / "tui" / "templates" / "experiments.toml").read_bytes()
    out = run([nanotui, "plan", "depth", "width", "heads"], cwd=work).stdout
    assert "depth/n_layer=2" in out and "width/n_embd=384" in out and "11 runs (+ 1 shared" in out
    again = subprocess.run([nanotui, "init"], cwd=work, capture_output=True, text=True)
    assert again.returncode == 2 and "already exists: not overwritten" in again.stderr
