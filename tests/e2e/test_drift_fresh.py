"""Config drift with real training processes: a stopped run whose experiments.toml entry
changed is reported on launch and kept; `launch --fresh` moves it aside and trains the
new config from iteration 0 while the old directory stays on disk."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.runs import RunDir, list_runs
from tests.conftest import tiny_experiments, write_char_data

pytestmark = [pytest.mark.e2e, pytest.mark.slow]



def experiments(data, iters: int) -> str:
    return tiny_experiments(data, {"t": {"vary": {"n_layer": [1]}}}, defaults={
        "max_iters": iters, "lr_decay_iters": iters, "warmup_iters": 2, "eval_interval": 5,
        "eval_iters": 2, "log_interval": 1, "dtype": "float32"},
        sampling={"max_new_tokens": 8, "prompts": ["the"]})


@pytest.fixture
def project(tmp_path):
    d = write_char_data(tmp_path / "data", "the cat sat on the mat. the dog ran. " * 200,
                        train_tokens=6000)

    def write(iters: int) -> None:
        (tmp_path / "experiments.toml").write_text(experiments(d, iters))
    return tmp_path, write


def launch(tmp_path, *args):
    cmd = [sys.executable, "-m", "tui", "--experiments", str(tmp_path / "experiments.toml"),
           "--runs", str(tmp_path / "runs"), "launch", "--gpu", "cpu", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                       env={**os.environ, "NANOTUI_FAKE_GPUS": ""})
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_changed_config_is_reported_then_fresh_restarts_and_keeps_the_old(project):
    tmp_path, write = project
    write(iters=10)
    launch(tmp_path, "t")
    run = RunDir(tmp_path / "runs" / "t" / "n_layer=1")
    assert run.read_status()["state"] == "done"
    run.update_status(state="stopped")  # as `nanotui stop` leaves it
    write(iters=20)
    out = launch(tmp_path, "t")
    assert "t/n_layer=1: saved config differs from" in out and "max_iters: 10 → 20" in out
    assert "--fresh t/n_layer=1" in out and run.load_config().max_iters == 10
    out = launch(tmp_path, "t", "--fresh")
    assert "config changed; starting fresh (old run kept in" in out
    st = run.read_status()
    assert st["state"] == "done" and st["iter"] == 20 and run.load_config().max_iters == 20
    iters = [m["iter"] for m in run.read_metrics() if m.get("kind") == "train"]
    assert iters[0] <= 1 and iters[-1] == 20 and len(iters) >= 19  # from the start, not resumed
    old, = (tmp_path / "runs" / ".replaced" / "t").iterdir()
    assert RunDir(old).load_config().max_iters == 10 and RunDir(old).read_status()["iter"] == 10
    assert [r.id for r in list_runs(tmp_path / "runs")] == ["t/n_layer=1"]
