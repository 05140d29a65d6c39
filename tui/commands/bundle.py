"""`nanotui bundle SWEEP... -o NAME.tar.gz`: the hand-in a TA verifies."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = ("pack sweeps into a hand-in .tar.gz: each run's config, metrics, samples, status and "
        "log, the data's meta.json (source sha256), experiments.toml, the reports and a "
        "MANIFEST.json of sha256 per file; `nanotui verify` checks it")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep name(s) under the runs directory")
    p.add_argument("-o", "--output", metavar="NAME.tar.gz", required=True,
                   help="the bundle to write (must not exist); NAME is its root folder")
    p.add_argument("--with-checkpoints", choices=["none", "best"], default="none",
                   help="also pack each run's best.pt (default none)")
    p.add_argument("--json", action="store_true", help="print the manifest as one JSON document")


def run(args: argparse.Namespace) -> int:
    from engine.handin.bundle import write_bundle
    from tui.commands import CommandError

    if not Path(args.runs).is_dir():
        raise CommandError(f"no runs directory {args.runs} (set --runs DIR)")
    quiet = args.json or not sys.stderr.isatty()
    say = None if quiet else (lambda m: print(f"nanotui bundle: {m}", file=sys.stderr))
    out = Path(args.output)
    manifest = write_bundle(Path(args.runs), args.sweeps, out, experiments=Path(args.experiments),
                            checkpoints=args.with_checkpoints, progress=say)
    if args.json:
        print(json.dumps(manifest, indent=1))
        return 0
    size = sum(f["size"] for f in manifest["files"].values())
    print(f"{out}: {len(manifest['runs'])} runs, {len(manifest['files'])} files "
          f"({size:,} bytes before compression), checkpoints: {manifest['checkpoints']}")
    return 0
