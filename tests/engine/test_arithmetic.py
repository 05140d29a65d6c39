"""One model arithmetic: what `plan` says a run has is what the trained run records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.data.tokenizers import GPT2_TOKENS
from engine.launch.estimate import estimate
from engine.config import ConfigError, TrainConfig
from engine.model.arithmetic import padded_vocab, param_counts
from engine.model.gpt import GPT, GPTConfig
from engine.runs import create_run
from engine.train import process as T
from tests.engine.test_train import tiny_cfg, write_char_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_gpt2_data(out_dir):
    """A prepared dir as `nanotui prepare --tokenizer gpt2` writes it: 50257 ids in meta."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 4000), ("val", 1000)):
        rng.integers(0, 50257, n, dtype=np.uint16).tofile(out_dir / f"{split}.bin")
    (out_dir / "meta.json").write_text(json.dumps({
        "vocab_size": 50257, "tokenizer": "gpt2", "dtype": "uint16", "eot_token": 50256,
        "train_tokens": 4000, "val_tokens": 1000}))
    return out_dir


def test_gpt2_vocabulary_is_padded_the_same_everywhere():
    assert padded_vocab(GPT2_TOKENS, "gpt2") == 50304
    assert padded_vocab(65, "char") == 65


@pytest.mark.parametrize("vocab,bias", [(65, False), (50304, True), (83, True)])
def test_param_counts_are_the_models(vocab, bias):
    cfg = tiny_cfg("unused", n_layer=2, n_embd=48, n_head=4, bias=bias)
    m = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=vocab, n_layer=2, n_head=4,
                      n_embd=48, bias=bias))
    assert param_counts(cfg, vocab) == (m.get_num_params(), m.get_num_params(False))


@pytest.mark.parametrize("tokenizer", ["gpt2", "char"])
def test_plan_counts_what_the_trained_run_records(tmp_path, tokenizer):
    data = (write_gpt2_data if tokenizer == "gpt2" else write_char_data)(tmp_path / "data")
    cfg = tiny_cfg(data, max_iters=2, eval_interval=2, tokenizer=tokenizer)
    planned = estimate(cfg, device="cpu")
    run = create_run(tmp_path / "runs", "t", tokenizer, cfg)
    assert T.main([str(run.path)]) == 0, run.stdout_path.read_text()[-2000:]
    st = json.loads(run.status_path.read_text())
    assert st["state"] == "done"
    assert (planned.params, planned.params_total) == (st["params"], st["params_total"])
    if tokenizer == "gpt2":
        assert planned.vocab_size == 50304 and planned.vocab_source == "prepared"


def test_param_conventions_differ_by_the_embeddings():
    from engine.model.arithmetic import param_count, param_counts
    cfg = TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=16)
    nanogpt, total = param_counts(cfg, 50304)
    assert param_count(cfg, 50304) == nanogpt
    assert param_count(cfg, 50304, "total") == total
    assert param_count(cfg, 50304, "non_embedding") == nanogpt - 50304 * 32
    with pytest.raises(ConfigError, match="not one of"):
        param_count(cfg, 50304, "bogus")
