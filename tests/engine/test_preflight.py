"""Runs that cannot work are refused at plan and queue time, one line each, with nothing
queued; `plan` writes nothing at all (not even a checksum memo)."""

from __future__ import annotations

import json

import pytest

from engine.config import TrainConfig
from engine.launch.gpu import GpuSnapshot
from engine.launch.preflight import problems
from tests.engine.test_train import write_char_data
from tui.cli import main as nanotui

GIB = 1024 ** 3


def experiments(tmp_path, sweeps: str, data: str) -> list[str]:
    path = tmp_path / "experiments.toml"
    path.write_text(f"""
[defaults]
{data}
n_layer = 1
n_head = 1
n_embd = 32
block_size = 32
batch_size = 4
max_iters = 200
device = "cpu"
{sweeps}
""")
    return ["--experiments", str(path), "--runs", str(tmp_path / "runs")]


def files_under(path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in path.rglob("*")}


@pytest.mark.parametrize("sweep,said", [
    ("vary = { block_size = [4096] }", "block_size = 4096 needs more than 4096 training tokens"),
    ("vary = { max_iters = [100000000000000000000] }", "more than 1,000,000,000 steps"),
    ("vary = { n_embd = [65536] }\nfixed = { batch_size = 64 }", "of memory, more than this machine's"),
])
def test_impossible_runs_are_refused_by_plan_and_launch(tmp_path, capsys, monkeypatch, sweep,
                                                       said):
    monkeypatch.setattr("engine.launch.preflight._machine_ram", lambda: 16 * GIB)
    data = write_char_data(tmp_path / "data", "hello world, " * 200)   # ~2,300 tokens
    args = experiments(tmp_path, f"[sweep.s]\n{sweep}", f'data_dir = "{data}"')
    assert nanotui([*args, "plan"]) == 1
    out = capsys.readouterr().out
    assert said in out and "ERROR" in out
    assert nanotui([*args, "launch", "--detach"]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.toml"))


def test_a_val_split_shorter_than_a_block_is_refused(tmp_path):
    data = write_char_data(tmp_path / "data", "abcdefghij" * 30)   # 270 train, 30 val tokens
    cfg = TrainConfig(data_dir=str(data), n_layer=1, n_head=1, n_embd=32, block_size=64)
    assert problems(cfg, None) == [
        f"the val split of {data} has 30 tokens, fewer than block_size + 1 = 65: lower "
        f"block_size or give validation a larger share"]


def test_a_model_larger_than_the_largest_card_is_refused():
    cards = [GpuSnapshot(0, "GPU-a", "Small", 0, 8 * GIB), GpuSnapshot(1, "GPU-b", "Big", 0, 24 * GIB)]
    cfg = TrainConfig(n_layer=12, n_head=16, n_embd=8192, block_size=1024, batch_size=32,
                      device="cuda")
    found = problems(cfg, cards)
    assert len(found) == 1 and "more than the largest card's 24.0 GiB (Big)" in found[0]
    assert problems(TrainConfig(device="cuda", n_layer=1, n_embd=64, n_head=1), cards) == []


def test_plan_writes_nothing(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NANOTUI_DATA_DIR", str(cache))
    text = tmp_path / "story.txt"
    text.write_text("once upon a time " * 500)
    args = experiments(tmp_path, "[sweep.s]\nvary = { n_layer = [1, 2] }",
                       f'dataset = "{text}"')
    assert nanotui([*args, "prepare", str(text)]) == 0
    capsys.readouterr()
    (cache / "sha256.json").unlink(missing_ok=True)   # a fresh cache: nothing remembered
    before = files_under(tmp_path)
    assert nanotui([*args, "plan"]) == 0
    assert "s/n_layer=2" in capsys.readouterr().out
    assert files_under(tmp_path) == before
    assert nanotui([*args, "plan", "--json"]) == 0
    json.loads(capsys.readouterr().out)
    assert files_under(tmp_path) == before
