"""`nanotui status`: every run's state and progress, from the run directories."""

from __future__ import annotations

import json
import time

HELP = "show the runs: state, device, progress, losses, speed, ETA"


def add_arguments(p) -> None:
    p.add_argument("selection", nargs="*", metavar="SWEEP|RUN", help="only these (default all)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--all-users", action="store_true",
                   help="every user's GPU runs, queued runs and GPU-hours on this machine "
                        "(from the shared reservations directory; read-only)")


def status_rows(runs_root, selection=None) -> list[dict]:
    """Every selected run's reading (engine.report.reading), with the rest of its merged
    status.json (gpu, pid, times...) for scripts."""
    from engine.launch.queue import refresh_executors
    from engine.launch.slurm.state import merge_status
    from engine.report.reading import reading_from_status
    from engine.report.tables import natural_key
    from engine.runs import list_runs
    runs = sorted((r for r in list_runs(runs_root)
                   if not selection or r.id in selection or r.sweep in selection),
                  key=lambda r: natural_key(r.id))  # n_layer=2 before n_layer=12
    refresh_executors(runs)
    rows = []
    for r in runs:
        st = merge_status(r.read_status())  # a pending Slurm job shows as queued
        reading = reading_from_status(r, st, r.damage())
        rows.append({**st, **reading.to_dict(), "slurm": reading.job or None})
    return rows


LOW_SPACE_BYTES = 1 << 20


def disk_line(runs_root) -> str:
    """One line when the disk holding the runs is (nearly) full, else ""."""
    import shutil

    from engine.files import mount_point
    from engine.units import format_bytes
    try:
        free = shutil.disk_usage(runs_root).free
    except OSError:
        return ""
    if free >= LOW_SPACE_BYTES:
        return ""
    return (f"no space left on {mount_point(runs_root)} ({format_bytes(free)} free): runs "
            f"cannot write there; free some, then `nanotui resume` the failed runs")


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "—"


def all_users(args) -> int:
    """Other users' runs as every dispatcher sees them: running from their leases, queued
    from their dispatchers' wait tickets. Counts only: their run names stay theirs."""
    from engine.launch.gpu import default_gpu_source
    from engine.launch.share_view import share_summary, users_table
    fair = share_summary()
    if args.json:
        print(json.dumps(fair, indent=1))
        return 0
    if fair["policy"] and fair["policy"]["line"]:
        print(fair["policy"]["line"])
    if not fair["users"]:
        print(f"no user has GPU runs or queued runs now ({fair['dir']})")
        return 0
    for line in users_table(fair, default_gpu_source().snapshot()):  # cards by label
        print(line)
    return 0


def run(args) -> int:
    from engine.units import format_seconds
    from engine.launch.queue import dispatcher_pid
    if args.all_users:
        return all_users(args)
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
        device = r["device"] or "—"
        if r["gpu_index"] is not None and r["device"] and not r["device"].startswith("cpu"):
            device = f"{r['device']} (gpu{r['gpu_index']})"
        it = f"{r['iter'] or 0}/{r['max_iters'] if r['max_iters'] is not None else '?'}"
        eta = format_seconds(r["eta_s"]) if r["state"] == "running" else ""
        print(f"{r['id']:32} {r['state']:8} {device:14} {it:>11} "
              f"{_fmt(r['train_loss'], '.4f'):>7} {_fmt(r['val_loss'], '.4f'):>7} "
              f"{_fmt(r['tok_s'], ',.0f'):>8} {eta:>7}")
        if (r["state"] in ("failed", "stopped", "stalled")
                or (r["state"] == "queued" and not r["slurm"])) and r["reason"]:
            print(f"{'':32} └ {r['reason']}")
        for d in r["damaged"]:
            if f"damaged: {d}" != r["reason"]:
                print(f"{'':32} └ damaged: {d}")
        if r["imported_from"]:
            print(f"{'':32} └ imported from {r['imported_from']}")
        if r["slurm"]:
            print(f"{'':32} └ {r['slurm']}" + (f" · {r['reason']}" if r["state"] == "queued"
                                               and r["reason"] else ""))
    disk = disk_line(args.runs)
    if disk:
        print(f"\n{disk}")
    pid = dispatcher_pid(args.runs)
    queued = sum(1 for r in rows if r.get("state") == "queued")
    if queued and not pid:
        print(f"\n{queued} queued run{'s' * (queued != 1)} waiting and no dispatcher running: "
              f"`nanotui launch --queued` starts one for exactly these")
    elif pid:
        print(f"\ndispatcher running (pid {pid}) at {time.strftime('%H:%M:%S')}")
    stalled = [r["id"] for r in rows if r.get("state") == "stalled"]
    if stalled and queued:
        print(f"{len(stalled)} stalled run{'s' * (len(stalled) != 1)} still hold"
              f"{'s' * (len(stalled) == 1)} a slot while {queued} wait: `nanotui stop "
              f"{' '.join(stalled[:3])}` frees it")
    return 0
