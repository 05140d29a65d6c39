"""Leases: one file per GPU run, in the reservations directory, for as long as the run
lives, so every dispatcher of every user counts every user's runs against the fair-share
policy (engine.launch.policy). NVML may not list other users' processes here, and a
reservation (engine.launch.reservations) stops counting once its memory shows or after its
ttl; a lease does not, it only says "this user's run holds this card".

    DIR/lease-<uid>-<pid>-<hex>.lease, mode 0644, written by rename:
    {"uid": 1000, "uuid": "GPU-...", "run_id": "depth/n_layer=8", "runs_root": "/abs/runs",
     "pid": trainer pid or null, "pid_create_time": t, "owner_pid": dispatcher pid,
     "owner_create_time": t, "host": "...", "created_at": t}

A lease is alive while its process (the trainer, or its dispatcher while it starts it)
runs with the recorded start time on this host; leases from other hosts sharing DIR count
for OTHER_HOST_MAX_S after they were made. The user is the file's owner (the uid inside
must match it). Symlinks, FIFOs, foreign-owned, oversized, junk and future-dated files are
skipped, as reservations skip them. Dead leases are removed by their owner's next
dispatcher, which first writes the run's GPU time to its usage ledger (engine.ledger).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from engine import ledger
from engine.files import read_regular, read_regular_stat
from engine.runs import process_matches, process_start_time

SUFFIX = ".lease"
MAX_FILE_BYTES = 4096
OTHER_HOST_MAX_S = 12 * 3600.0
CLOCK_SLACK_S = 60.0
ALIVE_MEMO_S = 1.0  # a run that just ended counts this much longer: never too little
ENV = "NANOTUI_LEASE"  # the trainer's lease file, set by the dispatcher that placed it


@dataclass(frozen=True)
class Lease:
    uid: int
    uuid: str
    run_id: str
    runs_root: str
    pid: int | None
    pid_create_time: float | None
    owner_pid: int
    owner_create_time: float | None
    host: str
    created_at: float
    path: Path

    @property
    def id(self) -> str:
        return self.path.stem

    def process(self) -> tuple[int, float | None]:
        """The process it lives by: the trainer, or its dispatcher while it starts it."""
        if self.pid is not None:
            return self.pid, self.pid_create_time
        return self.owner_pid, self.owner_create_time

    def alive(self, now: float, matches=process_matches) -> bool:
        if self.created_at > now + CLOCK_SLACK_S:
            return False  # dated in the future: a wrong clock or a forgery
        if self.host != socket.gethostname():
            return now - self.created_at < OTHER_HOST_MAX_S
        return matches(*self.process())


def _parse(raw: bytes, path: Path) -> Lease | None:
    try:
        d = json.loads(raw)
        opt = lambda k, t: None if d.get(k) is None else t(d[k])  # noqa: E731
        return Lease(uid=int(d["uid"]), uuid=str(d["uuid"]), run_id=str(d["run_id"]),
                     runs_root=str(d["runs_root"]), pid=opt("pid", int),
                     pid_create_time=opt("pid_create_time", float),
                     owner_pid=int(d["owner_pid"]),
                     owner_create_time=opt("owner_create_time", float),
                     host=str(d["host"]), created_at=float(d["created_at"]), path=path)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


class LeaseBoard:
    """The leases in the reservations directory (read and write under Board.locked)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        # process checks (psutil: 2/3 of a read of 100 leases) memoized for ALIVE_MEMO_S:
        # a dispatcher places its queued runs one after another, each reading every lease
        self._alive: dict[tuple[int, float | None], tuple[float, bool]] = {}

    def _matches(self, pid: int, create_time: float | None) -> bool:
        now = time.monotonic()
        seen = self._alive.get((pid, create_time))
        if seen is None or now - seen[0] > ALIVE_MEMO_S:
            seen = (now, process_matches(pid, create_time))
            if len(self._alive) > 4096:
                self._alive.clear()
            self._alive[(pid, create_time)] = seen
        return seen[1]

    def read(self, now: float | None = None, tidy: bool = True
             ) -> tuple[list[Lease], list[Lease]]:
        """(live leases of everyone, dead ones of everyone: the caller reaps its own and
        counts the others' GPU time until their owners do); our own junk is removed
        unless `tidy` is False (read-only views)."""
        now = time.time() if now is None else now
        live, dead = [], []
        for f in self.path.glob(f"*{SUFFIX}"):
            try:
                raw, st = read_regular_stat(f, MAX_FILE_BYTES)
            except OSError:
                continue  # a FIFO, a link, a device, an oversized file
            lease = _parse(raw, f)
            valid = (lease is not None and lease.uid == st.st_uid
                     and lease.created_at <= now + CLOCK_SLACK_S)
            if valid and lease.alive(now, self._matches):
                live.append(lease)
            elif valid:
                dead.append(lease)
            elif st.st_uid == os.getuid() and tidy:
                f.unlink(missing_ok=True)  # our own junk: nothing to account
        return live, dead

    def add(self, unit_uuid: str, runs_root: Path, run_id: str, now: float) -> Path:
        me = os.getpid()
        doc = {"uid": os.getuid(), "uuid": unit_uuid, "run_id": run_id,
               "runs_root": str(Path(runs_root).resolve()), "pid": None,
               "pid_create_time": None, "owner_pid": me,
               "owner_create_time": process_start_time(me), "host": socket.gethostname(),
               "created_at": now}
        path = self.path / f"lease-{os.getuid()}-{me}-{uuidlib.uuid4().hex[:12]}{SUFFIX}"
        _write(path, doc)
        return path

    @staticmethod
    def started(path: Path, pid: int | None, create_time: float | None) -> None:
        """The trainer exists: the lease lives as long as it does."""
        try:
            doc = json.loads(read_regular(path, MAX_FILE_BYTES))
        except (OSError, ValueError):
            return
        doc.update(pid=pid, pid_create_time=create_time)
        _write(path, doc)

    @staticmethod
    def remove(path: Path | None) -> None:
        if path is not None:
            path.unlink(missing_ok=True)


def settle(lease: Lease, end: float | None) -> None:
    """Our ended run: its GPU time (created_at to `end`; None: unknown, not written) into
    our ledger beside the lease, then the lease removed. Raises OSError when the ledger
    cannot be written; the lease is removed all the same (it would count the run forever)."""
    try:
        if end is not None:
            ledger.record(lease.path.parent, lease.created_at, max(end, lease.created_at),
                          lease.uuid, lease.run_id, lease=lease.id)
    finally:
        LeaseBoard.remove(lease.path)


def settle_mine(path: Path, run_path: Path, end: float) -> bool:
    """The trainer's side of settle: the lease at `path` if it is ours and names our run
    directory (an inherited or planted ENV never settles another's lease). True when
    settled."""
    try:
        raw, st = read_regular_stat(Path(path), MAX_FILE_BYTES)
    except OSError:
        return False  # settled already, or never written
    lease = _parse(raw, Path(path))
    if lease is None or lease.uid != os.getuid() or st.st_uid != os.getuid() \
            or Path(lease.runs_root) / lease.run_id != Path(run_path).resolve():
        return False
    settle(lease, end)
    return True


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuidlib.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, json.dumps(doc).encode())  # no fsync: a crash ends the run it counts
    finally:
        os.close(fd)
    os.replace(tmp, path)
