"""A runs directory nobody may write (an archive, a colleague's runs on a read-only share):
status, plan, report and the TUI's reading work and write nothing; a run left "running"
by a dead process reads as lost; commands that must write say so in one line."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tui.conftest import build_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def read_only_runs(tmp_path):
    """A runs dir with every state (the "running" one's process dead) that cannot be
    written: chmod for a normal user, a read-only bind mount for root (whom modes do not
    stop); skipped where neither can be had."""
    src = tmp_path / "rw"
    p = subprocess.Popen(["sleep", "60"])
    build_runs(src / "runs", pid=p.pid)
    p.kill()
    p.wait()
    (src / "runs" / ".dispatch.lock").touch()
    (src / "runs" / ".queue.lock").touch()
    before = sorted(str(f.relative_to(src)) for f in src.rglob("*"))
    if os.geteuid() != 0:
        for f in src.rglob("*"):
            f.chmod(f.stat().st_mode & ~0o222)
        src.chmod(0o555)
        yield src / "runs", before
        for f in [src, *src.rglob("*")]:
            f.chmod(f.stat().st_mode | stat.S_IWUSR)
        return
    ro = tmp_path / "ro"
    ro.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "--bind", str(src), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("root without mount: cannot make a read-only directory")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
        yield ro / "runs", before
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=180)


def test_views_of_a_read_only_runs_dir_work_and_show_the_dead_run_lost(read_only_runs,
                                                                       tmp_path):
    runs, before = read_only_runs
    p = cli("status", "--runs", str(runs))
    assert p.returncode == 0, p.stderr[-600:]
    assert "depth/n_layer=2" in p.stdout and "lost" in p.stdout
    p = cli("report", "depth", "--runs", str(runs), "--out", str(tmp_path / "rep"), "--no-plots")
    assert p.returncode == 0, p.stderr[-600:]
    assert (tmp_path / "rep" / "depth" / "report.md").is_file()
    src = tmp_path / "rw"
    assert sorted(str(f.relative_to(src)) for f in src.rglob("*")) == before


def test_commands_that_must_write_say_so_in_one_line(read_only_runs):
    runs, _ = read_only_runs
    for argv in (["stop", "depth/n_layer=4"], ["launch", "--queued"]):
        p = cli(*argv, "--runs", str(runs))
        assert p.returncode == 2, p.stderr[-600:]
        assert "Traceback" not in p.stderr and "still read it" in p.stderr
        assert p.stderr.strip().count("\n") <= 1
