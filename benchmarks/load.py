"""Load for the speed benchmarks: a core kept busy on purpose, and a meter of everybody else.

On a shared machine a figure means little without the load it was taken under: `OtherLoad`
measures the cores that processes other than the benchmark's own (its workers and its
spinner) kept busy while it measured, from the machine's CPU time minus theirs.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


class Spinner:
    """A process that keeps one core busy until stopped (a context manager)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Spinner":
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # running before anyone measures
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


def _busy_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class OtherLoad:
    """Cores kept busy by processes other than `pids` between start() and stop()."""

    def __init__(self, pids: list[int]):
        self.pids = [*pids, psutil.Process().pid]

    def start(self) -> "OtherLoad":
        self.t0, self.busy0, self.ours0 = time.monotonic(), _busy_s(), _cpu_s(self.pids)
        return self

    def stop(self) -> float:
        dt = time.monotonic() - self.t0
        others = (_busy_s() - self.busy0) - (_cpu_s(self.pids) - self.ours0)
        return max(0.0, others) / dt if dt > 0 else 0.0
