"""The dashboard: runs table, loss chart, GPU panel, samples pane and log."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Input, Static

from engine.report.reading import RunReading
from engine.runs import RESUMABLE_STATES
from tui.feed import RunFeed
from tui.law_watch import LawWatch
from tui.screens.dialogs import ConfirmScreen
from tui.services import Services
from tui.store import PollResult
from tui.widgets.format import elide_middle, fit_title, fmt_loss
from tui.widgets.gpu_panel import GpuPanel
from tui.widgets.log_view import LogView
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_table import RunTable, damage_note
from tui.widgets.samples_view import SamplesView

def shown_path(p: Path) -> str:
    """A path as the header shows it: relative to the current directory when under it
    (the demo's nanotui-demo/experiments.toml), else its name alone."""
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return Path(p).name


CHART_MIN_INTERVAL = 2.0  # seconds between chart redraws while points stream in


class DashboardScreen(Screen):
    BINDINGS = [
        Binding("slash", "filter", "filter", key_display="/", show=False),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("s", "stop", "stop"),
        Binding("r", "resume", "resume"),
        Binding("d", "dispatch", "dispatch queued", show=False),
        Binding("v", "overlay", "sweep overlay", show=False),
        Binding("y", "logy", "log-y", show=False),
        # shown in the chart's subtitle, not the footer, which has no room left at 80 columns
        Binding("x", "x_axis", "x axis: iterations → tokens → time → FLOPs", show=False),
        Binding("b", "bpb", "y: nats/token ↔ bits/byte", show=False),
        Binding("o", "toggle_log", "samples/log", show=False),
    ]

    def __init__(self, feed: RunFeed, services: Services) -> None:
        super().__init__()
        self.feed = feed
        self.services = services
        self.selected: str | None = None
        self.sweep: str | None = None
        self.views: list[RunReading] = []
        self.dispatcher: int | None = None
        self._header_text = ""
        self._chart_drawn_at = 0.0
        self._chart_timer = None
        self.law = LawWatch()
        self._expect = None  # what the law expects of the selected run (engine.report.laws.live)

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Container(id="body"):
            with Vertical(id="runs-panel", classes="panel"):
                yield Input(placeholder="filter: words in run, state or device (Esc clears)",
                            id="filter")
                yield RunTable(id="runs")
            yield LossChart(self.feed.chart_options, id="chart", classes="panel")
            with ContentSwitcher(initial="samples", id="detail", classes="panel"):
                yield SamplesView(id="samples")
                yield LogView(id="log")
            yield GpuPanel(id="gpus", classes="panel")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#runs-panel").border_title = "Runs"
        self.query_one("#gpus").border_title = "GPUs"
        self._title_detail()
        self.feed.runs_signal.subscribe(self, self.on_runs)
        self.feed.gpus_signal.subscribe(self, self.on_gpus)
        self.query_one(RunTable).focus()
        if self.feed.last_poll is not None:
            self.on_runs(self.feed.last_poll)

    # -- data in --
    def on_runs(self, result: PollResult) -> None:
        self.views = list(result.views)
        self.dispatcher = result.dispatcher
        self.query_one(RunTable).show(self.views, self.law.verdicts(self.views))
        self._header()
        self._title_detail()
        self.on_gpus(None)
        wanted = self._chart_ids()
        chart = self.query_one(LossChart)
        if self.selected and (result.metrics_changed & set(wanted) or chart.run_id != self.selected):
            self._chart_changed()
        if self.selected in result.samples_changed:
            self._redraw_samples()
        if self.law.wanted(self.views, self.sweep):
            self.law.pending.add(self.sweep)
            self._fit_law(self.sweep, list(self.views))
        if result.log_id == self.selected and (result.log_text or result.log_reset):
            self.query_one(LogView).feed(self.selected, result.log_text, result.log_reset)

    def on_gpus(self, _gpus) -> None:
        self.query_one(GpuPanel).show(self.feed.gpus, self.views, self.feed.gpu_history,
                                      self.feed.share_line)

    def on_screen_resume(self) -> None:
        self._watch()
        if self.feed.last_poll is not None:
            self.on_runs(self.feed.last_poll)
        self._redraw_chart()  # compare may have changed the shared axis

    # -- selection --
    def on_run_table_run_highlighted(self, event: RunTable.RunHighlighted) -> None:
        if (event.run_id, event.sweep) == (self.selected, self.sweep):
            return
        self.selected, self.sweep = event.run_id, event.sweep
        self._watch()
        self._title_detail()
        self._redraw_chart()
        self._redraw_samples()
        self.query_one(LogView).feed(self.selected, "", True)

    def _chart_ids(self) -> list[str]:
        if not self.selected:
            return []
        if self.query_one(LossChart).options.overlay and self.sweep:
            return [v.id for v in self.views if v.sweep == self.sweep]
        return [self.selected]

    def _watch(self) -> None:
        self.feed.watch(self, self._chart_ids())
        self.feed.store.show_log(self.selected)
        self.feed.request_poll()

    def _chart_changed(self) -> None:
        """New points: redraw now if the chart is empty or was drawn a while ago, else
        once CHART_MIN_INTERVAL has passed (a plotext redraw is the costliest thing the
        dashboard does; live runs would otherwise trigger one every poll)."""
        chart = self.query_one(LossChart)
        wait = CHART_MIN_INTERVAL - (time.monotonic() - self._chart_drawn_at)
        if not chart.has_data or chart.run_id != self.selected or wait <= 0:
            self._redraw_chart()
        elif self._chart_timer is None:
            self._chart_timer = self.set_timer(wait, self._redraw_chart)

    def _redraw_chart(self) -> None:
        if self._chart_timer is not None:
            self._chart_timer.stop()
            self._chart_timer = None
        self._chart_drawn_at = time.monotonic()
        chart = self.query_one(LossChart)
        store = self.feed.store
        others = [(rid, s) for rid in self._chart_ids() if rid != self.selected
                  for s in [store.series(rid)] if s is not None]
        series = store.series(self.selected) if self.selected else None
        self._expect = self.law.expectation(self._view(self.selected), series)
        chart.plot_runs(self.selected, series, others, law=self._expect)
        self._title_detail()

    @work(thread=True, group="law", exit_on_error=False)
    def _fit_law(self, sweep: str, views: list) -> None:
        """Fit the sweep's law on its finished runs (reads run directories: a worker)."""
        try:
            result = LawWatch.fit(self.services.runs_root, sweep, views)
        except Exception:  # a law is a bonus: never take the dashboard down with it
            result = (None, -1, {})
        self.app.call_from_thread(self._law_ready, sweep, *result)

    def _law_ready(self, sweep, live, done, shapes) -> None:
        self.law.ready(sweep, live, done, shapes)
        self.query_one(RunTable).show(self.views, self.law.verdicts(self.views))
        if sweep == self.sweep:
            self._redraw_chart()

    def _redraw_samples(self) -> None:
        samples = self.feed.store.samples(self.selected) if self.selected else []
        self.query_one(SamplesView).show(self.selected, samples)

    def _header(self) -> None:
        own = [v for v in self.views if not v.run.path.is_symlink()]  # a shared run once
        shared = len(self.views) - len(own)
        running = sum(v.state == "running" for v in own)
        queued = sum(v.state == "queued" for v in own)
        have = self.feed.gpus
        gpus = f"{len(have)} GPU{'s' * (len(have) != 1)}" if have else "CPU only"
        t = Text()
        t.append(" nanotui ", style="bold reverse")
        t.append(f" {shown_path(self.services.experiments_path)} · "
                 f"{shown_path(self.services.runs_root)}/ · {gpus}"
                 f" · {len(own)} runs" + (f" (+{shared} shared)" if shared else "")
                 + f", {running} running, {queued} queued")
        stalled = sum(v.state == "stalled" for v in own)
        if stalled:
            t.append(f", {stalled} stalled", style="bold yellow")
        if queued and not self.dispatcher:
            t.append(" · waiting for a dispatcher: d starts one", style="bold yellow")
        if t.plain != self._header_text:  # an unchanged update would still repaint
            self._header_text = t.plain
            self.query_one("#title", Static).update(t)

    def _title_detail(self) -> None:
        chart = self.query_one(LossChart)
        view = self._view(self.selected)
        who = self.selected or "no run selected"
        if view and view.state == "running" and view.host and view.host != socket.gethostname():
            who += f" @ {view.host}"  # e.g. a Slurm node: where the run really is
        note = ((view.reason if view.state == "stalled"
                 or (view.state == "queued" and view.reason.startswith("waiting:"))
                 else damage_note(view)) if view else "")
        chart.show_empty_note(note)
        heading, desc, width = chart.heading(), note or chart.describe(), chart.size.width - 4
        if 0 < width < len(f"{who} · {heading} · {desc}") and desc == "linear y":
            desc = ""  # the default scale says least; a toggled one stays, "nats" goes short
        heading = (heading, heading.replace("nats/token", "nats"))
        # a stalled, waiting or damaged run's reason says more than the chart's heading;
        # one too long for any border stays whole (the border shows its start)
        title = fit_title(who, [note, heading] if note else [heading, desc], width)
        chart.border_title = title if not note or note in title else f"{who} · {note}"
        best = ""
        if view and view.best_val_loss is not None:  # the run's one reading, as compare shows it
            best = f"best {fmt_loss(view.best_val_loss)}"
            best += f" @ {view.best_iter} · " if view.best_iter is not None else " · "
        law = self._expect
        law_text = f"{law.text()} · " if law is not None and view and view.id == self.selected else ""
        chart.border_subtitle = f"{law_text}{best}v sweep · y log · x axis · b bpb"
        detail = self.query_one(ContentSwitcher)
        kind = "Log" if detail.current == "log" else "Samples"
        keys = "  (o: samples/log)"
        room = detail.size.width - 4 - len(f"{kind} · {keys}") if detail.size.width else 0
        run = self.selected or "—"
        detail.border_title = f"{kind} · {elide_middle(run, room) if room > 0 else run}{keys}"

    def on_resize(self) -> None:
        self.call_after_refresh(self._title_detail)  # the titles fit the new widths

    def _view(self, run_id: str | None) -> RunReading | None:
        return next((v for v in self.views if v.id == run_id), None)

    # -- actions --
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.query_one(RunTable).set_filter("")
        self.query_one(RunTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.query_one(RunTable).set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            if not event.value:
                event.input.remove_class("shown")
            self.query_one(RunTable).focus()

    def action_overlay(self) -> None:
        chart = self.query_one(LossChart)
        chart.options.overlay = not chart.options.overlay
        self._watch()
        self._redraw_chart()

    def action_logy(self) -> None:
        chart = self.query_one(LossChart)
        chart.options.logy = not chart.options.logy
        self._redraw_chart()

    def action_x_axis(self) -> None:
        """iterations -> tokens -> training time -> training FLOPs -> iterations"""
        self.query_one(LossChart).options.next_x()
        self._redraw_chart()

    def action_bpb(self) -> None:
        chart = self.query_one(LossChart)
        chart.options.bpb = not chart.options.bpb
        self._redraw_chart()
        if chart.options.bpb and chart.bpb_note:
            self.notify(chart.bpb_note, severity="warning")

    def action_toggle_log(self) -> None:
        detail = self.query_one(ContentSwitcher)
        detail.current = "log" if detail.current == "samples" else "samples"
        self._title_detail()

    def action_stop(self) -> None:
        view = self._view(self.selected)
        if view is None or view.state not in ("running", "stalled", "queued"):
            self.notify("select a running or queued run to stop", severity="warning")
            return
        what = "It can be resumed from its last checkpoint." if view.state != "queued" else \
            "It will not be dispatched."
        self.app.push_screen(ConfirmScreen(f"Stop {view.id}? {what}", "Stop"),
                             lambda yes: yes and self._stop(view))

    def action_dispatch(self) -> None:
        """A dispatcher for exactly the queued runs (a killed one left them waiting)."""
        queued = sum(v.state == "queued" for v in self.views)
        if not queued:
            self.notify("no queued runs to dispatch", severity="warning")
        elif self.dispatcher:
            self.notify(f"a dispatcher (pid {self.dispatcher}) is already running")
        else:
            self._start_dispatcher(queued)

    @work(thread=True, group="dispatch", exit_on_error=False)
    def _start_dispatcher(self, queued: int) -> None:
        try:
            self.services.launcher.start_dispatcher("auto")
        except Exception as e:  # shown, never a crash
            self.app.call_from_thread(self.notify, f"cannot start a dispatcher: {e}",
                                      severity="error")
            return
        self.app.call_from_thread(self.notify, f"dispatching {queued} queued run"
                                  f"{'s' * (queued != 1)} in the background")
        self.app.call_from_thread(self.feed.request_poll)

    def action_resume(self) -> None:
        view = self._view(self.selected)
        if view is not None and view.state == "done":
            self._offer_extend(view)
            return
        if view is None or view.state not in RESUMABLE_STATES:
            self.notify("select a failed, stopped or done run to resume", severity="warning")
            return
        self._resume(view)

    @work(thread=True, group="resume", exit_on_error=False)
    def _offer_extend(self, view: RunReading) -> None:
        """A done run trains on when the experiments file now gives it more iterations
        (engine.train.extension says what the learning rate does)."""
        try:
            now, target = self.services.launcher.extend_target(view.run)
        except Exception as e:  # a broken experiments file: shown, never a crash
            self.app.call_from_thread(self.notify, f"extend {view.id}: {e}", severity="error")
            return
        if target is None or target <= now:
            self.app.call_from_thread(
                self.notify, f"{view.id} is done at max_iters {now}: raise its max_iters in "
                f"the experiments file to extend it", severity="warning")
            return
        question = (f"Extend {view.id} from {now} to {target} iterations? It continues from "
                    f"its checkpoint; the learning rate re-decays from where it ended to min_lr.")
        self.app.call_from_thread(self.app.push_screen, ConfirmScreen(question, "Extend"),
                                  lambda yes: yes and self._extend(view, target))

    @work(thread=True, group="resume", exit_on_error=False)
    def _extend(self, view: RunReading, max_iters: int) -> None:
        try:
            what = self.services.launcher.extend(view.run, max_iters)
        except Exception as e:  # shown to the user; the run directory is left as it was
            self.app.call_from_thread(self.notify, f"extend {view.id}: {e}", severity="error")
            return
        self.app.call_from_thread(self.notify, f"{view.id}: queued, {what}")
        self.app.call_from_thread(self.feed.request_poll)

    @work(thread=True, group="stop")
    def _stop(self, view: RunReading) -> None:
        self._engine_call("stop", view)

    @work(thread=True, group="resume")
    def _resume(self, view: RunReading) -> None:
        self._engine_call("resume", view)

    def _engine_call(self, verb: str, view: RunReading) -> None:
        launcher = self.services.launcher
        try:
            getattr(launcher, verb)(view.run)
        except Exception as e:  # shown to the user; the run directory is left as it was
            self.app.call_from_thread(self.notify, f"{verb} {view.id}: {e}", severity="error")
            return
        past = {"stop": "stopped", "resume": "resumed"}[verb]
        self.app.call_from_thread(self.notify, f"{past} {view.id}")
        self.app.call_from_thread(self.feed.request_poll)
