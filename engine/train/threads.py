"""How many threads a CPU run trains with: the cores free to it, followed as the load moves.

Why. torch's OpenMP threads meet at a barrier after every parallel op, and a thread whose
core another process holds arrives late, while its siblings spin waiting for it. On a
2-core machine with one core kept busy by someone else, a 2-thread run measured 7x slower
than the same run with one thread; one thread on the free core lost nothing. Students'
laptops, course servers and CI runners are such machines, and nanotui itself may run
several CPU runs side by side (`max_cpu_runs`).

The choice (`choose`):
  - fixed: NANOTUI_CPU_THREADS=N (the environment wins) or `cpu_threads = N` in the
    config: N threads whatever the load;
  - auto: the cores of this process's affinity mask, minus the cores other processes keep
    busy (a core counts as theirs when they use half of it or more), at least 1, and never
    more than the cores divided by our CPU runs on the machine (the registry below) nor
    than OMP_NUM_THREADS where it is set (the user's word); at start, not more than the
    share of the cores the dispatcher gave the run either (NANOTUI_CPU_SHARE).

Followed (`Governor.check`, at every eval and log point): the load of other processes is
measured over the time since the last look (the CPU time of this process's cores minus
this process's own), and only over windows of SETTLE_S seconds or more, so a burst of a
second does not change anything; a run gives up a core when others take half of it and
takes one back only when they leave it mostly idle (under UP_BUSY), so a load at the edge
does not make the count flap.

Our CPU runs: each CPU run keeps a file in REGISTRY (NANOTUI_CPU_RUNS_DIR, else
<tmp>/nanotui-cpu-runs, shared by every user like the GPU reservations) while it lives;
files of processes that are gone are not counted.
"""

from __future__ import annotations

import atexit
import os
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ENV = "NANOTUI_CPU_THREADS"
REGISTRY_ENV = "NANOTUI_CPU_RUNS_DIR"
SHARE_ENV = "NANOTUI_CPU_SHARE"   # the dispatcher's share of the cores for this run, at start
DOWN_BUSY = 0.5     # a core others use this much of is theirs: give it up
UP_BUSY = 0.3       # take a core back only when others use less than this of it
SETTLE_S = 5.0      # the shortest window a change is decided on
SAMPLE_S = 0.3      # the blocking sample at start-up, while this process is idle


def affinity_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def fixed_threads(config_value: str | int) -> tuple[int | None, str]:
    """(fixed thread count or None for auto, where it came from). The environment wins."""
    raw = os.environ.get(ENV, "").strip().lower()
    if raw and raw != "auto":
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{ENV}={raw!r}: expected auto or a whole number of threads (1 or more)")
        return int(raw), f"fixed by {ENV}={raw}"
    if raw == "auto":
        return None, ""
    if config_value != "auto":
        return int(config_value), f"fixed by cpu_threads = {config_value} in the config"
    return None, ""


def omp_ceiling(starting: bool = False) -> int | None:
    """OMP_NUM_THREADS (the user's word: always a ceiling) and, at start only, the share the
    dispatcher gave this run (its other runs may not have registered yet; later the
    registry says how many there are, so a run left alone takes the cores back)."""
    found = []
    for var in ("OMP_NUM_THREADS", SHARE_ENV) if starting else ("OMP_NUM_THREADS",):
        raw = os.environ.get(var, "").split(",")[0].strip()
        if raw.isdigit() and int(raw) > 0:
            found.append(int(raw))
    return min(found) if found else None


def auto_threads(cores: int, others: float | None, our_runs: int, current: int | None = None,
                 ceiling: int | None = None) -> tuple[int, str]:
    """The thread count for `cores` cores of which other processes keep `others` busy, with
    `our_runs` CPU runs of ours (this one included) sharing them; `current` is the count in
    use (None at start), so a load between UP_BUSY and DOWN_BUSY keeps it."""
    share = max(1, cores // max(1, our_runs))
    cap = min(share, ceiling) if ceiling else share
    parts = [f"{cores} core{'s' * (cores != 1)}"]
    if others is None:
        n = cap
        parts.append("other load unknown")
    else:
        down = cores - int(others + 1 - DOWN_BUSY)   # others' half-used core is theirs
        up = cores - int(others + 1 - UP_BUSY)
        n = down if current is None or current > down else max(current, up)
        parts.append(f"other processes keep {others:.1f} busy")
    if our_runs > 1:
        parts.append(f"{our_runs} nanotui CPU runs share them")
    if ceiling and ceiling < share:
        parts.append(f"at most {ceiling} by OMP_NUM_THREADS or the dispatcher's share")
    n = max(1, min(n, cap))
    return n, ", ".join(parts)


# ---- the registry of our CPU runs ---------------------------------------------------------------

def registry_dir() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or Path(tempfile.gettempdir()) / "nanotui-cpu-runs")


