"""The law, live: fitted in a worker on a sweep's finished runs, drawn as a band at a
larger running run's horizon, with whether the run is tracking it."""

from __future__ import annotations

import os
import socket

import psutil

from engine.model.arithmetic import param_count
from engine.runs import create_run
from tests.tui.conftest import T0, asynctest, settle, tiny_cfg
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_table import RunTable


def law(N: int) -> float:
    return 1.0 + 30.0 * N ** -0.3


def ladder(root, running_val_factor: float, upto: int) -> None:
    """Four finished sizes on the law, and a larger one running (this test process)."""
    for nl in (1, 2, 3, 4, 6):
        cfg = tiny_cfg(n_layer=nl, vocab_size=65, max_iters=1000)
        N = param_count(cfg, 65)
        run = create_run(root, "ladder", f"n_layer={nl}", cfg, {"n_layer": nl})
        last = 1000 if nl < 6 else upto
        for i in range(100, last + 1, 100):
            v = law(N) + 0.5 * (1 - i / 1000)  # falls to the law at the horizon
            v *= 1 + 0.004 * (-1) ** nl if nl < 6 else 1.0  # scatter: a band of some width
            v *= running_val_factor if nl == 6 else 1.0
            run.log_metric(kind="eval", iter=i, train_loss=v - 0.05, val_loss=round(v, 5),
                           t=T0 + i, tokens=i * cfg.tokens_per_iter)
        best = dict(best_val_loss=round(v, 5), best_iter=last, val_loss=round(v, 5), iter=last)
        if nl < 6:
            run.update_status(state="done", started_at=T0, ended_at=T0 + 100, params=N, **best)
        else:
            me = os.getpid()
            run.update_status(state="running", started_at=T0, params=N, pid=me,
                              pid_create_time=psutil.Process(me).create_time(),
                              host=socket.gethostname(), device="cpu", **best)


def row(app, run_id: str) -> str:
    table = app.screen.query_one(RunTable)
    return " ".join(str(c) for c in table.get_row_at(table.get_row_index(run_id)))


async def select(pilot, run_id: str) -> None:
    table = pilot.app.screen.query_one(RunTable)
    table.move_cursor(row=table.get_row_index(run_id))
    await settle(pilot)
    await settle(pilot)  # the law's worker, then the redraw it asks for


@asynctest
async def test_a_running_run_beyond_the_fitted_sizes_gets_the_laws_band(world):
    ladder(world.root, 1.0, upto=1000)
    app = world.app()
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "ladder/n_layer=6")
        chart = app.screen.query_one(LossChart)
        N = param_count(tiny_cfg(n_layer=6, vocab_size=65), 65)
        sub = str(chart.border_subtitle)
        assert "law: " in sub and "at iter 1000" in sub and "on track" in sub
        predicted = float(sub.split("law: ", 1)[1].split()[0])
        assert abs(predicted - law(N)) < 0.03
        assert "n_layer=6 · on track" in row(app, "ladder/n_layer=6")
        # a finished run inside the fitted sizes gets no band
        await select(pilot, "ladder/n_layer=2")
        assert "law: " not in str(chart.border_subtitle)


@asynctest
async def test_a_run_well_above_the_law_is_called_so(world):
    ladder(world.root, 1.10, upto=1000)
    app = world.app()
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "ladder/n_layer=6")
        assert "above the law's band" in str(app.screen.query_one(LossChart).border_subtitle)
        assert "n_layer=6 · above the law's band" in row(app, "ladder/n_layer=6")


@asynctest
async def test_mid_run_L_N_waits_for_the_horizon(world):
    ladder(world.root, 1.0, upto=400)
    app = world.app()
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "ladder/n_layer=6")
        assert "judged at the horizon" in str(app.screen.query_one(LossChart).border_subtitle)
        assert "·" not in row(app, "ladder/n_layer=6").split("running")[0]  # no verdict yet
