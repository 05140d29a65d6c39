"""nanoGPT data directories as `dataset`: train.bin/val.bin (uint16) with meta.pkl (char)
or without it (GPT-2 BPE, nanoGPT's convention), trained on in place, nothing copied."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from engine.config import TrainConfig
from engine.data.datasets import load_meta
from engine.data.tokenizers import DataError, load_gpt2
from engine.model.arithmetic import param_counts
from engine.runs import create_run
from engine.train import process as T
from tests.engine.test_train import synthetic_text
from tui.cli import main as nanotui

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def char_dir(d):
    """data/<name>/ as nanoGPT's shakespeare_char/prepare.py writes it."""
    text = synthetic_text(3000)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    d.mkdir(parents=True)
    ids[:cut].tofile(d / "train.bin")
    ids[cut:].tofile(d / "val.bin")
    with open(d / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return d, chars


def gpt2_dir(d, shared_data):
    """data/<name>/ as nanoGPT's shakespeare/prepare.py writes it: GPT-2 ids, no meta.pkl."""
    tok = load_gpt2([shared_data / "gpt2" / "gpt2.tiktoken"])
    ids = np.array(tok.encode((shared_data / "shakespeare" / "input.txt").read_text()[:20000]),
                   dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    d.mkdir(parents=True)
    ids[:cut].tofile(d / "train.bin")
    ids[cut:].tofile(d / "val.bin")
    return d


def train(tmp_path, data) -> dict:
    cfg = TrainConfig(dataset=str(data), n_layer=1, n_head=2, n_embd=32, block_size=32,
                      batch_size=4, max_iters=6, eval_interval=3, eval_iters=2,
                      learning_rate=3e-3, warmup_iters=1, lr_decay_iters=6, device="cpu",
                      dtype="float32")
    cfg.sampling.prompts, cfg.sampling.max_new_tokens = ["the "], 8
    run = create_run(tmp_path / "runs", "ng", data.name, cfg)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in data.iterdir())
    assert T.main([str(run.path)]) == 0, run.stdout_path.read_text()[-2000:]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in data.iterdir()) == before  # in place
    st = json.loads(run.status_path.read_text())
    assert st["state"] == "done" and st["iter"] == 6 and st["best_val_loss"] is not None
    return {"status": st, "samples": run.read_samples(), "run": run}


def test_a_char_data_dir_with_meta_pkl_trains(tmp_path, capsys):
    data, chars = char_dir(tmp_path / "data" / "shakespeare_char")
    meta = load_meta(data)
    assert (meta["tokenizer"], meta["vocab_size"], meta["chars"]) == ("char", len(chars), chars)
    out = train(tmp_path, data)
    cfg = out["run"].load_config()
    assert out["status"]["params_total"] == param_counts(cfg, len(chars))[1]  # meta.pkl's vocab
    assert out["samples"] and all(set(s["completion"]) <= set(chars) for s in out["samples"])
    assert nanotui(["sample", str(out["run"].path), "--prompt", "the ", "--temperature", "0",
                    "--max-new-tokens", "5", "--device", "cpu"]) == 0
    assert "the " in capsys.readouterr().out
    # meta.pkl says nothing of bytes: measured once from val.bin for bits per byte
    val = np.fromfile(data / "val.bin", dtype=np.uint16)
    text = "".join(chars[i] for i in val)
    assert out["status"]["bytes_per_token"] == pytest.approx(len(text.encode()) / len(val))


def test_a_gpt2_data_dir_without_meta_trains(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("NANOTUI_TOKENIZER_FILE", str(shared_data / "gpt2" / "gpt2.tiktoken"))
    data = gpt2_dir(tmp_path / "data" / "shakespeare", shared_data)
    meta = load_meta(data)
    assert (meta["tokenizer"], meta["vocab_size"]) == ("gpt2", 50257)
    out = train(tmp_path, data)
    cfg = out["run"].load_config()
    assert out["status"]["params_total"] == param_counts(cfg, 50304)[1]  # GPT-2's, padded
    assert out["samples"] and out["samples"][0]["text"].startswith("the ")
    val = np.fromfile(data / "val.bin", dtype=np.uint16)
    text = load_gpt2([shared_data / "gpt2" / "gpt2.tiktoken"]).decode(val.tolist())
    assert out["status"]["bytes_per_token"] == pytest.approx(len(text.encode()) / len(val))
    assert 2 < out["status"]["bytes_per_token"] < 5   # GPT-2 on verse: ~2.9 bytes a token


def test_plan_reads_the_vocabulary_of_a_nanogpt_dir(tmp_path, capsys):
    data, chars = char_dir(tmp_path / "data" / "x")
    (tmp_path / "experiments.toml").write_text(
        f'[defaults]\ndataset = "{data}"\nn_layer = 1\nn_head = 2\nn_embd = 32\n'
        'block_size = 32\n[sweep.s]\nvary = { n_layer = [1, 2] }\n')
    assert nanotui(["--experiments", str(tmp_path / "experiments.toml"), "plan", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["vocab_size"], r["vocab_source"]) for r in runs] == [(len(chars), "prepared")] * 2


def test_a_bin_that_is_not_uint16_is_one_clear_error(tmp_path):
    data, _ = char_dir(tmp_path / "d")
    with open(data / "val.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(DataError, match=r"val.bin: .* bytes is not a whole number of uint16"):
        load_meta(data)


def test_prepare_accepts_a_nanogpt_dir_and_leaves_it_as_it_is(tmp_path, capsys):
    data, chars = char_dir(tmp_path / "shakespeare_char")
    before = sorted(p.name for p in data.iterdir())
    assert nanotui(["prepare", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"prepared {data}" in out and f"vocab {len(chars)}" in out and "used in place" in out
    assert sorted(p.name for p in data.iterdir()) == before
