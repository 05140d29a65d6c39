"""`nanotui stop`: stop runs (SIGTERM, a grace period, then SIGKILL)."""

from __future__ import annotations

HELP = "stop runs: queued ones never start, running ones checkpoint and exit"


def add_arguments(p) -> None:
    p.add_argument("runs_", nargs="+", metavar="RUN", help="run ids (sweep/name) or sweeps")
    p.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                   help="seconds between SIGTERM and SIGKILL (default [launch] stop_grace_s, 10)")


def expand(runs_root, refs):
    """Run ids, run paths or whole sweeps -> RunDirs (an unknown ref is an error)."""
    from engine.runs import RunError, find_run, list_runs
    out = []
    all_runs = list_runs(runs_root)
    for ref in refs:
        sweep = [r for r in all_runs if r.sweep == ref]
        if sweep and "/" not in ref:
            out += sweep
            continue
        try:
            out.append(find_run(runs_root, ref))
        except RunError:
            raise unknown_run(runs_root, ref, all_runs) from None
    return out


def unknown_run(runs_root, ref: str, all_runs=None):
    """The error for a run id that names no run: a did-you-mean and the runs there are."""
    from engine.config import did_you_mean
    from engine.runs import RunError, list_runs
    ids = [r.id for r in (list_runs(runs_root) if all_runs is None else all_runs)]
    shown = ", ".join(ids[:6]) + (f" (+{len(ids) - 6} more: nanotui status)" if len(ids) > 6 else "")
    there = f"; runs: {shown}" if ids else "; there are no runs there yet"
    return RunError(f"no run {ref!r} under {runs_root}{did_you_mean(ref, ids)}{there}")


def run(args) -> int:
    from engine.launch.queue import stop_grace, stop_run
    runs = expand(args.runs, args.runs_)
    grace = args.grace if args.grace is not None else stop_grace(args.experiments)
    # Queued runs first: stopping a running one frees its slot, and the dispatcher would
    # otherwise start the next run of the very sweep being stopped.
    states = {r.id: r.read_status().get("state") for r in runs}
    runs.sort(key=lambda r: states[r.id] != "queued")
    for r in runs:
        before = r.read_status().get("state")
        if before in ("done", "failed", "stopped"):
            print(f"{r.id}: already {before}")
            continue
        print(f"{r.id}: {stop_run(r, grace)}", flush=True)
    return 0
