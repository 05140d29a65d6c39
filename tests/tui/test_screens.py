"""Launch flow, GPU picker, samples, compare, report, help and the command palette."""

from __future__ import annotations

import threading

from textual.widgets import DataTable, OptionList, SelectionList

from tests.tui.conftest import GIB, asynctest, settle, toasts
from tui.screens.compare import CompareScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.dialogs import GenerateScreen
from tui.screens.help import HelpScreen
from tui.screens.launch import GpuPickerScreen, LaunchScreen
from tui.screens.samples import RunColumn, SamplesScreen
from tui.widgets.run_table import RunTable


async def open_launch(pilot):
    await settle(pilot)
    await pilot.press("l")
    await settle(pilot)
    assert isinstance(pilot.app.screen, LaunchScreen)
    return pilot.app.screen


@asynctest
async def test_launch_plans_the_preselected_sweep_and_queues_on_auto(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await open_launch(pilot)
        assert screen.selected_sweeps() == ["depth"]  # the sweep of the selected run
        plan = screen.query_one("#plan", DataTable)
        assert plan.row_count == 3
        assert "3 runs" in str(screen.query_one("#plan-summary").render())
        await pilot.press("enter")
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, GpuPickerScreen)
        options = picker.query_one(OptionList)
        assert options.highlighted_option.id == "auto"  # preselected
        await pilot.press("enter")
        await settle(pilot)
        assert ("queue", ["depth"]) in world.launcher.calls
        assert ("dispatch", "auto") in world.launcher.calls
        assert isinstance(app.screen, DashboardScreen)


