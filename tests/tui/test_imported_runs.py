"""A run brought in by `nanotui import` shows in the dashboard as a finished run, marked
as nanoGPT's, with the losses of its log."""

from __future__ import annotations

from tests.engine.test_nanogpt_import import nanogpt_tree
from tests.tui.conftest import asynctest, settle
from tests.tui.test_one_reading import make_app, row_of
from tui.cli import main as nanotui


@asynctest
async def _dashboard_row(root, run_id: str) -> str:
    app = make_app(root)
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        return row_of(app, run_id)


def test_an_imported_run_is_done_and_marked_as_nanogpts_in_the_dashboard(tmp_path):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=True)
    root = tmp_path / "runs"
    assert nanotui(["--runs", str(root), "import", str(out)]) == 0
    row = _dashboard_row(root, "imported/out-x").split()
    assert row[1:3] == ["out-x", "done"] and row[-1] == "nanoGPT"
    assert "1.552" in row and "1.742" in row  # the log's last eval: train, val
