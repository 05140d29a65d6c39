"""`nanotui demo`: generated stories, tiny models on the CPU, no network needed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

HELP = "a first look without a network: train two tiny models on generated stories"


def add_arguments(p) -> None:
    p.add_argument("--dir", default="nanotui-demo", metavar="DIR",
                   help="where the stories, experiments file and runs go (default ./nanotui-demo)")
    p.add_argument("--no-tui", action="store_true", help="print progress and status, no TUI")
    p.add_argument("--seed", type=int, default=1337, help="seed of the story generator")


def run(args) -> int:
    from engine.data.demo import write_demo
    from engine.launch.dispatcher import Dispatcher, start_background_dispatcher
    from engine.launch.queue import queue_runs_detailed
    from tui.commands import status as status_cmd

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    d = Path(args.dir)
    exp = write_demo(d, seed=args.seed)
    args.experiments = exp
    args.runs = d / "runs"
    log(f"demo in {d}/: stories.txt ({(d / 'stories.txt').stat().st_size // 1024} KB of "
        f"generated stories), experiments.toml, runs/")
    res = queue_runs_detailed(exp, args.runs, ["quick"], gpu="cpu", log=log)
    pending = [r.id for r in res.queued + res.waiting]
    tui_ok = not args.no_tui and sys.stdout.isatty()
    if tui_ok:
        if pending:
            start_background_dispatcher(args.runs, exp, "cpu")
        import tui.app
        return int(tui.app.run(args) or 0)
    if pending:
        log(f"training {len(pending)} tiny models on the CPU (Ctrl-C leaves them running)")
        Dispatcher(args.runs, exp, "cpu", log=log).run(follow=pending)
    else:
        log("the demo runs are already done")
    args.selection, args.json = [], False
    status_cmd.run(args)
    print(f"\nnext: nanotui --experiments {exp} (the TUI), "
          f"nanotui --experiments {exp} report, nanotui --experiments {exp} sample quick/n_layer=2")
    return 0
