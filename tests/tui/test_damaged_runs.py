"""Damaged run files in the TUI: the damaged run says which file and why, the other runs
stay listed, nothing crashes (the samples pane and screen included)."""

from __future__ import annotations

from tests.tui.conftest import asynctest, settle
from tui.screens.samples import RunColumn, SamplesScreen
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_table import RunTable

ALL = ("depth/n_layer=1", "depth/n_layer=2", "depth/n_layer=4", "width/n_embd=32",
       "width/n_embd=64")


def rows(app) -> dict[str, str]:
    table = app.screen.query_one(RunTable)
    return {rid: " ".join(str(c) for c in table.get_row(rid)) for rid in ALL}


async def select(pilot, run_id: str) -> str:
    table = pilot.app.screen.query_one(RunTable)
    table.move_cursor(row=table.get_row_index(run_id))
    await settle(pilot)
    await settle(pilot)  # the watched run's files are tailed on the poll after selection
    return str(pilot.app.screen.query_one(LossChart).border_title)


def damage(world) -> None:
    world.run("width/n_embd=32").status_path.write_text("[]")
    world.run("depth/n_layer=4").config_path.unlink()
    with open(world.run("width/n_embd=64").metrics_path, "a") as f:
        f.write("[1, 2, 3]\n")
    world.run("depth/n_layer=1").log_sample(iter=1000, prompt="Once upon a time",
                                            text="Once upon a time a string", metrics="bad")


@asynctest
async def test_damaged_runs_say_which_file_and_why_and_hide_nothing(world):
    damage(world)
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        seen = rows(app)  # every run is listed (get_row raises for a missing one)
        assert "running" in seen["depth/n_layer=2"]
        assert "failed" in seen["width/n_embd=32"] and "damaged" in seen["width/n_embd=32"]
        assert "failed" in seen["depth/n_layer=4"] and "damaged" in seen["depth/n_layer=4"]
        title = await select(pilot, "width/n_embd=32")
        assert "damaged: status.json: expected an object, not a list" in title
        title = await select(pilot, "depth/n_layer=4")
        assert "damaged: config.toml: missing" in title
        title = await select(pilot, "width/n_embd=64")
        assert "damaged: metrics.jsonl: line" in title and "a list, not an object" in title
        assert "stopped" in rows(app)["width/n_embd=64"]
        title = await select(pilot, "depth/n_layer=1")
        assert "damaged: samples.jsonl: line" in title
        assert "metrics is a string, not an object" in title
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, SamplesScreen)
        cols = {c.run_id: str(c.text) for c in app.screen.query(RunColumn)}
        assert "Once upon a time" in cols["depth/n_layer=1"]
        assert app.is_running
