"""Damaged state files: wrong shapes read as a damaged run, never a crash, never hiding
the other runs; files nanotui writes follow the umask; killed writers' temp files go."""

from __future__ import annotations

import json
import os
import stat

import pytest

from engine.report.write import write_report
from engine.files import atomic_write_bytes, remove_stale_temp_files
from engine.runs import list_runs
from tests.engine.test_reading import fixture_run
from tui.cli import main as nanotui


def test_status_json_of_the_wrong_shape_is_a_damaged_run_and_hides_nothing(tmp_path, capsys):
    root = tmp_path / "runs"
    good = fixture_run(root, name="n_layer=1")
    bad = fixture_run(root, name="n_layer=2")
    bad.status_path.write_text("[]")
    st = bad.read_status()
    assert st["state"] == "failed"
    assert st["reason"] == "damaged: status.json: expected an object, not a list"
    assert [r.id for r in list_runs(root)] == [good.id, bad.id]
    assert nanotui(["--runs", str(root), "status"]) == 0
    out = capsys.readouterr().out
    assert "damaged: status.json: expected an object, not a list" in out
    assert good.id in out
    res = write_report(root, ["s"], tmp_path / "out", plots=False)
    assert "n_layer=2" in res.sweeps[0].report_md.read_text()


def test_metrics_and_samples_lines_of_the_wrong_shape_are_skipped(tmp_path):
    root = tmp_path / "runs"
    run = fixture_run(root)
    with open(run.metrics_path, "a") as f:
        f.write("[1, 2, 3]\n" + json.dumps({"kind": "eval", "iter": "x", "val_loss": 1}) + "\n")
    run.log_sample(iter=40, prompt="Once", text="Once upon", metrics="bad")
    run.log_sample(iter=40, prompt="Once", text=None)
    assert all(isinstance(m["iter"], (int, float)) for m in run.read_metrics())
    assert [s["metrics"] for s in run.read_samples()] == [{}]
    res = write_report(root, ["s"], tmp_path / "out", plots=True)
    assert res.sweeps[0].report_md.exists()


def test_files_written_atomically_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        res = write_report(tmp_path / "runs", ["s"], tmp_path / "out", plots=False) \
            if fixture_run(tmp_path / "runs") else None
    finally:
        os.umask(old)
    paths = [tmp_path / "a.json", res.sweeps[0].report_md, res.sweeps[0].runs_csv,
             tmp_path / "runs" / "s" / "n_layer=2" / "status.json"]
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


@pytest.mark.parametrize("name", [".ckpt.pt.abc123.tmp", ".status.json.x.tmp"])
def test_temp_files_of_killed_writers_are_swept(tmp_path, name):
    (tmp_path / name).write_bytes(b"x" * 100)
    (tmp_path / "ckpt.pt").write_bytes(b"keep")
    assert remove_stale_temp_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
