"""`python -m engine.train` as a real process: SIGKILL + --resume, SIGTERM, NaN, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import TrainConfig
from engine.runs import RunDir, create_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# One torch thread per process: the CI box has 2 shared cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def make_data(d: Path) -> Path:
    rng = random.Random(0)
    vocab = "the a cat dog sat ran on under mat tree big small happy and then".split()
    text = " ".join(rng.choice(vocab) for _ in range(8000))
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    d.mkdir(parents=True)
    ids[:cut].tofile(d / "train.bin")
    ids[cut:].tofile(d / "val.bin")
    (d / "meta.json").write_text(json.dumps({
        "vocab_size": len(chars), "tokenizer": "char", "dtype": "uint16", "chars": chars,
        "eot_token": None, "train_tokens": cut, "val_tokens": len(ids) - cut}))
    return d


def make_run(tmp_path, name="r", **over) -> RunDir:
    data = tmp_path / "data"
    if not data.exists():
        make_data(data)
    kw = dict(data_dir=str(data), n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4,
              max_iters=200, eval_interval=20, eval_iters=2, log_interval=1, warmup_iters=5,
              lr_decay_iters=200, learning_rate=3e-3, device="cpu", dtype="float32")
    kw.update(over)
    cfg = TrainConfig(**kw)
    cfg.sampling.max_new_tokens = 8
    return create_run(tmp_path / "runs", "e2e", name, cfg)


def start(run: RunDir, *extra: str) -> subprocess.Popen:
    with open(run.stdout_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "engine.train", str(run.path), *extra],
                                cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    STARTED.append(proc)
    return proc


def finish(run: RunDir, *extra: str, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.train", str(run.path), *extra],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _no_stray_processes():
    """A failing test must not leave a training process behind."""
    yield
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    STARTED.clear()


STARTED: list[subprocess.Popen] = []


def wait_for(pred, timeout=120.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the training process exited early with {proc.returncode}")
        time.sleep(0.05)
    pytest.fail("timed out")


def last_train_iter(run: RunDir) -> int:
    its = [m["iter"] for m in run.read_metrics() if m["kind"] == "train"]
    return its[-1] if its else 0


def test_sigkill_then_resume_continues_from_the_last_checkpoint(tmp_path):
    run = make_run(tmp_path)
    proc = start(run)
    wait_for(lambda: last_train_iter(run) >= 47, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = run.read_status()
    assert st["state"] == "failed" and st["reason"] == "lost"   # the UI sees a dead run
    at = torch.load(run.ckpt_path, weights_only=True)["iter_num"]
    assert at >= 40 and at % 20 == 0
    with open(run.metrics_path, "a") as f:   # what a kill mid-write leaves
        f.write('{"kind": "train", "it')

    done = finish(run, "--resume")
    assert done.returncode == 0, done.stderr
    assert f"resuming at iter {at}" in done.stdout
    st = run.read_status()
    assert st["state"] == "done" and st["iter"] == 200 and st["exit_code"] == 0
    metrics = run.read_metrics()
    assert [m["iter"] for m in metrics if m["kind"] == "train"] == list(range(1, 201))
    assert [m["iter"] for m in metrics if m["kind"] == "eval"] == list(range(0, 201, 20))


def test_sigterm_checkpoints_and_stops_with_exit_0(tmp_path):
    run = make_run(tmp_path, max_iters=100_000, lr_decay_iters=100_000)
    proc = start(run)
    wait_for(lambda: last_train_iter(run) >= 5, proc=proc)
    wait_for(lambda: (run.read_status().get("eta_s") or 0) > 0, proc=proc)
    st = run.read_status()   # what the UI reads while the run trains
    assert st["state"] == "running" and st["pid"] == proc.pid and st["tok_s"] > 0
    assert st["max_iters"] == 100_000 and st["params"] > 0 and st["device"] == "cpu"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    st = run.read_status()
    assert st["state"] == "stopped" and st["exit_code"] == 0
    ck = torch.load(run.ckpt_path, weights_only=True)
    assert ck["iter_num"] == st["iter"] >= 5
    assert last_train_iter(run) == st["iter"]
    assert "Traceback" not in run.stdout_path.read_text()


def test_diverging_loss_fails_and_keeps_the_good_checkpoint(tmp_path):
    run = make_run(tmp_path, learning_rate=1e6, warmup_iters=0)
    res = finish(run)
    assert res.returncode == 1
    st = run.read_status()
    assert st["state"] == "failed" and ("nan" in st["reason"] or "inf" in st["reason"])
    assert "Traceback" not in res.stdout + res.stderr
    ck = torch.load(run.ckpt_path, weights_only=True)
    assert ck["iter_num"] == 0 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_bad_input_is_one_line_no_traceback_nothing_damaged(tmp_path, one_torch_thread):
    run = make_run(tmp_path, max_iters=20, eval_interval=10)
    from engine.train.process import main   # the good run in process: one subprocess less
    assert main([str(run.path)]) == 0
    files = [run.config_path, run.ckpt_path, run.best_path, run.metrics_path, run.samples_path]
    before = {p: p.read_bytes() for p in files}

    run.ckpt_path.write_bytes(before[run.ckpt_path][:1000])    # a corrupted checkpoint
    res = finish(run, "--resume")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "cannot load checkpoint" in res.stderr
    assert run.ckpt_path.read_bytes() == before[run.ckpt_path][:1000]
    run.ckpt_path.write_bytes(before[run.ckpt_path])

    run.config_path.write_text("n_layrs = 2\n" + before[run.config_path].decode())
    res = finish(run, "--resume")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "unknown key 'n_layrs'" in res.stderr and "did you mean 'n_layer'" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    run.config_path.write_bytes(before[run.config_path])
    for p in files:
        assert p.read_bytes() == before[p], p
    assert run.read_status()["state"] == "failed"
