"""How the training process is stopped and timed: SIGTERM/SIGINT become a request the loop
honours between steps (or, before the first step, an exception that unwinds setup), and
StepTimer turns step laps into the tokens/s and ETA that status.json reports."""

from __future__ import annotations

import signal
import statistics
import time

TIMING_WARMUP_STEPS = 3  # steps (after start, resume or an eval) left out of the ETA


class Stop:
    """Set by SIGTERM/SIGINT; the loop finishes its step, checkpoints and stops."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        self.previous = {sig: signal.signal(sig, self._handle)
                         for sig in (signal.SIGTERM, signal.SIGINT)}

    def uninstall(self) -> None:
        for sig, handler in getattr(self, "previous", {}).items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = True


class StepTimer:
    """Seconds per training step for tok/s and the ETA. Laps are taken at log points
    (after a synchronising .item()); the first TIMING_WARMUP_STEPS steps after a start,
    a resume or an eval (compilation, allocator and cache warm-up) are left out of the ETA,
    and eval time never enters it because the timer restarts after each eval."""

    WINDOW = 200

    def __init__(self, now: float | None = None):
        self.times: list[float] = []
        self.restart(now)

    def restart(self, now: float | None = None) -> None:
        self.t_last = time.time() if now is None else now
        self.steps = 0
        self.skip = TIMING_WARMUP_STEPS

    def lap(self, now: float) -> float:
        """Close the lap over the `steps` since the last one; return seconds per step."""
        n = max(self.steps, 1)
        dt = (now - self.t_last) / n
        if self.skip > 0:
            self.skip -= n
        else:
            self.times.extend([dt] * n)
            del self.times[:-self.WINDOW]
        self.t_last, self.steps = now, 0
        return dt

    def median(self) -> float:
        return statistics.median(self.times)

    def eta(self, steps_left: int) -> float | None:
        if not self.times:
            return None
        return sum(self.times) / len(self.times) * max(steps_left, 0)


class SetupStopped(Exception):
    """SIGTERM arrived before the first training step."""


def stop_setup(signum, frame) -> None:
    raise SetupStopped()


class TrainClock:
    """Training seconds so far, read back from metrics.jsonl's train records by the rule
    StepTimer measures them with: a record's `dt_ms` is its lap's seconds per step, and
    the timer restarts after every eval (samples included), so `dt_ms × steps since the
    previous record` sums the time spent in optimizer steps and nothing else. Start-up
    and evals are gaps in the wall clock that this clock skips; a resume continues it
    from the records the resumed file kept. Fed records in file order (train and eval
    mixed), it gives each one the training time at that point."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.iter = 0
        self.step_s: float | None = None  # the last lap's seconds per step

    def add(self, rec: dict) -> float | None:
        """The training seconds at `rec`; a train record advances the clock. None while
        no record has carried a step time (a log without `dt_ms`)."""
        it = rec.get("iter")
        if isinstance(it, bool) or not isinstance(it, (int, float)):
            return None
        dt = rec.get("dt_ms")
        if rec.get("kind") == "train":
            if isinstance(dt, (int, float)) and not isinstance(dt, bool) and 0 <= dt < float("inf"):
                self.step_s = dt / 1000
            if self.step_s is None:
                return None
            self.seconds += max(it - self.iter, 0) * self.step_s
            self.iter = max(self.iter, it)
            return self.seconds
        if self.step_s is None:
            return 0.0 if it <= self.iter else None  # an eval before the first step
        # an eval after steps no train record has logged yet (eval_interval not a
        # multiple of log_interval): those steps at the last lap's pace
        return self.seconds + max(it - self.iter, 0) * self.step_s


def train_seconds(records: list[dict]) -> list[float | None]:
    """TrainClock over `records` in file order: the training seconds at each."""
    clock = TrainClock()
    return [clock.add(r) for r in records]
