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


def fit_title(name: str, rest: list, width: int, min_name: int = 24) -> str:
    """"name · rest[0] · rest[1]" in `width` characters (Textual cuts a border title at
    the corner). A part of `rest` may be a tuple, its long form first, its short form
    last. The name, a run id, loses its middle first (down to `min_name`); then every
    part takes its short form; then the last parts go, so order `rest` by importance;
    the first part alone loses its end.
    width <= 0: not laid out yet, everything whole."""
    items = [[r] if isinstance(r, str) else list(r) for r in rest if r]
    if width <= 0:
        return " · ".join([name, *(i[0] for i in items)])
    tries = [[i[0] for i in items], [i[-1] for i in items]]
    tries += [[i[-1] for i in items[:k]] for k in range(len(items) - 1, -1, -1)]
    for parts in tries:
        tail = "".join(" · " + p for p in parts)
        room = width - len(tail)
        if room >= len(name):
            return name + tail
        if room >= min(len(name), min_name):
            return elide_middle(name, room) + tail
    if items:  # the first part alone is too long: its end goes (a reason reads from the start)
        short = elide_middle(name, min(len(name), min_name))
        room = width - len(short) - 3
        if room >= 12:
            first = items[0][-1]
            return f"{short} · {first[:room - 1]}…"
    return elide_middle(name, width)
