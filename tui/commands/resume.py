"""`nanotui resume`: continue failed or stopped runs from their checkpoints; with
--extend, train finished runs on to a higher max_iters (engine.train.extension)."""

from __future__ import annotations

HELP = "continue failed/stopped runs from their last checkpoint (--extend: train done runs further)"


def add_arguments(p) -> None:
    p.add_argument("runs_", nargs="+", metavar="RUN", help="run ids (sweep/name) or sweeps")
    p.add_argument("--gpu", metavar="auto|cpu|INDEX|cuda:N|UUID",
                   help="where the runs go now (default: the card each asked for when "
                        "queued); INDEX as `nanotui gpus` numbers cards, cuda:N as torch "
                        "in this shell does")
    p.add_argument("--wait", action="store_true",
                   help="dispatch in the foreground until the runs finish; exits 1 unless "
                        "every run ends done, each one that did not named with its state "
                        "and reason")
    p.add_argument("--extend", action="store_true",
                   help="continue finished runs from their checkpoint to the max_iters the "
                        "experiments file now gives them (or --max-iters); the learning rate "
                        "re-decays from where it ended to min_lr over the added iterations "
                        "(docs/training.md)")
    p.add_argument("--max-iters", type=int, metavar="N",
                   help="with --extend: the new max_iters (default: the experiments file's)")


def _extend(args, run) -> None:
    from engine.errors import UserError
    from engine.launch.extend import extend_run, target_max_iters
    target = args.max_iters or target_max_iters(args.experiments, run)
    if target is None:
        raise UserError(f"cannot extend {run.id}: {args.experiments} does not name it; "
                        f"give the new horizon with --max-iters N")
    ext = extend_run(run, target, args.gpu)
    print(f"{run.id}: queued, {ext.describe()}")


def _final_states(runs) -> int:
    """One line for each run that did not end done; 1 if there is any (a script that
    waited for the runs must not read a failed resume as success)."""
    from engine.text import safe_text
    bad = 0
    for r in runs:
        st = r.read_status()
        state = st.get("state", "?")
        if state == "done":
            continue
        bad += 1
        reason = safe_text(str(st.get("reason") or "no reason recorded")).strip()
        first = reason.splitlines()[0] if reason else "no reason recorded"
        print(f"{r.id}: ended {state}: {first}", flush=True)
    return 1 if bad else 0


def run(args) -> int:
    import time
    from engine.errors import UserError
    from engine.launch.dispatcher import Dispatcher, ensure_dispatcher
    from engine.launch.drift import drift_from_file
    from engine.launch.queue import resume_run
    from tui.commands.stop import expand
    from tui.commands.launch import check_gpu_request
    if args.gpu is not None:
        args.gpu = check_gpu_request(args.gpu, args.experiments)
    if args.max_iters is not None and not args.extend:
        raise UserError("--max-iters goes with --extend")
    runs = expand(args.runs, args.runs_)
    for r in runs:
        if args.extend:
            _extend(args, r)
            continue
        if r.read_status().get("state") == "done":
            raise UserError(f"cannot resume {r.id}: it is done (`nanotui resume --extend {r.id}` "
                            f"trains it on to a higher max_iters)")
        changes = drift_from_file(args.experiments, r)
        if changes:
            print(f"{r.id}: saved config differs from {args.experiments}: {'; '.join(changes)}; "
                  f"resuming keeps the saved config (`nanotui launch --fresh {r.id}` starts "
                  f"over with the new one, the old directory kept aside)")
        ckpt = resume_run(r, args.gpu)
        print(f"{r.id}: queued, " + ("continues from its checkpoint" if ckpt
                                     else "no checkpoint: starts over"))
    if args.wait:
        def log(msg: str) -> None:
            print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)
        Dispatcher(args.runs, args.experiments, args.gpu or "auto", log=log).run(follow=[r.id for r in runs])
        return _final_states(runs)
    pid = ensure_dispatcher(args.runs, args.experiments, args.gpu or "auto")
    print(f"background dispatcher pid {pid}" if pid else "the running dispatcher will start them")
    return 0
