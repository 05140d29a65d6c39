"""The training loop, in process, on a tiny model and synthetic char data (seconds)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from engine.config import TrainConfig, dump_config
from engine.errors import UserError
from engine.model.arithmetic import model_vocab
from engine.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.runs import RunDir, create_run
from engine.train import control as TC
from engine.train import process as T
from engine.train import session as TS
from engine.train import trainer as TR

TRAIN_FIELDS = {"kind", "iter", "loss", "lr", "dt_ms", "tok_s", "mfu", "t"}
EVAL_FIELDS = {"kind", "iter", "train_loss", "val_loss", "t"}
SAMPLE_FIELDS = {"iter", "prompt", "temperature", "top_k", "top_p", "seed", "text", "metrics"}
METRIC_FIELDS = {"ttr", "mattr", "distinct_1", "distinct_2", "distinct_3", "repetition_4", "words"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def synthetic_text(n_words: int = 6000, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocab = "the a cat dog sat ran on under mat tree big small happy sad and then".split()
    return " ".join(rng.choice(vocab) + ("." if rng.random() < 0.1 else "") for _ in range(n_words))


def write_char_data(out_dir, text: str | None = None):
    """A prepared dir in the contract's format (nanoGPT's char recipe, JSON meta)."""
    text = text or synthetic_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    cut = int(len(text) * 0.9)
    out_dir.mkdir(parents=True, exist_ok=True)
    train = np.array([stoi[c] for c in text[:cut]], dtype=np.uint16)
    val = np.array([stoi[c] for c in text[cut:]], dtype=np.uint16)
    train.tofile(out_dir / "train.bin")
    val.tofile(out_dir / "val.bin")
    (out_dir / "meta.json").write_text(json.dumps({
        "vocab_size": len(chars), "tokenizer": "char", "dtype": "uint16", "chars": chars,
        "eot_token": None, "train_tokens": len(train), "val_tokens": len(val)}))
    return out_dir


def tiny_cfg(data_dir, **over) -> TrainConfig:
    kw = dict(data_dir=str(data_dir), n_layer=1, n_head=2, n_embd=32, block_size=32,
              batch_size=4, max_iters=20, eval_interval=10, eval_iters=2, log_interval=1,
              learning_rate=3e-3, warmup_iters=2, lr_decay_iters=20, min_lr=3e-4,
              device="cpu", dtype="float32")
    kw.update(over)
    cfg = TrainConfig(**kw)
    cfg.sampling.prompts = ["the cat"]
    cfg.sampling.max_new_tokens = 16
    cfg.sampling.num_samples = 2
    return cfg


def tiny_run(tmp_path, name="r", **over) -> RunDir:
    data = tmp_path / "data"
    if not (data / "meta.json").exists():
        write_char_data(data)
    return create_run(tmp_path / "runs", "t", name, tiny_cfg(data, **over))


def tiny_trainer(tmp_path, **over) -> TR.Trainer:
    cfg = tiny_cfg(write_char_data(tmp_path / "data"), **over)
    train, val, meta = TR.load_data(cfg)
    return TR.Trainer(cfg, train, val, meta["vocab_size"], log=lambda s: None)


# ---- pieces --------------------------------------------------------------------------------

def nanogpt_get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT train.py's get_lr, verbatim."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def test_cosine_schedule_is_nanogpts():
    cfg = TrainConfig(learning_rate=1e-3, warmup_iters=50, lr_decay_iters=600, min_lr=1e-4)
    for it in (0, 1, 49, 50, 51, 300, 599, 600, 601, 1000):
        assert TR.get_lr(it, cfg) == pytest.approx(nanogpt_get_lr(it, 1e-3, 50, 600, 1e-4))


def test_linear_constant_and_no_decay_schedules():
    lin = TrainConfig(learning_rate=1e-3, warmup_iters=10, lr_decay_iters=110, min_lr=0.0,
                      lr_schedule="linear")
    assert TR.get_lr(60, lin) == pytest.approx(0.5e-3)
    assert TR.get_lr(110, lin) == pytest.approx(0.0)
    const = TrainConfig(learning_rate=1e-3, warmup_iters=10, lr_schedule="constant")
    assert TR.get_lr(4, const) < 1e-3 and TR.get_lr(10, const) == TR.get_lr(10**6, const) == 1e-3
    flat = TrainConfig(learning_rate=1e-3, warmup_iters=10, decay_lr=False)
    assert TR.get_lr(0, flat) == TR.get_lr(10**6, flat) == 1e-3   # nanoGPT: no warmup either


def test_get_batch_targets_are_inputs_shifted_and_reproducible():
    data = np.arange(1000, dtype=np.uint16)
    cfg = TrainConfig(block_size=8, batch_size=5)
    x, y = TR.get_batch(data, cfg, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
    x2, _ = TR.get_batch(data, cfg, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)


def test_training_steps_lower_the_loss(tmp_path):
    t = tiny_trainer(tmp_path, learning_rate=1e-2, warmup_iters=0)
    before = t.estimate_loss()["val"]
    for _ in range(40):
        t.train_step()
    assert t.iter_num == 40
    assert t.estimate_loss()["val"] < before - 0.5


def test_gradient_accumulation_averages_the_micro_batches(tmp_path):
    t = tiny_trainer(tmp_path, gradient_accumulation_steps=2)
    batches = [(t.X, t.Y)]
    real_next = t.next_batch

    def recording_next():
        b = real_next()
        batches.append(b)
        return b
    t.next_batch = recording_next
    t._accumulate(t.model)
    got = {n: p.grad.clone() for n, p in t.model.named_parameters()}
    # the same two micro-batches as one batch of twice the size: the same gradient
    t.model.zero_grad(set_to_none=True)
    x = torch.cat([batches[0][0], batches[1][0]])
    y = torch.cat([batches[0][1], batches[1][1]])
    _, loss = t.model(x, y)
    loss.backward()
    for n, p in t.model.named_parameters():
        assert torch.allclose(got[n], p.grad, atol=1e-6), n


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch):
    logs = []
    t = tiny_trainer(tmp_path)
    t.log = logs.append

    def broken_compile(*a, **k):
        raise RuntimeError("Triton does not know this GPU\nmore detail")
    monkeypatch.setattr(torch, "compile", broken_compile)
    assert t.compile() == "failed"
    assert any("torch.compile failed" in s and "Triton does not know" in s for s in logs)
    assert math.isfinite(float(t.train_step()))


def test_compile_that_fails_at_first_call_falls_back_to_eager(tmp_path, monkeypatch):
    t = tiny_trainer(tmp_path)

    def lazy_broken(*a, **k):
        raise RuntimeError("backend compiler failed")
    monkeypatch.setattr(torch, "compile", lambda model, **k: lazy_broken)
    assert t.compile() == "on"
    loss = t.train_step()
    assert t.compile_status == "failed" and t.iter_num == 1 and math.isfinite(float(loss))


def test_checkpoints_load_with_weights_only(tmp_path):
    t = tiny_trainer(tmp_path)
    t.train_step()
    path = tmp_path / "ck.pt"
    save_checkpoint(t.state_dict(), path)
    ck = torch.load(path, weights_only=True)
    assert ck["iter_num"] == 1 and ck["config"]["n_embd"] == 32
    assert not list(tmp_path.glob(".ck.pt.*.tmp"))  # the temporary file was renamed


# ---- the whole process, in process ------------------------------------------------------------

def test_a_run_writes_the_contract_files(tmp_path, capsys):
    run = tiny_run(tmp_path)
    assert T.main([str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "iter 20: loss" in out and "tok/s" in out and "step 20: train loss" in out

    metrics = run.read_metrics()
    train = [m for m in metrics if m["kind"] == "train"]
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert [m["iter"] for m in train] == list(range(1, 21))
    assert [m["iter"] for m in evals] == [0, 10, 20]
    assert all(TRAIN_FIELDS <= set(m) for m in train) and all(EVAL_FIELDS <= set(m) for m in evals)
    assert train[-1]["tokens"] == 20 * 4 * 32
    assert set(evals[-1]["samples"]) == METRIC_FIELDS   # the eval's pooled diversity scores

    samples = run.read_samples()
    assert [s["iter"] for s in samples] == [0, 0, 10, 10, 20, 20]
    assert all(SAMPLE_FIELDS <= set(s) and set(s["metrics"]) == METRIC_FIELDS for s in samples)
    assert [s["seed"] for s in samples[:2]] == [1337, 1338]
    assert all(s["text"].startswith("the cat") for s in samples)

    st = run.read_status()
    assert st["state"] == "done" and st["exit_code"] == 0 and st["iter"] == 20
    for key in ("pid", "pid_create_time", "host", "device", "device_name", "dtype", "params",
                "params_total", "max_iters", "train_loss", "val_loss", "best_val_loss",
                "started_at", "ended_at", "tok_s", "eta_s"):
        assert st.get(key) is not None, key
    assert st["device"] == "cpu" and st["dtype"] == "float32"
    assert st["best_val_loss"] == min(e["val_loss"] for e in evals)
    # a finished run reports its typical speed, not its last lap's
    steady = sorted(m["tok_s"] for m in train[3:])
    assert steady[0] <= st["tok_s"] <= steady[-1]

    for path in (run.ckpt_path, run.best_path):
        ck = torch.load(path, weights_only=True)
        assert set(ck["rng"]) >= {"torch", "batch"}
        assert ck["meta"]["chars"]
    assert torch.load(run.ckpt_path, weights_only=True)["iter_num"] == 20


def test_early_stop_after_patience_evals_without_improvement(tmp_path, monkeypatch):
    run = tiny_run(tmp_path, max_iters=100, early_stop_patience=2)
    monkeypatch.setattr(TR.Trainer, "estimate_loss", lambda self: {"train": 1.0, "val": 1.0})
    assert T.main([str(run.path)]) == 0
    st = run.read_status()
    assert st["state"] == "done" and st["reason"] == "early stop"
    assert st["iter"] == 20 and st["best_iter"] == 0


def test_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    run = tiny_run(tmp_path, max_iters=30)
    real = TR.Trainer._accumulate

    def poisoned(self, model):
        loss = real(self, model)
        if self.iter_num >= 14:   # the 15th step diverges
            for p in self.model.parameters():
                p.grad.fill_(float("nan"))
            return loss * float("nan")
        return loss
    monkeypatch.setattr(TR.Trainer, "_accumulate", poisoned)
    assert T.main([str(run.path)]) == 1
    st = run.read_status()
    assert st["state"] == "failed" and "nan" in st["reason"] and st["exit_code"] == 1
    ck = torch.load(run.ckpt_path, weights_only=True)
    assert ck["iter_num"] == 10
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert "failed: loss is nan" in capsys.readouterr().err


# ---- bad input: one line, exit 2, nothing damaged -----------------------------------------------

def _assert_clean_failure(run, capsys, argv, expect, untouched):
    before = {p: p.read_bytes() for p in untouched}
    assert T.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err
    for p, data in before.items():
        assert p.read_bytes() == data, p


@pytest.mark.parametrize("edit,expect", [
    (lambda s: "bogus_key = 1\n" + s, "unknown key 'bogus_key'"),
    (lambda s: s.replace("n_layer = 1\n", 'n_layer = "one"\n'), "n_layer"),
    (lambda s: s.replace("n_embd = 32\n", "n_embd = 250\n").replace("n_head = 2\n", "n_head = 8\n"),
     "not divisible"),
    (lambda s: s.replace("max_iters = 20\n", "max_iters = 2.5\n"), "expected an integer"),
])
def test_bad_config_is_one_line(tmp_path, capsys, edit, expect):
    run = tiny_run(tmp_path)
    run.config_path.write_text(edit(run.config_path.read_text()))
    _assert_clean_failure(run, capsys, [str(run.path)], expect, [run.config_path])
    assert not run.metrics_path.exists() and not run.ckpt_path.exists()
    assert run.read_status()["state"] == "failed"


def test_missing_data_dir_is_one_line(tmp_path, capsys):
    run = tiny_run(tmp_path)
    cfg = run.load_config().replace(data_dir=str(tmp_path / "nowhere"))
    run.config_path.write_text(dump_config(cfg))
    _assert_clean_failure(run, capsys, [str(run.path)], "nowhere", [run.config_path])


def test_corrupted_checkpoint_on_resume_is_one_line_and_untouched(tmp_path, capsys):
    run = tiny_run(tmp_path)
    assert T.main([str(run.path)]) == 0
    capsys.readouterr()
    data = run.ckpt_path.read_bytes()
    run.ckpt_path.write_bytes(data[: len(data) // 2])
    _assert_clean_failure(run, capsys, [str(run.path), "--resume"], "cannot load checkpoint",
                          [run.config_path, run.ckpt_path, run.metrics_path, run.samples_path,
                           run.best_path])


def test_a_checkpoint_holding_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_args": {}, "x": TrainConfig()}, path)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)


def test_not_a_run_dir_is_one_line(tmp_path, capsys):
    assert T.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no config.toml" in err
    assert not (tmp_path / "nope").exists()


def test_vocab_size_from_data_with_gpt2_padded_to_a_multiple_of_64():
    assert model_vocab(TrainConfig(), {"vocab_size": 65, "tokenizer": "char"}) == 65
    assert model_vocab(TrainConfig(), {"vocab_size": 50257, "tokenizer": "gpt2"}) == 50304
    assert model_vocab(TrainConfig(vocab_size=70), {"vocab_size": 65}) == 70
    with pytest.raises(UserError, match="smaller than the data"):
        model_vocab(TrainConfig(vocab_size=60), {"vocab_size": 65})


def test_eta_leaves_out_warm_up_steps_and_eval_time():
    timer = TC.StepTimer(now=0.0)
    now = 0.0
    for dt in (5.0, 3.0, 1.0):          # compilation / warm-up steps: not in the ETA
        timer.steps += 1
        now += dt
        timer.lap(now)
    assert timer.eta(100) is None
    for _ in range(4):
        timer.steps += 1
        now += 0.1
        timer.lap(now)
    assert timer.eta(100) == pytest.approx(10.0)
    now += 60.0                          # an eval
    timer.restart(now)
    for _ in range(TC.TIMING_WARMUP_STEPS):
        timer.steps += 1
        now += 0.5
        timer.lap(now)
    timer.steps += 2                     # a log_interval of 2
    now += 0.2
    assert timer.lap(now) == pytest.approx(0.1)
    assert timer.eta(10) == pytest.approx(1.0)


def test_resume_with_a_changed_model_shape_is_one_line(tmp_path, capsys):
    run = tiny_run(tmp_path, max_iters=10)
    assert T.main([str(run.path)]) == 0
    capsys.readouterr()
    run.config_path.write_text(run.config_path.read_text().replace("n_embd = 32\n", "n_embd = 64\n"))
    _assert_clean_failure(run, capsys, [str(run.path), "--resume"], "does not match",
                          [run.ckpt_path, run.metrics_path])


def test_sigterm_while_setting_up_stops_at_once(tmp_path, monkeypatch, capsys):
    import os
    import signal
    run = tiny_run(tmp_path)
    real = TS.load_data

    def slow_prepare(cfg):
        os.kill(os.getpid(), signal.SIGTERM)   # `nanotui stop` while the data is prepared
        return real(cfg)
    monkeypatch.setattr(TS, "load_data", slow_prepare)
    before = signal.getsignal(signal.SIGTERM)
    assert T.main([str(run.path)]) == 0
    st = run.read_status()
    assert st["state"] == "stopped" and st["exit_code"] == 0
    assert not run.metrics_path.exists() and not run.ckpt_path.exists()
    assert signal.getsignal(signal.SIGTERM) is before
