"""A temperature study: `nanotui sample SWEEP --temperature A,B` samples every finished run,
saves the samples apart from the evals', and the course report gets a section for it."""

from __future__ import annotations

import json

import pytest

from engine.report.write import write_report
from engine.runs import RunDir
from engine.train import process as T
from test_train import tiny_run  # tests/engine is on sys.path (pytest's rootdir-less import)
from tui.cli import main as nanotui

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture
def trained(tmp_path):
    run = tiny_run(tmp_path, max_iters=20, learning_rate=1e-2)
    assert T.main([str(run.path)]) == 0
    return run


def test_study_over_a_sweep_saves_samples_apart_from_the_evals(trained, capsys):
    root = trained.path.parent.parent
    evals_before = trained.read_samples()
    assert nanotui(["--runs", str(root), "sample", trained.sweep, "--temperature", "0.5,1.2",
                    "--num-samples", "2", "--max-new-tokens", "40", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["temperature"], r["samples"]) for r in doc["runs"]] == [
        (trained.id, 0.5, 2), (trained.id, 1.2, 2)]
    saved = RunDir(trained.path).read_temperature_samples()
    assert [x["temperature"] for x in saved] == [0.5, 0.5, 1.2, 1.2]
    assert all(len(x["completion"]) == 40 for x in saved)  # char model: one char per token
    assert trained.read_samples() == evals_before  # the evals' diversity is untouched


def test_report_over_two_sweeps_has_a_temperature_section(trained, tmp_path, capsys):
    root = trained.path.parent.parent
    other = RunDir(root / "u" / "r")
    other.path.parent.mkdir(parents=True)
    import shutil
    shutil.copytree(trained.path, other.path)
    assert nanotui(["--runs", str(root), "sample", "u", "--temperature", "0.5,1.0",
                    "--max-new-tokens", "20"]) == 0
    out = capsys.readouterr().out
    assert "u/r" in out and "T=0.5" in out and "temperature.jsonl" in out
    md = write_report(root, [trained.sweep, "u"], tmp_path / "out", plots=False).course \
        .report_md.read_text()
    part = md.split("## Temperature study", 1)[1].split("\n## ", 1)[0]
    # u/r has t/r's configuration: one model, named by both sweeps
    assert "| configuration | T = 0.5 | T = 1 |" in part and "| t/r = u/r |" in part
    assert "fewer than 200 words" in part  # 3 samples × 20 chars: too few to compare


def test_a_one_sweep_report_has_the_temperature_section_too(trained, tmp_path, capsys):
    root = trained.path.parent.parent
    assert nanotui(["--runs", str(root), "sample", trained.sweep, "--temperature", "0.7",
                    "--max-new-tokens", "20"]) == 0
    assert nanotui(["--runs", str(root), "report", trained.sweep, "--out",
                    str(tmp_path / "out"), "--no-plots"]) == 0
    md = (tmp_path / "out" / trained.sweep / "report.md").read_text()
    part = md.split("## Temperature study", 1)[1].split("\n## ", 1)[0]
    assert "| configuration | T = 0.7 |" in part and f"| {trained.id} |" in part


def test_sampling_a_sweep_without_a_temperature_says_what_to_name(trained, capsys):
    root = trained.path.parent.parent
    assert nanotui(["--runs", str(root), "sample", trained.sweep]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"nanotui: error: '{trained.sweep}' is a sweep: name one of its runs "
                   f"({trained.sweep}/NAME) or give --temperature to sample every finished "
                   f"run of it")


def test_several_temperatures_for_one_plain_sample_is_one_line(trained, capsys):
    assert nanotui(["sample", str(trained.path / "ckpt.pt"), "--temperature", "0.5,1"]) == 2
    assert "temperature study" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: usage and one line, exit 2
        nanotui(["sample", str(trained.path), "--temperature", "hot"])
    assert e.value.code == 2 and "invalid temperatures value: 'hot'" in capsys.readouterr().err
