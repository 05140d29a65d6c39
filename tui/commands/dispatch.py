"""`nanotui dispatch` (internal): the dispatcher loop of `launch --detach`."""

from __future__ import annotations

import time

HELP = "dispatch the queued runs of a runs directory until none is left (internal)"


def add_arguments(p) -> None:
    p.add_argument("--gpu", default="auto")
    p.add_argument("--executor", choices=["local", "slurm"])


def run(args) -> int:
    from engine.launch.dispatcher import Dispatcher

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    return Dispatcher(args.runs, args.experiments, args.gpu, executor_kind=args.executor,
                      log=log).run()
