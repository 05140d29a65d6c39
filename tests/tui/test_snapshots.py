"""Snapshots of every screen (pytest-textual-snapshot). Deterministic: fixture runs with
fixed numbers, a fake GPU source polled once, no timers, fixed terminal sizes.
Update after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the SVGs before committing them."""

from __future__ import annotations

from textual.widgets import SelectionList

from tests.tui.conftest import GIB, settle
from tui.screens.dialogs import ConfirmScreen, QuitScreen
from tui.screens.launch import GpuPickerScreen
from tui.widgets.run_table import RunTable


async def select_running(pilot) -> None:
    await settle(pilot)
    table = pilot.app.screen.query_one(RunTable)
    table.move_cursor(row=table.get_row_index("depth/n_layer=2"))
    await settle(pilot)


def test_dashboard_wide(world, snap_compare):
    assert snap_compare(world.app(), terminal_size=(140, 45), run_before=select_running)


def test_dashboard_80x24(world, snap_compare):
    assert snap_compare(world.app(), terminal_size=(80, 24), run_before=select_running)


def test_dashboard_200x60_overlay_logy(world, snap_compare):
    async def before(pilot):
        await select_running(pilot)
        await pilot.press("v", "y")
        await settle(pilot)
    assert snap_compare(world.app(), terminal_size=(200, 60), run_before=before)


def test_dashboard_log_view(world, snap_compare):
    async def before(pilot):
        await select_running(pilot)
        await pilot.press("o")
        await settle(pilot)
    assert snap_compare(world.app(), terminal_size=(140, 45), run_before=before)


def test_launch_screen(world, snap_compare):
    async def before(pilot):
        await select_running(pilot)
        await pilot.press("l")
        await settle(pilot)
        pilot.app.screen.query_one(SelectionList).select("width")
        await settle(pilot)
    assert snap_compare(world.app(), terminal_size=(140, 45), run_before=before)


def test_gpu_picker(world, snap_compare):
    async def before(pilot):
        await settle(pilot)
        pilot.app.push_screen(GpuPickerScreen(pilot.app.feed, need_bytes=4 * GIB, n_runs=3))
        await pilot.pause()
    assert snap_compare(world.app(), terminal_size=(140, 45), run_before=before)


def test_samples_screen(world, snap_compare):
    async def before(pilot):
        await select_running(pilot)
        await pilot.press("p")
        await settle(pilot)
    assert snap_compare(world.app(), terminal_size=(140, 45), run_before=before)


def test_compare_screen(world, snap_compare):
    async def before(pilot):
        await select_running(pilot)
        await pilot.press("c")
        await settle(pilot)
    assert snap_compare(world.app(), terminal_size=(140, 45), run_before=before)


def test_help_screen(world, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
    assert snap_compare(world.app(), terminal_size=(140, 45), run_before=before)


def test_stop_confirmation(world, snap_compare):
    async def before(pilot):
        await select_running(pilot)
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
    assert snap_compare(world.app(), terminal_size=(100, 30), run_before=before)


def test_quit_with_queued_runs(world, snap_compare):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(pilot.app.screen, QuitScreen)
    assert snap_compare(world.app(), terminal_size=(100, 30), run_before=before)
