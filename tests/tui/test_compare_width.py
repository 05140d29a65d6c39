"""The compare table fits its panel at 140x45: every column whole, the last one too."""

from __future__ import annotations

from tests.tui.conftest import asynctest, settle
from tests.tui.test_chart_legend import _big_sweep
from tests.tui.test_dashboard import select
from tui.screens.compare import CompareScreen


def _lines(table) -> list[str]:
    return ["".join(seg.text for seg in table.render_line(y)) for y in range(table.size.height)]


@asynctest
async def test_compare_table_shows_every_column_whole_at_140x45(world):
    ids = _big_sweep(world)  # run names of 29 characters, as a seeds-and-sizes sweep has
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await select(pilot, ids[0])
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        table = app.screen.query_one("#compare-table")
        lines = _lines(table)
        header = lines[0]
        assert header.rstrip().endswith("dist-2")
        row = next(ln for ln in lines if "n_layer=1," in ln)
        assert row.rstrip().endswith("0.90")  # the fixture's distinct-2 mean, whole
        assert "n_layer=1,n_embd=32 " in row  # the seed all runs share is said once:
        assert table.virtual_size.width <= table.scrollable_content_region.width
        title = str(app.screen.query_one("#title").render())
        assert "every run seed=1338" in title and "dist-2 = distinct-2" in title


def test_names_drop_only_the_parts_every_run_shares():
    from tui.screens.compare import distinct_names
    assert distinct_names(["a=1,seed=1", "a=2,seed=1"]) == (["a=1", "a=2"], "seed=1")
    assert distinct_names(["a=1,seed=1", "a=1,seed=2"]) == (["seed=1", "seed=2"], "a=1")
    assert distinct_names(["a=1", "a=1,seed=2"]) == (["a=1", "a=1,seed=2"], "")
    assert distinct_names(["a=1"]) == (["a=1"], "")
