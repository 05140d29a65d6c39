"""A sweep with seeds shows one seed's runs side by side (4 columns at 140x45, not 8);
s cycles through the seeds, then all of them."""

from __future__ import annotations

from tests.tui.conftest import asynctest, settle, tiny_cfg
from engine.runs import create_run
from tui.screens.samples import RunColumn, SamplesScreen, run_seed


def test_run_seed_reads_the_name():
    assert run_seed("depth/n_layer=8") == "" and run_seed("depth/n_layer=8,seed=1338") == "1338"


@asynctest
async def test_p_on_a_sweep_with_seeds_offers_one_seed(world):
    for n in (1, 2, 4, 8):
        for name in (f"n_layer={n}", f"n_layer={n},seed=1338"):
            create_run(world.root, "seeded", name, tiny_cfg(n_layer=n))
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        app.push_screen(SamplesScreen(app.feed, app.services, "seeded"))
        await settle(pilot)
        screen = app.screen

        def shown():
            return [c.run_id.split("/")[1] for c in screen.query(RunColumn)]
        assert shown() == ["n_layer=1", "n_layer=2", "n_layer=4", "n_layer=8"]
        assert "first seed (s: next)" in str(screen.query_one("#title").render())
        await pilot.press("s")
        await pilot.pause()
        assert shown() == [f"n_layer={n},seed=1338" for n in (1, 2, 4, 8)]
        await pilot.press("s")
        await pilot.pause()
        assert len(shown()) == 8 and "all seeds" in str(screen.query_one("#title").render())
