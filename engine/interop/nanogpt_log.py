"""nanoGPT's stdout, as `python train.py ... | tee log.txt` saves it, read back as
metrics.jsonl records.

train.py prints, among other lines:

    tokens per iteration will be: 16,384
    step 250: train loss 1.9712, val loss 2.0801
    iter 250: loss 2.0304, time 31.05ms, mfu 5.43%

`step N` is the eval after N optimizer steps, which is nanotui's eval record at iter N.
`iter N` is the loss of the step that *starts* at N (train.py prints, then increments
iter_num), so it is nanotui's train record at iter N + 1 ("the loss of the (N+1)-th step").
The first iterations print `mfu -100.00%` (train.py's placeholder before it has measured):
recorded as unknown. Records are written in iteration order, an eval before the train
record of the same iteration (the eval at N sees the model after N steps; the train
record N is the N-th step's loss).

A run that was resumed prints again from its checkpoint: a line that does not come after
the one before it (in train.py's order: `step N` before `iter N`, N rising) starts a
resumption, and it replaces every line printed before it from that point on, as nanotui's
own resume replaces the records past its checkpoint.

A log of a long run is large (a million `iter` lines with log_interval = 1, 50 MB), so it
is streamed, twice, never held: `scan_log` reads it once to check it and find the
resumptions before anything is written; `write_records` reads it again and writes each
surviving line straight to metrics.jsonl, keeping only the numbers status.json needs.
Both report their progress in bytes.
"""

from __future__ import annotations

import re
import statistics
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

_NUM = r"(-?[0-9.]+(?:e[-+]?\d+)?|nan|inf)"
TRAIN_LINE = re.compile(rf"^iter (\d+): loss {_NUM}, time {_NUM}ms(?:, mfu {_NUM}%)?")
EVAL_LINE = re.compile(rf"^step (\d+): train loss {_NUM}, val loss {_NUM}")
TOKENS_LINE = re.compile(r"^tokens per iteration will be: ([0-9,]+)")
SETTLE_ITERS = 5          # train.py's own rule: mfu (and so speed) only counts after 5 iterations
PROGRESS_BYTES = 1 << 20  # report progress every this many bytes read

Progress = Callable[[int, int], None]   # (bytes read, bytes in all)


@dataclass
class NanoGptLog:
    """What the first read found: enough to refuse a log, or to write it."""
    path: Path
    size: int = 0
    train_lines: int = 0
    eval_lines: int = 0
    tokens_per_iter: int | None = None
    # (line number, order key) of each line that starts a resumption, in file order
    restarts: list[tuple[int, tuple[int, int]]] = field(default_factory=list)


@dataclass
class LogCurve:
    """The numbers status.json takes from the records written."""
    trains: int = 0
    evals: int = 0
    best: tuple[int, float] | None = None                 # (iter, val loss)
    last_eval: tuple[int, float, float] | None = None     # (iter, val loss, train loss)
    tok_s: float | None = None                            # median after SETTLE_ITERS
    mfu: float | None = None                              # the last one measured


def _lines(path: Path, progress: Progress | None) -> Iterator[tuple[int, str, int, dict]]:
    """(line number, kind, printed N, fields) of every train, eval and tokens line."""
    total = path.stat().st_size
    done = reported = 0
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            done += len(raw)
            if progress is not None and done - reported >= PROGRESS_BYTES:
                progress(done, total)
                reported = done
            line = raw.decode("utf-8", "replace").strip()
            if m := TRAIN_LINE.match(line):
                mfu = float(m.group(4)) if m.group(4) is not None else None
                yield i, "train", int(m.group(1)), {
                    "loss": float(m.group(2)), "dt_ms": float(m.group(3)),
                    "mfu": mfu / 100 if mfu is not None and mfu >= 0 else None}
            elif m := EVAL_LINE.match(line):
                yield i, "eval", int(m.group(1)), {"train_loss": float(m.group(2)),
                                                   "val_loss": float(m.group(3))}
            elif m := TOKENS_LINE.match(line):
                yield i, "tokens", 0, {"tokens_per_iter": int(m.group(1).replace(",", ""))}
    if progress is not None:
        progress(total, total)


def _key(kind: str, n: int) -> tuple[int, int]:
    """A line's place in train.py's order: `step N`, then `iter N`, then `step N+1`..."""
    return (n, 0 if kind == "eval" else 1)


def scan_log(path: Path, progress: Progress | None = None) -> NanoGptLog:
    """First read: count the train and eval lines, note the resumptions; other lines are
    ignored."""
    log = NanoGptLog(Path(path), Path(path).stat().st_size)
    last: tuple[int, int] | None = None
    for i, kind, n, fields in _lines(log.path, progress):
        if kind == "tokens":
            log.tokens_per_iter = fields["tokens_per_iter"]
            continue
        if kind == "train":
            log.train_lines += 1
        else:
            log.eval_lines += 1
        key = _key(kind, n)
        if last is not None and key <= last:
            log.restarts.append((i, key))
        last = key
    return log


def _records(log: NanoGptLog, tokens_per_iter: int,
             progress: Progress | None) -> Iterator[dict[str, Any]]:
    """The surviving lines as records, in iteration order."""
    # a line survives when its key is below that of every later resumption: the smallest
    # key among the resumptions after each one, walked with the file
    later_min: list[tuple[int, int]] = []
    for _, key in reversed(log.restarts):
        later_min.append(min(key, later_min[-1]) if later_min else key)
    later_min.reverse()
    r = 0
    held: dict[str, Any] | None = None   # a train record waits for an eval of its iteration
    for i, kind, n, fields in _lines(log.path, progress):
        while r < len(log.restarts) and log.restarts[r][0] <= i:
            r += 1
        if kind == "tokens" or (r < len(later_min) and _key(kind, n) >= later_min[r]):
            continue
        if kind == "eval":
            if held is not None and held["iter"] < n:
                yield held
                held = None
            yield {"kind": "eval", "iter": n, **fields, "tokens": n * tokens_per_iter}
            if held is not None:   # the train record of this iteration: after its eval
                yield held
                held = None
            continue
        if held is not None:
            yield held
        it = n + 1
        dt = fields["dt_ms"]
        held = {"kind": "train", "iter": it, **fields, "tokens": it * tokens_per_iter,
                "tok_s": tokens_per_iter / (dt / 1000) if dt else None}
    if held is not None:
        yield held


def write_records(log: NanoGptLog, tokens_per_iter: int,
                  write_all: Callable[[Iterable[dict[str, Any]]], None],
                  progress: Progress | None = None) -> LogCurve:
    """Second read: the surviving records, in order, to `write_all` (which consumes them
    one by one); the curve's numbers. `tokens_per_iter` is used when the log does not
    print it."""
    tpi = log.tokens_per_iter or tokens_per_iter
    curve = LogCurve()
    settled = array("d")   # 8 bytes a step: the median needs them all

    def tallied() -> Iterator[dict[str, Any]]:
        for rec in _records(log, tpi, progress):
            if rec["kind"] == "eval":
                curve.evals += 1
                if curve.best is None or rec["val_loss"] < curve.best[1]:
                    curve.best = (rec["iter"], rec["val_loss"])
                curve.last_eval = (rec["iter"], rec["val_loss"], rec["train_loss"])
            else:
                curve.trains += 1
                if rec["iter"] > SETTLE_ITERS and rec["tok_s"]:
                    settled.append(rec["tok_s"])
                if rec["mfu"] is not None:
                    curve.mfu = rec["mfu"]
            yield rec

    write_all(tallied())
    curve.tok_s = statistics.median(settled) if settled else None
    return curve
