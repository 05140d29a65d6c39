"""Wait tickets: which users have runs queued right now, seen by every dispatcher, for the
fair order (engine.launch.share) and `nanotui status --all-users`.

One file per dispatcher with queued runs, in the reservations directory, rewritten while
it waits and removed when it has nothing queued or exits:

    DIR/wait-<uid>-<pid>-<hex>.ticket, mode 0644:
    {"uid": 1000, "pid": dispatcher pid, "create_time": t, "host": "...", "queued": 3,
     "running": 1, "contending": true, "need": bytes, "units": ["GPU-..."], "since": t,
     "updated_at": t}

`contending`: a run of this user is under its own share and waits only for a free card;
`need`: that run's memory estimate; `units`: the cards it may go on. A ticket counts while its dispatcher lives on this host
(pid + start time), or, from another host, while updated in the last OTHER_HOST_FRESH_S.
The user is the file's owner; planted, junk and future-dated files are skipped.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from engine.files import read_regular_stat
from engine.runs import process_matches, process_start_time

SUFFIX = ".ticket"
MAX_FILE_BYTES = 4096
OTHER_HOST_FRESH_S = 120.0
CLOCK_SLACK_S = 60.0
REWRITE_S = 10.0  # an unchanged ticket is rewritten this often (other hosts judge by age)


@dataclass(frozen=True)
class Ticket:
    uid: int
    pid: int
    create_time: float | None
    host: str
    queued: int
    running: int
    contending: bool
    need: int
    since: float
    updated_at: float
    units: tuple[str, ...] = ()

    def alive(self, now: float) -> bool:
        if self.updated_at > now + CLOCK_SLACK_S or self.since > now + CLOCK_SLACK_S:
            return False
        if self.host != socket.gethostname():
            return now - self.updated_at < OTHER_HOST_FRESH_S
        return process_matches(self.pid, self.create_time)


def read_tickets(directory: Path, now: float | None = None, tidy: bool = True
                 ) -> list[Ticket]:
    """Live tickets of everyone; our own dead dispatchers' are removed when `tidy`."""
    now = time.time() if now is None else now
    out = []
    for f in Path(directory).glob(f"wait-*{SUFFIX}"):
        try:
            raw, st = read_regular_stat(f, MAX_FILE_BYTES)
            d = json.loads(raw)
            t = Ticket(int(d["uid"]), int(d["pid"]),
                       None if d.get("create_time") is None else float(d["create_time"]),
                       str(d["host"]), int(d["queued"]), int(d.get("running", 0)),
                       bool(d["contending"]), int(d["need"]), float(d["since"]),
                       float(d["updated_at"]), tuple(str(u) for u in d.get("units", ())[:64]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
        if t.uid == st.st_uid and t.alive(now):
            out.append(t)
        elif tidy and st.st_uid == os.getuid() and not process_matches(t.pid, t.create_time):
            f.unlink(missing_ok=True)  # ours, from a dispatcher that died
    return out


class MyTicket:
    """This dispatcher's ticket: kept current, removed when nothing waits."""

    def __init__(self, directory: Path):
        # a random part: another user cannot take our name first (sticky directory)
        self.path = (Path(directory)
                     / f"wait-{os.getuid()}-{os.getpid()}-{uuidlib.uuid4().hex[:8]}{SUFFIX}")
        self._doc: dict | None = None
        self._written_at = 0.0

    def update(self, queued: int, running: int, contending: bool, need: int,
               now: float, units: tuple[str, ...] = ()) -> None:
        if not queued:
            self.remove()
            return
        since = self._doc["since"] if self._doc else now
        doc = {"uid": os.getuid(), "pid": os.getpid(),
               "create_time": process_start_time(os.getpid()), "host": socket.gethostname(),
               "queued": queued, "running": running, "contending": contending,
               "need": int(need), "units": list(units), "since": since}
        if doc == {k: v for k, v in (self._doc or {}).items() if k != "updated_at"} \
                and now - self._written_at < REWRITE_S:
            return
        doc["updated_at"] = now
        tmp = self.path.with_name(f".{self.path.name}.{uuidlib.uuid4().hex[:8]}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.fchmod(fd, 0o644)
                os.write(fd, json.dumps(doc).encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            return  # others then do not see us wait: the fair order is lost, not placement
        self._doc, self._written_at = doc, now

    def remove(self) -> None:
        if self._doc is not None:
            self.path.unlink(missing_ok=True)
            self._doc = None
