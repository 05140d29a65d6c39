"""nanoGPT's artefacts: a ckpt.pt (compiled or not) with its data/<name>/meta.pkl samples
like a nanotui run; a meta.pkl that would run code is refused and runs nothing."""

from __future__ import annotations

import pickle

import pytest
import torch

from engine.data.nanogpt import read_meta_pkl
from engine.data.tokenizers import DataError
from engine.model.gpt import GPT, GPTConfig
from engine.sample.generate import generate_samples, load_model
from tui.cli import main as nanotui

CHARS = sorted(set("the cat sat on the mat. a dog ran.\n"))


def nanogpt_out_dir(tmp_path, compiled: bool):
    """out-x/ckpt.pt and data/x/meta.pkl laid out as nanoGPT's train.py and prepare.py
    write them (weights from nanotui's model: the parameter names are nanoGPT's)."""
    torch.manual_seed(0)
    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, bias=False,
                vocab_size=len(CHARS), dropout=0.0)
    model = GPT(GPTConfig(**args))
    state = {("_orig_mod." if compiled else "") + k: v for k, v in model.state_dict().items()}
    out = tmp_path / "out-x"
    out.mkdir()
    torch.save({"model": state, "optimizer": {}, "model_args": args, "iter_num": 250,
                "best_val_loss": torch.tensor(1.5), "config": {"dataset": "x", "compile": compiled,
                                                               "out_dir": "out-x"}},
               out / "ckpt.pt")
    (tmp_path / "data" / "x").mkdir(parents=True)
    with open(tmp_path / "data" / "x" / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(CHARS), "itos": dict(enumerate(CHARS)),
                     "stoi": {c: i for i, c in enumerate(CHARS)}}, f)
    return out / "ckpt.pt", model


@pytest.mark.parametrize("compiled", [False, True])
def test_a_nanogpt_checkpoint_samples_greedily_like_its_weights(tmp_path, capsys, compiled):
    ckpt, model = nanogpt_out_dir(tmp_path, compiled)
    loaded = load_model(ckpt, device="cpu")
    assert loaded.tokenizer is not None, loaded.why_no_tokenizer
    assert (loaded.iter_num, loaded.best_val_loss) == (250, 1.5)
    ours = generate_samples(loaded.model, loaded.tokenizer, ["the "], num_samples=1,
                            max_new_tokens=12, temperature=0.0, top_k=None, top_p=None, seed=1)
    ref = generate_samples(model.eval(), loaded.tokenizer, ["the "], num_samples=1,
                           max_new_tokens=12, temperature=0.0, top_k=None, top_p=None, seed=1)
    assert ours[0]["text"] == ref[0]["text"]
    assert nanotui(["sample", str(ckpt), "--prompt", "the ", "--temperature", "0",
                    "--max-new-tokens", "12", "--device", "cpu"]) == 0
    assert ref[0]["text"] in capsys.readouterr().out


def test_a_meta_pkl_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps({"vocab_size": 3, "itos": Evil()}))
    with pytest.raises(DataError, match="only plain dicts.*refusing to run code"):
        read_meta_pkl(path)
    assert not marker.exists()
