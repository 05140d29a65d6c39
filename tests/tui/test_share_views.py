"""What a user reads about the fair-share policy: `nanotui gpus`, `nanotui status
--all-users` (and --json), the GPU panel's share line; nothing of it without a policy."""

from __future__ import annotations

import json
import os
import time

import pytest

from engine.leases import LeaseBoard
from engine.launch.policy import user_name
from engine.launch.share_view import panel_line
from engine.runs import process_start_time
from tests.tui.conftest import fake_gpus
from tui.cli import main
from tui.widgets.gpu_panel import GpuHistory, render_gpus
from tests.conftest import shared_dir, use_fake_cards

ME = user_name(os.getuid())


@pytest.fixture
def res(tmp_path, monkeypatch):
    use_fake_cards(tmp_path / "cards.json", {"gpus": [g.to_dict() for g in fake_gpus()]},
                   monkeypatch)
    return shared_dir(tmp_path / "res", monkeypatch)


def hold(res, uuid: str) -> None:
    """A live GPU run of ours: a lease held by this test process."""
    board = LeaseBoard(res)
    p = board.add(uuid, res.parent / "runs", "s/a", time.time())
    board.started(p, os.getpid(), process_start_time(os.getpid()))


def test_without_a_policy_gpus_says_nothing_new_and_the_panel_has_no_share_line(res, capsys):
    hold(res, fake_gpus()[0].uuid)
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    assert "policy" not in out and "share" not in out
    assert main(["gpus", "--json"]) == 0
    assert "fair_share" not in json.loads(capsys.readouterr().out)
    assert panel_line(fake_gpus()) is None


def test_gpus_and_status_all_users_show_each_users_share_and_use(res, capsys):
    (res / "policy.toml").write_text("max_gpus_per_user = 1\nkeep_free_gpus = 1\n")
    hold(res, fake_gpus()[0].uuid)
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"policy: {res}/policy.toml; yours: max_gpus_per_user = 1, keep_free_gpus = 1" in out
    row = next(line for line in out if line.startswith(f"{ME} (you)"))
    assert row.split()[2:6] == ["1", "0", "0", "0.00"]  # 1 GPU run, on GPU 0, none queued
    assert row.endswith("max_gpus 1, keep_free_gpus 1")
    assert main(["status", "--all-users", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [me] = doc["users"]
    assert (me["user"], me["gpu_runs"], me["queued"], me["gpus"]) == (
        ME, 1, 0, [fake_gpus()[0].uuid])
    line = panel_line(fake_gpus())
    assert line.startswith("share: max_gpus_per_user = 1, keep_free_gpus = 1 · you: 1 run on "
                           "GPU 0, 0.0 GPU-h/24 h · others: 0 on GPUs, 0 waiting")
    text = render_gpus(fake_gpus(), [], GpuHistory(), 60, line).plain
    assert text.splitlines()[0] == line


def test_a_planted_policy_is_said_in_gpus(res, capsys):
    (res / "policy.toml").write_text("max_gpus_per_user = 0\n")
    os.chmod(res / "policy.toml", 0o666)
    assert main(["gpus"]) == 0
    assert (f"policy: {res}/policy.toml skipped (writable by others): no fair-share limits"
            in capsys.readouterr().out)


def test_gpus_with_a_policy_and_nobody_using_the_cards_says_so(res, capsys):
    (res / "policy.toml").write_text("max_gpus_per_user = 1\n")
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "no user has GPU runs, queued runs or GPU time in the last 24 h"
    assert not any(line.startswith("user ") for line in out)  # no header over no rows
