"""Report material for sweeps: report.md, runs.csv and PNG plots, one folder per sweep,
and for several sweeps one course report over all of them.

    write_report(runs_root, ["depth"], out_dir) -> ReportResult
    out_dir/<sweep>/report.md, brief.md + brief.html (the hand-in, engine.report.brief),
                    runs.csv, training_curves.png (per-step, late zoom),
                    vs_params.png or vs_<key>.png (loss and diversity; the varied key
                    when the size does not change), loss_vs_tokens.png (eval points
                    against tokens), val_loss_vs_params.png and diversity_vs_params.png
                    (when sizes differ)
    out_dir/_course/<sweep+sweep+...>/report.md, report.html, runs.csv, PNGs
                    (only when several sweeps are named; engine.report.course_md)

A sweep's own report depends on that sweep's runs only (its fit is over the sweep), so a
one-sweep and a many-sweep call write the same bytes there apart from the date; the fit
across the sweeps lives in the course report, in a folder of its own (one level below `_course/`, so
even a sweep named `_course` never shares a file with it).
Numbers come from engine.report.summary (seeds pooled by engine.report.course), the laws
from engine.report.laws via engine.report.study (their Markdown from engine.report.fit_md), the Markdown from
engine.report.markdown, the figures from engine.report.plots and .figures; this module
checks the request and writes the files.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.config import TRAIN_KEYS, did_you_mean
from engine.report.brief import brief_figures, brief_markdown
from engine.report.course import Study, build_study, label_of
from engine.report.fit_md import fit_section
from engine.report.isoflop_report import (IsoStudy, isoflop_figures, isoflop_markdown,
                                          isoflop_study, tuning_markdown)
from engine.report.laws import LawFit, LawOptions
from engine.report.html import markdown_to_html
from engine.report.markdown import sweep_markdown
from engine.report.study import FitGroup, study_fits
from engine.report.summary import RunSummary, summarize
from engine.report.decoding import common_decoding, describe_decoding
from engine.report import text_evals
from engine.report.tables import csv_head, csv_row, natural_key
from engine.report.tuning import Tuning, best_tuned
from engine.files import atomic_write_bytes
from engine.runs import RunError, list_runs, list_shared


COURSE_DIR = "_course"


class ReportError(RunError):
    """A report request that cannot be served; one clear line (the CLI prints RunErrors)."""


@dataclass
class SweepReport:
    sweep: str
    dir: Path
    report_md: Path
    runs_csv: Path
    plots: list[Path]
    n_runs: int
    n_finished: int
    brief_html: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "dir": str(self.dir), "report_md": str(self.report_md),
                "brief_html": str(self.brief_html) if self.brief_html else None,
                "runs_csv": str(self.runs_csv), "plots": [str(p) for p in self.plots],
                "n_runs": self.n_runs, "n_finished": self.n_finished}


@dataclass
class ReportResult:
    out_dir: Path
    sweeps: list[SweepReport]
    fits: list[FitGroup] = field(default_factory=list)  # one per tokenizer + data
    course: Any = None  # engine.report.course_write.CourseReport for several sweeps
    laws: LawOptions = field(default_factory=LawOptions)
    isoflop: dict[str, IsoStudy] = field(default_factory=dict)   # sweep -> Approach 2
    tuning: dict[str, Tuning] = field(default_factory=dict)      # sweep -> best values

    @property
    def fit(self) -> LawFit | None:
        """The fit of the largest group (the only one in a single-tokenizer study)."""
        return self.fits[0].fit if self.fits else None

    @property
    def fit_note(self) -> str:
        return self.fits[0].note if self.fits else "No fit: no finished runs."

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "sweeps": [s.to_dict() for s in self.sweeps],
                "fit": self.fit.to_dict() if self.fit else None, "fit_note": self.fit_note,
                "fits": [g.to_dict() for g in self.fits], "laws": self.laws.to_dict(),
                "course": self.course.to_dict() if self.course else None,
                "isoflop": {k: v.to_dict() for k, v in self.isoflop.items()},
                "tuning": {k: v.to_dict() for k, v in self.tuning.items()}}


# ---- checking the request ----------------------------------------------------------------

def _check_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".nanotui-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ReportError(f"cannot write the report to {out_dir}: {e.strerror or e}") from None


def _select(runs_root: Path, sweeps: list[str]) -> dict[str, list]:
    """The runs of each named sweep, its shared runs (links to another sweep's identical
    run, engine.runs.list_shared) included under the sweep's own names."""
    if not sweeps:
        raise ReportError("name at least one sweep to report on")
    by_sweep: dict[str, list] = {}
    for r in list_runs(runs_root) + [link for link, _ in list_shared(runs_root)]:
        by_sweep.setdefault(r.sweep, []).append(r)
    out: dict[str, list] = {}
    for name in dict.fromkeys(sweeps):
        if name not in by_sweep:
            known = ", ".join(sorted(by_sweep)) or "none"
            raise ReportError(f"unknown sweep {name!r} under {runs_root}"
                              f"{did_you_mean(name, sorted(by_sweep))} (sweeps with runs: {known})")
        out[name] = by_sweep[name]
    return out


