"""One precision per sweep: with dtype = "auto" on a CPU, a timing taken per shape (here
one that favours bf16 for one width and fp32 for the other, as a measurement under load
did) never gives the runs of a sweep different precisions; status.json records the
precision, the attention path and the load at start."""

from __future__ import annotations

import json

import pytest
import torch

from engine.model import cpu_tuner
from engine.model import device as dev
from engine.train import process as T
from tests.engine.test_train import tiny_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_runs_of_a_sweep_share_one_precision_whatever_the_timing_says(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOTUI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(cpu_tuner.OVERRIDE_ENV, "torch")  # the path fixed: only precision open

    def timing(cfg, batch_size, cands, steps):
        # bf16 "wins" at n_embd=48 only, as a measurement under load can say
        return ({cpu_tuner.label(p, d): 1.0 if (d == torch.bfloat16) == (cfg.n_embd == 48)
                 else 2.0 for p, d in cands}, {})
    monkeypatch.setattr(cpu_tuner, "measure", timing)
    monkeypatch.setattr(cpu_tuner.dev, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    statuses = []
    for n_embd in (32, 48):
        run = tiny_run(tmp_path, name=f"n_embd={n_embd}", n_embd=n_embd, dtype="auto",
                       max_iters=2, eval_interval=2)
        assert T.main([str(run.path)]) == 0
        statuses.append(json.loads(run.status_path.read_text()))
    assert {st["dtype"] for st in statuses} == {"bfloat16"}  # "auto" on a bf16 CPU
    for st in statuses:
        assert st["dtype_setting"] == "auto" and st["cpu_attention"] == "torch"
        assert isinstance(st["cpu_load"]["busy"], bool)
        assert st["cpu_load"]["busy_cores"] is None or st["cpu_load"]["busy_cores"] >= 0
