"""Dashboard: table, chart, GPU panel, samples, log, filter, stop/resume, quit."""

from __future__ import annotations

from tests.tui.conftest import asynctest, settle
from tui.screens.dashboard import DashboardScreen
from tui.screens.dialogs import ConfirmScreen, QuitScreen
from tui.widgets.gpu_panel import GpuPanel
from tui.widgets.log_view import LogView
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_table import RunTable
from tui.widgets.samples_view import SamplesView


def table_text(app) -> list[str]:
    table = app.screen.query_one(RunTable)
    return [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


async def select(pilot, run_id: str) -> None:
    table = pilot.app.screen.query_one(RunTable)
    table.move_cursor(row=table.get_row_index(run_id))
    await settle(pilot)


@asynctest
async def test_table_groups_runs_by_sweep_with_every_state(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        rows = table_text(app)
        assert rows[0].startswith("▾ depth 3 runs")
        assert any("n_layer=2 running cuda:0 430/1000" in r for r in rows)
        assert any("n_layer=4 queued" in r for r in rows)
        assert any("width" in r and "2 runs" in r for r in rows)
        failed = next(r for r in rows if "n_embd=32" in r)
        assert "failed" in failed and "OOM" in failed  # the reason, where ETA would be
        running = next(r for r in rows if "n_layer=2" in r)
        assert "12m" in running  # ETA 754 s
        assert "25.6K" in running  # params


@asynctest
async def test_selected_run_shows_chart_samples_and_log(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "depth/n_layer=2")
        chart = app.screen.query_one(LossChart)
        assert chart.run_id == "depth/n_layer=2"
        series = app.store.series("depth/n_layer=2")
        assert series.train_iter[-1] == 430 and series.eval_iter[-1] == 400
        samples = str(app.screen.query_one(SamplesView).render())
        assert "iter 400" in samples and "TTR" in samples and "d2 0.90" in samples
        assert "The little dog" in samples and "Once upon a time" in samples
        await pilot.press("o")
        await settle(pilot)
        log = app.screen.query_one(LogView)
        assert any("iter 400" in line.text for line in log.lines)


@asynctest
async def test_the_log_pane_wraps_long_lines(world):
    long = "engine.train: failed: " + "a very long reason, " * 12 + "THE END"
    with open(world.runs["depth/n_layer=2"].stdout_path, "a") as f:
        f.write(long + "\n")
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "depth/n_layer=2")
        await pilot.press("o")
        await settle(pilot)
        await pilot.pause()
        log = app.screen.query_one(LogView)
        width = log.scrollable_content_region.width
        shown = [str(getattr(line, "text", line)).rstrip() for line in log.lines]
        assert all(len(line) <= width for line in shown)
        assert "".join(shown).replace(" ", "").endswith(long.replace(" ", ""))


@asynctest
async def test_metrics_are_read_incrementally_as_they_arrive(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "depth/n_layer=2")
        run = world.runs["depth/n_layer=2"]
        run.log_metric(kind="train", iter=440, loss=1.5, t=0)
        run.log_metric(kind="eval", iter=440, train_loss=1.5, val_loss=1.6, t=0)
        run.update_status(iter=440, val_loss=1.6)
        await settle(pilot)
        assert app.store.series("depth/n_layer=2").eval_val[-1] == 1.6
        assert any("440/1000" in r and "1.600" in r for r in table_text(app))


@asynctest
async def test_chart_toggles_overlay_logy_and_tokens(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "depth/n_layer=2")
        chart = app.screen.query_one(LossChart)
        await pilot.press("v")
        await settle(pilot)
        assert chart.options.overlay
        assert app.store.series("depth/n_layer=1").eval_val  # sweep mates are now tailed
        await pilot.press("y", "x")
        assert chart.options.logy and chart.options.x_axis == "tokens"
        title = str(chart.border_title)  # whole in the border: "nats/token" said short
        assert title == "depth/n_layer=2 · nats vs tokens · log-y · + sweep"
        assert len(title) <= chart.size.width - 4


@asynctest
async def test_filter_narrows_the_table(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"failed")
        rows = table_text(app)
        assert len(rows) == 2 and "n_embd=32" in rows[1]
        await pilot.press("escape")
        assert len(table_text(app)) == 7


@asynctest
async def test_gpu_panel_shows_cards_our_runs_and_other_users(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        text = str(app.screen.query_one(GpuPanel).render())
        assert "RTX 6000 Ada" in text and "41%" in text and "18.0G/48.0G" in text
        assert "63°C" in text and "210W" in text
        assert "depth/n_layer=2" in text  # our run on card 0
        assert "others: 16.0G" in text     # a process that is not ours
        assert "others: 94.0G" in text


@asynctest
async def test_no_gpus_says_cpu_only_and_lists_cpu_runs(world):
    world.gpus.set([])
    world.runs["width/n_embd=64"].update_status(state="running", pid=world.runs[
        "depth/n_layer=2"].read_status()["pid"], pid_create_time=world.runs[
        "depth/n_layer=2"].read_status()["pid_create_time"], device="cpu")
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        text = str(app.screen.query_one(GpuPanel).render())
        assert "CPU only" in text
        assert "cpu: width/n_embd=64" in text


@asynctest
async def test_stop_asks_first_and_cancel_does_nothing(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "depth/n_layer=2")
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        assert world.launcher.calls == []
        await pilot.press("s")
        await pilot.press("y")
        await settle(pilot)
        assert ("stop", "depth/n_layer=2") in world.launcher.calls
        assert any("n_layer=2 stopped" in r for r in table_text(app))


@asynctest
async def test_resume_a_stopped_run(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "width/n_embd=64")
        await pilot.press("r")
        await settle(pilot)
        assert ("resume", "width/n_embd=64") in world.launcher.calls
        assert any("n_embd=64 queued" in r for r in table_text(app))
        await select(pilot, "depth/n_layer=1")  # done: nothing to resume
        await pilot.press("r")
        await settle(pilot)
        assert ("resume", "depth/n_layer=1") not in world.launcher.calls


@asynctest
async def test_r_on_a_done_run_offers_to_extend_it_to_the_files_max_iters(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await select(pilot, "depth/n_layer=1")  # done; the file gives it no more iters
        await pilot.press("r")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("raise its max_iters in the experiments file to extend it" in str(n.message)
                   for n in app._notifications)
        now = world.runs["depth/n_layer=1"].load_config().max_iters
        world.launcher.extend_targets["depth/n_layer=1"] = now * 2
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert f"Extend depth/n_layer=1 from {now} to {now * 2} iterations?" in \
            app.screen.question
        await pilot.press("y")
        await settle(pilot)
        assert ("extend", "depth/n_layer=1", now * 2) in world.launcher.calls
        assert any("n_layer=1 queued" in r for r in table_text(app))


@asynctest
async def test_header_names_the_folder_of_files_outside_the_current_one(world, monkeypatch):
    # as `nanotui demo` does: nanotui-demo/experiments.toml and nanotui-demo/runs/
    monkeypatch.chdir(world.root.parent.parent)
    folder = world.root.parent.name
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        header = str(app.screen.query_one("#title").render())
        assert f" {folder}/experiments.toml · {folder}/runs/ · 2 GPUs" in header


@asynctest
async def test_quit_with_nothing_queued_leaves_runs_alone(world):
    world.runs["depth/n_layer=4"].update_status(state="stopped")
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0 or app.return_code is None
    assert world.launcher.calls == []
    assert world.runs["depth/n_layer=2"].read_status()["state"] == "running"


@asynctest
async def test_quit_with_queued_runs_offers_background_dispatch(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        await pilot.click("#keep")
        await pilot.pause()
    assert ("dispatch", "auto") in world.launcher.calls
    assert app.exit_choice == "keep"


@asynctest
async def test_quit_counts_a_shared_run_once_and_names_a_running_dispatcher(world, monkeypatch):
    from engine.runs import link_shared
    link_shared(world.root, "quick", "n_layer=4", world.runs["depth/n_layer=4"])  # queued
    monkeypatch.setattr("tui.store.dispatcher_pid", lambda root: 4321)
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        question = str(app.screen.query_one(".question").render())
        assert question.startswith("1 run still queued.")
        assert "A dispatcher (pid 4321) is already running" in question


@asynctest
async def test_restart_shows_every_run_as_it_is(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        first = table_text(app)
    again = world.app()
    async with again.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        assert table_text(again) == first
