"""`nanotui export RUN --format hf DIR`: transformers' GPT2LMHeadModel and AutoTokenizer load
the export and compute what nanotui's model computes (fp32 logits within 1e-4, the same
greedy continuation), for a char run and a GPT-2 run."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from engine.data.tokenizers import load_gpt2
from engine.interop.hf_tokenizer import gpt2_vocab_and_merges
from engine.runs import create_run
from engine.sample.generate import load_model
from engine.train import process as T
from tests.engine.test_nanogpt_data import gpt2_dir
from tests.engine.test_train import tiny_cfg, write_char_data
from tui.cli import main as nanotui

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPT = "the cat sat on the mat"


def trained_run(tmp_path, data, **over):
    cfg = tiny_cfg(data, max_iters=6, eval_interval=3, **over)
    run = create_run(tmp_path / "runs", "hf", "r", cfg)
    assert T.main([str(run.path)]) == 0, run.stdout_path.read_text()[-2000:]
    return run


def check_export(tmp_path, run, capsys) -> None:
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed (pip install 'nanotui[hf]')")
    out = tmp_path / "hf"
    assert nanotui(["--runs", str(tmp_path / "runs"), "export", run.id, "--format", "hf",
                    str(out)]) == 0
    assert f"wrote {out}: config.json, model.safetensors" in capsys.readouterr().out
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ours = load_model(run.path, device="cpu", checkpoint="best")
    ids = ours.tokenizer.encode(PROMPT)
    assert tok(PROMPT)["input_ids"] == ids and tok.decode(ids) == PROMPT
    x = torch.tensor([ids])
    with torch.no_grad():
        theirs = hf(x).logits
        mine, _ = ours.model(x, targets=x)
    assert theirs.shape == mine.shape
    assert (theirs - mine).abs().max().item() < 1e-4
    n = ours.model.config.block_size - len(ids)  # GPT-2 has no positions past n_positions
    got = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                      do_sample=False)[0].tolist()
    want = ours.model.generate(x, n, temperature=0.0)[0].tolist()
    if len(got) < len(want):  # transformers stops at the end-of-text token
        assert got[-1] == ours.tokenizer.eot_token
    assert got == want[:len(got)] and len(got) > len(ids)


@pytest.mark.parametrize("bias", [False, True])
def test_a_char_run_exports_to_transformers(tmp_path, capsys, bias):
    run = trained_run(tmp_path, write_char_data(tmp_path / "data"), bias=bias)
    check_export(tmp_path, run, capsys)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["model_type"], config["activation_function"], config["tie_word_embeddings"]) \
        == ("gpt2", "gelu", True)


def test_a_gpt2_run_exports_to_transformers(tmp_path, capsys, monkeypatch, shared_data):
    monkeypatch.setenv("NANOTUI_TOKENIZER_FILE", str(shared_data / "gpt2" / "gpt2.tiktoken"))
    run = trained_run(tmp_path, gpt2_dir(tmp_path / "data", shared_data))
    check_export(tmp_path, run, capsys)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == 50304


def test_the_gpt2_vocabulary_and_merges_are_openais(shared_data):
    vocab, merges = gpt2_vocab_and_merges(load_gpt2([shared_data / "gpt2" / "gpt2.tiktoken"]))
    assert vocab == json.loads((shared_data / "gpt2" / "encoder.json").read_text())
    lines = (shared_data / "gpt2" / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version") and merges == [x for x in lines[1:] if x]


def test_export_errors_are_one_line_and_overwrite_nothing(tmp_path, capsys, monkeypatch):
    run = trained_run(tmp_path, write_char_data(tmp_path / "data"))
    runs = ["--runs", str(tmp_path / "runs")]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    assert nanotui([*runs, "export", run.id, str(taken)]) == 2
    assert capsys.readouterr().err == f"nanotui: error: {taken} already exists and is not empty: not overwritten\n"
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if the hf extra were absent
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    assert nanotui([*runs, "export", run.id, str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'nanotui[hf]'" in err
    assert not (tmp_path / "new").exists()


def test_export_of_an_unknown_run_lists_the_runs_and_the_card_states_the_context_limit(
        tmp_path, capsys):
    pytest.importorskip("safetensors", reason="safetensors is not installed (nanotui[hf])")
    run = trained_run(tmp_path, write_char_data(tmp_path / "data"))
    runs = ["--runs", str(tmp_path / "runs")]
    capsys.readouterr()
    assert nanotui([*runs, "export", "hf/q", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (f"nanotui: error: no run 'hf/q' under {tmp_path / 'runs'} (did you mean "
                   f"'hf/r'?); runs: hf/r\n")
    assert not (tmp_path / "out").exists()
    assert nanotui([*runs, "export", run.id, str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Generation must stay within n_positions = 32 tokens (the training block_size)" in card
