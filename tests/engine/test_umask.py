"""On a shared server, with the usual umask 022, every file nanotui writes in a run
directory (a real training run) and in a report is readable by the group and others."""

from __future__ import annotations

import os
import stat

import pytest

from engine.report.write import write_report
from engine.train import process as T
from tests.engine.test_train import tiny_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def unreadable(root) -> list[str]:
    return [f"{p} {stat.filemode(p.stat().st_mode)}" for p in root.rglob("*")
            if p.is_file() and p.stat().st_mode & 0o044 != 0o044]


def test_every_file_of_a_run_and_its_report_is_group_and_world_readable(tmp_path):
    old = os.umask(0o022)
    try:
        run = tiny_run(tmp_path, max_iters=10, eval_interval=5)
        assert T.main([str(run.path)]) == 0
        res = write_report(tmp_path / "runs", ["t"], tmp_path / "report", plots=True)
    finally:
        os.umask(old)
    names = {p.name for p in run.path.iterdir()}
    assert {"config.toml", "status.json", "metrics.jsonl", "samples.jsonl", "ckpt.pt",
            "best.pt"} <= names
    assert res.sweeps[0].report_md.exists() and res.sweeps[0].runs_csv.exists()
    assert unreadable(run.path) == [] and unreadable(tmp_path / "report") == []
