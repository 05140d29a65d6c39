"""`nanotui` with no subcommand: the app's entry point."""

from __future__ import annotations

from pathlib import Path

from tui.app import NanotuiApp, create_app
from tui.cli import main


def test_no_experiments_and_no_runs_is_one_line_error(tmp_path, capsys):
    code = main(["--experiments", str(tmp_path / "missing.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("nanotui: error: no experiments file")


def test_create_app_wires_the_engine_and_lets_tests_replace_parts(tmp_path):
    sentinel = object()
    app = create_app(tmp_path / "runs", tmp_path / "experiments.toml", launcher=sentinel)
    assert isinstance(app, NanotuiApp)
    assert app.services.launcher is sentinel
    assert app.services.runs_root == Path(tmp_path / "runs")
    assert hasattr(app.services.gpu_source, "snapshot")  # engine.launch.gpu's default source
    assert type(app.services.sampler).__name__ == "EngineSampler"
    assert type(app.services.reporter).__name__ == "EngineReporter"


def test_stop_through_the_real_launcher(world):
    """s on a queued run, confirmed: engine.launch.queue.stop_run marks it stopped."""
    from tests.tui.conftest import asynctest, settle
    from tui.services import EngineLauncher
    from tui.widgets.run_table import RunTable

    world.launcher = EngineLauncher(world.root, world.root.parent / "experiments.toml")

    @asynctest
    async def body():
        app = world.app()
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            table = app.screen.query_one(RunTable)
            table.move_cursor(row=table.get_row_index("depth/n_layer=4"))
            await settle(pilot)
            await pilot.press("s", "y")
            await app.workers.wait_for_complete()
            await settle(pilot)
            assert table.view("depth/n_layer=4").state == "stopped"
    body()
    assert world.runs["depth/n_layer=4"].read_status()["state"] == "stopped"
