"""The course inside the app: E writes a course report over the sweeps picked, T runs a
temperature study of the current sweep's finished runs in a worker; both end with a toast
naming the files."""

from __future__ import annotations

from tests.tui.conftest import asynctest, settle, toasts
from tui.screens.course import CourseSweepsScreen, TemperatureStudyScreen, parse_temperatures


@asynctest
async def test_course_report_over_the_sweeps_picked(world):
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("E")
        await pilot.pause()
        assert isinstance(app.screen, CourseSweepsScreen)
        assert await_sorted(app.screen) == ["depth", "width"]    # every sweep ticked
        await pilot.press("enter")
        await settle(pilot)
        out = world.root.parent / "reports"
        assert ("course", ["depth", "width"], out) in world.reporter.calls
        course = out / "_course" / "depth+width"
        assert any(f"course report written: {course / 'report.md'}, {course / 'report.html'}"
                   in t for t in toasts(app))


def await_sorted(screen) -> list[str]:
    from textual.widgets import SelectionList
    return sorted(screen.query_one(SelectionList).selected)


@asynctest
async def test_temperature_study_of_the_current_sweep(world):
    world.runs["depth/n_layer=1"].ckpt_path.write_bytes(b"ckpt")   # the done run has one
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("T")
        await pilot.pause()
        assert isinstance(app.screen, TemperatureStudyScreen)
        assert "Sample the 1 finished run of depth" in str(
            app.screen.query_one(".question").render())
        from textual.widgets import Input
        app.screen.query_one(Input).value = ""             # replace the default list
        await pilot.press(*"0.7, 1.1", "enter")
        await settle(pilot)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert ("study", "depth/n_layer=1", [0.7, 1.1]) in world.sampler.calls
        shown = toasts(app)
        assert any("temperature study 1/1: depth/n_layer=1 at 0.7, 1.1" in t for t in shown)
        path = world.runs["depth/n_layer=1"].temperature_path
        assert any(f"temperature study of depth saved: {path}" in t for t in shown)
        assert path.is_file()


def test_temperatures_are_checked():
    assert parse_temperatures("0.5, 0.8,1") == [0.5, 0.8, 1.0]
    for bad in ("", "0", "-1", "a", ",".join(["1"] * 9)):
        try:
            parse_temperatures(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
