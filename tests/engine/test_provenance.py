"""What produced a run's numbers: status.json records it when the process starts, and the
sweep's report states it once, naming runs whose versions or device differ."""

from __future__ import annotations

import json
import platform
import sys

import pytest
import torch

from engine.report.provenance import provenance_lines
from engine.report.write import write_report
from engine.train import process as T
from tests.engine.test_train import tiny_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_trained_run_records_its_provenance_and_the_report_states_it(tmp_path):
    run = tiny_run(tmp_path, max_iters=4, eval_interval=4)
    assert T.main([str(run.path)]) == 0
    prov = json.loads(run.status_path.read_text())["provenance"]
    assert prov["torch"] == torch.__version__
    assert prov["python"] == platform.python_version()
    assert prov["device_name"] and prov["host"]
    assert prov["nanotui"] != "unknown"
    assert prov["command"].startswith(sys.executable)  # in process: pytest's own command
    res = write_report(tmp_path / "runs", ["t"], tmp_path / "out")
    md = res.sweeps[0].report_md.read_text()
    section = md.split("## Provenance\n", 1)[1].split("\n## ", 1)[0]
    assert f"torch `{torch.__version__}`" in section
    assert "Recorded by 1 of 1 runs" in section and "Warning" not in section


def _status(torch_version: str, device: str = "NVIDIA H200", host: str = "a") -> dict:
    return {"state": "done", "provenance": {
        "nanotui": "0.1.0", "git_commit": "abc", "python": "3.11.7", "torch": torch_version,
        "cuda": "12.8", "device_name": device, "host": host,
        "command": "python -m engine.train runs/s/x"}}


def test_runs_that_differ_in_versions_or_device_are_named():
    lines = provenance_lines({"a": _status("2.13.0"), "b": _status("2.13.0", host="b"),
                              "c": _status("2.12.1"), "d": _status("2.13.0", device="cpu"),
                              "old": {"state": "done"},
                              "imp": {"state": "done", "imported": {"source": "/x/out"}}})
    text = "\n".join(lines)
    assert "Recorded by 4 of 6 runs" in text and "CUDA `12.8`" in text
    assert "runs differ in torch: `2.13.0` for most, but c: `2.12.1`." in text
    assert "runs differ in device: `NVIDIA H200` for most, but d: `cpu`." in text
    assert "host varies (`a`, `b`)" in text  # shown, not a warning
    assert "Imported from nanoGPT (versions not recorded): imp from `out`" in text
    assert "No provenance recorded (trained before nanotui recorded it): old." in text


def test_a_sweep_of_one_setup_has_no_warning():
    text = "\n".join(provenance_lines({"a": _status("2.13.0"), "b": _status("2.13.0")}))
    assert "Warning" not in text and "torch `2.13.0`" in text and "device `NVIDIA H200`" in text


def test_a_hand_in_shows_the_command_without_local_paths(tmp_path):
    runs = tmp_path / "home" / "me" / "runs"
    st = _status("2.13.0")
    st["provenance"]["command"] = f"/home/me/.venv/bin/python -P -m engine.train {runs}/depth/n_layer=2"
    text = "\n".join(provenance_lines({"n_layer=2": st}, runs))
    assert "`python -P -m engine.train runs/depth/n_layer=2`" in text
    assert str(tmp_path) not in text and "/home/me" not in text
