"""A real tmux session for the end-to-end tests that drive nanotui as a user would:
start a command in a pane of a given size, read the screen, type keys, wait for text."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO


def app_command(pidfile: Path, *args: str) -> str:
    """A shell command that writes its pid to `pidfile` and then becomes nanotui
    (`python -P -m tui ARGS` from the repository), so a test can signal the app itself."""
    app = " ".join(shlex.quote(a) for a in [sys.executable, "-P", "-m", "tui", *args])
    return f"echo $$ > {shlex.quote(str(pidfile))}; cd {shlex.quote(str(REPO))}; exec {app}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone_within(pid: int, timeout: float) -> bool:
    """Whether process `pid` has ended by `timeout` seconds from now."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not alive(pid)


class Tmux:
    """One tmux server of its own per session (`-L NAME`, no user config): with the
    default server, killing the first session let the server exit while the second
    `new-session` connected, and that failed with status 1 (seen once in CI)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args: str) -> str:
        # pytest-textual-snapshot sets COLUMNS=80 LINES=24 in the test process; the app
        # must size itself from the tmux pane, as it does for a user.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        p = subprocess.run(["tmux", "-L", self.name, "-f", "/dev/null", *args],
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def start(self, command: str, width: int = 140, height: int = 45) -> None:
        self("new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), command)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        for k in keys:  # one at a time: Escape followed by a key would read as Alt+key
            self("send-keys", "-t", self.name, k)
            time.sleep(0.4)

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")
            time.sleep(0.5)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True)
