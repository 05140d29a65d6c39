"""`nanotui sample RUN`: generate text from a run's checkpoint, with diversity scores."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "generate text from a run's checkpoint (RUN is an id like depth/n_layer=2 or a path)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN",
                   help="run id (sweep/name), run directory, or a checkpoint .pt file")
    from engine.sample.options import add_sample_arguments  # torch-free
    add_sample_arguments(p)


def run(args: argparse.Namespace) -> int:
    from engine.runs import find_run
    from engine.sample.generate import sample_command
    from tui.commands import CommandError

    ref = Path(args.run)
    target = ref if ref.is_file() else find_run(args.runs, args.run).path
    try:
        return sample_command(target, args)
    except (ValueError, OSError) as e:
        raise CommandError(str(e)) from None
