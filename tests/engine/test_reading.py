"""One reading of a run: `nanotui status --json` and the report agree on state, best val
loss and tokens/s, and a Slurm job still PENDING is queued in both. (The dashboard and
compare screen are checked against the same fixtures in tests/tui/test_one_reading.py.)"""

from __future__ import annotations

import csv
import json

import pytest

from engine.config import TrainConfig
from engine.report.reading import read_run
from engine.report.write import write_report
from engine.runs import RunDir, create_run
from tui.cli import main as nanotui

T0 = 1_700_000_000.0


def fixture_run(root, sweep="s", name="n_layer=2", state="done", **status) -> RunDir:
    """A finished run whose train records' last, mean and median tok/s all differ, as on
    a real machine; status.json holds what the trainer recorded."""
    run = create_run(root, sweep, name, TrainConfig(n_layer=2, n_head=2, n_embd=32,
                                                     block_size=32, dataset="shakespeare"),
                     {"n_layer": 2})
    for i, tok_s in enumerate([300.0, 1000.0, 1100.0, 3000.0, 799.0]):
        run.log_metric(kind="train", iter=i * 10, loss=3.0 - i * 0.1, tok_s=tok_s, t=T0 + i)
    for it, val in ((20, 2.5), (40, 2.4)):
        run.log_metric(kind="eval", iter=it, train_loss=val - 0.1, val_loss=val, t=T0 + it)
    run.update_status(state=state, started_at=T0, ended_at=T0 + 50, iter=40, max_iters=40,
                      train_loss=2.6, val_loss=2.4, best_val_loss=2.4, best_iter=40,
                      tok_s=1050.0, params=30_000, params_total=31_000, **status)
    return run


def status_json(runs_root, capsys) -> dict[str, dict]:
    assert nanotui(["--runs", str(runs_root), "status", "--json"]) == 0
    return {r["id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}


def report_rows(runs_root, sweep, out) -> dict[str, dict]:
    res = write_report(runs_root, [sweep], out, plots=False)
    return {r["run"]: r for r in csv.DictReader(res.sweeps[0].runs_csv.open())}


def test_status_and_report_show_one_set_of_numbers(tmp_path, capsys):
    root = tmp_path / "runs"
    run = fixture_run(root)
    reading = read_run(run)
    assert (reading.state, reading.best_val_loss, reading.tok_s) == ("done", 2.4, 1050.0)
    st = status_json(root, capsys)[run.id]
    row = report_rows(root, "s", tmp_path / "out")["n_layer=2"]
    assert (st["state"], st["best_val_loss"], st["tok_s"]) == ("done", 2.4, 1050.0)
    assert (row["state"], float(row["best_val_loss"]), float(row["tok_s"])) == ("done", 2.4, 1050.0)


@pytest.mark.parametrize("slurm_state,shown", [("PENDING", "queued"), ("RUNNING", "running")])
def test_a_slurm_job_reads_the_same_in_status_and_report(tmp_path, capsys, slurm_state, shown):
    root = tmp_path / "runs"
    fixture_run(root, name="n_layer=1")  # a report needs one finished run
    job = fixture_run(root, name="n_layer=4", state="running", slurm_state=slurm_state,
                      executor={"kind": "slurm", "job_id": "123_1"}, host="node7", pid=None)
    assert read_run(job).state == shown
    st = status_json(root, capsys)[job.id]
    assert st["state"] == shown and st["slurm"] == f"slurm 123_1 {slurm_state}"
    assert report_rows(root, "s", tmp_path / "out")["n_layer=4"]["state"] == shown
