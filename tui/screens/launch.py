"""Launch flow: choose sweeps (and runs) with the plan pre-flight, pick a GPU, queue.

Planning, queueing and starting the dispatcher run in thread workers: they read the
experiments file and may build models to count parameters."""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.strip import Strip
from textual.widgets import (Checkbox, DataTable, Footer, Label, OptionList, SelectionList,
                             Static)
from textual.widgets.option_list import Option

from engine.launch.drift import drift_summary
from engine.launch.queue import PlanRow, QueueResult
from tui.feed import RunFeed
from tui.screens.dialogs import ConfirmScreen
from tui.services import Services
from tui.widgets.format import DASH, fmt_bytes, fmt_duration, fmt_params

AUTO = "auto"



class SweepChecklist(SelectionList[str]):
    """A SelectionList whose boxes say their state in the glyph, not only in colour:
    "X" when selected, blank when not (textual draws an X in both)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segs = list(strip)
        if len(segs) < 3 or segs[1].text != Checkbox.BUTTON_INNER:
            return strip
        try:
            option = self.get_option_at_index(self.scroll_offset.y + y)
        except Exception:  # past the last option: an empty line
            return strip
        if option.value not in self.selected:
            segs[1] = Segment(" " * len(segs[1].text), segs[1].style)
        return Strip(segs, strip.cell_length)

class LaunchScreen(Screen):
    BINDINGS = [
        Binding("enter", "next", "pick GPU", priority=True),
        Binding("space", "toggle_run", "include/skip run", show=False),
        Binding("a", "all_runs", "include all runs"),
        Binding("escape", "app.pop_screen", "back"),
    ]

    def __init__(self, feed: RunFeed, services: Services, preselect: str | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.services = services
        self.preselect = preselect
        self.sweep_names: list[str] = []
        self.plan: list[PlanRow] = []
        self.skipped: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Horizontal(id="launch-body"):
            yield SweepChecklist(id="sweep-list", classes="panel")
            with Vertical(id="plan-panel", classes="panel"):
                yield DataTable(id="plan", cursor_type="row")
                yield Static(id="plan-summary")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#title", Static).update(Text.assemble(
            (" Launch ", "bold reverse"),
            f" {self.services.experiments_path.name}: space selects sweeps · "
            "space on a run skips it · Enter picks the GPU"))
        self.query_one("#sweep-list").border_title = "Sweeps"
        self.query_one("#plan-panel").border_title = "Plan"
        table = self.query_one("#plan", DataTable)
        for col in ("", "run", "varied", "params", "memory", "time", "note"):
            table.add_column(col, key=col or "use")
        self.query_one("#plan-summary", Static).update("reading the experiments file…")
        self._load_sweeps()

    @work(thread=True, group="sweeps", exit_on_error=False)
    def _load_sweeps(self) -> None:
        try:
            sweeps = self.services.launcher.sweeps()
        except Exception as e:
            self.app.call_from_thread(self._show_error, str(e))
            return
        self.app.call_from_thread(self._show_sweeps, sweeps)

    def _show_error(self, text: str) -> None:
        self.query_one("#plan-summary", Static).update(Text(text, style="bold red"))

    def _show_sweeps(self, sweeps: list) -> None:
        sl = self.query_one("#sweep-list", SelectionList)
        self.sweep_names = [s.name for s in sweeps]
        pre = self.preselect if self.preselect in self.sweep_names else (
            self.sweep_names[0] if self.sweep_names else None)
        for s in sweeps:
            label = f"{s.name} ({len(s.runs)})" + (f" {s.description}" if s.description else "")
            sl.add_option((label, s.name, s.name == pre))
        if pre is not None:
            # the cursor starts on the preselected sweep: the first ↓ moves to the next one
            # (with nothing highlighted it would only highlight the first, and ↓ space
            # would untick it)
            sl.highlighted = self.sweep_names.index(pre)
        sl.focus()
        if not sweeps:
            self._show_error("the experiments file defines no sweeps")
        self._replan()

    def on_selection_list_selected_changed(self, _event) -> None:
        self._replan()

    def selected_sweeps(self) -> list[str]:
        return list(self.query_one("#sweep-list", SelectionList).selected)

    def _replan(self) -> None:
        sweeps = self.selected_sweeps()
        if not sweeps:
            self.plan = []
            self._show_plan([])
            return
        self.query_one("#plan-summary", Static).update("planning…")
        self._make_plan(sweeps)

    @work(thread=True, group="plan", exclusive=True, exit_on_error=False)
    def _make_plan(self, sweeps: list[str]) -> None:
        try:
            rows = self.services.launcher.plan(sweeps)
        except Exception as e:
            self.app.call_from_thread(self._show_error, f"plan: {e}")
            return
        self.app.call_from_thread(self._show_plan, rows, sweeps)

    def _show_plan(self, rows: list[PlanRow], sweeps: list[str] | None = None) -> None:
        if sweeps is not None and sweeps != self.selected_sweeps():
            return  # an older plan finished after the selection changed
        self.plan = list(rows)
        table = self.query_one("#plan", DataTable)
        table.clear()
        for r in self.plan:
            rid = r.id
            varied = ", ".join(f"{k}={v}" for k, v in r.varied.items())
            err = r.error
            table.add_row(Text("✗" if err else ("·" if rid in self.skipped else "✓"),
                               style="red" if err else "dim" if rid in self.skipped else "green"),
                          rid, varied or DASH, Text(fmt_params(r.params), justify="right"),
                          Text(fmt_bytes(r.est_mem_bytes), justify="right"),
                          Text(fmt_duration(r.est_seconds), justify="right"),
                          self._note(r), key=rid)
        self._summary()

    def _note(self, r: PlanRow) -> Text:
        """The plan row's note: its error, skipped, or what happens to an existing run
        (kept as it is; a drifted saved config is named, Enter then asks). The state is
        the plan's (PlanRow.state), the one the launch will find."""
        state = r.state
        if r.error:
            return Text(str(r.error), style="red")
        if r.id in self.skipped:
            return Text("skipped", style="dim")
        if r.drift:
            where = f"{state} · " if state else ""   # short: the column is narrow
            return Text(f"{where}config changed: {drift_summary(r.drift, show=1)}",
                        style="yellow")
        if r.same_as:
            return Text(f"= {r.same_as} (trained once)", style="dim")
        if state is not None:
            return Text(f"exists ({state}): not queued again", style="dim")
        if r.warnings:   # an explicit schedule that does not fit the horizon
            return Text(f"warning: {r.warnings[0]}", style="yellow")
        return Text("")

    def chosen_rows(self) -> list[PlanRow]:
        return [r for r in self.plan if not r.error and r.id not in self.skipped]

    def _summary(self) -> None:
        rows = self.chosen_rows()
        if not self.selected_sweeps():
            text = Text("select one or more sweeps with space", style="dim")
        elif not rows:
            text = Text("no runs to launch", style="yellow")
        else:
            mem = max((r.est_mem_bytes or 0) for r in rows)
            shared = sum(1 for r in rows if r.same_as)   # trained once, under its owner
            rows = [r for r in rows if not r.same_as]
            new = [r for r in rows if r.state is None]   # existing runs are not queued again
            secs = sum(r.est_seconds or 0 for r in new)
            drifted = sum(1 for r in rows if r.drift)
            changed = f" · {drifted} with a changed saved config" if drifted else ""
            exist = f" ({len(rows) - len(new)} exist)" if len(new) < len(rows) else ""
            also = f" (+{shared} shared, trained once)" if shared else ""
            work = (f"about {fmt_duration(secs)} of compute "
                    f"{'for the new ones' if exist else 'in total'}" if new
                    else "nothing new to train")
            text = Text(f"{len(rows)} run{'s' * (len(rows) != 1)}{also}{exist} · largest needs "
                        f"{fmt_bytes(mem)} · {work}{changed} · Enter: pick the GPU")
        self.query_one("#plan-summary", Static).update(text)

    def action_toggle_run(self) -> None:
        table = self.query_one("#plan", DataTable)
        if not table.has_focus or not self.plan:
            sl = self.query_one("#sweep-list", SelectionList)
            if sl.has_focus:
                sl.action_select()
            return
        rid = self.plan[table.cursor_row].id
        self.skipped.symmetric_difference_update({rid})
        row = table.cursor_row
        self._show_plan(self.plan)
        table.move_cursor(row=row)

    def action_all_runs(self) -> None:
        self.skipped.clear()
        self._show_plan(self.plan)

    def selection(self) -> list[str]:
        """Whole sweeps when nothing is skipped, else the chosen run ids."""
        rows = self.chosen_rows()
        if not self.skipped and all(not r.error for r in self.plan):
            return self.selected_sweeps()
        return [r.id for r in rows]

    def action_next(self) -> None:
        rows = self.chosen_rows()
        if not rows:
            self.notify("nothing to launch: select a sweep (space)", severity="warning")
            return
        need = max((r.est_mem_bytes or 0) for r in rows)
        selection = self.selection()
        n = sum(1 for r in rows if not r.same_as)   # a shared run is trained once
        self.app.push_screen(GpuPickerScreen(self.feed, need, n),
                             lambda gpu: gpu and self._queue(selection, gpu))

    @work(thread=True, group="queue", exit_on_error=False)
    def _queue(self, selection: list[str], gpu: str, fresh: bool = False) -> None:
        launcher = self.services.launcher
        self.app.call_from_thread(self.notify, "queueing (preparing data if needed)…")
        try:
            def say(line: str) -> None:  # e.g. who holds the queue lock while we wait
                self.app.call_from_thread(self.notify, line, timeout=8)
            res = launcher.queue(selection, gpu, fresh=fresh, log=say)
            launcher.start_dispatcher(gpu)
        except Exception as e:
            self.app.call_from_thread(self.notify, f"launch: {e}", severity="error", timeout=10)
            return
        self.app.call_from_thread(self._queued, res, gpu)

    def _queued(self, res: QueueResult, gpu: str) -> None:
        where = "the least-loaded GPU" if gpu == AUTO else ("the CPU" if gpu == "cpu" else f"GPU {gpu}")
        n = len(res.queued)
        if n:
            moved = f" ({len(res.fresh)} started fresh, old runs kept in .replaced/)" if res.fresh else ""
            self.notify(f"queued {n} run{'s' * (n != 1)} for {where}{moved}")
        elif not res.drift:
            self.notify("nothing new to queue: those runs exist already (r resumes a stopped "
                        "or failed one)", severity="warning", timeout=8)
        self.feed.request_poll()
        if res.drift:  # the file changed under runs that exist: say so, offer to start over
            self.app.push_screen(ConfirmScreen(drift_question(res.drift), "Start fresh"),
                                 lambda yes: self._after_drift(yes, res.drift, gpu))
        elif self.app.screen is self:
            self.app.pop_screen()

    def _after_drift(self, fresh: bool, drift: list, gpu: str) -> None:
        if fresh:
            self._queue([run.id for run, _ in drift], gpu, fresh=True)
            return
        self.notify(f"kept the saved config of {len(drift)} run{'s' * (len(drift) != 1)}",
                    timeout=6)
        if self.app.screen is self:
            self.app.pop_screen()


