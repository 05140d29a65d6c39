"""The machine-wide fair-share policy: `policy.toml` in the reservations directory
(engine.launch.reservations), written by the course staff, read by every dispatcher of
every user before it puts a run on a GPU.

    max_gpus_per_user = 1      # cards one user's runs may occupy at once
    max_runs_per_user = 2      # GPU runs one user may have at once (packing: several per card)
    keep_free_gpus = 1         # cards left empty for whoever comes next
    usage_window_hours = 24    # fair order: GPU-hours counted over this window

    [quiet_hours]              # local time; caps only relax here, never tighten
    start = "22:00"
    end = "07:00"
    max_gpus_per_user = 4
    keep_free_gpus = 0

    [users.alice]              # one user's own caps (instead of the ones above)
    max_gpus_per_user = 2

A key left out is no limit. Without the file nothing is limited (and nothing changes).

Trust. The directory is sticky and world-writable, so any student can create files in it:
a policy is only read when it is a regular file owned by root or by the directory's owner
and writable by nobody else; any other policy.toml is skipped (and `nanotui gpus` says so).

A malformed policy (bad TOML, an unknown key, a wrong type) is one line naming file, line
and key; dispatchers then go on under the last good policy, kept in memory and in a
per-user cache (so a dispatcher started after the typo has it too). With no last good one
known, runs wait for the GPUs with that line as their reason: a typo never lifts the caps.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import stat
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.config import ConfigError
from engine.files import atomic_write_bytes, read_regular, read_regular_stat, user_cache_dir
from engine.toml_lines import LineFinder, limit_problem

POLICY_NAME = "policy.toml"
MAX_POLICY_BYTES = 64 * 1024
CAP_KEYS = ("max_gpus_per_user", "max_runs_per_user", "keep_free_gpus")
TOP_KEYS = (*CAP_KEYS, "usage_window_hours", "quiet_hours", "users")
QUIET_KEYS = ("start", "end", *CAP_KEYS)
MAX_WINDOW_HOURS = 24 * 366


@dataclass(frozen=True)
class Caps:
    """One user's limits now; None: no limit."""

    max_gpus_per_user: int | None = None
    max_runs_per_user: int | None = None
    keep_free_gpus: int = 0

    def relaxed_by(self, other: dict[str, int]) -> "Caps":
        """These caps with each of `other`'s applied only where it is looser."""
        out = {}
        for k, v in other.items():
            mine = getattr(self, k)
            if k == "keep_free_gpus":
                out[k] = min(mine, v)
            else:
                out[k] = None if mine is None else max(mine, v)
        return replace(self, **out)


@dataclass(frozen=True)
class SharePolicy:
    source: str
    caps: dict[str, int] = field(default_factory=dict)
    usage_window_hours: float = 24.0
    quiet: tuple[int, int] | None = None          # minutes after midnight: start, end
    quiet_caps: dict[str, int] = field(default_factory=dict)
    users: dict[str, dict[str, int]] = field(default_factory=dict)

    def in_quiet_hours(self, now: float) -> bool:
        if self.quiet is None:
            return False
        t = time.localtime(now)
        m, (a, b) = t.tm_hour * 60 + t.tm_min, self.quiet
        return a <= m < b if a <= b else (m >= a or m < b)  # 22:00-07:00 wraps midnight

    def caps_for(self, uid: int, now: float) -> Caps:
        caps = Caps(**{**self.caps, **self.users.get(user_name(uid), {})})
        return caps.relaxed_by(self.quiet_caps) if self.in_quiet_hours(now) else caps

    def describe(self, uid: int, now: float) -> str:
        c = self.caps_for(uid, now)
        parts = [f"{k} = {v}" for k in CAP_KEYS if (v := getattr(c, k)) is not None
                 and (v or k != "keep_free_gpus")]
        quiet = " (quiet hours)" if self.in_quiet_hours(now) else ""
        return (", ".join(parts) or "no caps") + quiet


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _minutes(value: object) -> int | None:
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        return None
    h, m = value[:2], value[3:]
    if not (h.isdigit() and m.isdigit()) or int(h) > 23 or int(m) > 59:
        return None
    return int(h) * 60 + int(m)


