"""`nanotui leaderboard BUNDLE...`: one table across students' hand-ins."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("rank the runs of several hand-in bundles (best val loss, bits per byte, params, "
        "tokens, seed, verified or not) as Markdown, and as CSV with --csv")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help=".tar.gz files from `nanotui bundle`")
    p.add_argument("--params", default="nanogpt", metavar="CONVENTION",
                   help="parameter-count convention: nanogpt (default), non_embedding or total")
    p.add_argument("--csv", metavar="FILE", default=None, help="also write the table as CSV to FILE")
    p.add_argument("--json", action="store_true", help="print the table as one JSON document")


def run(args: argparse.Namespace) -> int:
    from engine.handin.leaderboard import build, to_csv, to_markdown
    from tui.commands import CommandError

    try:
        lb = build([Path(b) for b in args.bundles], args.params)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if args.csv:
        Path(args.csv).write_text(to_csv(lb))
    print(json.dumps(lb.to_dict(), indent=1) if args.json else to_markdown(lb), end="" if not args.json else "\n")
    return 0