def drift_question(drift: list) -> str:
    """One run's changes in full, the count of the others."""
    run, changes = drift[0]
    more = f" (and {len(drift) - 1} more run{'s' * (len(drift) != 2)})" if len(drift) > 1 else ""
    return (f"{run.id}{more}: its saved config differs from the experiments file: "
            f"{'; '.join(changes[:4])}{' …' if len(changes) > 4 else ''}. Start fresh? The "
            "old run directory is kept in runs/.replaced/; Cancel keeps the saved config.")


def gpu_option_text(g: Any, need: int) -> tuple[Text, bool]:
    """The option's text and whether it can be picked (ours, and the run fits now)."""
    t = Text()
    # "NVIDIA " says nothing on a card list; the model name is what tells cards apart
    t.append(f"{g.label} {g.name.removeprefix('NVIDIA ')[:28]:<28} ", style="bold")
    if getattr(g, "cuda_index", None) is not None:  # torch's number for it in this shell
        t.append(f"cuda:{g.cuda_index}  ", style="dim")
    if not g.ours:
        t.append("not ours (outside CUDA_VISIBLE_DEVICES / the Slurm allocation)", style="dim")
        return t, False
    fits = g.memory_free >= need if need else True
    util = "?" if g.utilization is None else f"{g.utilization:3d}%"
    t.append(f"util {util}  mem {fmt_bytes(g.memory_used)}/{fmt_bytes(g.memory_total)}"
             f"  free {fmt_bytes(g.memory_free)}  ")
    t.append("fits" if fits else f"too full (needs {fmt_bytes(need)})",
             style="green" if fits else "red")
    return t, fits


