"""The loss chart's x axes (iterations, tokens, training time, training FLOPs) and its
y unit (nats per token or bits per byte), on the dashboard and on compare, which share
the axis. The fixture's running run logs a train record every 10 iterations at 50 ms per
step, 128 tokens per iteration, and records 25,600 parameters (nanoGPT's count)."""

from __future__ import annotations

import math

import pytest

from engine.model.arithmetic import flops_per_token
from tests.tui.conftest import asynctest, settle
from tests.tui.test_snapshots import select_running
from tui.widgets.loss_chart import LossChart

RUN = "depth/n_layer=2"
AXES = ["iter", "tokens", "time", "flops"]
HEADINGS = {"iter": "nats/token vs iters", "tokens": "nats/token vs tokens",
            "time": "nats/token vs train time", "flops": "nats/token vs train FLOPs"}


def chart_text(chart: LossChart) -> str:
    return chart.render().plain


@asynctest
async def test_x_cycles_the_four_axes_and_the_title_names_each(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await select_running(pilot)
        chart = app.screen.query_one(LossChart)
        seen = []
        for _ in range(5):
            seen.append(chart.options.x_axis)
            assert str(chart.border_title).startswith(f"{RUN} · {HEADINGS[chart.options.x_axis]}")
            await pilot.press("x")
            await pilot.pause()
        assert seen == AXES + ["iter"]


@asynctest
async def test_time_and_flops_axes_show_the_runs_training_time_and_compute(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await select_running(pilot)
        chart = app.screen.query_one(LossChart)
        series = app.store.series(RUN)
        # 430 iterations at 50 ms a step: 21.5 s in optimizer steps (the wall clock of the
        # records, t, says 430 s: the axis is the ETA's training time, not wall time)
        assert series.train_time[-1] == pytest.approx(21.5)
        fpt = flops_per_token(2, 32, 32, 25_600)
        assert series.train_flops[-1] == pytest.approx(430 * 128 * fpt)
        await pilot.press("x", "x")
        await pilot.pause()
        text = chart_text(chart)
        assert "training time (s)" in text and "22s" in text  # the last tick: 21.5 s
        await pilot.press("x")
        await pilot.pause()
        text = chart_text(chart)
        assert "training FLOPs" in text
        assert f"{430 * 128 * fpt / 1e9:.3g}G" in text  # 9.81G at the right end


@asynctest
async def test_bits_per_byte_where_the_data_knows_its_bytes_per_token(world):
    world.runs[RUN].update_status(bytes_per_token=2.0)
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await select_running(pilot)
        chart = app.screen.query_one(LossChart)
        await pilot.press("y")  # log-y: the tick labels are the losses themselves
        await pilot.pause()
        nats = chart_text(chart)
        await pilot.press("b")
        await pilot.pause()
        assert str(chart.border_title).startswith(f"{RUN} · bits/byte vs iters")
        series = app.store.series(RUN)
        top = max(series.train_loss)
        assert f"{top:.3g}" in nats
        assert f"{top / math.log(2) / 2.0:.3g}" in chart_text(chart)


@asynctest
async def test_bpb_is_na_where_the_data_does_not_say(world):
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await select_running(pilot)
        chart = app.screen.query_one(LossChart)
        await pilot.press("b")
        await settle(pilot)
        assert str(chart.border_title).startswith(f"{RUN} · nats/token (bpb n/a) vs iters")
        from tests.tui.conftest import toasts
        assert any("bpb n/a" in t for t in toasts(app))


@asynctest
async def test_compare_follows_the_dashboards_axis_and_moves_it_back(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await select_running(pilot)
        await pilot.press("x", "x", "x")  # training FLOPs
        await pilot.press("c")
        await settle(pilot)
        curves = app.screen.query_one("#curves", LossChart)
        assert str(curves.border_title).startswith("Val loss · nats/token vs train FLOPs")
        assert "+ n_layer = 1 (cyan), 2 (magenta)" in chart_text(curves)  # every run, named
        await pilot.press("x")  # back to iterations, here and on the dashboard
        await pilot.pause()
        assert str(curves.border_title).startswith("Val loss · nats/token vs iters")
        await pilot.press("escape")
        await settle(pilot)
        chart = app.screen.query_one(LossChart)
        assert str(chart.border_title).startswith(f"{RUN} · nats/token vs iters")
        assert "iterations" in chart_text(chart)


@pytest.mark.parametrize("size", [(80, 24), (140, 45)], ids=["80x24", "140x45"])
@pytest.mark.parametrize("presses", [0, 1, 2, 3], ids=AXES)
def test_chart_snapshot_in_each_x_mode(world, snap_compare, size, presses):
    async def before(pilot):
        await select_running(pilot)
        await pilot.press(*["x"] * presses)
        await settle(pilot)
    assert snap_compare(world.app(), terminal_size=size, run_before=before)


def test_compare_snapshot_on_the_flops_axis(world, snap_compare):
    async def before(pilot):
        await select_running(pilot)
        await pilot.press("x", "x", "x", "c")
        await settle(pilot)
    assert snap_compare(world.app(), terminal_size=(140, 45), run_before=before)