# ---- writing -------------------------------------------------------------------------------

def write_report(runs_root: Path, sweeps: list[str], out_dir: Path, group_by: str | None = None,
                 progress: Callable[[str], None] | None = None, plots: bool = True,
                 laws: LawOptions = LawOptions()) -> ReportResult:
    """Write report.md, runs.csv and (unless plots=False) the PNGs for each sweep under
    out_dir/<sweep>/.
    Raises ReportError (one line) for an unknown sweep, a sweep without finished runs,
    an unknown --group-by key or an unwritable out_dir; nothing is written then.
    `laws` says how the scaling laws are fitted (engine.report.laws.LawOptions)."""
    say = progress or (lambda _msg: None)
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    if group_by is not None and group_by not in TRAIN_KEYS:
        raise ReportError(f"unknown --group-by key {group_by!r}{did_you_mean(group_by, TRAIN_KEYS)}")
    per_sweep = _read_sweeps(runs_root, _select(runs_root, sweeps), say)
    _check_out_dir(out_dir)
    reports, all_fits = [], []
    isoflop: dict[str, IsoStudy] = {}
    tuning: dict[str, Tuning] = {}
    for name in list(per_sweep):
        # a tuned sweep: each configuration's best value is what everything below uses
        per_sweep[name], tuned = best_tuned(per_sweep[name])
        summaries = per_sweep[name]
        # seeds pooled: a configuration's point is its mean over seeds, as in the course
        # report (the best seed would bias the fit low); one seed: the runs themselves
        study = build_study({name: summaries})   # the tables, figures and fit all use it
        fits = study_fits(study, laws)
        fitted = {s.id for g in fits if g.fit is not None for s in g.points}
        iso = isoflop_study(summaries, laws, fits[0].fit if fits else None)
        extra = (tuning_markdown(tuned) if tuned else []) + (isoflop_markdown(iso) if iso else [])
        if tuned:
            tuning[name] = tuned
        if iso:
            isoflop[name] = iso
        reports.append(_write_sweep(name, summaries, study, fits, fit_section(fits, [name], laws),
                                    fitted, out_dir / name, runs_root, group_by, plots, say,
                                    extra, iso))
        all_fits += fits
    if len(per_sweep) == 1:
        return ReportResult(out_dir, reports, all_fits, laws=laws, isoflop=isoflop,
                            tuning=tuning)
    from engine.report.course_write import write_course
    course = write_course(per_sweep, runs_root, course_dir(out_dir, list(per_sweep)), plots, say,
                          laws)
    return ReportResult(out_dir, reports, course.fits, course, laws, isoflop, tuning)


def course_dir(out_dir: Path, sweeps: list[str]) -> Path:
    """Where the course report over `sweeps` goes: never a sweep's own folder."""
    return Path(out_dir) / COURSE_DIR / "+".join(sweeps)


