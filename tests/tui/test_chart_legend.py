"""The overlay legend (the chart's title line) with a big sweep: as many run names as fit
and "… N more", never a blank title, at the small and the large terminal."""

from __future__ import annotations

import pytest

from engine.runs import create_run
from tests.tui.conftest import asynctest, settle, tiny_cfg, write_history
from tests.tui.test_dashboard import select
from tui.widgets.loss_chart import LossChart


def _big_sweep(world, n: int = 9) -> list[str]:
    """`n` runs that vary two keys (so no shared "key =" prefix shortens the names)."""
    ids = []
    for i in range(n):
        varied = {"n_layer": i + 1, "n_embd": 32 * (i + 1)}
        name = f"n_layer={i + 1},n_embd={32 * (i + 1)},seed=1338"
        run = create_run(world.root, "big", name, tiny_cfg(n_layer=i + 1), varied)
        write_history(run, 300, 2.0 + i / 10)
        run.update_status(state="done", iter=300)
        ids.append(run.id)
    return ids


@pytest.mark.parametrize("size", [(80, 24), (140, 45)])
@asynctest
async def test_overlay_of_eight_runs_names_those_that_fit_and_counts_the_rest(world, size,
                                                                             monkeypatch):
    monkeypatch.setattr("tui.screens.dashboard.CHART_MIN_INTERVAL", 0.0)  # redraw at once
    ids = _big_sweep(world)
    app = world.app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await select(pilot, ids[0])
        await pilot.press("v")
        await settle(pilot)
        chart = app.screen.query_one(LossChart)
        title = chart.render().plain.splitlines()[0].strip()
        assert title, "the legend line is blank"
        names = [i.split("/", 1)[1] for i in ids[1:]]
        shown = [n for n in names if n in title]
        assert shown and names[0] in title  # at least the first mate, whole
        assert f"{len(names) - len(shown)} more" in title


def test_legend_text_elides_a_name_too_long_for_the_chart_and_keeps_one_key_prefix():
    from tui.widgets.loss_chart import overlay_title
    long = [(f"n_layer={i},n_embd={64 * i},block_size=256,seed=1338", "cyan") for i in range(8)]
    text = overlay_title(long, 40)
    assert len(text) <= 36 and text.startswith("+ n_layer=") and "…" in text
    assert text.endswith("1338 (cyan), … 7 more")
    one_key = [(f"n_embd={32 * (i + 1)}", "cyan") for i in range(8)]
    text = overlay_title(one_key, 60)
    assert text.startswith("+ n_embd = 32 (cyan), 64 (cyan)") and "more" in text
    assert overlay_title(one_key[:2], 60) == "+ n_embd = 32 (cyan), 64 (cyan)"
