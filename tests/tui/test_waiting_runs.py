"""Queued runs without a dispatcher are said to be waiting, and `d` starts one for them;
a stalled run is counted in the header."""

from __future__ import annotations

from tests.tui.conftest import asynctest, settle, toasts


def header(app) -> str:
    return str(app.screen.query_one("#title").render())


@asynctest
async def test_queued_runs_without_a_dispatcher_are_waiting_and_d_starts_one(world):
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await settle(pilot)
        assert "1 queued · waiting for a dispatcher: d starts one" in header(app)
        await pilot.press("d")
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert world.launcher.calls == [("dispatch", "auto")]
        assert any("dispatching 1 queued run in the background" in t for t in toasts(app))


@asynctest
async def test_nothing_queued_means_no_dispatcher_notice(world):
    world.run("depth/n_layer=4").update_status(state="stopped")
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await settle(pilot)
        assert "waiting for a dispatcher" not in header(app)
        await pilot.press("d")
        await settle(pilot)
        assert world.launcher.calls == []
        assert any("no queued runs" in t for t in toasts(app))


@asynctest
async def test_a_waiting_runs_whole_reason_is_written_in_its_empty_chart(world):
    """The border cuts a long reason ("waiting: your share is 1 GPU (p…"); the empty
    chart below it says it whole, wrapped."""
    from tui.widgets.loss_chart import LossChart
    from tui.widgets.run_table import RunTable
    reason = ("waiting: your share is 1 GPU (policy.toml); yours: GPU 0 · "
              "the least-used waiting user goes first")
    world.run("depth/n_layer=4").update_status(state="queued", reason=reason)
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(RunTable)
        table.move_cursor(row=table.get_row_index("depth/n_layer=4"))
        await settle(pilot)
        chart = app.screen.query_one(LossChart)
        assert str(chart.border_title).startswith("depth/n_layer=4 · waiting: your share")
        words = chart.render().plain.translate(str.maketrans("│┌┐└┘─", "      ")).split()
        assert " ".join(reason.split()) in " ".join(words)
        # a run with metrics draws its curves, never the note
        table.move_cursor(row=table.get_row_index("depth/n_layer=2"))
        await settle(pilot)
        assert "your share" not in chart.render().plain
