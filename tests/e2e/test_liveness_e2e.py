"""A real training process stopped with SIGSTOP: `stalled` in `nanotui status --json` and
in the TUI within the threshold, and `nanotui stop` ends it (SIGCONT + SIGTERM)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from engine.launch.gpu import FakeGpuSource
from tests.e2e.test_train_process import (
    STARTED,
    last_train_iter,
    make_run,
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


@pytest.fixture(autouse=True)
def _no_stray_processes():
    yield
    for proc in STARTED:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
    STARTED.clear()


def status_json(root, capsys) -> dict:
    assert nanotui(["--runs", str(root), "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["runs"][0]


@asynctest
async def dashboard_row(root, run_id: str) -> str:
    services = Services(root, root.parent / "experiments.toml", FakeGpuSource([]),
                        FakeLauncher(root), FakeSampler(), FakeReporter())
    app = create_app(services=services, poll_interval=0, gpu_interval=0)
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        return " ".join(str(c) for c in app.screen.query_one(RunTable).get_row(run_id))


def test_a_stopped_process_is_stalled_and_nanotui_stop_ends_it(tmp_path, monkeypatch, capsys):
    threshold = 4.0
    monkeypatch.setenv("NANOTUI_STALL_FLOOR_S", str(threshold))
    monkeypatch.setenv("NANOTUI_STALL_MULTIPLE", "2")
    run = make_run(tmp_path, max_iters=100_000, lr_decay_iters=100_000, eval_interval=50)
    proc = start(run)
    wait_for(lambda: last_train_iter(run) >= 60, proc=proc)
    assert status_json(run.path.parent.parent, capsys)["state"] == "running"
    proc.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    root = run.path.parent.parent
    while (row := status_json(root, capsys))["state"] != "stalled":
        assert time.monotonic() - stopped_at < threshold + 10, row
        time.sleep(0.2)
    assert row["reason"].startswith("stopped (SIGSTOP or Ctrl-Z), silent for") and row["stalled_s"] > 0
    assert "stalled" in dashboard_row(root, run.id)

    assert nanotui(["--runs", str(root), "stop", run.id, "--grace", "20"]) == 0
    assert f"{run.id}: stopped" in capsys.readouterr().out
    assert proc.wait(timeout=30) == 0   # it continued, checkpointed and exited
    st = run.read_status()
    assert st["state"] == "stopped" and st["exit_code"] == 0
