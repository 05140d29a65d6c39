"""A run's compute and time axes: training FLOPs, training seconds and bytes per token,
the one home the TUI chart, runs.csv and the report's figures read them from.

    tokens        the record's `tokens` (the trainer writes it), else iter × tokens per iter
    train FLOPs   tokens × engine.model.arithmetic.train_flops_per_token(cfg, vocab): 6N plus
                  attention, N in nanoGPT's count (the one MFU uses)
    train time    engine.train.control.TrainClock: seconds in optimizer steps, the rule the
                  ETA uses (evals, samples and start-up left out)
    bits per byte loss / ln 2 / bytes per token, the bytes per token of the prepared data's
                  meta.json (source bytes / tokens); unknown where the data does not say
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import ConfigError, TrainConfig
from engine.model.arithmetic import flops_per_token, model_vocab, train_flops_per_token
from engine.report.meta import find_meta
from engine.runs import RunDir
from engine.train.control import TrainClock

LN2 = math.log(2)
X_AXES = ("iter", "tokens", "time", "flops")  # the order the TUI's x key cycles through
X_LABELS = {"iter": "iterations", "tokens": "tokens", "time": "training time (s)",
            "flops": "training FLOPs"}

METHODS = {
    "train_flops": "Training FLOPs: tokens trained × FLOPs per token, 6N + 12·L·C·T "
                   "(forward and backward, attention included; N in nanoGPT's count, "
                   "`engine.model.arithmetic.train_flops_per_token`, the figure MFU uses).",
    "train_time": "Training time: the seconds spent in optimizer steps, summed from the "
                  "train records (each record's seconds per step × the steps since the "
                  "previous record), the rule the ETA uses: evals, sampling and start-up "
                  "are left out, so runs with different eval settings compare fairly. It "
                  "is measured on the device each run had, under the load it had: runs "
                  "that shared a CPU or GPU with other work are slower than alone.",
    "tokens_per_param": "Tokens per parameter: tokens trained / parameters in nanoGPT's "
                        "count (Chinchilla's compute-optimal ratio is about 20 in its own "
                        "count, which includes every embedding).",
    "val_bpb": "Val bits per byte: best val loss / ln 2 / bytes per token, the bytes per "
               "token of the prepared data's meta.json (UTF-8 source bytes / tokens); it "
               "compares runs across tokenizers; — where the data does not record it.",
}


@dataclass(frozen=True)
class RunAxes:
    """The per-run constants that turn a record into its x and y values."""
    tokens_per_iter: int | None = None
    flops_per_token: float | None = None
    bytes_per_token: float | None = None
    bpb_note: str = ""       # why bits per byte are unknown ("" when known)

    def tokens(self, rec: dict[str, Any]) -> float | None:
        t = _num(rec.get("tokens"))
        if t is not None:
            return t
        it = _num(rec.get("iter"))
        return it * self.tokens_per_iter if it is not None and self.tokens_per_iter else None

    def flops(self, tokens: float | None) -> float | None:
        return tokens * self.flops_per_token if tokens is not None and self.flops_per_token else None

    def bpb(self, loss: float | None) -> float | None:
        return loss / LN2 / self.bytes_per_token if loss is not None and self.bytes_per_token else None


def run_axes(run: RunDir, runs_root: Path, cfg: TrainConfig | None = None,
             status: dict[str, Any] | None = None,
             meta: tuple[dict | None, str] | None = None) -> RunAxes:
    """The run's axes from its config, status.json and prepared data (read when not given)."""
    if cfg is None:
        try:
            cfg = run.load_config()
        except ConfigError:
            return RunAxes(bpb_note="bpb n/a: no readable config.toml")
    status = run.read_status() if status is None else status
    m, src = find_meta(cfg, status, runs_root) if meta is None else meta
    fpt = None
    try:
        fpt = train_flops_per_token(cfg, model_vocab(cfg, m or {}))
    except (ConfigError, ValueError, TypeError):
        params = _num(status.get("params"))  # the trained model's nanoGPT count
        if params:
            fpt = flops_per_token(cfg.n_layer, cfg.n_embd, cfg.block_size, int(params))
    bpt = _num((m or {}).get("bytes_per_token")) or _num(status.get("bytes_per_token"))
    note = "" if bpt else ("bpb n/a: the prepared data records no bytes per token"
                           if m is not None else f"bpb n/a: {src}")
    return RunAxes(cfg.tokens_per_iter, fpt, bpt if bpt and bpt > 0 else None, note)


