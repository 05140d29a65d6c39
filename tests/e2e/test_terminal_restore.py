"""`kill` (SIGTERM) or a hang-up (SIGHUP) of the TUI leaves the terminal as it was: the
normal screen, no mouse tracking, the cursor shown. Real tmux, real processes; skips
without tmux."""

from __future__ import annotations

import os
import shlex
import shutil
import signal

import pytest

from tests.e2e.tmux_driver import Tmux, app_command, gone_within

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_the_terminal_is_restored_when_the_app_is_signalled(tmp_path, sig):
    pidfile, runs = tmp_path / "pid", tmp_path / "runs"
    runs.mkdir()
    # the shell outlives the app, so the pane shows what the app left behind
    inner = app_command(pidfile, "--runs", str(runs))
    tmux = Tmux(f"nanotui-restore-{os.getpid()}-{sig}")
    tmux.start(f"sh -c {shlex.quote(inner)}; echo APP-ENDED; sleep 60", 100, 30)
    try:
        tmux.wait_for(lambda pane: "nanotui" in pane and pidfile.is_file(), 60, "the app")
        flags = "#{alternate_on} #{mouse_any_flag} #{cursor_flag}"
        assert tmux("display", "-p", "-t", tmux.name, flags).split()[0] == "1"
        pid = int(pidfile.read_text())
        os.kill(pid, sig)
        assert gone_within(pid, 20), "the app ignored the signal"
        tmux.wait_for(lambda pane: "APP-ENDED" in pane, 10, "the shell after the app")
        assert tmux("display", "-p", "-t", tmux.name, flags).split() == ["0", "0", "1"]
    finally:
        tmux.kill()
