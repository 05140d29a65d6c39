"""Machine-wide reservations: memory a nanotui dispatcher has promised to a run that has
not allocated it yet, seen by every dispatcher on the machine (any user, any runs dir).

Without them two users (or one user with two runs directories) starting sweeps at the
same moment both read the same free memory from NVML and both put a run there: the
launch race task-spooler, W&B agents and setGPU users report. So placement is one
read-decide-write under a machine-wide lock:

  lock DIR/.lock -> read every live reservation -> choose a unit counting them ->
  write our reservation -> unlock -> start the process -> record its pid.

DIR is $NANOTUI_RESERVATIONS_DIR, else <tmp>/nanotui-reservations: a directory anyone
can create files in but only their owner can remove (mode 1777, like /tmp itself),
created on first use. No server. One small JSON file per reservation, mode 0644
(readable by all, writable by its owner), written by rename so it is never half-read:

  {"uuid": "GPU-...", "bytes": N, "pid": trainer pid or null, "pid_create_time": t,
   "owner_pid": dispatcher pid, "owner_create_time": t, "host": "...", "uid": 1000,
   "runs_root": "/abs/runs", "run_id": "depth/n_layer=8", "created_at": t, "ttl_s": 600}

A reservation stops counting when
  - its trainer shows among the unit's processes (its memory is in memory_used now),
  - its trainer has reported memory of its own in its status.json (ours only: in a
    container NVML lists host pids, so the first rule never fires there),
  - its process (the trainer, or the dispatcher while it is still starting it) is dead
    on this host (files from other hosts sharing DIR are judged by age only), or
  - it is older than ttl_s (NVML may not list processes of other users here).
Dead entries are deleted by their owner's next dispatcher; others' are skipped. A
malformed or oversized file is skipped: it can never stop placement for long (the
worst a hostile user can do is hold memory for ttl_s).

Beside each reservation the placer leaves a LEASE that lasts as long as the run
(engine.leases): reservations count memory, leases count runs against the
fair-share policy (policy.toml in DIR: engine.launch.policy, engine.launch.share).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from engine.errors import UserError, one_line
from engine.files import LockTimeout, read_regular, read_regular_stat, regular_lock
from engine.launch.executor import Placement
from engine.launch.gpu import GpuSnapshot
from engine.launch.placement import (
    ActiveRun,
    PlacementError,
    Policy,
    UtilHistory,
    choose,
    reported_gpu_bytes,
)
from engine.launch.share import ShareKeeper
from engine.leases import ENV as LEASE_ENV
from engine.runs import FINAL_STATES, RunDir, process_matches, process_start_time
from engine.text import safe_text

ENV = "NANOTUI_RESERVATIONS_DIR"
TTL_S = 600.0
MAX_FILE_BYTES = 4096
LOCK_TIMEOUT_S = 30.0
CLOCK_SLACK_S = 60.0   # another dispatcher's "now" may be a little ahead of ours


def reservations_dir() -> Path:
    return Path(os.environ.get(ENV) or Path(tempfile.gettempdir()) / "nanotui-reservations")


def ensure_dir(path: Path) -> Path:
    """DIR, created sticky and world-writable when missing; refused when it is a symlink
    or a directory others could tamper with (not ours and not sticky)."""
    if not os.path.lexists(path):
        # made aside and renamed into place, so nobody sees it before its chmod (mkdir's
        # mode is cut by the umask); losing the race to another creator is fine
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuidlib.uuid4().hex[:8]}")
        try:
            os.mkdir(tmp, 0o700)
            os.chmod(tmp, 0o1777)
            try:
                os.rename(tmp, path)
            except OSError:
                os.rmdir(tmp)
        except OSError as e:
            raise UserError(f"cannot create the reservations directory {path}: "
                            f"{e.strerror}; set {ENV} to a directory every nanotui user "
                            f"can write") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path} is not a directory; set {ENV} elsewhere")
    if st.st_uid != os.getuid() and st.st_uid != 0 and not st.st_mode & stat.S_ISVTX:
        raise UserError(f"{path} belongs to another user and is not sticky: its "
                        f"reservations could be removed by anyone; set {ENV} elsewhere")
    return path


@dataclass(frozen=True)
class Reservation:
    uuid: str
    bytes: int
    pid: int | None
    pid_create_time: float | None
    owner_pid: int
    owner_create_time: float | None
    host: str
    uid: int
    runs_root: str
    run_id: str
    created_at: float
    ttl_s: float = TTL_S

    def alive(self, now: float) -> bool:
        if not -CLOCK_SLACK_S <= now - self.created_at < self.ttl_s:
            return False  # expired, or dated in the future (a wrong clock, a forgery)
        if self.host != socket.gethostname():
            return True
        if self.pid is not None:
            return process_matches(self.pid, self.pid_create_time)
        return process_matches(self.owner_pid, self.owner_create_time)

    def as_promise(self) -> ActiveRun:
        return ActiveRun(f"{self.runs_root}:{self.run_id}", self.uuid, self.bytes,
                         self.created_at, self.pid, holder=self.holder())

    def holder(self) -> str:
        """Whose run this is, as a waiting reason names it: another user by uid (their
        file's text is theirs to forge, the uid is the file's owner), ours by run."""
        if self.uid != os.getuid():
            return f"uid {self.uid}'s run"
        return f"run {safe_text(self.run_id)[:60]} of {safe_text(self.runs_root)[:80]}"


def _parse(raw: bytes) -> Reservation | None:
    try:
        d = json.loads(raw)
        r = Reservation(
            uuid=str(d["uuid"]), bytes=int(d["bytes"]),
            pid=None if d.get("pid") is None else int(d["pid"]),
            pid_create_time=None if d.get("pid_create_time") is None
            else float(d["pid_create_time"]),
            owner_pid=int(d["owner_pid"]),
            owner_create_time=None if d.get("owner_create_time") is None
            else float(d["owner_create_time"]),
            host=str(d["host"]), uid=int(d["uid"]), runs_root=str(d["runs_root"]),
            run_id=str(d["run_id"]), created_at=float(d["created_at"]),
            ttl_s=min(float(d.get("ttl_s", TTL_S)), TTL_S))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return r if r.bytes >= 0 else None


def _run_state(r: Reservation) -> str | None:
    """The recorded state of the run a reservation of ours is for; None when it has no
    status.json (work outside the queue: `sample`, `bench`) or it cannot be read."""
    run = RunDir(Path(r.runs_root) / r.run_id)
    try:
        return run.read_status().get("state") if run.status_path.is_file() else None
    except Exception:
        return None


def _allocated(r: Reservation) -> bool:
    """Our trainer reported the memory it holds (engine.launch.placement.reported_gpu_bytes):
    it is in memory_used now. Only for our own files: their paths are ours to read."""
    if r.uid != os.getuid() or r.pid is None or r.host != socket.gethostname():
        return False
    try:
        st = RunDir(Path(r.runs_root) / r.run_id).read_status()
    except Exception:  # no such run (work outside the queue), an unreadable file
        return False
    return st.get("pid") == r.pid and reported_gpu_bytes(st) > 0


class Board:
    """The reservations directory: read, add, complete and remove entries."""

    def __init__(self, path: Path | None = None, ttl_s: float = TTL_S):
        self.path = Path(path) if path else reservations_dir()
        self.ttl_s = ttl_s

    @contextmanager
    def locked(self) -> Iterator[None]:
        """flock on DIR/.lock opened read-only: any user can take it whoever created the
        file, and the file is never deleted (deleting lock files lets two holders in)."""
        ensure_dir(self.path)
        with ExitStack() as stack:
            try:
                stack.enter_context(regular_lock(self.path / ".lock", LOCK_TIMEOUT_S,
                                                 shared_dir=True))
            except LockTimeout:
                raise UserError(f"{self.path}/.lock held for over {LOCK_TIMEOUT_S:.0f} s by "
                                f"another process") from None
            except OSError as e:
                raise UserError(f"cannot open {self.path}/.lock: {e.strerror}; set {ENV} "
                                f"elsewhere") from None
            yield

    def read(self, now: float | None = None) -> list[Reservation]:
        """Live reservations (call under `locked`); our own dead ones are deleted."""
        return [r for r, _ in self.read_paths(now)]

    def read_paths(self, now: float | None = None) -> list[tuple[Reservation, Path]]:
        """read(), each with its file."""
        now = time.time() if now is None else now
        out = []
        for f in self.path.glob("*.json"):
            try:
                raw, st = read_regular_stat(f, MAX_FILE_BYTES)
            except OSError:
                continue  # a FIFO, a link, a device, an oversized file: never waited on
            owner = st.st_uid
            r = _parse(raw)
            if r is not None and r.uid == owner and r.alive(now) and not _allocated(r):
                out.append((r, f))
            elif owner == os.getuid():
                f.unlink(missing_ok=True)
        return out

    def add(self, unit_uuid: str, nbytes: int, runs_root: Path, run_id: str,
            now: float | None = None) -> Path:
        me = os.getpid()
        doc = {"uuid": unit_uuid, "bytes": int(nbytes), "pid": None, "pid_create_time": None,
               "owner_pid": me, "owner_create_time": process_start_time(me),
               "host": socket.gethostname(), "uid": os.getuid(),
               "runs_root": str(Path(runs_root).resolve()), "run_id": run_id,
               "created_at": time.time() if now is None else now, "ttl_s": self.ttl_s}
        path = self.path / f"{os.getuid()}-{me}-{uuidlib.uuid4().hex[:12]}.json"
        self._write(path, doc)
        return path

    def started(self, path: Path, pid: int | None, create_time: float | None) -> None:
        """The trainer exists: from now on the reservation lives as long as it does."""
        try:
            doc = json.loads(read_regular(path, MAX_FILE_BYTES))
        except (OSError, ValueError):
            return
        doc.update(pid=pid, pid_create_time=create_time)
        self._write(path, doc)

    @staticmethod
    def remove(path: Path | None) -> None:
        if path is not None:
            path.unlink(missing_ok=True)

    @staticmethod
    def _write(path: Path, doc: dict) -> None:
        tmp = path.with_name(f".{path.name}.{uuidlib.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, json.dumps(doc).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)


class SharedPlacer:
    """engine.launch.placement.choose under the machine-wide lock, counting every other
    dispatcher's reservations and leaving one for each GPU placement it makes."""

    def __init__(self, runs_root: Path, board: Board | None = None,
                 log: Callable[[str], None] = print):
        self.runs_root = str(Path(runs_root).resolve())
        self.board = board or Board()
        self.log = log
        self.broken: str | None = None  # why the board cannot be used (said once)
        self.others: list[ActiveRun] = []  # the other dispatchers' promises last counted
        # the fair-share policy (engine.launch.share): leases, wait ticket, why a run waits
        self.share = ShareKeeper(self.board.path, log=log)
        self.why: str | None = None
        self._lease_of: dict[Path, Path] = {}

    def place(self, run_id: str, need: int, gpus: list[GpuSnapshot],
              active: list[ActiveRun], policy: Policy, request: str, now: float,
              history: UtilHistory | None = None) -> tuple[Placement | None, Path | None]:
        """(placement or None to wait, the reservation's ticket or None). Raises
        PlacementError like choose()."""
        self.others = []
        self.why = None
        if request == "cpu" or not any(g.ours for g in gpus) or self.broken:
            return choose(need, gpus, active, policy, request, now, history=history), None
        try:
            with self.board.locked():
                # Our own runs are in `active` (from status.json): count only the others'.
                others = [r.as_promise() for r in self.board.read(now)
                          if r.runs_root != self.runs_root]
                self.others = others
                placement = choose(need, gpus, active, policy, request, now, others=others,
                                   history=history)
                placement, self.why = self.share.apply(placement, need, gpus, active, others,
                                                       policy, request, now, history)
                if placement is None or placement.gpu is None:
                    return placement, None
                ticket = self.board.add(placement.gpu["uuid"], need, Path(self.runs_root),
                                        run_id, now)
                lease = self.share.leases.add(placement.gpu["uuid"], Path(self.runs_root),
                                              run_id, now)
                self._lease_of[ticket] = lease
                # the trainer settles its own lease as it exits (engine.leases)
                return replace(placement, env={**placement.env, LEASE_ENV: str(lease)}), ticket
        except PlacementError:
            raise
        except (UserError, OSError) as e:
            # Placing without them beats not placing at all (a hostile or full /tmp).
            self.broken = one_line(e)
            self.log(f"machine-wide GPU reservations off: {self.broken}")
            return choose(need, gpus, active, policy, request, now, history=history), None

    def started(self, ticket: Path | None, pid: int | None, create_time: float | None) -> None:
        if ticket is not None:
            self.board.started(ticket, pid, create_time)
            if ticket in self._lease_of:
                self.share.leases.started(self._lease_of.pop(ticket), pid, create_time)

    def abandon(self, ticket: Path | None) -> None:
        Board.remove(ticket)
        self.share.leases.remove(self._lease_of.pop(ticket, None))

    def after_tick(self, queued: int, running: int, now: float) -> None:
        """Keep our wait ticket current (others see who waits: the fair order, `status
        --all-users`)."""
        if not self.broken:
            self.share.after_tick(queued, running, now)

    def close(self) -> None:
        self.share.close()
        if self.broken:
            return
        try:  # our reservations of runs that have ended: gone now, not at our next start
            with self.board.locked():
                self.share.live(time.time())  # and leases no trainer settled (SIGKILL)
                for r, path in self.board.read_paths():
                    if r.uid == os.getuid() and r.runs_root == self.runs_root and \
                            _run_state(r) in FINAL_STATES:  # its trainer may still be exiting
                        Board.remove(path)
        except (UserError, OSError):
            pass