def _registry() -> Path | None:
    """The directory, created sticky and world-writable; None where it is unusable (then
    each run counts itself alone, as before the registry)."""
    d = registry_dir()
    try:
        d.mkdir(mode=0o1777, exist_ok=True)
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode):
            return None
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != 0o1777:
            os.chmod(d, 0o1777)
        return d
    except OSError:
        return None


def register() -> Path | None:
    """Mark this process as a CPU run of ours until unregister (or its death)."""
    d = _registry()
    if d is None:
        return None
    me = psutil.Process()
    path = d / f"{socket.gethostname()}-{me.pid}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(f"{me.create_time()}\n")
        atexit.register(unregister, path)
        return path
    except OSError:
        return None


def unregister(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


def our_cpu_runs() -> int:
    """Live CPU runs of ours on this machine (at least 1: the caller)."""
    d, host, n = _registry(), socket.gethostname(), 0
    if d is None:
        return 1
    try:
        entries = list(d.iterdir())
    except OSError:
        return 1
    for e in entries:
        name, _, pid = e.name.rpartition("-")
        if name != host or not pid.isdigit():
            continue
        try:
            created = float(e.read_text().strip())
            if abs(psutil.Process(int(pid)).create_time() - created) < 1.0:
                n += 1
        except (OSError, ValueError, psutil.Error):
            continue
    return max(1, n)


# ---- measuring the others ---------------------------------------------------------------------

def _busy_s(cores: list[int]) -> float | None:
    """CPU seconds spent busy so far on `cores`, whoever spent them."""
    try:
        per = psutil.cpu_times(percpu=True)
    except (OSError, RuntimeError):
        return None
    total = 0.0
    for i in cores:
        if i >= len(per):
            continue
        t = per[i]
        total += (sum(t) - t.idle - getattr(t, "iowait", 0.0)
                  - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0))
    return total


def _own_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


@dataclass
class Sample:
    at: float
    busy: float | None
    own: float


def now() -> float:
    return time.monotonic()


def sample() -> Sample:
    return Sample(now(), _busy_s(affinity_cores()), _own_s())


def others_busy(a: Sample, b: Sample) -> float | None:
    """Cores other processes kept busy between two samples (this process's own CPU time
    taken out)."""
    if a.busy is None or b.busy is None or b.at <= a.at:
        return None
    return round(max(0.0, (b.busy - a.busy) - (b.own - a.own)) / (b.at - a.at), 2)


# ---- the governor -------------------------------------------------------------------------------

class Governor:
    """This run's thread count: chosen at start, then followed by `check`."""

    def __init__(self, config_value: str | int = "auto", settle_s: float = SETTLE_S):
        self.fixed, self.fixed_why = fixed_threads(config_value)
        self.settle_s = settle_s
        self.cores = affinity_cores()
        self.registration = register()
        self.threads = 0
        self.why = ""
        self.others: float | None = None
        self.last = sample()

    def start(self) -> str:
        """Choose and apply the first count (a short sample of the machine first, while this
        process is idle); the line for stdout.log."""
        if self.fixed is not None:
            self._apply(self.fixed, self.fixed_why)
            return self.line()
        time.sleep(SAMPLE_S)
        latest = sample()
        self.others, self.last = others_busy(self.last, latest), latest
        n, why = auto_threads(len(self.cores), self.others, our_cpu_runs(), None, omp_ceiling(True))
        self._apply(n, why)
        return self.line()

    def check(self) -> str | None:
        """Look at the load since the last look (once SETTLE_S have passed); a changed count
        is applied and its line returned, else None."""
        if self.fixed is not None or now() - self.last.at < self.settle_s:
            return None  # between windows a check costs a clock read (it runs every step)
        latest = sample()
        self.others, self.last = others_busy(self.last, latest), latest
        n, why = auto_threads(len(self.cores), self.others, our_cpu_runs(), self.threads, omp_ceiling())
        if n == self.threads:
            self.why = why
            return None
        self._apply(n, why)
        return self.line()

    def _apply(self, n: int, why: str) -> None:
        import torch  # here, not at import: placement and `nanotui status` read this module
        torch.set_num_threads(n)
        self.threads, self.why = n, why

    def line(self) -> str:
        return f"{self.threads} thread{'s' * (self.threads != 1)} ({self.why})"

    def status(self) -> dict:
        """status.json's fields: what every view shows beside tok/s."""
        return {"cpu_threads": self.threads, "cpu_threads_why": self.why}

    def close(self) -> None:
        unregister(self.registration)
        self.registration = None