def parse_policy(text: str, source: str) -> SharePolicy:
    """A validated policy, or ConfigError: one line `FILE:LINE: key: why`."""
    problem = limit_problem(text, MAX_POLICY_BYTES)
    if problem:
        raise ConfigError(f"{source}: refused: {problem}")
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        line = int(m.group(1)) if m else None
        lines = text.splitlines()
        key = (lines[line - 1].split("=", 1)[0].strip()[:60] + ": "
               if line and line <= len(lines) and "=" in lines[line - 1] else "")
        raise ConfigError(f"{source}:{line or '?'}: {key}invalid TOML: "
                          f"{str(e).split(' (at')[0]}") from None
    except RecursionError:
        raise ConfigError(f"{source}: refused: nested too deeply to parse") from None
    lines = LineFinder(text)

    def bad(table: list[str], key: str, why: str) -> ConfigError:
        line = lines.find(table, key)
        name = ".".join([*table, key])
        return ConfigError(f"{source}:{line or '?'}: {name}: {why}")

    def caps(table: list[str], d: dict, allowed: tuple[str, ...]) -> dict[str, int]:
        out = {}
        for k, v in d.items():
            if k not in allowed:
                raise bad(table, k, f"unknown key (expected one of {', '.join(allowed)})")
            if k in CAP_KEYS:
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise bad(table, k, f"must be a whole number >= 0, not {v!r}")
                out[k] = v
        return out

    for k in d:
        if k not in TOP_KEYS:
            raise bad([], k, f"unknown key (expected one of {', '.join(TOP_KEYS)})")
    top = caps([], {k: v for k, v in d.items() if k in CAP_KEYS}, CAP_KEYS)
    window = d.get("usage_window_hours", 24.0)
    if (not isinstance(window, (int, float)) or isinstance(window, bool)
            or not 0 < window <= MAX_WINDOW_HOURS):
        raise bad([], "usage_window_hours", f"must be hours in (0, {MAX_WINDOW_HOURS}], "
                                             f"not {window!r}")
    quiet, quiet_caps = None, {}
    if "quiet_hours" in d:
        q = d["quiet_hours"]
        if not isinstance(q, dict):
            raise bad([], "quiet_hours", "must be a table ([quiet_hours])")
        quiet_caps = caps(["quiet_hours"], q, QUIET_KEYS)
        ends = []
        for k in ("start", "end"):
            if k not in q:
                raise bad(["quiet_hours"], k, "missing (\"HH:MM\", local time)")
            m = _minutes(q[k])
            if m is None:
                raise bad(["quiet_hours"], k, f"must be \"HH:MM\" (local time), not {q[k]!r}")
            ends.append(m)
        quiet = (ends[0], ends[1])
    users = {}
    if "users" in d:
        if not isinstance(d["users"], dict):
            raise bad([], "users", "must be tables ([users.NAME])")
        for name, u in d["users"].items():
            if not isinstance(u, dict):
                raise bad(["users"], name, "must be a table ([users.NAME])")
            users[name] = caps(["users", name], u, CAP_KEYS)
    return SharePolicy(source, top, float(window), quiet, quiet_caps, users)


def untrusted_reason(st: os.stat_result, dir_owner: int) -> str | None:
    """Why a policy file with this lstat may not be believed, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in (0, dir_owner):
        return f"owned by {user_name(st.st_uid)}, not root or the directory's owner"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable by others"
    return None


def cache_path(directory: Path) -> Path:
    root = user_cache_dir()
    digest = hashlib.sha256(str(Path(directory).absolute()).encode()).hexdigest()[:16]
    return root / "policy" / f"last-good-{digest}.toml"


@dataclass(frozen=True)
class PolicyState:
    """What a dispatcher goes by now."""

    policy: SharePolicy | None = None   # None: no limits (no file, or a skipped one)
    problem: str | None = None          # the malformed file's line
    note: str | None = None             # a skipped (planted) file's line
    blocked: bool = False               # malformed with no last good: GPUs wait

    def line(self) -> str | None:
        """What `nanotui gpus` and doctor print about the policy, or None."""
        if self.problem:
            tail = ("GPUs wait until it is fixed (no earlier good policy known)"
                    if self.blocked else "going on under the last good policy")
            return f"policy: {self.problem}; {tail}"
        return self.note


class PolicyWatch:
    """policy.toml as dispatchers see it, re-read when the file changes."""

    def __init__(self, directory: Path, cache: Path | None = None):
        self.directory = Path(directory)
        self.path = self.directory / POLICY_NAME
        self.cache = cache or cache_path(self.directory)
        self._key: tuple | None = None
        self._state = PolicyState()
        self._last_good: SharePolicy | None = None

    def current(self) -> PolicyState:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            self._key, self._state = None, PolicyState()
            return self._state
        except OSError as e:
            return self._malformed(f"{self.path}: cannot read: {e.strerror}")
        key = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_uid, st.st_mode)
        if key == self._key:
            return self._state
        self._key = key
        try:
            dir_owner = os.stat(self.directory).st_uid
        except OSError:
            dir_owner = 0
        why = untrusted_reason(st, dir_owner)
        if why:
            self._state = PolicyState(note=f"policy: {self.path} skipped ({why}): "
                                           f"no fair-share limits")
            return self._state
        try:
            raw, st2 = read_regular_stat(self.path, MAX_POLICY_BYTES)
            why = untrusted_reason(st2, dir_owner)  # swapped between lstat and open
            if why:
                self._state = PolicyState(note=f"policy: {self.path} skipped ({why})")
                return self._state
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self._state = self._malformed(f"{self.path}: cannot read: "
                                          f"{getattr(e, 'strerror', None) or e}")
            return self._state
        try:
            policy = parse_policy(text, str(self.path))
        except ConfigError as e:
            self._state = self._malformed(str(e))
            return self._state
        self._last_good = policy
        self._save(text)
        self._state = PolicyState(policy)
        return self._state

    def _malformed(self, problem: str) -> PolicyState:
        good = self._last_good or self._load_cache()
        return PolicyState(good, problem=problem, blocked=good is None)

    def _save(self, text: str) -> None:
        try:
            if self.cache.exists() and read_regular(self.cache, MAX_POLICY_BYTES) == text.encode():
                return
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.cache, text.encode())
        except OSError:
            pass  # an unwritable home: the memory copy still serves this dispatcher

    def _load_cache(self) -> SharePolicy | None:
        try:
            raw = read_regular(self.cache, MAX_POLICY_BYTES)
            good = parse_policy(raw.decode("utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, ConfigError):
            return None
        self._last_good = good
        return good


def policy_check(directory: Path) -> tuple[str, str] | None:
    """(status, detail) for `nanotui doctor`: ok when a policy is in force, warn when the
    file is malformed or skipped; None without a policy file."""
    watch = PolicyWatch(directory)
    if not os.path.lexists(watch.path):
        return None
    st = watch.current()
    if st.policy is not None and not st.problem:
        return "ok", f"{watch.path} in force; yours: {st.policy.describe(os.getuid(), time.time())}"
    return "warn", st.line() or f"{watch.path}: not in force"
