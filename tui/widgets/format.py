"""Short, fixed-width number formats shared by the tables and panels."""

from __future__ import annotations

import math
from typing import Any, Sequence

from engine.units import DASH, format_bytes, format_seconds

BLOCKS = "▁▂▃▄▅▆▇█"
STATE_GLYPH = {"queued": "◌", "running": "●", "done": "✓", "failed": "✗", "stopped": "■",
               "stalled": "◍"}
STATE_STYLE = {"queued": "dim", "running": "bold green", "done": "cyan", "failed": "bold red",
               "stalled": "bold yellow",
               "stopped": "yellow"}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_loss(x: Any, digits: int = 4) -> str:
    f = _num(x)
    return DASH if f is None else f"{f:.{digits}f}" if f < 10 else f"{f:.{digits - 1}f}"


def fmt_params(x: Any) -> str:
    """1234567 -> '1.23M'."""
    f = _num(x)
    if f is None:
        return DASH
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if f >= scale:
            return f"{f / scale:.3g}{unit}"
    return f"{int(f)}"


def fmt_rate(x: Any) -> str:
    """Tokens per second: '850', '12.3K', '1.2M'."""
    f = _num(x)
    if f is None:
        return DASH
    if f >= 1e6:
        return f"{f / 1e6:.1f}M"
    if f >= 1e3:
        return f"{f / 1e3:.1f}K"
    return f"{f:.0f}"


def fmt_duration(x: Any) -> str:
    """Seconds -> '45s', '12m', '3h05m', '2d04h': the CLI's rule (engine.units)."""
    return format_seconds(_num(x))


def fmt_bytes(x: Any) -> str:
    """Bytes in binary units, one decimal below 100: '18.2G', '512M'."""
    return format_bytes(_num(x), compact=True)


def fmt_score(x: Any) -> str:
    f = _num(x)
    return DASH if f is None else f"{f:.2f}"


def fmt_iter(it: Any, max_iters: Any) -> str:
    i = _num(it)
    m = _num(max_iters)
    left = DASH if i is None else str(int(i))
    return left if m is None else f"{left}/{int(m)}"


def sparkline(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last `width` values as block characters; `top` fixes the scale (e.g. 100 %)."""
    vals = [v for v in values if _num(v) is not None][-width:]
    if not vals:
        return " " * width
    hi = top if top else max(vals) or 1.0
    out = "".join(BLOCKS[min(len(BLOCKS) - 1, max(0, int(v / hi * (len(BLOCKS) - 1) + 0.5)))]
                  for v in vals)
    return out.rjust(width)


def elide_middle(s: str, width: int) -> str:
    """`s` in at most `width` characters, its middle replaced by "…": a run id keeps its
    sweep at the front and its varied value at the end, the parts that tell runs apart."""
    if len(s) <= width:
        return s
    if width <= 1:
        return "…"[:max(width, 0)]
    head = (width - 1 + 1) // 2
    tail = width - 1 - head
    return s[:head] + "…" + (s[-tail:] if tail else "")