def _read_sweeps(runs_root: Path, selected: dict[str, list], say) -> dict[str, list[RunSummary]]:
    """Each sweep's summaries, smallest model first; a sweep with nothing finished refuses."""
    per_sweep: dict[str, list[RunSummary]] = {}
    for name, runs in selected.items():
        say(f"reading {name}")
        summaries = [summarize(r, runs_root) for r in runs]
        if not any(s.finished for s in summaries):
            states: dict[str, int] = {}
            for s in summaries:
                states[s.state] = states.get(s.state, 0) + 1
            counts = ", ".join(f"{n} {st}" for st, n in sorted(states.items()))
            raise ReportError(f"sweep {name!r} has no finished runs yet ({counts}); "
                              "nothing to report")
        per_sweep[name] = sorted(summaries, key=lambda s: (s.params is None, s.params or 0,
                                                           natural_key(s.run.name)))
    return per_sweep


def _write_sweep(name: str, summaries: list[RunSummary], study: Study,
                 fits: list[FitGroup], fit_text: str, fitted: set[str], d: Path,
                 runs_root: Path, group_by: str | None, plots: bool, say,
                 extra: list[str] = (), iso: IsoStudy | None = None) -> SweepReport:
    """One sweep's folder: the PNGs, report.md and runs.csv."""
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot write the report to {d}: {e.strerror or e}") from None
    say(f"plotting {name}")
    decoding = common_decoding(summaries)
    figures = _sweep_figures(name, summaries, study, fits, d, group_by, decoding) if plots else []
    if plots and iso is not None:
        figures += isoflop_figures(iso, d)
    md = sweep_markdown(name, summaries, study, fit_text, figures, group_by, runs_root,
                        list(extra))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    texts = text_evals.columns(s.text_evals for s in summaries)
    w.writerow(csv_head(texts))
    for s in summaries:
        w.writerow(csv_row(s, decoding, group_by,
                           s.finished and f"{s.run.sweep}/{label_of(s)}" in fitted, texts))
    brief = brief_markdown(study, brief_figures(study, {name: figures}, []), runs_root)
    try:
        atomic_write_bytes(d / "report.md", md.encode())
        atomic_write_bytes(d / "runs.csv", buf.getvalue().encode())
        atomic_write_bytes(d / "brief.md", brief.encode())
        atomic_write_bytes(d / "brief.html", markdown_to_html(
            brief, f"Report: {name}", d, brief=True).encode())
    except OSError as e:
        raise ReportError(f"cannot write the report to {d}: {e.strerror or e}") from None
    return SweepReport(name, d, d / "report.md", d / "runs.csv", figures,
                       len(summaries), sum(s.finished for s in summaries), d / "brief.html")


def _sweep_figures(name: str, summaries: list[RunSummary], study: Study,
                   fits: list[FitGroup], d: Path, group_by: str | None,
                   decoding: tuple | None) -> list[Path]:
    """The sweep's PNGs. A sweep whose runs share one size (heads) plots loss and
    diversity against its varied key; the against-parameters plots would stack every
    point on one x, so they are left out."""
    from engine.report import figures as fg
    from engine.report import plots as rp  # matplotlib only when a report is written
    from engine.report.compute_plots import compute_figures
    members, key = study.sweeps[name], (study.varied.get(name) or [None])[0]
    x = fg.x_name(members, key)
    out = [fg.training_curves(members, key, f"Training curves · sweep {name}",
                              d / "training_curves.png"),
           fg.versus(members, key, decoding, f"{name}: best val loss and diversity",
                     d / f"vs_{x}.png"),
           rp.loss_curves(summaries, "tokens", f"Loss per run · sweep {name}",
                          d / "loss_vs_tokens.png", group_by)]
    out += compute_figures(summaries, f"sweep {name}", d)  # loss vs FLOPs and time
    if x == "params":
        out += [rp.loss_vs_params(summaries, fits, name, d / "val_loss_vs_params.png",
                                  group_by=group_by),
                rp.diversity_vs_params(summaries, decoding,
                                       describe_decoding(decoding) if decoding else "",
                                       d / "diversity_vs_params.png")]
    return [p for p in out if p is not None]
