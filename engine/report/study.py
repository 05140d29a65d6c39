"""The study-wide laws: runs whose losses compare (one tokenizer on one text) grouped, and
each group's law (engine.report.laws) over its configurations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.report.laws import FitRefused, LawFit, LawOptions, fit_law
from engine.report.laws.points import study_points
from engine.report.summary import RunSummary


@dataclass
class FitGroup:
    """One law: runs whose losses are in the same unit (same tokenizer and data)."""
    label: str                    # e.g. "char · val.txt"
    fit: LawFit | None
    note: str                     # why there is no fit ("" when there is one)
    points: list[RunSummary]      # the configurations fitted (or, without a fit, available)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "fit": self.fit.to_dict() if self.fit else None,
                "note": self.note, "points": [s.id for s in self.points]}


def data_label(s: RunSummary) -> str:
    """Loss per token only compares between runs with one tokenizer on one text."""
    if s.config is None:
        return "?"
    src = s.config.data_dir or s.config.dataset
    return f"{s.config.tokenizer} · {Path(src).name or src}"


def study_fits(study, opt: LawOptions = LawOptions()) -> list[FitGroup]:
    """One law per (tokenizer, data) group of the study's distinct models (seeds pooled,
    engine.report.course.Study), the group with the most finished models first."""
    reps = {s.id: s for s in study.representatives()}
    groups: dict[str, list] = {}
    for model in study.models:
        m = model.members[0]
        groups.setdefault(data_label(m.first), []).append(m)
    out = []
    for label, members in groups.items():
        sel = study_points(members, opt.convention, opt.fit_points)
        try:
            fit = fit_law(list(sel.points), sel.law, opt, sel.left_out, sel.warnings)
            note = ""
            ids = dict.fromkeys(p.group for p in fit.points)
        except FitRefused as e:
            out_ = "; ".join(f"{x.id}: {x.why}" for x in sel.left_out)
            fit, note = None, f"No fit: {e}." + (f" Left out: {out_}." if out_ else "")
            ids = dict.fromkeys(p.group for p in sel.points)
        pts = sorted((reps[i] for i in ids if i in reps), key=lambda s: (s.params or 0, s.id))
        out.append(FitGroup(label, fit, note, pts))
    return sorted(out, key=lambda g: (-len(g.points), g.label))
