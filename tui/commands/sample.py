"""`nanotui sample RUN`: generate text from a run's checkpoint, with diversity scores."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "generate text from a run's checkpoint (RUN is an id like depth/n_layer=2 or a path)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN",
                   help="run id (sweep/name), run directory, or a checkpoint .pt file")
    # The same options as `python -m engine.sample` (engine.sample.add_sample_arguments),
    # spelled out here so building the CLI parser does not import torch.
    p.add_argument("--prompt", action="append", metavar="P",
                   help="prompt (repeatable; default: the run's sampling.prompts)")
    p.add_argument("--num-samples", type=int, metavar="N", help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, metavar="M")
    p.add_argument("--temperature", type=float, metavar="T")
    p.add_argument("--top-k", type=int, metavar="K", help="0 turns top-k off")
    p.add_argument("--top-p", type=float, metavar="P", help="1 turns top-p off")
    p.add_argument("--seed", type=int, metavar="S", help="sample j of a prompt uses seed S+j")
    p.add_argument("--checkpoint", choices=["latest", "best"], default="latest",
                   help="ckpt.pt (latest, default) or best.pt (best val loss)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--json", action="store_true",
                   help="one JSON document: each sample's text and metrics, and the pooled metrics")


def run(args: argparse.Namespace) -> int:
    from engine.runs import find_run
    from engine.sample import sample_command
    from engine.trainer import TrainError
    from tui.cli import CommandError

    ref = Path(args.run)
    target = ref if ref.is_file() else find_run(args.runs, args.run).path
    try:
        return sample_command(target, args)
    except (TrainError, ValueError, OSError) as e:
        raise CommandError(str(e)) from None