@asynctest
async def test_the_first_down_arrow_moves_to_the_next_sweep(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await open_launch(pilot)
        sweeps = screen.query_one(SelectionList)
        assert sweeps.has_focus and sweeps.highlighted == 0     # depth, preselected
        await pilot.press("down")
        assert sweeps.highlighted == 1                          # width: it moved
        await pilot.press("space")
        await settle(pilot)
        assert screen.selected_sweeps() == ["depth", "width"]   # depth still ticked


@asynctest
async def test_the_plan_counts_a_shared_run_once(world):
    world.launcher.shared = {"quick/n_layer=1": "depth/n_layer=1"}
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await open_launch(pilot)
        screen.query_one(SelectionList).select("quick")
        await settle(pilot)
        summary = str(screen.query_one("#plan-summary").render())
        assert summary.startswith("4 runs (+1 shared, trained once) (3 exist)")
        row = screen.query_one("#plan", DataTable).get_row("quick/n_layer=1")
        assert "= depth/n_layer=1 (trained once)" in str(row[-1])
        await pilot.press("enter")
        await pilot.pause()
        assert str(app.screen.query_one(".question").render()).startswith("Where should 4 runs go?")


@asynctest
async def test_the_plan_summary_counts_compute_for_new_runs_only(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await open_launch(pilot)
        screen.query_one(SelectionList).select("quick")   # depth (all exist) + quick (new)
        await settle(pilot)
        summary = str(screen.query_one("#plan-summary").render())
        # the fake plans 1m and 2m for quick's two runs; depth's three exist
        assert "5 runs (3 exist)" in summary and "about 3m00s of compute for the new ones" in summary


@asynctest
async def test_launch_single_runs_onto_a_chosen_card(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await open_launch(pilot)
        sl = screen.query_one(SelectionList)
        sl.deselect_all()
        sl.select("quick")
        await settle(pilot)
        plan = screen.query_one("#plan", DataTable)
        assert plan.row_count == 2
        plan.focus()
        plan.move_cursor(row=1)
        await pilot.press("space")  # skip quick/n_layer=2
        assert screen.selection() == ["quick/n_layer=1"]
        await pilot.press("enter")
        await pilot.pause()
        picker = app.screen
        ids = [picker.query_one(OptionList).get_option_at_index(i).id
               for i in range(picker.query_one(OptionList).option_count)]
        assert ids == ["auto", "0", "1", "cpu"]
        await pilot.press("down", "enter")  # card 0
        await settle(pilot)
        assert ("queue", ["quick/n_layer=1"]) in world.launcher.calls
        assert ("dispatch", "0") in world.launcher.calls
        table = app.screen.query_one(RunTable)
        rows = [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]
        assert any(r.startswith("▾ quick") for r in rows)  # the queued run shows up
        assert "queued" in " ".join(str(c) for c in table.get_row("quick/n_layer=1"))


@asynctest
async def test_gpu_picker_marks_cards_without_room_and_follows_live_load(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        picker = GpuPickerScreen(app.feed, need_bytes=4 * GIB, n_runs=1)
        app.push_screen(picker)
        await pilot.pause()
        ol = picker.query_one(OptionList)
        full = ol.get_option("1")  # 94/96 GB used
        assert full.disabled and "too full" in str(full.prompt)
        assert "fits" in str(ol.get_option("0").prompt)
        assert "util  41%" in str(ol.get_option("0").prompt)
        gpus = world.gpus.snapshot()
        from dataclasses import replace
        world.gpus.set([replace(gpus[0], utilization=97), gpus[1]])
        app._poll_gpus()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "util  97%" in str(picker.query_one(OptionList).get_option("0").prompt)
        await pilot.press("escape")
        assert not isinstance(app.screen, GpuPickerScreen)
        assert not any(c[0] == "queue" for c in world.launcher.calls)


@asynctest
async def test_launch_shows_a_plan_error_in_one_line(world):
    def broken(selection):
        raise ValueError("experiments.toml:12: sweep.depth: n_embd 30 not divisible by n_head 4")
    world.launcher.plan = broken
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await open_launch(pilot)
        assert "not divisible" in str(screen.query_one("#plan-summary").render())
        await pilot.press("enter")
        assert isinstance(app.screen, LaunchScreen)  # nothing to launch


@asynctest
async def test_samples_screen_puts_one_prompt_side_by_side(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, SamplesScreen) and screen.sweep == "depth"
        cols = {c.run_id: str(c.text) for c in screen.query(RunColumn)}
        assert set(cols) == {"depth/n_layer=1", "depth/n_layer=2", "depth/n_layer=4"}
        assert "iter 1000" in cols["depth/n_layer=1"] and "iter 400" in cols["depth/n_layer=2"]
        assert "Once upon a time" in cols["depth/n_layer=1"] and "TTR" in cols["depth/n_layer=1"]
        assert "no sample" in cols["depth/n_layer=4"]
        await pilot.press("t")  # next prompt
        cols = {c.run_id: str(c.text) for c in screen.query(RunColumn)}
        assert "The little dog" in cols["depth/n_layer=1"]
        await pilot.press("left_square_bracket")  # an older iteration
        assert screen.iteration == 900
        cols = {c.run_id: str(c.text) for c in screen.query(RunColumn)}
        assert "iter 900" in cols["depth/n_layer=1"] and "iter 400" in cols["depth/n_layer=2"]
        await pilot.press("right_square_bracket")
        assert screen.iteration is None


@asynctest
async def test_generate_runs_in_a_worker_and_the_ui_stays_responsive(world):
    world.sampler.gate = threading.Event()
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        screen = app.screen
        screen.query(RunColumn)[1].focus()
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, GenerateScreen)
        temp = app.screen.query_one("#temperature")
        temp.value = "1.2"
        app.screen.query_one("#top_k").value = "5"
        await pilot.click("#go")
        await pilot.pause()
        assert screen.generating == {"depth/n_layer=2"}
        await pilot.press("t")  # keys still work while the sample is being made
        assert screen.prompt_index == 1
        world.sampler.gate.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert world.sampler.calls[0][0] == "depth/n_layer=2"
        assert world.sampler.calls[0][2:4] == (1.2, 5)
        text = str(screen.query(RunColumn)[1].text)
        assert "freshly generated" in text and "new sample" in text


@asynctest
async def test_generate_rejects_bad_knobs(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#temperature").value = "-1"
        await pilot.click("#go")
        await pilot.pause()
        assert isinstance(app.screen, GenerateScreen)
        assert "temperature > 0" in str(app.screen.query_one("#error").render())
        assert world.sampler.calls == []


@asynctest
async def test_compare_table_and_sweep_switching(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        table = screen.query_one(DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        by_name = {r[1]: r for r in rows}
        done = by_name["n_layer=1"]
        assert done[2] == "13K"
        assert done[3] == "1.3549"   # best val: min of the evals (1.2 + 3e^-4 + 0.1 at 1000)
        assert done[5] == "+0.100"   # val - train at the last eval
        assert done[7] == "0.90" and done[8] == "0.90"  # means over the prompts
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert screen.sweep == "width"
        names = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert names == ["n_embd=32", "n_embd=64"]  # by parameter count


@asynctest
async def test_report_key_writes_the_report_in_a_worker(world):
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        sweeps, out_dir = world.reporter.calls[0]
        assert sweeps == ["depth"]
        assert (out_dir / "depth" / "report.md").exists()
        assert any("report written" in t for t in toasts(app))


@asynctest
async def test_help_lists_every_binding(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        from tui.keys import key_sections
        keys = {k for _, rows in key_sections() for k, _ in rows}
        for k in ("l", "s", "r", "c", "p", "e", "/", "v", "y", "x", "o", "t", "n", "?", "q"):
            assert k in keys
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


@asynctest
async def test_command_palette_offers_the_actions(world):
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for t in ("Launch", "Compare sweep", "Samples", "Report", "Keys",
                  "Stop the selected run", "Resume the selected run"):
            assert t in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"compare sweep")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)


@asynctest
async def test_works_at_80x24(world):
    app = world.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.has_class("-narrow")
        table = app.screen.query_one(RunTable)
        assert table.region.width <= 80 and table.region.height >= 5
        assert app.screen.query_one("#chart").region.height >= 8
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("escape", "p")
        await settle(pilot)
        assert isinstance(app.screen, SamplesScreen)


async def launch_depth_on_auto(pilot):
    await open_launch(pilot)
    await pilot.press("enter")   # the plan: the preselected sweep
    await pilot.pause()
    await pilot.press("enter")   # the picker: auto
    await settle(pilot)


@asynctest
async def test_launch_says_when_a_saved_config_drifted_and_can_start_fresh(world):
    world.launcher.drifted = {"depth/n_layer=1": ["max_iters: 1000 → 2000"]}
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await launch_depth_on_auto(pilot)
        question = str(app.screen.query_one(".question").render())
        assert "depth/n_layer=1" in question and "max_iters: 1000 → 2000" in question
        assert "Start fresh?" in question and "runs/.replaced/" in question
        await pilot.press("y")
        await settle(pilot)
        assert ("queue-fresh", ["depth/n_layer=1"]) in world.launcher.calls
        assert isinstance(app.screen, DashboardScreen)
        row = " ".join(str(c) for c in app.screen.query_one(RunTable).get_row("depth/n_layer=1"))
        assert "queued" in row
        kept = list((world.root / ".replaced" / "depth").iterdir())
        assert len(kept) == 1 and kept[0].name.startswith("n_layer=1.")
        assert any("1 started fresh" in t for t in toasts(app))


@asynctest
async def test_the_plan_names_a_drifted_run_before_enter(world):
    world.launcher.drifted = {"depth/n_layer=1": ["max_iters: 1000 → 2000", "n_embd: 32 → 64"]}
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await open_launch(pilot)
        plan = screen.query_one("#plan", DataTable)
        note = str(plan.get_row("depth/n_layer=1")[-1])
        assert note == "done · config changed: max_iters: 1000 → 2000 (+1 more)"
        assert str(plan.get_row("depth/n_layer=2")[-1]) == "exists (running): not queued again"
        summary = str(screen.query_one("#plan-summary").render())
        assert "3 runs (3 exist)" in summary and "1 with a changed saved config" in summary
        assert "nothing new to train" in summary  # existing runs are not queued again


@asynctest
async def test_launch_keeps_a_drifted_config_when_told(world):
    world.launcher.drifted = {"depth/n_layer=1": ["max_iters: 1000 → 2000"]}
    app = world.app()
    async with app.run_test(size=(140, 45), notifications=True) as pilot:
        await launch_depth_on_auto(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert not any(c[0] == "queue-fresh" for c in world.launcher.calls)
        assert any("kept the saved config of 1 run" in t for t in toasts(app))
        assert isinstance(app.screen, DashboardScreen)
        row = " ".join(str(c) for c in app.screen.query_one(RunTable).get_row("depth/n_layer=1"))
        assert "done" in row
