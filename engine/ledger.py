"""The usage ledger: GPU time per user, for the fair order of engine.launch.share.

One append-only file per user in the reservations directory, `usage-<uid>.jsonl`, created
by that user (mode 0644) and only ever opened with O_APPEND; one line per finished GPU run:

    {"start": t0, "end": t1, "uuid": "GPU-...", "run": "depth/n_layer=8",
     "lease": "lease-1000-4242-0123456789ab"}

A run's line is written by its trainer as it exits, or, when the trainer could not (SIGKILL,
a power cut), by its owner's next dispatcher (engine.leases.settle). Both may try for the
same run (a trainer killed between its line and its lease's removal): a line whose lease id
is already in the file is not written again.

The user a line counts for is its FILE'S OWNER, never a name or a field: in the sticky
directory nobody can remove, rename or write another user's file, so nobody can erase
another's record. (If someone took the name `usage-<uid>.jsonl` first, its owner's lines
count for that someone, and the real user writes `usage-<uid>-1.jsonl`.)

What a cheater can still do: truncate or fill with junk their OWN file (their past use is
forgotten: they move up the fair order), or start processes without nanotui (no lease, no
ledger line; NVML still shows their memory). Runs alive now count from their leases
whatever the ledger says.

Only the last TAIL_BYTES of each file are read (lines are appended in time order, so the
recent window is at the end); lines that do not parse, dated in the future or ending
before the window are skipped.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from collections import defaultdict
from pathlib import Path

from engine.files import NotRegularFile

TAIL_BYTES = 1 << 20
CLOCK_SLACK_S = 60.0


def _my_file(directory: Path) -> Path:
    """Our ledger: the first of usage-<uid>.jsonl, usage-<uid>-1.jsonl... that is ours or free."""
    uid = os.getuid()
    for n in range(16):
        p = directory / (f"usage-{uid}.jsonl" if n == 0 else f"usage-{uid}-{n}.jsonl")
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return p
        if st.st_uid == uid and stat.S_ISREG(st.st_mode):
            return p
    raise OSError(f"no usage ledger name left for uid {uid} in {directory}")


def record(directory: Path, start: float, end: float, unit: str, run: str,
           lease: str | None = None) -> bool:
    """Append one finished run's GPU time to our ledger; False (nothing written) when the
    line of `lease` is there already."""
    doc = {"start": round(start, 3), "end": round(end, 3), "uuid": unit, "run": run}
    if lease is not None:
        doc["lease"] = lease
    fd = os.open(_my_file(Path(directory)),
                 os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise NotRegularFile(f"{directory}: ledger is not our regular file")
        fcntl.flock(fd, fcntl.LOCK_EX)  # check-then-append as one step; closing unlocks
        st = os.fstat(fd)
        if lease is not None and lease in _leases(
                os.pread(fd, TAIL_BYTES, max(0, st.st_size - TAIL_BYTES))):
            return False
        os.fchmod(fd, 0o644)
        os.write(fd, (json.dumps(doc) + "\n").encode())
        return True
    finally:
        os.close(fd)


def _leases(raw: bytes) -> set[str]:
    """The lease ids of the lines in `raw` (a ledger's tail)."""
    out = set()
    for line in raw.splitlines():
        if b'"lease"' not in line:
            continue
        try:
            out.add(str(json.loads(line)["lease"]))
        except (ValueError, TypeError, KeyError):
            continue
    return out


def _tail(path: Path) -> tuple[bytes, int] | None:
    """The last TAIL_BYTES of a regular file (never following a link, never blocking on a
    FIFO) and its owner."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        start = max(0, st.st_size - TAIL_BYTES)
        return os.pread(fd, TAIL_BYTES, start), st.st_uid
    except OSError:
        return None
    finally:
        os.close(fd)


def usage_seconds(directory: Path, window_s: float, now: float | None = None
                  ) -> dict[int, float]:
    """GPU-seconds per uid in the last `window_s`, from every ledger file."""
    now = time.time() if now is None else now
    since = now - window_s
    out: dict[int, float] = defaultdict(float)
    for f in Path(directory).glob("usage-*.jsonl"):
        got = _tail(f)
        if got is None:
            continue
        raw, owner = got
        for line in raw.splitlines():
            try:
                d = json.loads(line)
                start, end = float(d["start"]), float(d["end"])
            except (ValueError, TypeError, KeyError):
                continue  # junk, or the first line cut by the tail
            if end < start or end > now + CLOCK_SLACK_S or end < since:
                continue
            out[owner] += min(end, now) - max(start, since)
    return dict(out)
