"""A running CPU run's thread count shows beside its tok/s in the runs table."""

from __future__ import annotations

from tests.tui.conftest import asynctest, settle
from tests.tui.test_dashboard import table_text


@asynctest
async def test_a_running_cpu_runs_threads_show_beside_its_speed(world):
    run = world.runs["depth/n_layer=2"]
    run.update_status(device="cpu", gpu=None, tok_s=18300.0, cpu_threads=1,
                      cpu_threads_why="2 cores, other processes keep 1.0 busy")
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        running = next(r for r in table_text(app) if "n_layer=2" in r)
        assert "18.3K 1t" in running, running
        done = next(r for r in table_text(app) if "n_layer=1" in r)
        assert "2.6K" in done and "t " not in done.split("2.6K")[1][:3]  # finished: no count
