"""Queued runs left by a killed dispatcher: `nanotui status` says they wait for one and
names the command; `nanotui launch --queued` starts exactly them, never other sweeps."""

from __future__ import annotations

import pytest

from engine.launch.queue import queue_runs
from engine.runs import list_runs
from tests.e2e.test_train_process import make_data
from tui.cli import main as nanotui

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def experiments(tmp_path):
    data = make_data(tmp_path / "data")
    path = tmp_path / "experiments.toml"
    path.write_text(f"""
[defaults]
data_dir = "{data}"
n_layer = 1
n_head = 2
n_embd = 32
block_size = 32
batch_size = 4
max_iters = 20
eval_interval = 10
eval_iters = 2
device = "cpu"
dtype = "float32"
[sampling]
max_new_tokens = 4
[sweep.a]
vary = {{ n_layer = [1, 2] }}
[sweep.b]
vary = {{ n_embd = [16] }}
""")
    return path


def test_launch_queued_starts_exactly_the_queued_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    exp, root = experiments(tmp_path), tmp_path / "runs"
    queue_runs(exp, root, ["a"])          # as a launch whose dispatcher was then killed
    args = ["--experiments", str(exp), "--runs", str(root)]
    assert nanotui([*args, "status"]) == 0
    out = capsys.readouterr().out
    assert "2 queued runs waiting and no dispatcher running" in out
    assert "`nanotui launch --queued` starts one for exactly these" in out

    assert nanotui([*args, "launch", "--queued", "b"]) == 2   # names nothing
    assert "name no sweeps or runs" in capsys.readouterr().err
    assert nanotui([*args, "launch", "--queued"]) == 0
    out = capsys.readouterr().out
    assert "2 queued runs" in out and "all 2 runs finished: 2 done" in out
    assert [r.id for r in list_runs(root)] == ["a/n_layer=1", "a/n_layer=2"]  # no sweep b
    assert nanotui([*args, "launch", "--queued"]) == 0
    assert "no queued runs" in capsys.readouterr().out
