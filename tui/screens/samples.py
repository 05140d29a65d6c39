"""One prompt across every run of a sweep, side by side, at the latest or a chosen
iteration; a new sample from a run's checkpoint without leaving the app."""

from __future__ import annotations

import random
import re
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalScroll, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.report.tables import natural_key
from tui.screens.dialogs import GenerateScreen
from tui.feed import RunFeed
from tui.services import Services
from tui.store import PollResult
from tui.widgets.samples_view import render_sample


MIN_COLUMN = 30   # narrower columns wrap a sample into too many short lines


def run_seed(run_id: str) -> str:
    """The seed a run's name carries ("n_layer=8,seed=1338" -> "1338"); "" for the first
    seed, whose run keeps the plain name (engine.experiments)."""
    m = re.search(r"(?:^|,)seed=(\d+)$", run_id.rsplit("/", 1)[-1])
    return m.group(1) if m else ""


def column_width(total: int, n: int) -> int:
    """Columns share the width (4 runs at 140 columns: 35 each); below MIN_COLUMN each
    keeps MIN_COLUMN and the row scrolls sideways. Never one run per screen."""
    return max(MIN_COLUMN, total // max(n, 1))


class RunColumn(VerticalScroll):
    """One run's sample; focusable so keys act on it (generate)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(classes="sample-column")
        self.run_id = run_id
        self.border_title = run_id.split("/", 1)[-1]
        self.text = Text()

    def compose(self) -> ComposeResult:
        yield Static(self.text, classes="sample-text")

    def show(self, text: Text) -> None:
        # Mounting is asynchronous: before the Static exists, compose picks the text up.
        self.text = text
        for static in self.query(Static):
            static.update(text)


class SamplesScreen(Screen):
    BINDINGS = [
        Binding("t", "next_prompt", "next prompt"),
        Binding("left_square_bracket", "older", "older iter", key_display="["),
        Binding("right_square_bracket", "newer", "newer iter", key_display="]"),
        Binding("n", "generate", "new sample"),
        Binding("s", "next_seed", "next seed", show=False),
        Binding("left", "app.focus_previous", "prev run", show=False),
        Binding("right", "app.focus_next", "next run", show=False),
        Binding("escape", "app.pop_screen", "back"),
    ]

    def __init__(self, feed: RunFeed, services: Services, sweep: str) -> None:
        super().__init__()
        self.feed = feed
        self.services = services
        self.sweep = sweep
        self.run_ids: list[str] = []
        self.prompt_index = 0
        self.iteration: int | None = None  # None: the latest
        self.generated: dict[str, dict[str, Any]] = {}  # run id -> a sample made here
        self.generating: set[str] = set()
        # a sweep with seeds shows one seed at a time (4 sizes, not 8 narrow columns);
        # s cycles through the seeds, then all of them
        self.seed_index = 0
        self.all_ids: list[str] = []   # the sweep's runs, every seed

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield HorizontalScroll(id="sample-columns")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.feed.runs_signal.subscribe(self, self.on_runs)
        if self.feed.last_poll is not None:
            self.on_runs(self.feed.last_poll)
        self.feed.request_poll()

    def on_unmount(self) -> None:
        self.feed.unwatch(self)

    def seeds(self, ids: list[str]) -> list[str]:
        """The seeds of the sweep's runs by name ("" for the first seed's plain names)."""
        return sorted({run_seed(rid) for rid in ids}, key=lambda s: (s != "", natural_key(s)))

    def shown(self, ids: list[str]) -> list[str]:
        seeds = self.seeds(ids)
        if len(seeds) < 2 or self.seed_index % (len(seeds) + 1) == len(seeds):
            return ids   # one seed, or "all" chosen
        seed = seeds[self.seed_index % (len(seeds) + 1)]
        return [rid for rid in ids if run_seed(rid) == seed]

    def action_next_seed(self) -> None:
        self.seed_index += 1
        if self.feed.last_poll is not None:
            self.on_runs(self.feed.last_poll)

    def on_runs(self, result: PollResult) -> None:
        self.all_ids = sorted((v.id for v in result.views if v.sweep == self.sweep),
                              key=natural_key)
        ids = self.shown(self.all_ids)
        if ids != self.run_ids:
            self.run_ids = ids
            self.feed.watch(self, ids)
            box = self.query_one("#sample-columns")
            box.remove_children()
            box.mount_all([RunColumn(rid) for rid in ids])
            self._size_columns()
            self.call_after_refresh(self._focus_first)
            self.feed.request_poll()
        self.redraw()

    def on_resize(self) -> None:
        self._size_columns()

    def _size_columns(self) -> None:
        cols = list(self.query(RunColumn))
        width = column_width(self.size.width, len(cols))
        for col in cols:
            col.styles.width = width

    def _focus_first(self) -> None:
        cols = list(self.query(RunColumn))
        if cols and not any(c.has_focus for c in cols):
            cols[0].focus()

    # -- what is shown --
    def prompts(self) -> list[str]:
        seen: dict[str, None] = {}
        for rid in self.run_ids:
            for s in self.feed.store.samples(rid):
                seen.setdefault(str(s.get("prompt", "")), None)
        return list(seen)

    def iterations(self) -> list[int]:
        its = {s.get("iter") for rid in self.run_ids for s in self.feed.store.samples(rid)}
        return sorted(i for i in its if isinstance(i, int))

    def prompt(self) -> str | None:
        ps = self.prompts()
        return ps[self.prompt_index % len(ps)] if ps else None

    def sample_for(self, rid: str, prompt: str | None) -> dict[str, Any] | None:
        best = None
        for s in self.feed.store.samples(rid):
            it = s.get("iter") or 0
            if s.get("prompt") != prompt or (self.iteration is not None and it > self.iteration):
                continue
            if best is None or (best.get("iter") or 0) <= it:
                best = s
        return best

    def redraw(self) -> None:
        prompt = self.prompt()
        n = len(self.prompts())
        at = "latest" if self.iteration is None else f"≤ {self.iteration}"
        seeds = self.seeds(self.all_ids)
        if len(seeds) > 1:
            i = self.seed_index % (len(seeds) + 1)
            which = "all seeds" if i == len(seeds) else (
                f"seed {seeds[i]}" if seeds[i] else "first seed")
            shown = f" · {which} (s: next)"
        else:
            shown = ""
        self.query_one("#title", Static).update(Text.assemble(
            (" Samples ", "bold reverse"), f" {self.sweep}{shown} · iteration {at} · prompt ",
            (f"{self.prompt_index % n + 1}/{n} " if n else "—", ""),
            (repr(prompt) if prompt is not None else "(no samples yet)", "bold")))
        for col in self.query(RunColumn):
            text = Text()
            if col.run_id in self.generating:
                text.append("generating…\n\n", style="bold yellow")
            gen = self.generated.get(col.run_id)
            if gen is not None:
                seed = f" · seed {gen['seed']}" if gen.get("seed") is not None else ""
                text.append(f"new sample (not saved){seed}\n", style="bold magenta")
                text.append_text(render_sample(gen))
                text.append("\n")
            s = self.sample_for(col.run_id, prompt)
            if s is None:
                text.append("no sample for this prompt yet", style="dim")
            else:
                text.append_text(render_sample(s, with_prompt=True))
            col.show(text)

    # -- keys --
    def action_next_prompt(self) -> None:
        self.prompt_index += 1
        self.redraw()

    def action_older(self) -> None:
        its = self.iterations()
        if not its:
            return
        current = its[-1] if self.iteration is None else self.iteration
        older = [i for i in its if i < current]
        self.iteration = older[-1] if older else its[0]
        self.redraw()

    def action_newer(self) -> None:
        its = self.iterations()
        if self.iteration is None or not its:
            return
        newer = [i for i in its if i > self.iteration]
        self.iteration = None if not newer or newer[0] == its[-1] else newer[0]
        self.redraw()

    def focused_run(self) -> str | None:
        for col in self.query(RunColumn):
            if col.has_focus or col.has_focus_within:
                return col.run_id
        return self.run_ids[0] if self.run_ids else None

    def action_generate(self) -> None:
        rid = self.focused_run()
        if rid is None:
            return
        if self.services.sampler is None:
            self.notify("sampling is not available in this installation", severity="error")
            return
        self.app.push_screen(GenerateScreen(rid, self.prompt() or ""),
                             lambda knobs: knobs and self._start(rid, knobs))

    def _start(self, rid: str, knobs: dict[str, Any]) -> None:
        # a new seed each time: the run's own seed would redraw exactly the stored sample
        knobs = {**knobs, "seed": knobs.get("seed") or random.randrange(1, 2 ** 31)}
        self.generating.add(rid)
        self.redraw()
        self._generate(rid, knobs)

    @work(thread=True, group="generate", exit_on_error=False)
    def _generate(self, rid: str, knobs: dict[str, Any]) -> None:
        view = self.feed.view(rid)
        try:
            rec = self.services.sampler.generate(view.run, knobs["prompt"], knobs["temperature"],
                                                 knobs["top_k"], knobs["max_new_tokens"],
                                                 seed=knobs["seed"])
        except Exception as e:
            self.app.call_from_thread(self._generated, rid, None, str(e))
            return
        self.app.call_from_thread(self._generated, rid, rec, "")

    def _generated(self, rid: str, rec: dict[str, Any] | None, error: str) -> None:
        self.generating.discard(rid)
        if rec is None:
            self.notify(f"sample from {rid}: {error}", severity="error", timeout=10)
        else:
            self.generated[rid] = rec
        if self.is_mounted:
            self.redraw()
