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
    laws = p.add_argument_group("scaling laws (engine.report.laws; the report's Method says how)")
    laws.add_argument("--params", metavar="CONVENTION", default="nanogpt",
                      help="parameter count N of the fits: nanogpt (default; nanoGPT's "
                           "get_num_params), non_embedding (Kaplan's N) or total")
    laws.add_argument("--fit-points", metavar="WHICH", default="final",
                      help="final (default): one point per configuration, its mean best val "
                           "loss over seeds; all: every eval from 20%% of a run's tokens on")
    laws.add_argument("--holdout", metavar="K", default="1",
                      help="with at least 5 sizes, also fit on all but the largest K sizes and "
                           "predict them (default 1; 0: no held-out check)")
    laws.add_argument("--rollout", action="store_true",
                      help="also fit on the k smallest sizes for k = 3 .. n-1, each predicting "
                           "the larger ones")
    laws.add_argument("--bootstrap", metavar="N", default="1000",
                      help="bootstrap resamples per fit for the intervals (default 1000; the "
                           "seed is 0 and stated in the report)")


def law_options(args: argparse.Namespace):
    """The --params/--fit-points/--holdout/--bootstrap values, checked (one-line errors)."""
    from engine.model.arithmetic import PARAM_CONVENTIONS
    from engine.report.laws import LawOptions
    from tui.commands import CommandError

    if args.params not in PARAM_CONVENTIONS:
        raise CommandError(f"--params must be one of {', '.join(PARAM_CONVENTIONS)}, "
                           f"not {args.params!r}")
    if args.fit_points not in ("final", "all"):
        raise CommandError(f"--fit-points must be final or all, not {args.fit_points!r}")
    ints = {}
    for flag, value, lo in (("--holdout", args.holdout, 0), ("--bootstrap", args.bootstrap, 0)):
        try:
            ints[flag] = int(value)
        except ValueError:
            raise CommandError(f"{flag} must be a whole number, not {value!r}") from None
        if ints[flag] < lo:
            raise CommandError(f"{flag} must be at least {lo}, not {value}")
    return LawOptions(fit_points=args.fit_points, convention=args.params,
                      holdout=ints["--holdout"], rollout=args.rollout,
                      n_boot=ints["--bootstrap"])


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.report.write import write_report
    from tui.commands import CommandError

    laws = law_options(args)
    if not Path(args.runs).is_dir():
        raise CommandError(f"no runs directory {args.runs} (set --runs DIR)")
    out = Path(args.out) if args.out else Path(args.runs).resolve().parent / "reports"
    quiet = args.json or not sys.stderr.isatty()
    progress = None if quiet else (lambda msg: print(f"nanotui report: {msg}", file=sys.stderr))
    result = write_report(Path(args.runs), args.sweeps, out, group_by=args.group_by,
                          progress=progress, plots=not args.no_plots, laws=laws)
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
        a = f.params["alpha"]
        print(f"fit{label}: {f.formula()}  (alpha {a.value:.4g}, {f.level:.0%} interval "
              f"{a.interval()}; {f.n_points} points, {f.n_sizes} sizes, "
              f"N = {f.convention} count)")
        for h in f.holdout:
            print(f"held out {h.id} (fit on {h.fitted_sizes} sizes): predicted {h.predicted:.4f} [{h.pi_low:.4f}, {h.pi_high:.4f}], "
                  f"actual {h.actual:.4f} ({h.error_pct:+.1f}%), "
                  + ("inside" if h.inside else "OUTSIDE") + " its interval")
        for w in f.warnings:
            print(f"warning: {w}")
    return 0
