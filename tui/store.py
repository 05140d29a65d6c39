"""The runs directory as the TUI sees it: one reading per run, loss series, samples, the log.

`RunStore` turns the runs directory into immutable `RunReading` rows (engine.report.reading:
the same reading `nanotui status` and the report use, so the views agree) and per-run loss
series. It is only ever driven from one poll worker thread; the UI reads the series
(append-only lists) and the readings it is handed in messages. Every read is incremental:
status.json is re-read only when its mtime changes (or, for running runs, every few
seconds to notice a dead process), metrics and samples through `JsonlTail` (new bytes
only), and only for the runs the visible screen watches. A reading's `damaged` names a
missing config.toml for every run, and the first bad metrics/samples line for the
watched runs (the lines a tail has read).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.launch.queue import dispatcher_pid
from engine.report.compute import RunAxes, run_axes
from engine.report.reading import RunReading, read_run
from engine.runs import JsonlTail, RunDir, list_runs, list_shared
from engine.train.control import TrainClock

LIVENESS_CHECK_S = 5.0   # how often a running run's process is checked without a status change
LOG_FIRST_BYTES = 64 * 1024  # a newly shown log starts at its last 64 KiB


@dataclass
class Series:
    """A run's loss curves; append-only lists (the UI reads while the poller appends).
    Each point is on every x axis (engine.report.compute): iterations, tokens, training
    seconds and training FLOPs (None where the run's records cannot say)."""

    train_iter: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_tokens: list[float] = field(default_factory=list)
    train_time: list[float | None] = field(default_factory=list)
    train_flops: list[float | None] = field(default_factory=list)
    eval_iter: list[int] = field(default_factory=list)
    eval_train: list[float] = field(default_factory=list)
    eval_val: list[float] = field(default_factory=list)
    eval_tokens: list[float] = field(default_factory=list)
    eval_time: list[float | None] = field(default_factory=list)
    eval_flops: list[float | None] = field(default_factory=list)
    axes: RunAxes = field(default_factory=RunAxes)

    def train_x(self, axis: str) -> list:
        return {"iter": self.train_iter, "tokens": self.train_tokens,
                "time": self.train_time, "flops": self.train_flops}[axis]

    def eval_x(self, axis: str) -> list:
        return {"iter": self.eval_iter, "tokens": self.eval_tokens,
                "time": self.eval_time, "flops": self.eval_flops}[axis]


@dataclass(frozen=True)
class PollResult:
    views: tuple[RunReading, ...]
    metrics_changed: frozenset[str] = frozenset()
    samples_changed: frozenset[str] = frozenset()
    log_id: str | None = None
    log_text: str = ""
    log_reset: bool = False
    dispatcher: int | None = None   # the pid of the dispatcher holding the runs dir, if any


class _Tracked:
    def __init__(self, run: RunDir):
        self.run = run
        self.status_key: tuple[int, int] | None = None
        self.checked_at = 0.0
        self.view: RunReading | None = None
        self.metrics: JsonlTail | None = None
        self.series = Series()
        self.samples_tail: JsonlTail | None = None
        self.samples: list[dict[str, Any]] = []
        self.axes: RunAxes | None = None
        self.clock = TrainClock()
        self.bad_lines: tuple[str, ...] = ()


class RunStore:
    def __init__(self, runs_root: Path, clock=time.monotonic):
        self.runs_root = Path(runs_root)
        self._clock = clock
        self._runs: dict[str, _Tracked] = {}
        self._watch: frozenset[str] = frozenset()
        self._log_id: str | None = None
        self._log_offset = 0
        self._lock = threading.Lock()

    # -- called from the UI thread --
    def watch(self, ids: Iterable[str]) -> None:
        """Tail metrics and samples of these runs (the rest only get status)."""
        with self._lock:
            self._watch = frozenset(ids)

    def show_log(self, run_id: str | None) -> None:
        with self._lock:
            if run_id != self._log_id:
                self._log_id, self._log_offset = run_id, -1

    def series(self, run_id: str) -> Series | None:
        t = self._runs.get(run_id)
        return t.series if t else None

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        t = self._runs.get(run_id)
        return list(t.samples) if t else []

    # -- called from the poll worker --
    def poll(self) -> PollResult:
        with self._lock:
            watch, log_id, log_offset = self._watch, self._log_id, self._log_offset
        # a shared run also shows in the other sweeps that name it (its links)
        current = {r.id: r for r in list_runs(self.runs_root)
                   + [link for link, _ in list_shared(self.runs_root)]}
        for rid in list(self._runs):
            if rid not in current:
                del self._runs[rid]
        now = self._clock()
        metrics_changed: set[str] = set()
        samples_changed: set[str] = set()
        views = []
        for rid, run in current.items():
            t = self._runs.get(rid)
            if t is None:
                t = self._runs[rid] = _Tracked(run)
            if rid in watch:
                if self._tail_metrics(t):
                    metrics_changed.add(rid)
                if self._tail_samples(t):
                    samples_changed.add(rid)
            self._refresh_status(t, now)
            views.append(t.view)
        text, reset, new_offset = "", False, log_offset
        if log_id in current:
            text, reset, new_offset = _read_log(current[log_id].stdout_path, log_offset)
        with self._lock:
            if self._log_id == log_id:
                self._log_offset = new_offset
        queued = any(v.state == "queued" for v in views)
        return PollResult(tuple(views), frozenset(metrics_changed), frozenset(samples_changed),
                          log_id, text, reset, dispatcher_pid(self.runs_root) if queued else None)

    def _refresh_status(self, t: _Tracked, now: float) -> None:
        try:
            st = t.run.status_path.stat()
            key = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = (0, 0)
        stale = (t.view is not None and t.view.state in ("running", "stalled")
                 and now - t.checked_at > LIVENESS_CHECK_S)
        tails = tuple(x for x in (t.metrics, t.samples_tail) if x is not None)
        bad_lines = tuple(x.damage for x in tails)
        if key != t.status_key or stale or t.view is None or bad_lines != t.bad_lines:
            # merged with the executor: a PENDING Slurm job is queued
            t.view = read_run(t.run, damage=t.run.damage(tails))
            t.status_key, t.checked_at, t.bad_lines = key, now, bad_lines

    def _tail_metrics(self, t: _Tracked) -> bool:
        if t.metrics is None:
            t.metrics = t.run.metrics_tail()
        # a chunk at a time (iter_new): a million-line file never sits in memory as dicts
        recs = t.metrics.iter_new()
        first = next(recs, None)
        if t.metrics.take_reset():
            t.series = Series(axes=t.series.axes)  # a resume rewrote the file: start afresh
            t.clock = TrainClock()
        if first is None:
            return False
        if t.axes is None:  # once per run: its config and prepared data do not change
            try:
                t.axes = run_axes(t.run, self.runs_root)
            except Exception as e:  # an unreadable config or meta.json: iterations still work
                t.axes = RunAxes(bpb_note=f"bpb n/a: {e}")
            t.series.axes = t.axes
        s, axes = t.series, t.axes
        for r in itertools.chain((first,), recs):
            secs = t.clock.add(r)
            it = r.get("iter")
            if not isinstance(it, (int, float)):
                continue
            tokens = axes.tokens(r) or 0
            if r.get("kind") == "train" and _is_num(r.get("loss")):
                s.train_iter.append(it), s.train_loss.append(float(r["loss"]))
                s.train_tokens.append(tokens)
                s.train_time.append(secs), s.train_flops.append(axes.flops(tokens))
            elif r.get("kind") == "eval" and _is_num(r.get("val_loss")):
                s.eval_iter.append(it), s.eval_val.append(float(r["val_loss"]))
                s.eval_train.append(float(r["train_loss"]) if _is_num(r.get("train_loss")) else float("nan"))
                s.eval_tokens.append(tokens)
                s.eval_time.append(secs), s.eval_flops.append(axes.flops(tokens))
        return True

    def _tail_samples(self, t: _Tracked) -> bool:
        if t.samples_tail is None:
            t.samples_tail = t.run.samples_tail()
        recs = t.samples_tail.read_new()
        if t.samples_tail.take_reset():
            t.samples = []
        if recs:
            t.samples = t.samples + recs  # a new list: readers keep a consistent one
        return bool(recs)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def _read_log(path: Path, offset: int) -> tuple[str, bool, int]:
    """New text of stdout.log since `offset` (-1: start at the last 64 KiB)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "", offset != 0, 0
    reset = offset < 0 or size < offset
    if reset:
        offset = max(0, size - LOG_FIRST_BYTES)
    if size == offset:
        return "", reset, offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n")  # whole lines only; a partial one waits
    if end < 0:
        return "", reset, offset
    return data[: end + 1].decode("utf-8", "replace"), reset, offset + end + 1


def latest_samples(samples: list[dict[str, Any]], iteration: int | None = None) -> dict[str, dict]:
    """The latest sample per prompt (at or before `iteration` when given)."""
    out: dict[str, dict] = {}
    for s in samples:
        it = s.get("iter", 0) or 0
        if iteration is not None and it > iteration:
            continue
        prev = out.get(s.get("prompt", ""))
        if prev is None or (prev.get("iter", 0) or 0) <= it:
            out[s.get("prompt", "")] = s
    return out
