"""Is a running run still making progress? A process that is alive but has written nothing
(status.json, metrics.jsonl, stdout.log) for much longer than its own rhythm is `stalled`:
stopped by SIGSTOP or Ctrl-Z, stuck in a driver, waiting on a dead network mount.

The rhythm is what the training process records in status.json: `write_every_s` (its
seconds per step times log_interval: the gap between its writes) and `eval_s` (its last
eval with samples and checkpoints). A run is stalled after

    max(floor, multiple * (write_every_s + eval_s))

seconds of silence (before the first timing, write_every_s and eval_s count as the floor
each). multiple and floor come from NANOTUI_STALL_MULTIPLE (default 10) and
NANOTUI_STALL_FLOOR_S (default 60 s). A process the kernel reports stopped is stalled once
it has been silent for a couple of status intervals.
"""

from __future__ import annotations

import os
import time
from typing import Any

from engine.runs import RunDir, process_stopped
from engine.units import format_seconds

DEFAULT_MULTIPLE = 10.0
DEFAULT_FLOOR_S = 60.0
STOPPED_AFTER_S = 3.0   # the process writes status.json about once a second while stepping


def _env_float(name: str, default: float) -> float:
    try:
        v = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return v if v > 0 else default


def stall_threshold(st: dict[str, Any]) -> float:
    """Seconds of silence after which this running run counts as stalled."""
    floor = _env_float("NANOTUI_STALL_FLOOR_S", DEFAULT_FLOOR_S)
    multiple = _env_float("NANOTUI_STALL_MULTIPLE", DEFAULT_MULTIPLE)

    def secs(key: str) -> float:
        v = st.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0
        return float(v) if ok else floor
    return max(floor, multiple * (secs("write_every_s") + secs("eval_s")))


def last_write(run: RunDir, st: dict[str, Any]) -> float | None:
    """When the run's process last wrote anything (epoch seconds)."""
    times = [st["updated_at"]] if isinstance(st.get("updated_at"), (int, float)) else []
    for p in (run.metrics_path, run.stdout_path):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def stall(run: RunDir, st: dict[str, Any], now: float | None = None) -> tuple[float, str] | None:
    """(seconds silent, why) when this local running run is stalled, else None."""
    if st.get("state") != "running" or st.get("executor", {}).get("kind", "local") != "local":
        return None
    last = last_write(run, st)
    if last is None:
        return None
    silent = max(0.0, (time.time() if now is None else now) - last)
    pid = st.get("pid")
    if isinstance(pid, int) and silent >= STOPPED_AFTER_S and process_stopped(pid):
        return silent, (f"stopped (SIGSTOP or Ctrl-Z), silent for {format_seconds(silent)}: "
                        f"`nanotui stop {run.id}` ends it, `kill -CONT {pid}` lets it go on")
    limit = stall_threshold(st)
    if silent < limit:
        return None
    return silent, (f"silent for {format_seconds(silent)} (stalled after "
                    f"{format_seconds(limit)}): `nanotui stop {run.id}` ends it")
