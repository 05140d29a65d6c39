"""`nanotui resume`: continue failed or stopped runs from their checkpoints."""

from __future__ import annotations

HELP = "continue failed/stopped runs from their last checkpoint"


def add_arguments(p) -> None:
    p.add_argument("runs_", nargs="+", metavar="RUN", help="run ids (sweep/name) or sweeps")
    p.add_argument("--gpu", default="auto", metavar="auto|cpu|INDEX|UUID")
    p.add_argument("--wait", action="store_true",
                   help="dispatch in the foreground until the runs finish")


def run(args) -> int:
    import time
    from engine.launch.dispatcher import Dispatcher, ensure_dispatcher
    from engine.launch.drift import drift_from_file
    from engine.launch.queue import resume_run
    from tui.commands.stop import expand
    from tui.commands.launch import check_gpu_request
    check_gpu_request(args.gpu)
    runs = expand(args.runs, args.runs_)
    for r in runs:
        changes = drift_from_file(args.experiments, r)
        if changes:
            print(f"{r.id}: saved config differs from {args.experiments}: {'; '.join(changes)}; "
                  f"resuming keeps the saved config (`nanotui launch --fresh {r.id}` starts "
                  f"over with the new one, the old directory kept aside)")
        ckpt = resume_run(r, None if args.gpu == "auto" else args.gpu)
        print(f"{r.id}: queued, " + ("continues from its checkpoint" if ckpt
                                     else "no checkpoint: starts over"))
    if args.wait:
        def log(msg: str) -> None:
            print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)
        Dispatcher(args.runs, args.experiments, args.gpu, log=log).run(follow=[r.id for r in runs])
        return 0
    pid = ensure_dispatcher(args.runs, args.experiments, args.gpu)
    print(f"background dispatcher pid {pid}" if pid else "the running dispatcher will start them")
    return 0
