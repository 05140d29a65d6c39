"""Writing the course report over several sweeps: report.md, report.html (figures
embedded), brief.md + brief.html (the 2-4 page hand-in, engine.report.brief), runs.csv (one row per run of every sweep, shared runs once per sweep) and the
PNGs, into one folder of its own (engine.report.write.course_dir)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.files import atomic_write_bytes
from engine.report.brief import brief_figures, brief_markdown
from engine.report.course import build_study
from engine.report.course_md import course_markdown
from engine.report.html import markdown_to_html
from engine.report.laws import LawOptions
from engine.report.study import FitGroup, study_fits
from engine.report.summary import RunSummary
from engine.report.decoding import common_decoding
from engine.report import text_evals
from engine.report.tables import csv_head, csv_row
from engine.runs import RunError


@dataclass
class CourseReport:
    dir: Path
    report_md: Path
    report_html: Path
    brief_html: Path
    runs_csv: Path
    plots: list[Path]
    n_models: int
    fits: list[FitGroup]

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "report_md": str(self.report_md),
                "report_html": str(self.report_html), "brief_html": str(self.brief_html),
                "runs_csv": str(self.runs_csv),
                "plots": [str(p) for p in self.plots], "n_models": self.n_models}


def write_course(per_sweep: dict[str, list[RunSummary]], runs_root: Path, d: Path,
                 plots: bool, say: Callable[[str], None],
                 laws: LawOptions = LawOptions()) -> CourseReport:
    study = build_study(per_sweep)
    reps = study.representatives()
    fits = study_fits(study, laws)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot write the report to {d}: {e.strerror or e}") from None
    figures: dict[str, list[Path]] = {}
    cross: list[Path] = []
    if plots:
        from engine.report import figures as fg
        from engine.report import plots as rp  # matplotlib only when a report is written
        from engine.report.compute_plots import compute_figures
        for name, members in study.sweeps.items():
            say(f"plotting the course report: {name}")
            key = (study.varied.get(name) or [None])[0]
            decoding = common_decoding([s for m in members for s in m.finished])
            figures[name] = [p for p in (
                fg.training_curves(members, key, f"Training curves · {name}",
                                   d / f"{name}_training.png"),
                fg.versus(members, key, decoding, f"{name}: best val loss and diversity",
                          d / f"{name}_vs_{fg.x_name(members, key)}.png")) if p is not None]
        # every run of each distinct model once (a shared model under its first sweep),
        # so the figure shows the seeds' spread around the means the fit uses
        runs = [s for model in study.models for s in model.members[0].runs]
        p = rp.loss_vs_params(runs, fits, None, d / "val_loss_vs_params_all.png")
        cross = [p] if p is not None else []
        every = list({s.run.path.resolve(): s for m in study.members() for s in m.runs}.values())
        cross += compute_figures(every, "every run", d)
    md = course_markdown(study, fits, figures, cross, runs_root, laws)
    title = "Course report: " + ", ".join(study.sweeps)
    brief = brief_markdown(study, brief_figures(study, figures, cross), runs_root)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    texts = text_evals.columns(s.text_evals for m in study.members() for s in m.runs)
    w.writerow(csv_head(texts))
    fitted = {s.id for g in fits if g.fit is not None for s in g.points}
    for m in study.members():
        decoding = common_decoding(m.runs)
        first = m.model.members[0] if m.model else m  # whose name the fit point carries
        in_fit = f"{first.sweep}/{first.label}" in fitted
        for s in m.runs:
            w.writerow(csv_row(s, decoding, None, in_fit and s.finished, texts))
    try:
        atomic_write_bytes(d / "report.md", md.encode())
        atomic_write_bytes(d / "report.html", markdown_to_html(md, title, d).encode())
        atomic_write_bytes(d / "brief.md", brief.encode())
        atomic_write_bytes(d / "brief.html", markdown_to_html(brief, title, d, brief=True).encode())
        atomic_write_bytes(d / "runs.csv", buf.getvalue().encode())
    except OSError as e:
        raise RunError(f"cannot write the report to {d}: {e.strerror or e}") from None
    return CourseReport(d, d / "report.md", d / "report.html", d / "brief.html", d / "runs.csv",
                        [p for ps in figures.values() for p in ps] + cross,
                        len(study.models), fits)
