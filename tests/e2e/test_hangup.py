"""A closed terminal ends the TUI even when nanotui is not the session leader (started by
`make demo` or a script): the kernel's SIGHUP goes to the leader only, and before the fix
the orphaned app spun a core for ever on the hung-up tty. Real tmux, real processes; skips
without tmux (CI's .ci/run installs it)."""

from __future__ import annotations

import os
import shlex
import shutil

import pytest

from tests.conftest import REPO
from tests.e2e.tmux_driver import Tmux, alive, app_command, gone_within

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_app_exits_when_its_terminal_hangs_up_under_a_wrapper(tmp_path):
    pidfile, runs = tmp_path / "pid", tmp_path / "runs"
    # the outer shell stays as the session leader, like make: it holds its HUP trap until
    # its child is done, so only the hang-up itself can end the app; the inner shell
    # writes its pid and becomes nanotui
    inner = app_command(pidfile, "--runs", str(runs), "--experiments",
                        str(REPO / "tui" / "templates" / "experiments.toml"))
    tmux = Tmux(f"nanotui-hangup-{os.getpid()}")
    tmux.start(f"trap 'exit 0' HUP; sh -c {shlex.quote(inner)}; :", 100, 30)
    try:
        tmux.wait_for(lambda pane: "nanotui" in pane and pidfile.is_file(), 30, "the app")
        pid = int(pidfile.read_text())
        assert alive(pid)
    finally:
        tmux.kill()  # the whole server: the terminal hangs up
    if not gone_within(pid, 15):
        os.kill(pid, 9)
        pytest.fail("nanotui kept running after its terminal hung up")
