"""The TUI at the assignment's sizes: a 4-run sweep side by side at 140×45, the chart at
100×30 with its sweep overlaid, runs in the order of their varied value, selection
states that read without colour, and `n` drawing a new seed."""

from __future__ import annotations

import pytest
from textual.widgets import SelectionList

from engine.runs import create_run
from tests.tui.conftest import T0, settle, tiny_cfg, write_history
from tui.screens.samples import RunColumn, SamplesScreen
from tui.widgets.run_table import RunTable

STORY = ("Once upon a time there was a little girl named Lily. She loved to play outside "
         "in the park with her red ball. One day she saw a big dog. ")


@pytest.fixture
def heads_world(world):
    """The world plus the heads sweep: four runs of one size, created out of order."""
    for nh in (16, 4, 32, 8):
        run = create_run(world.root, "heads", f"n_head={nh}", tiny_cfg(n_head=nh, n_embd=64),
                         {"n_head": nh})
        write_history(run, 300, 2.5 + nh / 100)
        text = STORY * 4
        run.log_sample(iter=300, prompt="Once upon a time", temperature=0.8, top_k=200,
                       top_p=None, seed=1337, text=text, completion=text[16:],
                       metrics={"ttr": 0.62, "mattr": 0.7, "distinct_1": 0.62,
                                "distinct_2": 0.9, "distinct_3": 0.95, "repetition_4": 0.01,
                                "words": 96})
        run.update_status(state="done", created_at=T0, started_at=T0, ended_at=T0 + 300,
                          iter=300, params=50_000, best_val_loss=1.5, best_iter=300,
                          val_loss=1.5, train_loss=1.45)
    return world


async def open_heads_samples(pilot) -> None:
    await settle(pilot)
    table = pilot.app.screen.query_one(RunTable)
    table.move_cursor(row=table.get_row_index("heads/n_head=4"))
    await settle(pilot)
    await pilot.press("p")
    await settle(pilot)


def test_samples_of_four_runs_fit_side_by_side_at_140x45(heads_world, snap_compare):
    assert snap_compare(heads_world.app(), terminal_size=(140, 45), run_before=open_heads_samples)


def test_dashboard_100x30_with_the_sweep_overlaid(world, snap_compare):
    async def before(pilot):
        await settle(pilot)
        table = pilot.app.screen.query_one(RunTable)
        table.move_cursor(row=table.get_row_index("depth/n_layer=2"))
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
    assert snap_compare(world.app(), terminal_size=(100, 30), run_before=before)


@pytest.mark.parametrize("size", [(140, 45), (100, 30)])
def test_every_column_is_on_screen_in_varied_order(heads_world, size):
    import asyncio

    async def body():
        app = heads_world.app()
        async with app.run_test(size=size) as pilot:
            await open_heads_samples(pilot)
            assert isinstance(app.screen, SamplesScreen)
            cols = list(app.screen.query(RunColumn))
            assert [c.run_id for c in cols] == ["heads/n_head=4", "heads/n_head=8",
                                                "heads/n_head=16", "heads/n_head=32"]
            widths = {c.region.width for c in cols}
            if size == (140, 45):  # all four on one screen, the story wrapped in each
                assert widths == {35} and cols[-1].region.right <= 140
            else:  # narrower: columns keep a readable width and the row scrolls
                assert min(widths) >= 30 and cols[1].region.x < 100
            assert all(c.virtual_size.height > 6 for c in cols)
    asyncio.run(body())


def test_run_table_lists_a_sweep_by_its_varied_value(heads_world):
    import asyncio

    async def body():
        app = heads_world.app()
        async with app.run_test(size=(140, 45)) as pilot:
            await settle(pilot)
            table = app.screen.query_one(RunTable)
            heads = [k for k in (table.coordinate_to_cell_key((r, 0)).row_key.value
                                 for r in range(table.row_count)) if k.startswith("heads/")]
            assert heads == ["heads/n_head=4", "heads/n_head=8", "heads/n_head=16",
                             "heads/n_head=32"]
    asyncio.run(body())


def test_unselected_sweeps_show_an_empty_box(world):
    import asyncio

    async def body():
        app = world.app()
        async with app.run_test(size=(140, 45)) as pilot:
            await settle(pilot)
            await pilot.press("l")
            await settle(pilot)
            sl = app.screen.query_one(SelectionList)
            lines = [sl.render_line(y).text for y in range(2)]
            assert sorted(sl.selected) == ["depth"]
            assert lines[0].startswith("▐X▌ depth") and lines[1].startswith("▐ ▌ width")
    asyncio.run(body())


def test_new_sample_draws_a_new_seed_each_time(heads_world):
    import asyncio

    async def body():
        app = heads_world.app()
        async with app.run_test(size=(140, 45)) as pilot:
            await open_heads_samples(pilot)
            for _ in range(2):
                await pilot.press("n")
                await pilot.pause()
                await pilot.press("enter")
                await app.workers.wait_for_complete()
                await pilot.pause()
            seeds = heads_world.sampler.seeds
            assert len(seeds) == 2 and seeds[0] != seeds[1] and 1337 not in seeds
            col = next(iter(app.screen.query(RunColumn)))
            assert f"new sample (not saved) · seed {seeds[1]}" in str(col.text)
    asyncio.run(body())


def test_a_shared_run_shows_in_both_sweeps_marked_shared(world):
    import asyncio

    from engine.runs import RunDir, link_shared
    link_shared(world.root, "heads", "n_head=2", RunDir(world.root / "width" / "n_embd=64"))

    async def body():
        app = world.app()
        async with app.run_test(size=(200, 45)) as pilot:
            await settle(pilot)
            table = app.screen.query_one(RunTable)
            row = table.get_row("heads/n_head=2")
            assert [str(c) for c in row][-1] == "shared" and "stopped" in str(row[1])
            assert str(table.get_row("width/n_embd=64")[-1]) != "shared"  # the owner
            title = str(app.screen.query_one("#title").render())
            trained = len({p.resolve() for p in world.root.glob("*/*") if p.is_dir()})
            assert f" {trained} runs (+1 shared)," in title, title
    asyncio.run(body())
