"""Durations and sizes as people read them: one rule for every view (CLI, TUI, report)."""

from __future__ import annotations

import math

DASH = "—"
GIB = 1024 ** 3


def _finite(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def format_seconds(s: float | None) -> str:
    """Seconds -> '45s', '4m05s', '12m', '3h05m', '2d04h' (seconds matter only under 10 min)."""
    f = _finite(s)
    if f is None or f < 0:
        return DASH
    n = int(round(f))
    if n < 60:
        return f"{n}s"
    if n < 3600:
        return f"{n // 60}m{n % 60:02d}s" if n < 600 else f"{n // 60}m"
    if n < 86400:
        return f"{n // 3600}h{(n % 3600) // 60:02d}m"
    return f"{n // 86400}d{(n % 86400) // 3600:02d}h"


def format_bytes(n: float | None, compact: bool = False) -> str:
    """Binary units: '18.2 GiB', '512 MiB'; compact for narrow tables: '18.2G', '512M'."""
    f = _finite(n)
    if f is None:
        return DASH
    for unit, scale in (("T", 2 ** 40), ("G", 2 ** 30), ("M", 2 ** 20), ("K", 2 ** 10)):
        if f >= scale:
            v = f / scale
            num = f"{v:.1f}" if v < 100 else f"{v:.0f}"
            return f"{num}{unit}" if compact else f"{num} {unit}iB"
    return f"{int(f)}B" if compact else f"{int(f)} B"
