"""Panel titles fit their border at 80x24 and 140x45: a long run id loses its middle, the
chart's heading (what is drawn against what) stays whole."""

from __future__ import annotations

import pytest
from textual.containers import Container

from tests.tui.conftest import asynctest, settle
from tests.tui.test_chart_legend import _big_sweep
from tests.tui.test_dashboard import select
from tui.widgets.loss_chart import LossChart


@pytest.mark.parametrize("size", [(80, 24), (140, 45)])
@asynctest
async def test_long_run_ids_shorten_in_the_middle_in_the_panel_titles(world, size):
    ids = _big_sweep(world)
    app = world.app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await select(pilot, ids[0])
        chart = app.screen.query_one(LossChart)
        title = str(chart.border_title)
        assert len(title) <= chart.size.width - 4, title
        assert title.startswith("big/n_layer=1,") and "seed=1338 · " in title
        assert "vs iters" in title
        detail = app.screen.query_one("ContentSwitcher")
        title = str(detail.border_title)
        assert len(title) <= detail.size.width - 4, title
        assert title.startswith("Samples · big/n") and "(o: samples/log)" in title


def test_fit_title_elides_the_name_then_drops_the_last_parts():
    from tui.widgets.format import fit_title
    name = "sweep/n_layer=12,n_embd=768,seed=1338"
    assert fit_title(name, ["nats/token vs iters", "log-y"], 200) == \
        f"{name} · nats/token vs iters · log-y"
    t = fit_title(name, ["nats/token vs iters", "log-y"], 60)
    assert len(t) <= 60 and t.startswith("sweep/n_layer=1") and "…" in t
    assert t.endswith("seed=1338 · nats/token vs iters · log-y")
    t = fit_title(name, [("nats/token vs iters", "nats vs iters"), "log-y"], 52)
    assert len(t) <= 52 and t.endswith("seed=1338 · nats vs iters · log-y")
    t = fit_title(name, ["nats/token vs iters", "log-y"], 50)
    assert len(t) <= 50 and t.endswith("seed=1338 · nats/token vs iters")
    assert fit_title(name, ["a very long heading that cannot fit"], 20) == \
        fit_title(name, [], 20) and len(fit_title(name, [], 20)) == 20