@dataclass(frozen=True)
class Point:
    """One metrics record on every x axis."""
    iter: float
    tokens: float | None
    time: float | None
    flops: float | None

    def x(self, axis: str) -> float | None:
        return getattr(self, axis)


def points(records: list[dict[str, Any]], axes: RunAxes) -> list[Point | None]:
    """Each record (train and eval mixed, in file order) on every x axis; None for a
    record without an iteration."""
    clock = TrainClock()
    return [point(r, clock, axes) for r in records]


def point(rec: dict[str, Any], clock: TrainClock, axes: RunAxes) -> Point | None:
    """One record on every x axis, `clock` fed every record in file order (a streaming
    reader keeps one clock and thins what it keeps afterwards)."""
    it = _num(rec.get("iter"))
    t = clock.add(rec)
    if it is None:
        return None
    tok = axes.tokens(rec)
    return Point(it, tok, t, axes.flops(tok))


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def frontier(curves: list[tuple[str, list[tuple[float, float]]]]) -> list[tuple[float, float, str]]:
    """The lower envelope of several runs' (x, loss) curves: the points where a loss lower
    than every point at smaller or equal x is reached, each with its run, in x order. With
    x = training FLOPs this is the compute-efficient frontier (the lowest loss any run
    reached for a given compute); points with x <= 0 (before the first step) are skipped."""
    pts = sorted((x, y, name) for name, c in curves for x, y in c
                 if x is not None and y is not None and x > 0 and math.isfinite(y))
    out: list[tuple[float, float, str]] = []
    for x, y, name in pts:
        if not out or y < out[-1][1]:
            out.append((x, y, name))
    return out


def lower_envelope(curves: list[list[tuple[float, float]]], n: int = 256,
                   log: bool = True) -> list[tuple[float, float]]:
    """The lower envelope of several runs' (x, loss) curves, sampled at `n` x values plus
    every point: at each x the lowest loss any run reaches with at most x, a run's curve
    read between its evals by interpolation (in log-log when `log`) and a run that ended
    below x counting with its best loss. Where no run has points the envelope stays flat."""
    cs = [sorted(p for p in c if p[0] > 0 and math.isfinite(p[1]) and (not log or p[1] > 0))
          for c in curves]
    cs = [c for c in cs if c]
    if not cs:
        return []
    f = (lambda v: math.log(v)) if log else (lambda v: v)
    lo, hi = min(c[0][0] for c in cs), max(c[-1][0] for c in cs)
    steps = [f(lo) + (f(hi) - f(lo)) * i / (n - 1) for i in range(n)]
    grid = sorted({x for c in cs for x, _ in c} |  # clamped: exp(log(lo)) may fall below lo
                  {min(max(math.exp(v) if log else v, lo), hi) for v in steps})

    def at(c: list[tuple[float, float]], x: float) -> float | None:
        if x < c[0][0]:
            return None
        best = min(y for cx, y in c if cx <= x)
        for (x0, y0), (x1, y1) in zip(c, c[1:]):
            if x0 <= x <= x1 and x1 > x0:
                w = (f(x) - f(x0)) / (f(x1) - f(x0))
                y = math.exp(f(y0) + w * (f(y1) - f(y0))) if log else y0 + w * (y1 - y0)
                return min(best, y)
        return best
    out = []
    for x in grid:
        ys = [y for y in (at(c, x) for c in cs) if y is not None]
        out.append((x, min(ys)))
    return out
