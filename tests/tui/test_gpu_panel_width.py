"""The GPU panel's load line fits its width: the sparklines shrink, the numbers stay."""

from __future__ import annotations

import pytest

from tests.tui.conftest import fake_gpus
from tui.widgets.gpu_panel import GpuHistory, render_gpus


@pytest.mark.parametrize("width", [42, 48, 52, 60, 80])
def test_the_load_line_never_wraps(width):
    history = GpuHistory()
    for _ in range(10):
        history.add(fake_gpus())
    lines = render_gpus(fake_gpus(), [], history, width).plain.splitlines()
    load = [ln for ln in lines if ln.startswith("  util")]
    assert len(load) == 2 and all(len(ln) <= width for ln in load)
    assert load[0].endswith("63°C 210W") and load[1].endswith("71°C 450W")
    if width >= 80:   # room: both sparklines drawn at full width (8 cells each)
        assert len(load[0]) == len("  util  41%   mem 18.0G/48.0G   63°C 210W") + 16


def test_the_picker_shows_whole_card_names():
    from tui.screens.launch import gpu_option_text
    names = [gpu_option_text(g, 0)[0].plain for g in fake_gpus()]
    assert names[0].startswith("0 RTX 6000 Ada Generation ")
    assert names[1].startswith("1 RTX PRO 6000 Blackwell ")
