"""`nanotui import`: a nanoGPT out_dir (ckpt.pt in nanoGPT's layout, compiled or not, char
with data/<name>/meta.pkl or GPT-2 without, and a `tee`'d log.txt) becomes a finished run
that status, sample and report show like one nanotui trained."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from engine.data.tokenizers import CharTokenizer, load_gpt2
from engine.model.gpt import GPT, GPTConfig
from engine.sample.generate import generate_samples
from tui.cli import main as nanotui

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHARS = sorted(set("the cat sat on the mat. a dog ran.\nROMEO:"))
NANOGPT_CONFIG = {  # train.py's globals as config/train_shakespeare_char.py leaves them
    "out_dir": "out-x", "eval_interval": 250, "log_interval": 10, "eval_iters": 200,
    "eval_only": False, "always_save_checkpoint": False, "init_from": "scratch",
    "wandb_log": False, "wandb_project": "shakespeare-char", "wandb_run_name": "mini-gpt",
    "dataset": "x", "gradient_accumulation_steps": 1, "batch_size": 64, "block_size": 256,
    "n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2, "bias": False,
    "learning_rate": 1e-3, "max_iters": 500, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99,
    "grad_clip": 1.0, "decay_lr": True, "warmup_iters": 100, "lr_decay_iters": 5000,
    "min_lr": 1e-4, "backend": "nccl", "device": "cuda", "dtype": "bfloat16", "compile": True}
LOG = """\
tokens per iteration will be: 16,384
found vocab_size = 65 (inside data/x/meta.pkl)
Initializing a new model from scratch
number of parameters: 0.01M
compiling the model... (takes a ~minute)
step 0: train loss 4.2874, val loss 4.2823
iter 0: loss 4.2649, time 32061.52ms, mfu -100.00%
iter 10: loss 3.2398, time 20.55ms, mfu -100.00%
iter 240: loss 1.9910, time 21.01ms, mfu 17.97%
step 250: train loss 1.9692, val loss 2.0692
saving checkpoint to out-x
iter 250: loss 2.0317, time 3811.35ms, mfu 16.19%
iter 490: loss 1.6214, time 20.81ms, mfu 17.92%
step 500: train loss 1.5522, val loss 1.7417
saving checkpoint to out-x
iter 500: loss 1.6025, time 3851.93ms, mfu 16.13%
"""


def nanogpt_tree(tmp_path, tokenizer: str, compiled: bool):
    """nanoGPT's repository after training: out-x/ckpt.pt + log.txt, data/x/ (meta.pkl
    for char). The weights are nanotui's model's: the parameter names are nanoGPT's."""
    torch.manual_seed(0)
    vocab = len(CHARS) if tokenizer == "char" else 50304
    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, bias=False, vocab_size=vocab,
                dropout=0.0)
    model = GPT(GPTConfig(**args))
    state = {("_orig_mod." if compiled else "") + k: v for k, v in model.state_dict().items()}
    root = tmp_path / "nanoGPT"
    out = root / "out-x"
    out.mkdir(parents=True)
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []},
                "model_args": args, "iter_num": 500, "best_val_loss": torch.tensor(1.7417),
                "config": dict(NANOGPT_CONFIG, compile=compiled)}, out / "ckpt.pt")
    (out / "log.txt").write_text(LOG)
    (root / "data" / "x").mkdir(parents=True)
    if tokenizer == "char":
        with open(root / "data" / "x" / "meta.pkl", "wb") as f:
            pickle.dump({"vocab_size": len(CHARS), "itos": dict(enumerate(CHARS)),
                         "stoi": {c: i for i, c in enumerate(CHARS)}}, f)
    return out, model.eval()


def greedy(model, tok, prompt: str, n: int) -> str:
    return generate_samples(model, tok, [prompt], 1, n, 0.0, None, None, 1)[0]["text"]


@pytest.mark.parametrize("tokenizer, compiled", [("char", False), ("char", True),
                                                 ("gpt2", True), ("gpt2", False)])