class GpuPickerScreen(ModalScreen[str | None]):
    """Auto (least-loaded) preselected; each card with its live load and whether the run fits."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, feed: RunFeed, need_bytes: int, n_runs: int) -> None:
        super().__init__()
        self.feed = feed
        self.need = need_bytes
        self.n_runs = n_runs

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="gpu-picker"):
            yield Label(f"Where should {self.n_runs} run{'s' * (self.n_runs != 1)} go? "
                        f"(largest needs about {fmt_bytes(self.need)})", classes="question")
            yield OptionList(id="gpu-options")
            yield Label("Enter queues · Esc goes back", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#gpu-picker").border_title = "GPU"
        self._fill(self.feed.gpus)
        self.feed.gpus_signal.subscribe(self, self._fill)
        self.query_one(OptionList).focus()

    def _fill(self, gpus: list) -> None:
        ol = self.query_one(OptionList)
        keep = ol.highlighted_option.id if ol.highlighted_option else AUTO
        options = [Option(Text.assemble(("auto (least-loaded)", "bold"),
                                        "  the card with the most room when each run starts"),
                          id=AUTO)]
        for g in gpus:
            text, fits = gpu_option_text(g, self.need)
            options.append(Option(text, id=g.label, disabled=not fits))  # "0", MIG "0.1"
        options.append(Option(Text.assemble(("cpu", "bold"), "  slow; for tiny runs and tests"),
                              id="cpu"))
        ol.clear_options()
        ol.add_options(options)
        ids = [o.id for o in options]
        ol.highlighted = ids.index(keep) if keep in ids and not options[ids.index(keep)].disabled else 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
