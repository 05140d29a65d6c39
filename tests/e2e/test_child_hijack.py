"""A working directory that holds its own `engine/` package (a student's trainer, an old
checkout) must not replace nanotui's trainer or dispatcher: launched from there, runs
train normally and none of the impostor's code ever runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.launch.child import module_command
from engine.runs import list_runs
from tests.conftest import tiny_experiments, write_char_data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NANOTUI = Path(sys.executable).with_name("nanotui")

EXP = dict(sweeps={"t": {"vary": {"n_embd": [16]}}}, defaults={
    "max_iters": 6, "lr_decay_iters": 6, "warmup_iters": 1, "eval_interval": 3,
    "eval_iters": 2, "log_interval": 1, "dtype": "float32"},
    sampling={"max_new_tokens": 4, "prompts": ["the"]})

IMPOSTOR = "open({marker!r}, 'a').write({name!r} + '\\n')\n"


@pytest.fixture
def data_dir(tmp_path):
    return write_char_data(tmp_path / "data", "the cat sat on the mat. " * 200)


def plant_impostor(work: Path, marker: Path, package_train: bool) -> None:
    """engine/ with __init__, launch/__main__ and either train.py or train/__main__.py,
    each appending its name to `marker` when imported or run."""
    pkg = work / "engine"
    (pkg / "launch").mkdir(parents=True)
    files = {"__init__.py": "engine", "launch/__init__.py": "engine.launch",
             "launch/__main__.py": "engine.launch.__main__"}
    if package_train:
        (pkg / "train").mkdir()
        files |= {"train/__init__.py": "engine.train", "train/__main__.py": "engine.train.__main__"}
    else:
        files["train.py"] = "engine/train.py"
    for rel, name in files.items():
        (pkg / rel).write_text(IMPOSTOR.format(marker=str(marker), name=name))


@pytest.mark.skipif(not NANOTUI.exists(), reason="needs the nanotui console script in the venv")
@pytest.mark.parametrize("package_train", [False, True], ids=["train.py", "train-package"])
def test_launch_from_a_directory_with_its_own_engine_package(tmp_path, data_dir,
                                                             package_train):
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "impostor-ran.txt"
    plant_impostor(work, marker, package_train)
    (work / "experiments.toml").write_text(tiny_experiments(data_dir, **EXP))
    env = {k: v for k, v in os.environ.items() if k != "NANOTUI_FAKE_GPUS"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    # the package variant goes through the background dispatcher (`-m engine.launch`)
    detach = ["--detach"] if package_train else []
    p = subprocess.run([str(NANOTUI), "launch", "t", "--gpu", "cpu", *detach], cwd=work,
                       env=env, capture_output=True, text=True, timeout=240, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = list_runs(work / "runs")
    deadline = time.monotonic() + 120
    while run.read_status().get("state") in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    st = run.read_status()
    assert st["state"] == "done", st
    assert st["iter"] == 6
    assert not marker.exists(), marker.read_text()


def test_python_310_bootstrap_drops_the_working_directory(tmp_path):
    """The -c form used where -P does not exist: same guarantee, module args kept."""
    work = tmp_path / "work"
    (work / "json").mkdir(parents=True)
    marker = tmp_path / "impostor-ran.txt"
    (work / "json" / "__init__.py").write_text(IMPOSTOR.format(marker=str(marker), name="json"))
    (work / "runpy.py").write_text(IMPOSTOR.format(marker=str(marker), name="runpy"))
    cmd = module_command("json.tool", "--compact", safe_path_flag=False)
    p = subprocess.run(cmd, cwd=work, input='{"a": [1, 2]}', capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == '{"a":[1,2]}'
    assert not marker.exists()
