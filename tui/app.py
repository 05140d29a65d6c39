"""The nanotui Textual app.

`create_app` injects the engine objects (tests pass fakes); `run(args)` is what
`nanotui` (no subcommand) and `nanotui demo` call. The app owns two app-lifetime polls,
each a thread worker started by a timer: run directories (1 s) and GPUs (2 s). Workers
post messages; the app keeps the latest result and publishes it on a signal that the
screens subscribe to. Quitting never touches runs: they are separate processes and the
disk is the truth, so starting again shows every run as it is.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.screen import Screen

from tui.commands import CommandError
from tui.feed import RunFeed
from tui.keys import APP_BINDINGS, key_sections
from tui.messages import GpusPolled, RunsPolled
from tui.screens.compare import CompareScreen
from tui.screens.course import CourseSweepsScreen, TemperatureStudyScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.dialogs import QuitScreen
from tui.screens.help import HelpScreen
from tui.screens.launch import LaunchScreen
from tui.screens.samples import SamplesScreen
from tui.services import Services
from tui.store import RunStore


class NanotuiApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "nanotui"
    BINDINGS = APP_BINDINGS
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide"), (170, "-xwide")]

    def __init__(self, services: Services, poll_interval: float = 1.0,
                 gpu_interval: float = 2.0) -> None:
        super().__init__()
        self.services = services
        self.store = RunStore(services.runs_root)
        self.poll_interval = poll_interval
        self.gpu_interval = gpu_interval
        self.feed = RunFeed(self, self.store, self.request_poll)
        self._polling = False
        self._poll_again = False
        self._gpu_polling = False
        self.exit_choice: str | None = None
        self._dashboard_shown = False

    # -- lifetime --
    def on_mount(self) -> None:
        # The dashboard is shown once the first poll is in (or after 0.5 s on a slow
        # disk), so the first paint is the full table rather than an empty one first.
        self.request_poll()
        self.set_timer(0.5, self._show_dashboard)
        self._poll_gpus()
        if self.poll_interval:
            self.set_interval(self.poll_interval, self.request_poll, name="runs-poll")
        if self.gpu_interval:
            self.set_interval(self.gpu_interval, self._poll_gpus, name="gpu-poll")
        if not self.is_headless and _is_tty(0):
            self.set_interval(1.0, self._exit_if_terminal_lost, name="hangup-watch")
        if not self.is_headless:
            # Killed by default, the process would leave the terminal in the alternate
            # screen with mouse tracking on and the cursor hidden: exit the app instead,
            # which restores all three (`kill`, a closed ssh session, a scheduler's end).
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                try:
                    loop.add_signal_handler(sig, self.exit)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass  # not the main thread, or no such signal here

    def _exit_if_terminal_lost(self) -> None:
        """Quit when the terminal hung up (tmux pane killed, ssh dropped). The kernel sends
        SIGHUP to the session leader only: under a wrapper (`make demo`, a shell script)
        nanotui never gets it, and Textual's input thread, reading end-of-file from the
        hung-up tty, then spins a core for ever. The runs are separate processes: they go on."""
        if not _is_tty(0):
            self.exit()

    # -- the runs poll --
    def request_poll(self) -> None:
        if self._polling:
            self._poll_again = True  # one more right after the current one
            return
        self._polling = True
        self._poll_runs()

    @work(thread=True, group="runs-poll", exit_on_error=False)
    def _poll_runs(self) -> None:
        try:
            result = self.store.poll()
        except Exception as e:  # a broken file must not kill the app; say it once per poll
            self.call_from_thread(self.notify, f"reading runs: {e}", severity="error")
            self.call_from_thread(self._poll_done)
            return
        self.post_message(RunsPolled(result))

    def _show_dashboard(self) -> None:
        if not self._dashboard_shown:
            self._dashboard_shown = True
            self.push_screen(DashboardScreen(self.feed, self.services))

    def on_runs_polled(self, message: RunsPolled) -> None:
        self.feed.publish_runs(message.result)
        self._show_dashboard()
        self._poll_done()

    def _poll_done(self) -> None:
        self._polling = False
        if self._poll_again:
            self._poll_again = False
            self.request_poll()

    # -- the GPU poll --
    def _poll_gpus(self) -> None:
        if not self._gpu_polling:
            self._gpu_polling = True
            self._gpu_worker()

    @work(thread=True, group="gpu-poll", exit_on_error=False)
    def _gpu_worker(self) -> None:
        try:
            gpus = list(self.services.gpu_source.snapshot())
        except Exception:  # the contract says never raises; be safe anyway
            gpus = []
        from engine.launch.share_view import panel_line
        self.post_message(GpusPolled(gpus, panel_line(gpus)))

    def on_gpus_polled(self, message: GpusPolled) -> None:
        self._gpu_polling = False
        self.feed.publish_gpus(message.gpus, message.share)

    # -- what the current screen is about --
    def current_sweep(self) -> str | None:
        sweep = getattr(self.screen, "sweep", None)
        if sweep:
            return sweep
        views = self.feed.views
        return views[0].sweep if views else None

    # -- actions --
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(key_sections()))

    def action_launch(self) -> None:
        if not isinstance(self.screen, LaunchScreen):
            self.push_screen(LaunchScreen(self.feed, self.services, preselect=self.current_sweep()))

    def action_compare(self) -> None:
        sweep = self.current_sweep()
        if sweep is None:
            self.notify("no runs yet: launch a sweep with l", severity="warning")
        elif not isinstance(self.screen, CompareScreen):
            self.push_screen(CompareScreen(self.feed, sweep))

    def action_samples(self) -> None:
        sweep = self.current_sweep()
        if sweep is None:
            self.notify("no runs yet: launch a sweep with l", severity="warning")
        elif not isinstance(self.screen, SamplesScreen):
            self.push_screen(SamplesScreen(self.feed, self.services, sweep))

    def action_report(self) -> None:
        sweep = self.current_sweep()
        if sweep is None:
            self.notify("no runs yet: nothing to report", severity="warning")
            return
        if self.services.reporter is None:
            self.notify("reports are not available in this installation", severity="error")
            return
        self.notify(f"writing the report for {sweep}…")
        self._write_report(sweep)

    @work(thread=True, group="report", exit_on_error=False)
    def _write_report(self, sweep: str) -> None:
        out_dir = self.services.runs_root.parent / "reports"  # the report adds <sweep>/
        try:
            path = self.services.reporter.write([sweep], out_dir)
        except Exception as e:
            self.call_from_thread(self.notify, f"report: {e}", severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, f"report written: {path}", timeout=10)

    def action_course_report(self) -> None:
        sweeps = self.feed.sweeps()
        if not sweeps:
            self.notify("no runs yet: nothing to report", severity="warning")
        elif self.services.reporter is None:
            self.notify("reports are not available in this installation", severity="error")
        else:
            self.push_screen(CourseSweepsScreen(sweeps),
                             lambda chosen: chosen and self._write_course(chosen))

    @work(thread=True, group="report", exit_on_error=False)
    def _write_course(self, sweeps: list[str]) -> None:
        out_dir = self.services.runs_root.parent / "reports"
        self.call_from_thread(self.notify, f"writing the course report over {' + '.join(sweeps)}…")
        try:
            files = self.services.reporter.write_course(sweeps, out_dir)
        except Exception as e:
            self.call_from_thread(self.notify, f"course report: {e}", severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, "course report written: "
                              + ", ".join(str(f) for f in files), timeout=15)

    def action_temperature_study(self) -> None:
        sweep = self.current_sweep()
        runs = [v.run for v in self.feed.views
                if v.sweep == sweep and v.state == "done" and v.run.ckpt_path.is_file()]
        if not runs:
            self.notify(f"no finished run with a checkpoint in {sweep or 'any sweep'} to study",
                        severity="warning")
            return
        self.push_screen(TemperatureStudyScreen(sweep, len(runs)),
                         lambda temps: temps and self._temperature_study(sweep, runs, temps))

    @work(thread=True, group="study", exit_on_error=False)
    def _temperature_study(self, sweep: str, runs: list, temperatures: list[float]) -> None:
        for i, run in enumerate(runs, 1):  # progress: one toast per run
            self.call_from_thread(self.notify, f"temperature study {i}/{len(runs)}: {run.id} "
                                  f"at {', '.join(f'{t:g}' for t in temperatures)}…", timeout=5)
            try:
                self.services.sampler.temperature_study(run, temperatures)
            except Exception as e:
                self.call_from_thread(self.notify, f"temperature study: {run.id}: {e}",
                                      severity="error", timeout=10)
                return
        files = ", ".join(str(r.temperature_path) for r in runs)
        self.call_from_thread(self.notify, f"temperature study of {sweep} saved: {files} "
                              f"(e writes the report with it)", timeout=15)

    async def action_quit(self) -> None:
        queued = self.feed.queued_count()
        if not queued:
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice == "keep":
                try:
                    self.services.launcher.start_dispatcher("auto")
                except Exception as e:
                    self.notify(f"could not start the dispatcher: {e}", severity="error")
                    return
            if choice in ("keep", "leave"):
                self.exit_choice = choice
                self.exit()

        self.push_screen(QuitScreen(queued, self.feed.dispatcher), chosen)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Launch", "Choose sweeps or runs, a GPU, and queue them (l)",
                            self.action_launch)
        yield SystemCommand("Compare sweep", "A sweep's runs side by side; val loss vs params (c)",
                            self.action_compare)
        yield SystemCommand("Samples", "One prompt across a sweep's runs; generate new ones (p)",
                            self.action_samples)
        yield SystemCommand("Report", "Write the report material for the current sweep (e)",
                            self.action_report)
        yield SystemCommand("Course report", "A course report over the sweeps you pick (E)",
                            self.action_course_report)
        yield SystemCommand("Temperature study", "Sample the current sweep's finished runs "
                            "at several temperatures (T)", self.action_temperature_study)
        yield SystemCommand("Keys", "Every key nanotui answers to (?)", self.action_help)
        for verb, key, what in (("stop", "s", "Stop the selected run"),
                                ("resume", "r", "Resume the selected run"),
                                ("overlay", "v", "Overlay the sweep on the loss chart"),
                                ("logy", "y", "Toggle a logarithmic loss axis"),
                                ("x_axis", "x", "x-axis: iterations or tokens seen"),
                                ("toggle_log", "o", "Show stdout.log or samples")):
            action = getattr(screen, f"action_{verb}", None)
            if action is not None:
                yield SystemCommand(what, f"key {key}", action)


def create_app(runs_root: Path | None = None, experiments_path: Path | None = None, *,
               services: Services | None = None, gpu_source: Any = None, launcher: Any = None,
               sampler: Any = None, reporter: Any = None, poll_interval: float = 1.0,
               gpu_interval: float = 2.0) -> NanotuiApp:
    """The app wired to the engine; any part can be replaced (tests pass fakes)."""
    if services is None:
        if runs_root is None or experiments_path is None:
            raise ValueError("create_app needs services or runs_root and experiments_path")
        services = Services.default(Path(runs_root), Path(experiments_path))
    for name, value in (("gpu_source", gpu_source), ("launcher", launcher),
                        ("sampler", sampler), ("reporter", reporter)):
        if value is not None:
            setattr(services, name, value)
    return NanotuiApp(services, poll_interval=poll_interval, gpu_interval=gpu_interval)


def run(args) -> int:
    """`nanotui` with no subcommand: the TUI on args.experiments and args.runs."""
    experiments = Path(args.experiments)
    runs_root = Path(args.runs)
    if not experiments.is_file() and not runs_root.is_dir():
        raise CommandError(f"no experiments file at {experiments} and no runs at {runs_root} "
                           "(use --experiments FILE or run from the project directory)")
    app = create_app(runs_root, experiments)
    app.run()
    return 0


def _is_tty(fd: int) -> bool:
    """Whether `fd` is still a terminal: False once its terminal has hung up."""
    try:
        return os.isatty(fd)
    except OSError:
        return False
