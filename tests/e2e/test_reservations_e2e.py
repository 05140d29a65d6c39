"""Two background dispatchers of two runs directories, started at the same moment on one
fake card with room for two runs: real training processes, never more than two of them
holding the card's memory at once, and every run finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.launch.gpu import GIB
from engine.launch.queue import read_journal
from engine.runs import list_runs
from tests.conftest import tiny_experiments
from tests.e2e.test_child_hijack import data_dir  # noqa: F401 (fixture: its small dataset)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]



def experiments(data, name: str) -> str:
    return tiny_experiments(data, {name: {"vary": {"seed": [1, 2, 3]}}}, defaults={
        "max_iters": 15, "lr_decay_iters": 15, "warmup_iters": 1, "eval_interval": 15,
        "eval_iters": 2, "log_interval": 5, "dtype": "float32"},
        sampling={"max_new_tokens": 4, "prompts": ["the"]},
        launch={"max_runs_per_gpu": 9, "max_cpu_runs": 9})


def nanotui(exp: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-m", "tui", "--experiments", str(exp), *args],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


def test_two_runs_dirs_starting_together_share_one_card_without_overcommitting(
        tmp_path, data_dir):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["OMP_NUM_THREADS"] = "1"
    exps = []
    for name in ("alice", "bob"):
        (tmp_path / name).mkdir()
        exp = tmp_path / name / "experiments.toml"
        exp.write_text(experiments(data_dir, name))
        exps.append(exp)
    plan = json.loads(nanotui(exps[0], "plan", "--json", "--device", "gpu", env=env).stdout)
    need = max(r["est_mem_bytes"] for r in plan["runs"])
    cards = tmp_path / "cards.json"
    cards.write_text(json.dumps({"gpus": [{
        "index": 0, "uuid": "GPU-e2e-shared", "name": "NVIDIA L40S", "utilization": 0,
        "memory_total": 48 * GIB, "memory_used": 48 * GIB - 2 * need - need // 2}]}))
    env["NANOTUI_FAKE_GPUS"] = str(cards)
    procs = [subprocess.Popen([sys.executable, "-P", "-m", "tui", "--experiments", str(e),
                               "launch", "--detach"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for e in exps]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stdout.read()
    roots = [e.parent / "runs" for e in exps]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = [r.read_status().get("state") for root in roots for r in list_runs(root)]
        if len(states) == 6 and all(s in ("done", "failed") for s in states):
            break
        time.sleep(0.5)
    runs = [r.read_status() for root in roots for r in list_runs(root)]
    assert [s["state"] for s in runs] == ["done"] * 6, [s.get("reason") for s in runs]
    assert all(s["gpu"]["uuid"] == "GPU-e2e-shared" for s in runs)
    # from each start (the dispatchers' journals) to the end of that process, how many
    # held the card: never three (the card has room for two), and two did at times
    started = {(root, rec["run"]): rec["t"] for root in roots for rec in read_journal(root)}
    spans = [(started[(root, r.id)], r.read_status()["ended_at"])
             for root in roots for r in list_runs(root)]
    assert len(started) == 6
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert most == 2
