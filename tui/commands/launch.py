"""`nanotui launch`: queue runs and dispatch them onto the GPUs (or the CPU)."""

from __future__ import annotations

import time

HELP = "queue runs (sweeps or run ids) and start them as GPUs/CPU allow"


def add_arguments(p) -> None:
    p.add_argument("selection", nargs="*", metavar="SWEEP|RUN",
                   help="sweeps or run ids (default: every sweep)")
    p.add_argument("--gpu", default="auto", metavar="auto|cpu|INDEX|cuda:N|UUID",
                   help="where the runs go (default auto: the least-loaded card that fits); "
                        "INDEX is the card's number in `nanotui gpus` and nvidia-smi, "
                        "cuda:N torch's number in this shell (under CUDA_VISIBLE_DEVICES)")
    p.add_argument("--detach", action="store_true",
                   help="return at once; a background dispatcher starts the queued runs")
    p.add_argument("--executor", choices=["local", "slurm"],
                   help="override [executor] kind of the experiments file")
    p.add_argument("--queued", action="store_true",
                   help="queue nothing new: start a dispatcher for the runs already queued "
                        "(after a dispatcher was killed); with --detach in the background")
    p.add_argument("--fresh", action="store_true",
                   help="start over the selected runs whose saved config differs from the "
                        "experiments file (their old directories are moved to "
                        "RUNS/.replaced/, never deleted); without it they keep their config")


def check_gpu_request(gpu: str, experiments=None) -> str:
    """Fail before queuing anything when --gpu, or `[launch] gpus` in the experiments
    file, names a card that is not here or not ours (engine.launch.placement.named_card).
    Returns the request to queue: "cuda:N" becomes the unit's uuid, since torch's numbering
    is this shell's and the dispatcher that starts the run may live in another."""
    from engine.launch.gpu import default_gpu_source
    from engine.launch.placement import named_card, parse_request
    from engine.launch.queue import launch_options
    req = parse_request(gpu)
    allowed = launch_options(experiments)[0].gpus if experiments else ()
    if req in ("auto", "cpu") and not allowed:
        return req
    gpus = default_gpu_source().snapshot()
    if req != "cpu" and gpus:  # without cards every run goes to the CPU anyway
        for ref in allowed:
            named_card(gpus, ref, "[launch] gpus =")
    if req in ("auto", "cpu"):
        return req
    card = named_card(gpus, req, "--gpu")
    return card.uuid if req.startswith("cuda:") else req


def run(args) -> int:
    from engine.launch.dispatcher import start_background_dispatcher
    from engine.launch.queue import dispatcher_pid, queue_runs_detailed
    from tui.progress import progress_bar

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    args.gpu = check_gpu_request(args.gpu, args.experiments)
    if args.queued:
        return _dispatch_queued(args, log)
    with progress_bar("preparing data") as update:
        res = queue_runs_detailed(args.experiments, args.runs, args.selection, args.gpu,
                                  progress=lambda done, total: update(done, total), log=log,
                                  fresh=args.fresh)
    for link, owner in res.shared:
        log(f"{link.id} is the same model as {owner.id}: trained once, shown in both sweeps")
    for run_, moved in res.fresh:
        log(f"{run_.id}: config changed; starting fresh (old run kept in {moved})")
    for run_id, warning in res.warnings:
        log(f"warning: {run_id}: {warning}")
    for run_, changes in res.drift:
        log(f"{run_.id}: saved config differs from {args.experiments}: {'; '.join(changes)}; "
            f"keeping the saved config (`nanotui launch --fresh {run_.id}` starts it over, "
            f"the old directory kept aside)")
    parts = [f"{len(res.queued)} queued"]
    if res.waiting:
        parts.append(f"{len(res.waiting)} already queued or running")
    if res.done:
        parts.append(f"{len(res.done)} already done")
    if res.needs_resume:
        parts.append(f"{len(res.needs_resume)} failed/stopped (skipped: `nanotui resume "
                     f"{res.needs_resume[0].id}` to continue)")
    log(", ".join(parts) + f" in {args.runs}")
    pending = [r.id for r in res.queued + res.waiting]
    if not pending:
        return 0
    if args.detach:
        pid = dispatcher_pid(args.runs)
        if pid:
            log(f"a dispatcher (pid {pid}) is already running; it will start them")
        else:
            p = start_background_dispatcher(args.runs, args.experiments, args.gpu, args.executor)
            log(f"background dispatcher pid {p.pid} (log: {args.runs}/.dispatcher.log); "
                f"follow with `nanotui status`")
        return 0
    return _dispatch(args, pending, log)


def _dispatch_queued(args, log) -> int:
    """A dispatcher for exactly the runs already queued: nothing is read from the
    experiments file's sweeps, nothing new is queued."""
    from engine.launch.dispatcher import start_background_dispatcher
    from engine.launch.queue import dispatcher_pid
    from engine.runs import list_runs
    from tui.commands import CommandError
    if args.selection:
        raise CommandError("--queued starts the runs already queued: name no sweeps or runs")
    pending = [r.id for r in list_runs(args.runs) if r.read_status().get("state") == "queued"]
    if not pending:
        log(f"no queued runs in {args.runs}")
        return 0
    pid = dispatcher_pid(args.runs)
    if pid:
        log(f"a dispatcher (pid {pid}) is already running; it starts the {len(pending)} queued runs")
        return 0
    log(f"{len(pending)} queued runs in {args.runs}: " + ", ".join(pending[:5])
        + (f" and {len(pending) - 5} more" if len(pending) > 5 else ""))
    if args.detach:
        p = start_background_dispatcher(args.runs, args.experiments, args.gpu, args.executor)
        log(f"background dispatcher pid {p.pid} (log: {args.runs}/.dispatcher.log)")
        return 0
    return _dispatch(args, pending, log)


def _dispatch(args, pending: list[str], log) -> int:
    from engine.launch.dispatcher import Dispatcher, start_background_dispatcher
    d = Dispatcher(args.runs, args.experiments, args.gpu, executor_kind=args.executor, log=log)
    try:
        d.run(follow=pending)
    except KeyboardInterrupt:
        d.unlock()
        queued = d.queued_runs()
        msg = "interrupted: running runs keep running (`nanotui status`, `nanotui stop RUN`)"
        if queued:
            p = start_background_dispatcher(args.runs, args.experiments, args.gpu, args.executor)
            msg += f"; {len(queued)} queued runs go on with a background dispatcher (pid {p.pid})"
        print(msg, flush=True)
        return 130
    from engine.runs import RunDir
    states = [RunDir(args.runs / rid).read_status().get("state") for rid in pending]
    failed = sum(1 for s in states if s == "failed")
    log(f"all {len(pending)} runs finished: {states.count('done')} done, {failed} failed, "
        f"{states.count('stopped')} stopped")
    return 1 if failed else 0
