"""`nanotui verify BUNDLE [--rerun RUN [--iters K]]`: check a hand-in, optionally retrain a run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = ("check a hand-in bundle: its manifest, every file's schema, and each run's numbers "
        "recomputed against status.json and the report tables; --rerun retrains a run and "
        "compares its losses. One line per problem; exit 1 when any")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", metavar="BUNDLE", help="a .tar.gz written by `nanotui bundle`")
    p.add_argument("--rerun", metavar="RUN", default=None,
                   help="retrain this run (sweep/name) from its config on the same prepared data "
                        "(matched by sha256) and compare the loss curve")
    p.add_argument("--iters", metavar="K", type=int, default=None,
                   help="with --rerun: train and compare only the first K iterations")
    p.add_argument("--data", metavar="DIR", action="append", default=[],
                   help="with --rerun: also look here for the prepared data (a prepared dir or "
                        "a folder of them; default: the data cache, NANOTUI_DATA_DIR)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")


def run(args: argparse.Namespace) -> int:
    from engine.handin.archive import open_bundle
    from engine.handin.rerun import rerun
    from engine.handin.verify import verify_bundle
    from tui.commands import CommandError

    if args.iters is not None and args.rerun is None:
        raise CommandError("--iters needs --rerun RUN")
    b = open_bundle(Path(args.bundle))   # an unsafe archive is refused here, one line
    v = verify_bundle(b)
    problems, notes = list(v.problems), []
    if args.rerun is not None:
        numbers = {n.id: n for n in v.runs}
        if args.rerun not in numbers:
            raise CommandError(f"no run {args.rerun!r} in {args.bundle} "
                               f"(it has {', '.join(numbers) or 'none'})")
        if v.problems:
            notes.append("rerun skipped: the bundle has problems")
        else:
            say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr))
            found, note = rerun(b, numbers[args.rerun], args.iters,
                                [Path(d) for d in args.data], log=say)
            problems += found
            notes += [note] if note else []
    if args.json:
        print(json.dumps({"bundle": str(args.bundle), "ok": not problems, "problems": problems,
                          "notes": notes, "runs": [n.id for n in v.runs]}, indent=1))
    else:
        for line in problems:
            print(_printable(line))
        for line in notes:
            print(_printable(line))
        if not problems:
            print(f"{args.bundle}: ok ({len(v.runs)} runs, {len(b.manifest['files'])} files checked)")
    return 1 if problems else 0


def _printable(line: str) -> str:
    """A bundle's names come from a student: never let them drive the terminal."""
    return "".join(c if c.isprintable() else "?" for c in line)
