"""`nanotui plan` names the runs whose saved config no longer matches the experiments file
(launch would keep the saved one), in text and in --json, and still writes nothing."""

from __future__ import annotations

import json

from engine.experiments import load_experiments
from engine.runs import create_run
from tests.conftest import tiny_experiments, write_char_data
from tui.cli import main as nanotui



def experiments(data, iters: int) -> str:
    return tiny_experiments(data, {"t": {"vary": {"n_layer": [1, 2]}}},
                            defaults={"max_iters": iters, "device": "cpu"})


def test_plan_names_a_run_whose_saved_config_drifted(tmp_path, capsys):
    data = write_char_data(tmp_path / "data", "the cat sat on the mat. " * 200, train_tokens=4000)
    exp = tmp_path / "experiments.toml"
    exp.write_text(experiments(data, 10))
    runs = tmp_path / "runs"
    for spec in load_experiments(exp).all_runs():   # both runs exist, as after a launch
        create_run(runs, spec.sweep, spec.name, spec.cfg, spec.varied)
    exp.write_text(experiments(data, 20))
    args = ["--experiments", str(exp), "--runs", str(runs), "plan"]

    assert nanotui(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("t/n_layer=1 "))
    assert lines[i + 1].strip() == "saved config differs: max_iters: 10 → 20"
    assert "2 runs already exist with another saved config" in out and "--fresh" in out

    before = {str(p): p.stat().st_mtime_ns for p in runs.rglob("*")}
    assert nanotui([*args, "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert "max_iters: 10 → 20" in rows["t/n_layer=2"]["drift"]
    assert {str(p): p.stat().st_mtime_ns for p in runs.rglob("*")} == before


def test_plan_without_existing_runs_shows_no_drift(tmp_path, capsys):
    data = write_char_data(tmp_path / "data", "the cat sat on the mat. " * 200, train_tokens=4000)
    exp = tmp_path / "experiments.toml"
    exp.write_text(experiments(data, 10))
    assert nanotui(["--experiments", str(exp), "--runs", str(tmp_path / "runs"), "plan"]) == 0
    out = capsys.readouterr().out
    assert "saved config differs" not in out and "already exist" not in out
