"""The study-wide fit: runs whose losses compare (one tokenizer on one text) grouped, and
each group's power-law fit of best val loss against parameters over its frontier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.report.fit import FitRefused, PowerLawFit, fit_power_law
from engine.report.summary import RunSummary


@dataclass
class FitGroup:
    """One power-law fit: runs whose losses are in the same unit (same tokenizer and data)."""
    label: str                    # e.g. "char · val.txt"
    fit: PowerLawFit | None
    note: str                     # why there is no fit ("" when there is one)
    points: list[RunSummary]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "fit": self.fit.to_dict() if self.fit else None,
                "note": self.note, "points": [s.id for s in self.points]}


def data_label(s: RunSummary) -> str:
    """Loss per token only compares between runs with one tokenizer on one text."""
    if s.config is None:
        return "?"
    src = s.config.data_dir or s.config.dataset
    return f"{s.config.tokenizer} · {Path(src).name or src}"


def fit_points(study: list[RunSummary]) -> list[RunSummary]:
    """The best finished run at each parameter count: the frontier a scaling law describes.
    Runs that lose to a same-size run (more dropout, fewer iterations) would only add scatter."""
    best: dict[int, RunSummary] = {}
    for s in study:
        if s.finished and s.params:
            if s.params not in best or s.best_val < best[s.params].best_val:
                best[s.params] = s
    return [best[k] for k in sorted(best)]


def study_fits(study: list[RunSummary]) -> list[FitGroup]:
    """One fit per (tokenizer, data) group, the group with the most finished runs first."""
    groups: dict[str, list[RunSummary]] = {}
    for s in study:
        groups.setdefault(data_label(s), []).append(s)
    out = []
    for label, members in groups.items():
        pts = fit_points(members)
        try:
            fit, note = fit_power_law([s.params for s in pts], [s.best_val for s in pts]), ""
        except FitRefused as e:
            fit, note = None, f"No fit: {e}."
        out.append(FitGroup(label, fit, note, pts))
    return sorted(out, key=lambda g: (-len(g.points), g.label))
