"""`nanotui report SWEEP...`: report.md, runs.csv and PNG plots for sweeps."""

from __future__ import annotations

import argparse
import json
import sys

HELP = ("write report.md, runs.csv and PNG plots for sweeps; with several sweeps also one "
        "course report (report.md + self-contained report.html) over all of them, and "
        "brief.html beside it: the hand-in (methods, one results table, three figures, the "
        "temperature table; at most 4 A4 pages printed)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep name(s) under the runs directory")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default: reports/ beside the runs directory); "
                        "each sweep gets a folder in it, a course report over several "
                        "sweeps DIR/_course/SWEEP+SWEEP+.../")
    p.add_argument("--group-by", metavar="KEY", default=None,
                   help="also tabulate the best val loss per value of this config key (e.g. n_embd)")
    p.add_argument("--no-plots", action="store_true", help="write report.md and runs.csv only")
    p.add_argument("--json", action="store_true", help="print what was written as one JSON document")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.report.write import write_report
    from tui.commands import CommandError

    if not Path(args.runs).is_dir():
        raise CommandError(f"no runs directory {args.runs} (set --runs DIR)")
    out = Path(args.out) if args.out else Path(args.runs).resolve().parent / "reports"
    quiet = args.json or not sys.stderr.isatty()
    progress = None if quiet else (lambda msg: print(f"nanotui report: {msg}", file=sys.stderr))
    result = write_report(Path(args.runs), args.sweeps, out, group_by=args.group_by,
                          progress=progress, plots=not args.no_plots)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    for s in result.sweeps:
        print(f"{s.sweep}: {s.n_runs} runs ({s.n_finished} finished) -> {s.report_md}")
        print("  " + ", ".join(p.name for p in [s.runs_csv, *s.plots]
                               + ([s.brief_html] if s.brief_html else [])))
    c = result.course
    if c is not None:
        print(f"course report: {c.n_models} distinct models -> {c.report_md}")
        print("  " + ", ".join(p.name for p in [c.report_html, c.runs_csv, *c.plots]))
        print(f"  hand-in (2-4 pages printed): {c.brief_html}")
    for g in result.fits:
        label = f" [{g.label}]" if len(result.fits) > 1 else ""
        f = g.fit
        if f is None:
            print(f"{g.note}{label}")
            continue
        se = f" ± {f.se_alpha:.2g}" if f.se_alpha is not None else ""
        err = "exact through 3 points" if f.exact else f"RMSE {f.rmse:.3g}"
        print(f"fit{label}: {f.formula()}  (alpha {f.alpha:.4g}{se}, {err}, {f.n_points} points)")
        if f.warning:
            print(f"warning: {f.warning}")
    return 0
