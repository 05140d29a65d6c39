"""`nanotui report` from the command line: output, --json, and one-line errors."""

from __future__ import annotations

import json

from test_report import depth_sweep, make_run
from tui.cli import main


def test_report_command_writes_and_prints_json(tmp_path, capsys):
    root = tmp_path / "runs"
    depth_sweep(root)
    out = tmp_path / "out"
    assert main(["--runs", str(root), "report", "depth", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (sweep,) = doc["sweeps"]
    assert sweep["sweep"] == "depth" and sweep["n_runs"] == 6 and sweep["n_finished"] == 4
    assert (out / "depth" / "report.md").is_file() and (out / "depth" / "runs.csv").is_file()
    assert doc["fit"]["n_points"] == 4 and doc["fit"]["parameters"]["alpha"]["value"] > 0


def test_report_command_plain_output_names_the_files(tmp_path, capsys):
    root = tmp_path / "runs"
    for i, nl in enumerate((1, 2)):
        make_run(root, "s", f"n_layer={nl}", [(100, 1.9 - i / 10, 2.0 - i / 10)], n_layer=nl)
    assert main(["--runs", str(root), "report", "s", "--out", str(tmp_path / "o"),
                 "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "s: 2 runs (2 finished) ->" in text and "report.md" in text
    assert not list((tmp_path / "o" / "s").glob("*.png"))
    assert "No fit: a law needs finished runs of at least 3 different sizes" in text


def _error(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    root = tmp_path / "runs"
    depth_sweep(root)
    make_run(root, "pending", "a", [], state="queued")
    out = str(tmp_path / "out")
    assert _error(capsys, ["--runs", str(root), "report", "nope", "--out", out]).startswith(
        "nanotui: error: unknown sweep 'nope'")
    assert "has no finished runs yet (1 queued)" in _error(
        capsys, ["--runs", str(root), "report", "pending", "--out", out])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "cannot write the report to" in _error(
        capsys, ["--runs", str(root), "report", "depth", "--out", str(blocker / "out")])
    assert "no runs directory" in _error(
        capsys, ["--runs", str(tmp_path / "missing"), "report", "depth"])
    assert "unknown --group-by key" in _error(
        capsys, ["--runs", str(root), "report", "depth", "--group-by", "nlayer", "--out", out])
