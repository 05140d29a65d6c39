"""A run launched with a horizon in tokens trains exactly that far, ends its schedule at
min_lr and says so; its config.toml records the resolved length and the key it came
from, which drift detection reads so that derived values are not reported as changes;
plan --budget uses the throughput such a run measured."""

from __future__ import annotations

import json
import socket

from engine.config import load_toml
from engine.launch.queue import queue_runs_detailed
from engine.runs import RunDir
from engine.train.process import main as train_main
from tests.conftest import SHORT_CPU_RUN, tiny_experiments, write_char_data
from tui.cli import main as nanotui


def course(data, horizon: dict) -> str:
    """One run whose length is `horizon` (a fixed key that replaces [defaults] max_iters)."""
    return tiny_experiments(data, {"t": {"fixed": horizon, "vary": {"n_layer": [1]}}},
                            defaults={**SHORT_CPU_RUN, "max_iters": 5000},
                            sampling={"max_new_tokens": 8})


def test_a_max_tokens_run_trains_to_its_budget_and_ends_at_min_lr(tmp_path, capsys,
                                                                    one_torch_thread):
    data = write_char_data(tmp_path / "data")
    exp = tmp_path / "experiments.toml"
    exp.write_text(course(data, {"max_tokens": 3000}))   # 3000 / 128 per step: 24 steps
    runs = tmp_path / "runs"
    (run,) = queue_runs_detailed(exp, runs).queued
    saved = load_toml(run.config_path)
    assert (saved["max_iters"], saved["max_tokens"], saved["warmup_iters"],
            saved["lr_decay_iters"]) == (24, 3000, 1, 24)
    h = saved["horizon"]
    assert (h["key"], h["value"], h["max_iters"], h["tokens"], h["vocab_assumed"]) == (
        "max_tokens", 3000, 24, 24 * 128, False)
    assert h["derived"] == ["max_iters", "warmup_iters", "lr_decay_iters"]

    assert train_main([str(run.path)]) == 0
    out = capsys.readouterr().out
    assert ("horizon 24 steps from max_tokens = 3,000: 3,072 tokens" in out
            and "warm-up 1 (0.05 of the horizon), cosine decay to min_lr 0.0003 at step 24 "
                "(= max_iters)" in out)
    train = [m for m in RunDir(run.path).read_metrics() if m["kind"] == "train"]
    last = train[-1]
    assert last["iter"] == 24 and 3000 <= last["tokens"] < 3000 + 128
    assert last["lr"] == 3e-4                       # the last step is at min_lr
    assert max(m["lr"] for m in train) == 3e-3      # the peak, reached after the warm-up

    # drift: the same file is no change (max_iters, warmup, decay were derived) ...
    args = ["--experiments", str(exp), "--runs", str(runs), "plan", "--json"]
    assert nanotui(args) == 0
    (row,) = json.loads(capsys.readouterr().out)["runs"]
    assert row["drift"] == [] and row["state"] == "done"
    # ... and another token budget is, named by the key the user wrote
    exp.write_text(course(data, {"max_tokens": 6000}))
    nanotui(args)
    (row,) = json.loads(capsys.readouterr().out)["runs"]
    assert row["drift"] == ["max_tokens: 3000 → 6000"]

    # the budget reads this run's measured tokens/s for its shape on this host
    st = RunDir(run.path).read_status()
    assert st["host"] == socket.gethostname() and st["tok_s"] > 0
    nanotui(["--experiments", str(exp), "--runs", str(runs), "plan", "--budget", "1h",
             "--device", "cpu", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["measured"] == ["t/n_layer=1"] and doc["runs"][0]["throughput"] == "measured"
    nanotui(["--experiments", str(exp), "--runs", str(runs), "plan", "--budget", "1h",
             "--device", "cpu"])
    out = capsys.readouterr().out
    assert "Throughput: measured throughput for 1 of 1 runs" in out
    assert "Put in experiments.toml (nothing was written):\n  max_tokens = " in out
