"""Everyone's share and use, read-only: what `nanotui gpus`, `nanotui status --all-users`
and the TUI's GPU panel show. One reading of the reservations directory (policy, leases,
wait tickets, usage ledger); nothing is written or removed."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from engine.leases import LeaseBoard
from engine.launch.policy import CAP_KEYS, PolicyWatch, user_name
from engine.launch.share import usage_now
from engine.launch.waits import read_tickets

DEFAULT_WINDOW_H = 24.0


def share_summary(directory: Path | None = None, now: float | None = None) -> dict[str, Any]:
    """{"dir", "policy": {...} | None, "users": [{uid, user, gpu_runs, gpus, queued,
    running, waiting, gpu_hours, caps}]}: every user with a live lease, a wait ticket or
    ledger time in the window; "policy" is None without a policy.toml."""
    from engine.launch.reservations import reservations_dir
    directory = Path(directory) if directory else reservations_dir()
    now = time.time() if now is None else now
    watch = PolicyWatch(directory)
    state = watch.current() if os.path.lexists(watch.path) else None
    pol = state.policy if state else None
    window_h = pol.usage_window_hours if pol else DEFAULT_WINDOW_H
    if not directory.is_dir():
        return {"dir": str(directory), "policy": None, "users": [], "window_hours": window_h}
    live, dead = LeaseBoard(directory).read(now, tidy=False)
    tickets = read_tickets(directory, now, tidy=False)
    usage = usage_now(directory, live, window_h * 3600, now, dead)
    uids = sorted({le.uid for le in live} | {t.uid for t in tickets} | set(usage))
    users = []
    for uid in uids:
        mine = [le for le in live if le.uid == uid]
        theirs = [t for t in tickets if t.uid == uid]
        caps = pol.caps_for(uid, now) if pol else None
        users.append({
            "uid": uid, "user": user_name(uid), "gpu_runs": len(mine),
            "gpus": sorted({le.uuid for le in mine}),
            "queued": sum(t.queued for t in theirs),
            "waiting": any(t.contending for t in theirs),
            "gpu_hours": round(usage.get(uid, 0.0) / 3600, 3),
            "caps": None if caps is None else {k: getattr(caps, k) for k in CAP_KEYS}})
    policy = None
    if state is not None:
        policy = {"path": str(watch.path), "in_force": pol is not None,
                  "blocked": state.blocked, "line": state.line(),
                  "quiet_hours": bool(pol and pol.in_quiet_hours(now)),
                  "yours": pol.describe(os.getuid(), now) if pol else None}
    return {"dir": str(directory), "policy": policy, "users": users, "window_hours": window_h}


def share_line(summary: dict[str, Any], gpus: list | None = None) -> str | None:
    """One line for the GPU panel: our share, our use, who else is on the cards and who
    waits; None without a policy."""
    pol = summary["policy"]
    if pol is None:
        return None
    if not pol["in_force"]:
        return pol["line"]
    me = next((u for u in summary["users"] if u["uid"] == os.getuid()), None)
    label = {g.uuid: g.label for g in gpus or []}
    used = ", ".join(label.get(u, u[:12]) for u in me["gpus"]) if me else ""
    others = [u for u in summary["users"] if u["uid"] != os.getuid()]
    on = sum(1 for u in others if u["gpu_runs"])
    waiting = sum(1 for u in others if u["queued"])
    n = me["gpu_runs"] if me else 0
    line = (f"share: {pol['yours']} · you: {n} run{'s' * (n != 1)}"
            + (f" on GPU {used}" if used else "")
            + f", {me['gpu_hours'] if me else 0:.1f} GPU-h/{summary['window_hours']:g} h"
            + f" · others: {on} on GPUs, {waiting} waiting")
    return line + (f" · {pol['line']}" if pol["line"] else "")


def users_table(summary: dict[str, Any], gpus: list | None = None) -> list[str]:
    """The per-user lines of `nanotui gpus` and `status --all-users`."""
    label = {g.uuid: g.label for g in gpus or []}
    rows = [f"{'user':16} {'GPU runs':>8} {'GPUs':12} {'queued':>6} "
            f"{'GPU-h/' + format(summary['window_hours'], 'g') + ' h':>10}  share"]
    for u in summary["users"]:
        cards = ",".join(label.get(x, x[:10]) for x in u["gpus"]) or "—"
        caps = u["caps"]
        share = ("—" if caps is None else
                 ", ".join(f"{k.replace('_per_user', '')} {v}" for k, v in caps.items()
                           if v is not None and (k != "keep_free_gpus" or v)) or "no caps")
        me = " (you)" if u["uid"] == os.getuid() else ""
        rows.append(f"{(u['user'] + me)[:16]:16} {u['gpu_runs']:>8} {cards[:12]:12} "
                    f"{u['queued']:>6} {u['gpu_hours']:>10.2f}  {share}")
    if not summary["users"]:
        return [f"no user has GPU runs, queued runs or GPU time in the last "
                f"{summary['window_hours']:g} h"]
    return rows


def panel_line(gpus: list | None = None) -> str | None:
    """share_line for the GPU panel's poll: one lstat and nothing else without a policy."""
    from engine.launch.policy import POLICY_NAME
    from engine.launch.reservations import reservations_dir
    if not os.path.lexists(reservations_dir() / POLICY_NAME):
        return None
    try:
        return share_line(share_summary(), gpus)
    except OSError as e:
        return f"share: cannot read {reservations_dir()}: {e.strerror}"
