"""One run, one set of numbers: the dashboard and the compare screen show the state, best
val loss and tokens/s that `nanotui status --json` and the report show (the fixture run's
last, mean and median tok/s all differ), and a Slurm job still PENDING is queued."""

from __future__ import annotations

import pytest

from engine.launch.gpu import FakeGpuSource
from tests.engine.test_reading import fixture_run, report_rows, status_json
from tests.tui.conftest import (
    FakeLauncher,
    FakeReporter,
    FakeSampler,
    asynctest,
    settle,
)
from tui.app import create_app
from tui.screens.compare import CompareScreen
from tui.services import Services
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_table import RunTable


def make_app(root):
    services = Services(root, root.parent / "experiments.toml", FakeGpuSource([]),
                        FakeLauncher(root), FakeSampler(), FakeReporter())
    return create_app(services=services, poll_interval=0, gpu_interval=0)


def row_of(app, run_id: str) -> str:
    table = app.screen.query_one(RunTable)
    return " ".join(str(c) for c in table.get_row(run_id))


@asynctest
async def _screens(root, run_id: str) -> dict[str, str]:
    """What a user reads: the run's dashboard row, the loss chart's title once it is
    selected, and its compare row."""
    app = make_app(root)
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        seen = {"dashboard": row_of(app, run_id)}
        table = app.screen.query_one(RunTable)
        for _ in range(table.row_count):  # down to the run, as a user would
            if table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == run_id:
                break
            await pilot.press("down")
        await settle(pilot)
        seen["chart"] = str(app.screen.query_one(LossChart).border_subtitle)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        seen["compare"] = " ".join(str(c) for c in app.screen.query_one("#compare-table")
                                   .get_row(run_id))
    return seen


def test_dashboard_compare_status_and_report_agree(tmp_path, capsys):
    root = tmp_path / "runs"
    run = fixture_run(root)
    st = status_json(root, capsys)[run.id]
    row = report_rows(root, "s", tmp_path / "out")["n_layer=2"]
    assert (st["state"], st["best_val_loss"], st["tok_s"]) == ("done", 2.4, 1050.0)
    assert (row["state"], float(row["best_val_loss"]), float(row["tok_s"])) == ("done", 2.4, 1050.0)

    seen = _screens(root, run.id)
    # 1050 tok/s reads "1.1K"; the last record (799) or the mean (1.5K) would differ
    assert "done" in seen["dashboard"] and "1.1K" in seen["dashboard"]
    assert "best 2.4000 @ 40" in seen["chart"]
    assert "✓" in seen["compare"] and "2.4000" in seen["compare"] and "1.1K" in seen["compare"]
    assert "799" not in seen["dashboard"] + seen["compare"]
    assert "1.5K" not in seen["dashboard"] + seen["compare"]


@pytest.mark.parametrize("slurm_state,shown", [("PENDING", "queued"), ("RUNNING", "running")])
def test_a_slurm_job_reads_the_same_everywhere(tmp_path, capsys, slurm_state, shown):
    root = tmp_path / "runs"
    fixture_run(root, name="n_layer=1")
    job = fixture_run(root, name="n_layer=4", state="running", slurm_state=slurm_state,
                      executor={"kind": "slurm", "job_id": "123_1"}, host="node7", pid=None)
    assert status_json(root, capsys)[job.id]["state"] == shown
    dashboard = _screens(root, job.id)["dashboard"]
    assert f"n_layer=4 {shown}" in dashboard
    assert report_rows(root, job.sweep, tmp_path / "out")["n_layer=4"]["state"] == shown