def test_an_imported_nanogpt_run_is_listed_sampled_and_reported(
        tmp_path, capsys, monkeypatch, shared_data, tokenizer, compiled):
    monkeypatch.setenv("NANOTUI_TOKENIZER_FILE", str(shared_data / "gpt2" / "gpt2.tiktoken"))
    out, model = nanogpt_tree(tmp_path, tokenizer, compiled)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    runs = ["--runs", str(tmp_path / "runs")]
    assert nanotui([*runs, "import", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"-> imported/out-x: {model.get_num_params():,} params, iter 500, best val 1.7417" in said
    assert "kept aside" in said and "wandb_log" in said and "out_dir" in said
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before

    assert nanotui([*runs, "status", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["runs"]
    assert (row["id"], row["state"], row["iter"], row["best_val_loss"], row["best_iter"],
            row["val_loss"], row["train_loss"]) == ("imported/out-x", "done", 500, 1.7417, 500,
                                                    1.7417, 1.5522)
    assert row["imported_from"] == str(out.resolve())
    assert row["params"] == model.get_num_params()
    metrics = [json.loads(x) for x in (tmp_path / "runs/imported/out-x/metrics.jsonl")
               .read_text().splitlines()]
    assert [(m["iter"], m["val_loss"]) for m in metrics if m["kind"] == "eval"] == \
        [(0, 4.2823), (250, 2.0692), (500, 1.7417)]
    trains = [m for m in metrics if m["kind"] == "train"]
    assert [(m["iter"], m["loss"]) for m in trains][:2] == [(1, 4.2649), (11, 3.2398)]
    assert trains[0]["mfu"] is None and trains[2]["mfu"] == pytest.approx(0.1797)
    assert trains[2]["tok_s"] == pytest.approx(16384 / 0.02101)

    tok = (CharTokenizer(CHARS) if tokenizer == "char"
           else load_gpt2([shared_data / "gpt2" / "gpt2.tiktoken"]))
    expected = greedy(model, tok, "the ", 12)
    assert nanotui([*runs, "sample", "imported/out-x", "--prompt", "the ", "--temperature", "0",
                    "--max-new-tokens", "12", "--device", "cpu"]) == 0
    assert expected in capsys.readouterr().out.splitlines()

    assert nanotui([*runs, "report", "imported", "--out", str(tmp_path / "rep"),
                    "--no-plots"]) == 0
    md = (tmp_path / "rep" / "imported" / "report.md").read_text()
    assert "| out-x | done |" in md and "1.7417" in md
    assert f"Imported from nanoGPT (versions not recorded): out-x from `{out.name}`" in md


def test_unknown_settings_are_kept_aside_and_the_config_maps_the_rest(tmp_path, capsys):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=True)
    assert nanotui(["--runs", str(tmp_path / "runs"), "import", str(out), "--sweep", "ng",
                    "--name", "baby"]) == 0
    run = tmp_path / "runs" / "ng" / "baby"
    imported = json.loads((run / "imported.json").read_text())
    assert imported["unmapped"] == ["always_save_checkpoint", "backend", "eval_only",
                                    "init_from", "out_dir", "wandb_log", "wandb_project",
                                    "wandb_run_name"]
    assert imported["nanogpt_config"] == dict(NANOGPT_CONFIG, compile=True)
    from engine.config import load_config
    cfg = load_config(run / "config.toml")
    # the shape is model_args' (the checkpoint's truth), the rest the config's
    assert (cfg.n_layer, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (1, 16, 16, len(CHARS))
    assert (cfg.learning_rate, cfg.beta2, cfg.max_iters, cfg.dtype, cfg.compile) == \
        (1e-3, 0.99, 500, "bfloat16", True)
    assert cfg.tokenizer == "char" and cfg.dataset == str(tmp_path / "nanoGPT" / "data" / "x")


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=False)
    runs = tmp_path / "runs"
    assert nanotui(["--runs", str(runs), "import", str(out), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: no ckpt.pt" in err
    assert not (runs / "imported").exists()
    assert nanotui(["--runs", str(runs), "import", str(out)]) == 0
    assert nanotui(["--runs", str(runs), "import", str(out)]) == 2
    assert "run imported/out-x already exists" in capsys.readouterr().err


def test_a_meta_pkl_that_would_run_code_is_refused_on_import(tmp_path, capsys):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=False)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "nanoGPT" / "data" / "x" / "meta.pkl").write_bytes(
        pickle.dumps({"vocab_size": len(CHARS), "itos": Evil()}))
    assert nanotui(["--runs", str(tmp_path / "runs"), "import", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to run code from a pickle" in err
    assert not marker.exists() and not (tmp_path / "runs" / "imported").exists()


def test_a_tokenizer_bigger_than_the_model_is_refused(tmp_path, capsys):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=False)
    big = tmp_path / "big.pkl"
    big.write_bytes(pickle.dumps({"vocab_size": 99, "itos": {i: chr(40 + i) for i in range(99)}}))
    assert nanotui(["--runs", str(tmp_path / "runs"), "import", str(out), "--meta", str(big)]) == 2
    assert f"the tokenizer from {big} has 99 tokens, the model only {len(CHARS)}" in \
        capsys.readouterr().err
