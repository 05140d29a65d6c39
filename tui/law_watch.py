"""The scaling law of the selected sweep while it trains (engine.report.laws.live): which
sweep needs a (re)fit, and what the law expects of the selected running run.

The fit reads run directories, so the dashboard runs `fit` in a thread worker and hands
the result back with `ready`; `expectation` is cheap (numpy on the stored fit) and runs
on the UI thread at each chart redraw."""

from __future__ import annotations

from pathlib import Path

from engine.report.laws.live import Expectation, LiveLaw, expect, fit_sweep


class LawWatch:
    def __init__(self) -> None:
        self.laws: dict[str, LiveLaw | None] = {}
        self._done: dict[str, int] = {}            # finished runs each fit saw
        self._shape: dict[str, tuple[int, int]] = {}  # run id -> (max_iters, tokens/iter)
        self.pending: set[str] = set()

    def wanted(self, views, sweep: str | None) -> bool:
        """Whether `sweep` needs a fit now: a running run and 3+ finished runs, and the
        number of finished runs changed since the last fit."""
        if not sweep or sweep in self.pending:
            return False
        mine = [v for v in views if v.sweep == sweep]
        done = sum(v.finished for v in mine)
        running = any(v.state == "running" for v in mine)
        return running and done >= 3 and self._done.get(sweep) != done

    @staticmethod
    def fit(runs_root: Path, sweep: str, views) -> tuple[LiveLaw | None, int, dict]:
        """Worker thread: the law, the finished count, each running run's horizon."""
        shapes = {}
        for v in views:
            if v.sweep == sweep and v.state == "running":
                try:
                    c = v.run.load_config()
                    shapes[v.id] = (c.max_iters, c.tokens_per_iter)
                except Exception:  # a damaged config: that run just gets no band
                    continue
        done = sum(v.finished for v in views if v.sweep == sweep)
        return fit_sweep(runs_root, sweep), done, shapes

    def ready(self, sweep: str, live: LiveLaw | None, done: int, shapes: dict) -> None:
        self.pending.discard(sweep)
        self.laws[sweep] = live
        self._done[sweep] = done
        self._shape.update(shapes)

    def verdicts(self, views) -> dict[str, str]:
        """Run id -> "on track" / "above the law's band" for running runs the law speaks
        of, from each run's latest eval as status.json records it (every run, watched or
        not); what the run table shows beside the run's name."""
        out = {}
        for v in views:
            live = self.laws.get(v.sweep)
            if live is None or v.state != "running" or v.id not in self._shape:
                continue
            max_iters, tpi = self._shape[v.id]
            e = expect(live, v.params, max_iters, tpi,
                       None if v.iter is None else v.iter * tpi, v.val_loss)
            if e is not None and e.verdict in ("on track", "above the law's band"):
                out[v.id] = e.verdict
        return out

    def expectation(self, view, series) -> Expectation | None:
        live = self.laws.get(view.sweep) if view is not None else None
        if live is None or view.state != "running" or view.id not in self._shape:
            return None
        max_iters, tpi = self._shape[view.id]
        tokens = series.eval_tokens[-1] if series is not None and series.eval_tokens else None
        val = series.eval_val[-1] if series is not None and series.eval_val else None
        return expect(live, view.params, max_iters, tpi, tokens, val)
