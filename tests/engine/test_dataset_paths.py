"""Relative dataset paths are read from the experiments file's folder; `plan` refuses a
dataset file that does not exist."""

from __future__ import annotations

import pytest

from engine.errors import UserError
from engine.launch.queue import queue_runs_detailed
from tui.cli import main

EXP = """
[defaults]
dataset = "{dataset}"
n_layer = 1
n_head = 2
n_embd = 32
block_size = 16
batch_size = 2
max_iters = 5
[sweep.t]
vary = {{ n_layer = [1] }}
"""


def _project(tmp_path, dataset: str):
    proj = tmp_path / "course"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "stories.txt").write_text("the cat sat on the mat. " * 400)
    (proj / "experiments.toml").write_text(EXP.format(dataset=dataset))
    return proj


def test_relative_dataset_is_read_from_the_experiments_folder_not_the_cwd(
        tmp_path, monkeypatch, capsys):
    proj = _project(tmp_path, "data/stories.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["--experiments", str(proj / "experiments.toml"), "plan", "--json"]) == 0
    capsys.readouterr()
    from engine.experiments import load_experiments
    cfg = load_experiments(proj / "experiments.toml").all_runs()[0].cfg
    assert cfg.dataset == str(proj / "data" / "stories.txt")
    # a named dataset stays a name
    (proj / "experiments.toml").write_text(EXP.format(dataset="shakespeare"))
    assert load_experiments(proj / "experiments.toml").all_runs()[0].cfg.dataset == "shakespeare"


def test_plan_refuses_a_missing_dataset_file_in_one_line(tmp_path, monkeypatch, capsys):
    proj = _project(tmp_path, "data/storise.txt")
    monkeypatch.chdir(tmp_path)
    assert main(["--experiments", str(proj / "experiments.toml"), "plan"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"t/n_layer=1: dataset {proj / 'data' / 'storise.txt'}: no such file" in err
    assert "relative paths are read from the experiments file's folder" in err
    with pytest.raises(UserError, match="storise.txt: no such file"):  # queue: nothing made
        queue_runs_detailed(proj / "experiments.toml", tmp_path / "runs", ["t"], prepare=False)
    assert not (tmp_path / "runs" / "t").exists()
