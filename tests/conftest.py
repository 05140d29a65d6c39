"""Shared fixtures. Real data comes from ../shared/data (or $NANOTUI_SHARED_DATA) and is
never copied into the project; tests that need it skip with a reason when it is absent."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    env = os.environ.get("NANOTUI_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


TINY_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "batch_size": 4}
# a short fp32 CPU run that learns visibly in 20-50 steps (an eval every 10, a log every step)
SHORT_CPU_RUN = {"n_embd": 32, "block_size": 32, "learning_rate": 3e-3, "min_lr": 3e-4,
                 "eval_interval": 10, "eval_iters": 2, "log_interval": 1, "device": "cpu",
                 "dtype": "float32"}


def tiny_experiments(data_dir, sweeps: dict, **tables) -> str:
    """experiments.toml text for a model that trains in seconds on `data_dir`: TINY_MODEL
    and `tables["defaults"]` under [defaults], the other tables (sampling, launch) as
    given, then `sweeps` ({name: {"vary": {...}}}) as [sweep.NAME]."""
    import tomli_w

    defaults = {"data_dir": str(data_dir), **TINY_MODEL, **tables.pop("defaults", {})}
    return tomli_w.dumps({"defaults": defaults, **tables, "sweep": sweeps})


def interruptible() -> None:
    """preexec_fn for a child a test presses Ctrl-C on: SIGINT back to its default, so
    Python installs its KeyboardInterrupt handler even when the test run itself was started
    with SIGINT ignored (`nohup ... &` from a script: children inherit SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write_char_data(d: Path, text: str | None = None, train_tokens: int | None = None) -> Path:
    """A prepared char dataset (train.bin, val.bin, meta.json) in `d`, as `nanotui prepare`
    writes it: from `text` (90% train unless `train_tokens` says), or with no text a
    synthetic one of 4000 train and 1000 val tokens over 20 letters."""
    import json

    import numpy as np
    d.mkdir(parents=True, exist_ok=True)
    if text is None:
        chars = [chr(ord("a") + i) for i in range(20)]
        train = (np.arange(4000) % 20).astype(np.uint16)
        val = train[:1000]
    else:
        chars = sorted(set(text))
        ids = np.array([chars.index(c) for c in text], dtype=np.uint16)
        cut = train_tokens if train_tokens is not None else int(len(ids) * 0.9)
        train, val = ids[:cut], ids[cut:]
    train.tofile(d / "train.bin")
    val.tofile(d / "val.bin")
    (d / "meta.json").write_text(json.dumps({
        "vocab_size": len(chars), "tokenizer": "char", "dtype": "uint16", "chars": chars,
        "eot_token": None, "train_tokens": len(train), "val_tokens": len(val)}))
    return d


@pytest.fixture
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared data not found: set NANOTUI_SHARED_DATA or put it at ../shared/data")
    return d


SHARE_ENV = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_DEVICE_ORDER")


def use_fake_cards(path: Path, cards: dict, monkeypatch) -> Path:
    """`cards` (engine.launch.gpu's fake-card JSON) written to `path` and made this test's
    cards (NANOTUI_FAKE_GPUS), with no share set by the environment: every card is ours."""
    path.write_text(json.dumps(cards))
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(path))
    for k in SHARE_ENV:
        monkeypatch.delenv(k, raising=False)
    return path


def shared_dir(path: Path, monkeypatch, reservations: bool = True) -> Path:
    """A reservations directory as a machine has it (sticky, world-writable), this test's
    (NANOTUI_RESERVATIONS_DIR unless `reservations` is False), with the user cache beside it."""
    path.mkdir()
    os.chmod(path, 0o1777)
    if reservations:
        monkeypatch.setenv("NANOTUI_RESERVATIONS_DIR", str(path))
    monkeypatch.setenv("NANOTUI_CACHE_DIR", str(path.parent / "cache"))
    return path


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Keep tests away from the user's data cache and real GPUs."""
    monkeypatch.setenv("NANOTUI_DATA_DIR", str(tmp_path_factory.mktemp("data-cache")))
    # machine-wide GPU reservations: each test its own board, never the real /tmp one
    monkeypatch.setenv("NANOTUI_RESERVATIONS_DIR", str(tmp_path_factory.mktemp("reservations")))
    # machine-wide registry of CPU runs (engine/train/threads.py): each test its own
    monkeypatch.setenv("NANOTUI_CPU_RUNS_DIR", str(tmp_path_factory.mktemp("cpu-runs")))
    monkeypatch.delenv("NANOTUI_FAKE_GPUS", raising=False)


@pytest.fixture
def one_torch_thread():
    """The CI box is shared (2 cores, many processes): two torch threads fighting for
    them made a tiny training step ~15x slower than one thread."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
