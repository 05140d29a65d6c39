"""`nanotui status`: every run's state and progress, from the run directories."""

from __future__ import annotations

import json
import time

HELP = "show the runs: state, device, progress, losses, speed, ETA"


def add_arguments(p) -> None:
    p.add_argument("selection", nargs="*", metavar="SWEEP|RUN", help="only these (default all)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def status_rows(runs_root, selection=None) -> list[dict]:
    from engine.launch.dispatcher import refresh_executors
    from engine.runs import list_runs
    runs = [r for r in list_runs(runs_root)
            if not selection or r.id in selection or r.sweep in selection]
    refresh_executors(runs)
    from engine.launch.slurm.state import describe, merge_status
    rows = []
    for r in runs:
        st = merge_status(r.read_status())  # a pending Slurm job shows as queued
        rows.append({"id": r.id, "sweep": r.sweep, "name": r.name, **st,
                     "slurm": describe(st) or None})
    return rows


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "—"


def run(args) -> int:
    from engine.launch.estimate import format_seconds
    from engine.launch.dispatcher import dispatcher_pid
    rows = status_rows(args.runs, args.selection)
    if args.json:
        print(json.dumps({"runs_dir": str(args.runs), "dispatcher_pid": dispatcher_pid(args.runs),
                          "runs": rows}, indent=1, default=str))
        return 0
    if not rows:
        print(f"no runs in {args.runs} (start some with `nanotui launch`)")
        return 0
    print(f"{'run':32} {'state':8} {'device':14} {'iter':>11} {'train':>7} {'val':>7} "
          f"{'tok/s':>8} {'ETA':>7}")
    for r in rows:
        gpu = r.get("gpu") or {}
        device = (f"gpu{gpu['index']}" if gpu else r.get("device") or "—")
        if gpu and r.get("device") and r.get("device") != "cpu":
            device = f"{r['device']} (gpu{gpu['index']})"
        it = f"{r.get('iter', 0)}/{r.get('max_iters', '?')}"
        eta = format_seconds(r.get("eta_s")) if r.get("state") == "running" else ""
        print(f"{r['id']:32} {r.get('state', '?'):8} {device:14} {it:>11} "
              f"{_fmt(r.get('train_loss'), '.4f'):>7} {_fmt(r.get('val_loss'), '.4f'):>7} "
              f"{_fmt(r.get('tok_s'), ',.0f'):>8} {eta:>7}")
        if r.get("state") in ("failed", "stopped") and r.get("reason"):
            print(f"{'':32} └ {r['reason']}")
        if r.get("slurm"):
            print(f"{'':32} └ {r['slurm']}" + (f" · {r['reason']}" if r.get("state") == "queued"
                                               and r.get("reason") else ""))
    pid = dispatcher_pid(args.runs)
    queued = sum(1 for r in rows if r.get("state") == "queued")
    if queued and not pid:
        print(f"\n{queued} queued runs and no dispatcher: `nanotui launch` starts them")
    elif pid:
        print(f"\ndispatcher running (pid {pid}) at {time.strftime('%H:%M:%S')}")
    return 0
