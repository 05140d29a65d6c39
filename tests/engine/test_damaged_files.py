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


def _status(root, capsys, *args) -> str:
    assert nanotui(["--runs", str(root), "status", *args]) == 0
    return capsys.readouterr().out


def test_a_run_without_config_toml_is_listed_as_damaged_not_dropped(tmp_path, capsys):
    root = tmp_path / "runs"
    good = fixture_run(root, name="n_layer=1")
    bad = fixture_run(root, name="n_layer=2")
    bad.config_path.unlink()
    out = _status(root, capsys)
    assert good.id in out and bad.id in out
    assert "damaged: config.toml: missing" in out
    rows = {r["id"]: r for r in json.loads(_status(root, capsys, "--json"))["runs"]}
    assert rows[bad.id]["state"] == "failed"
    assert rows[bad.id]["reason"] == "damaged: config.toml: missing"
    assert rows[good.id]["state"] == "done" and rows[good.id]["damaged"] == []
    res = write_report(root, ["s"], tmp_path / "out", plots=False)
    assert "n_layer=1" in res.sweeps[0].report_md.read_text()


def test_a_metrics_line_of_the_wrong_shape_names_the_file_and_line(tmp_path, capsys):
    root = tmp_path / "runs"
    good = fixture_run(root, name="n_layer=1")
    bad = fixture_run(root, name="n_layer=2")
    with open(bad.metrics_path, "a") as f:
        f.write("[1, 2, 3]\n")
    out = _status(root, capsys)
    assert good.id in out
    assert "damaged: metrics.jsonl: line 8: a list, not an object" in out
    rows = {r["id"]: r for r in json.loads(_status(root, capsys, "--json"))["runs"]}
    assert rows[bad.id]["state"] == "done"     # one bad line is skipped, the run stands
    assert rows[bad.id]["damaged"] == ["metrics.jsonl: line 8: a list, not an object"]
    res = write_report(root, ["s"], tmp_path / "out", plots=True)
    assert "n_layer=2" in res.sweeps[0].report_md.read_text()


def test_a_sample_whose_metrics_is_a_string_keeps_its_text_and_is_named(tmp_path, capsys):
    root = tmp_path / "runs"
    run = fixture_run(root)
    run.log_sample(iter=40, prompt="Once", text="Once upon", metrics="bad")
    assert [s["text"] for s in run.read_samples()] == ["Once upon"]
    out = _status(root, capsys)
    assert "damaged: samples.jsonl: line 1: metrics is a string, not an object" in out


def test_a_resumed_run_copes_with_a_metrics_line_of_the_wrong_shape(tmp_path, one_torch_thread):
    from test_train import tiny_run  # tests/engine is on sys.path

    from engine.train import process as T
    run = tiny_run(tmp_path, max_iters=10)
    assert T.main([str(run.path)]) == 0
    with open(run.metrics_path, "a") as f:
        f.write("[1, 2, 3]\n")
    run.update_status(state="stopped")
    run.config_path.write_text(run.config_path.read_text().replace("max_iters = 10\n",
                                                                   "max_iters = 14\n"))
    assert T.main([str(run.path), "--resume"]) == 0
    assert run.read_status()["state"] == "done"
    assert [m["iter"] for m in run.read_metrics() if m["kind"] == "train"][-1] == 14
    assert run.damage() == ()   # the resume dropped the bad line


def test_resume_and_stop_of_a_run_without_config_toml_say_so(tmp_path, capsys):
    root = tmp_path / "runs"
    bad = fixture_run(root, state="failed")
    bad.config_path.unlink()
    assert nanotui(["--runs", str(root), "resume", bad.id]) == 2
    assert f"cannot resume {bad.id}: damaged: config.toml is missing" in capsys.readouterr().err
    assert nanotui(["--runs", str(root), "stop", bad.id]) == 0
    assert f"{bad.id}: already failed" in capsys.readouterr().out
