"""A run directory on a small tmpfs that fills while the run checkpoints: the run records
`failed` with "no space left on <mount> while writing ckpt.pt", the previous checkpoint
still loads, no temp file is left; `nanotui status` and the TUI still work, and after
space is freed the run resumes. Needs root (mount); skipped otherwise."""

from __future__ import annotations

import os
import subprocess

import pytest

from engine.config import TrainConfig
from engine.launch.gpu import FakeGpuSource
from engine.launch.queue import dispatcher_pid
from engine.model.checkpoint import load_checkpoint
from engine.runs import create_run
from tests.e2e.test_train_process import (
    STARTED,
    last_train_iter,
    make_data,
    start,
    wait_for,
)
from tests.tui.conftest import (
    FakeLauncher,
    FakeReporter,
    FakeSampler,
    asynctest,
    settle,
)
from tui.app import create_app
from tui.cli import main as nanotui
from tui.services import Services
from tui.widgets.run_table import RunTable

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    yield mnt
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    STARTED.clear()
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt, leave: int):
    """Fill the filesystem until about `leave` bytes are free."""
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        while True:
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                f.write(b"\0" * min(free - leave, 1 << 20))
                f.flush()
            except OSError:
                break
    return filler


@asynctest
async def dashboard_row(root, run_id: str) -> str:
    services = Services(root, root.parent / "experiments.toml", FakeGpuSource([]),
                        FakeLauncher(root), FakeSampler(), FakeReporter())
    app = create_app(services=services, poll_interval=0, gpu_interval=0)
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        return " ".join(str(c) for c in app.screen.query_one(RunTable).get_row(run_id))


def test_a_full_disk_while_checkpointing_fails_cleanly_and_resumes(small_disk, tmp_path, capsys):
    root = small_disk / "runs"
    cfg = TrainConfig(data_dir=str(make_data(tmp_path / "data")), n_layer=1, n_head=2,
                      n_embd=32, block_size=32, batch_size=4, max_iters=100_000,
                      eval_interval=100, eval_iters=2, log_interval=10, warmup_iters=5,
                      lr_decay_iters=100_000, device="cpu", dtype="float32")
    cfg.sampling.max_new_tokens = 8
    run = create_run(root, "disk", "r", cfg)
    proc = start(run)
    wait_for(lambda: run.ckpt_path.exists() and last_train_iter(run) >= 110, proc=proc)
    before = load_checkpoint(run.ckpt_path)["iter_num"]
    filler = fill(small_disk, leave=run.ckpt_path.stat().st_size // 2)
    assert proc.wait(timeout=120) == 1

    st = run.read_status()
    assert st["state"] == "failed"
    assert st["reason"] == f"no space left on {small_disk} while writing ckpt.pt"
    assert load_checkpoint(run.ckpt_path)["iter_num"] >= before   # the last whole one
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []

    assert nanotui(["--runs", str(root), "status"]) == 0
    out = capsys.readouterr().out
    assert f"no space left on {small_disk}" in out and "Traceback" not in out
    row = dashboard_row(root, run.id)
    assert "failed" in row and "disk full" in row

    filler.unlink()
    at = load_checkpoint(run.ckpt_path)["iter_num"]
    run.config_path.write_text(run.config_path.read_text().replace(
        "max_iters = 100000\n", f"max_iters = {at + 20}\n"))
    assert nanotui(["--runs", str(root), "resume", run.id]) == 0   # starts a dispatcher
    assert "continues from its checkpoint" in capsys.readouterr().out
    wait_for(lambda: run.read_status().get("state") in ("done", "failed"), timeout=240)
    wait_for(lambda: dispatcher_pid(root) is None, timeout=60)
    st = run.read_status()
    assert st["state"] == "done" and st["iter"] == at + 20, st.get("reason")
    assert f"resuming at iter {at}" in run.stdout_path.read_text()
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []
