"""The compare screen's chart pools the seeds of a configuration: one point per
configuration (the mean over its finished seeds) with a bar of ± sd, never a zigzag
through the seeds at one x."""

from __future__ import annotations

from tests.engine.test_report_findings import DEPTH, depth_runs
from tests.tui.test_one_reading import make_app
from tests.tui.conftest import asynctest, settle
from tui.screens.compare import CompareScreen


@asynctest
async def _chart(root) -> tuple[str, str]:
    app = make_app(root)
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        plot = app.screen.query_one("PlotextPlot")
        plot.plt.plotsize(100, 25)
        return plot.plt.build(), str(app.screen.query_one("#compare-table").row_count)


def test_compare_chart_draws_one_mean_per_configuration(tmp_path):
    depth_runs(tmp_path / "runs")
    canvas, n_rows = _chart(tmp_path / "runs")
    assert n_rows == "6"  # the table still lists every run
    # one mean per configuration (not one per seed), plus the one in the axis' legend
    assert canvas.count("●") == len(DEPTH) + 1
    assert "│ ± sd" in canvas and "mean over seeds" in canvas
    # the y ticks are the means (2.05 twice, 1.71), never a single seed's loss
    assert "2.050" in canvas and "1.710" in canvas and "2.100" not in canvas
