"""Stop (SIGTERM) and --resume, in process: the resumed run is the uninterrupted run."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from test_train import (
    tiny_run,  # tests/engine is on sys.path (pytest's rootdir-less import)
)

from engine.model.checkpoint import save_checkpoint
from engine.train import process as T
from engine.train import trainer as TR

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _fixed_threads(monkeypatch):
    """Runs compared bit for bit train with one thread count: with "auto" the count follows
    the machine's load (engine/train/threads.py), and a matmul summed over 2 threads rounds
    differently from 1, so two runs started under different loads differ from step 1."""
    monkeypatch.setenv("NANOTUI_CPU_THREADS", "1")


def _sigterm_at(monkeypatch, at_iter: int):
    real = TR.Trainer.train_step

    def step(self, lr=None):
        loss = real(self, lr)
        if self.iter_num == at_iter:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-loop, like `nanotui stop`
        return loss
    monkeypatch.setattr(TR.Trainer, "train_step", step)


def _losses(run):
    return {(m["kind"], m["iter"]): m.get("loss", m.get("val_loss")) for m in run.read_metrics()}


def test_sigterm_stops_with_a_checkpoint_and_resume_reproduces_the_uninterrupted_run(
        tmp_path, monkeypatch, capsys):
    over = dict(max_iters=20, dropout=0.1)   # dropout: the torch RNG must be restored too
    straight = tiny_run(tmp_path, "straight", **over)
    assert T.main([str(straight.path)]) == 0

    run = tiny_run(tmp_path, "stopped", **over)
    _sigterm_at(monkeypatch, 12)
    assert T.main([str(run.path)]) == 0
    st = run.read_status()
    assert st["state"] == "stopped" and st["exit_code"] == 0 and st["iter"] == 12
    assert torch.load(run.ckpt_path, weights_only=True)["iter_num"] == 12
    assert "stopped at iter 12; checkpoint saved" in capsys.readouterr().out

    monkeypatch.undo()
    assert T.main([str(run.path), "--resume"]) == 0
    assert run.read_status()["state"] == "done"
    metrics = run.read_metrics()
    train_iters = [m["iter"] for m in metrics if m["kind"] == "train"]
    assert train_iters == list(range(1, 21))          # no gap, no repeat
    assert [m["iter"] for m in metrics if m["kind"] == "eval"] == [0, 10, 20]
    assert _losses(run) == _losses(straight)           # bit for bit: same batches, same RNG
    a = torch.load(straight.ckpt_path, weights_only=True)["model"]
    b = torch.load(run.ckpt_path, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_drops_records_past_the_checkpoint_and_a_torn_line(tmp_path):
    """What a SIGKILL leaves: records after the last checkpoint and half a line."""
    run = tiny_run(tmp_path, max_iters=20)
    assert T.main([str(run.path)]) == 0
    ck = torch.load(run.ckpt_path, weights_only=True)
    ck["iter_num"], ck["last_eval_iter"] = 10, 10        # pretend the last checkpoint was at 10
    save_checkpoint(ck, run.ckpt_path)
    with open(run.metrics_path, "a") as f:
        f.write('{"kind": "train", "iter": 21, "lo')
    assert T.main([str(run.path), "--resume"]) == 0
    metrics = run.read_metrics()
    assert [m["iter"] for m in metrics if m["kind"] == "train"] == list(range(1, 21))
    assert [m["iter"] for m in metrics if m["kind"] == "eval"] == [0, 10, 20]
    assert [s["iter"] for s in run.read_samples()] == [0, 0, 10, 10, 20, 20]


def test_resume_without_a_checkpoint_starts_over_cleanly(tmp_path, capsys):
    run = tiny_run(tmp_path, max_iters=5, eval_interval=100)
    run.log_metric(kind="train", iter=3, loss=9.0)   # a previous attempt that died early
    assert T.main([str(run.path), "--resume"]) == 0
    assert "starting from scratch" in capsys.readouterr().out
    assert [m["iter"] for m in run.read_metrics() if m["kind"] == "train"] == [1, 2, 3, 4, 5]
    assert all(m.get("loss") != 9.0 for m in run.read_metrics())


def test_resume_can_extend_max_iters(tmp_path):
    run = tiny_run(tmp_path, max_iters=10)
    assert T.main([str(run.path)]) == 0
    run.config_path.write_text(run.config_path.read_text().replace("max_iters = 10\n",
                                                                   "max_iters = 15\n"))
    assert T.main([str(run.path), "--resume"]) == 0
    assert run.read_status()["iter"] == 15
    assert [m["iter"] for m in run.read_metrics() if m["kind"] == "eval"] == [0, 10, 15]
