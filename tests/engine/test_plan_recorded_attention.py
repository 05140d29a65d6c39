"""A run that exists and trained on the CPU recorded its attention path (status.json
cpu_attention); plan and preflight estimate its memory with that path's T^2 term, not
with the path a new run would take."""

from __future__ import annotations

import json

import pytest

from engine.experiments import load_experiments
from engine.launch import preflight
from engine.launch.estimate import estimate
from engine.runs import create_run
from engine.units import format_bytes
from tests.conftest import tiny_experiments, write_char_data
from tui.cli import main as nanotui


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.delenv("NANOTUI_CPU_KERNEL", raising=False)
    monkeypatch.delenv("NANOTUI_FAKE_GPUS", raising=False)
    data = write_char_data(tmp_path / "data", "the cat sat on the mat. " * 1000)
    exp = tmp_path / "experiments.toml"
    exp.write_text(tiny_experiments(data, {"t": {"vary": {"seed": [1, 2]}}}, defaults={
        "max_iters": 10, "device": "cpu", "block_size": 256, "batch_size": 32, "n_layer": 2,
        "n_head": 4, "n_embd": 64}))
    runs = tmp_path / "runs"
    spec = next(s for s in load_experiments(exp).all_runs() if s.id == "t/seed=1")
    run = create_run(runs, spec.sweep, spec.name, spec.cfg, spec.varied)
    # it trained with torch's ops (the tuner found them faster): the T^2 scores are kept
    run.update_status(state="stopped", cpu_attention="torch", exit_code=0)
    return ["--experiments", str(exp), "--runs", str(runs)], spec.cfg


def plan_rows(args, capsys, rc: int = 0) -> dict[str, dict]:
    assert nanotui([*args, "plan", "--device", "cpu", "--json"]) == rc
    return {r["id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}


def test_plan_estimates_an_existing_run_with_its_recorded_attention(world, capsys):
    args, cfg = world
    rows = plan_rows(args, capsys)
    recorded, fresh = rows["t/seed=1"]["est_mem_bytes"], rows["t/seed=2"]["est_mem_bytes"]
    assert recorded == estimate(cfg, "cpu", "torch").mem_bytes
    assert fresh == estimate(cfg, "cpu").mem_bytes and recorded > 1.2 * fresh
    assert nanotui([*args, "plan", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for rid, need in (("t/seed=1", recorded), ("t/seed=2", fresh)):
        line = next(x for x in lines if x.startswith(rid + " "))
        assert f" {format_bytes(need)} " in line


def test_preflight_refuses_an_existing_run_whose_recorded_path_does_not_fit(world, capsys,
                                                                           monkeypatch):
    args, cfg = world
    recorded, fresh = estimate(cfg, "cpu", "torch").mem_bytes, estimate(cfg, "cpu").mem_bytes
    monkeypatch.setattr(preflight, "_machine_ram", lambda: (recorded + fresh) // 2)
    rows = plan_rows(args, capsys, rc=1)  # plan says a run cannot work
    assert rows["t/seed=2"]["error"] is None
    assert rows["t/seed=1"]["error"] == (
        f"t/seed=1: needs about {format_bytes(recorded)} of memory, more than this "
        f"machine's {format_bytes((recorded + fresh) // 2)}: a smaller model, batch_size "
        f"or block_size fits")
