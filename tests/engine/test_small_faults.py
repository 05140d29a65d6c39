"""Smaller faults: figures never half-written, a killed import's work folder cleaned up,
a symlinked ckpt.pt imported under its own folder's name with its tokenizer, prompts of
bounded size."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.engine.test_nanogpt_import import nanogpt_tree
from tui.cli import main as nanotui


def test_a_figure_write_that_dies_leaves_the_old_png(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.files import save_png
    png = tmp_path / "vs_n_layer.png"
    fig = plt.figure()
    save_png(fig, png)
    old = png.read_bytes()
    assert old.startswith(b"\x89PNG")

    def dies(f, **kw):
        f.write(b"\x89PNG half")
        raise KeyboardInterrupt  # a kill mid-write, as far as this file can tell

    fig.savefig = dies
    with pytest.raises(KeyboardInterrupt):
        save_png(fig, png)
    assert png.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["vs_n_layer.png"]


def test_a_killed_imports_folder_is_removed_by_the_next_import(tmp_path, capsys):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=False)
    runs = tmp_path / "runs"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = runs / f".import-{dead.pid}-abcd1234"
    (stale / "ng" / "x").mkdir(parents=True)
    (stale / "ng" / "x" / "ckpt.pt").write_bytes(b"\0" * 1000)
    live = runs / f".import-{os.getpid()}-efgh5678"  # an import still being written
    live.mkdir()
    assert nanotui(["--runs", str(runs), "import", str(out), "--sweep", "ng"]) == 0
    assert not stale.exists() and live.exists()


def test_a_symlinked_ckpt_is_named_after_its_folder_and_keeps_its_tokenizer(tmp_path, capsys):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=False)
    store = tmp_path / "store"
    store.mkdir()
    (out / "ckpt.pt").rename(store / "blob-123.pt")
    (out / "ckpt.pt").symlink_to(store / "blob-123.pt")
    runs = tmp_path / "runs"
    assert nanotui(["--runs", str(runs), "import", str(out), "--sweep", "ng", "--json"]) == 0
    run = runs / "ng" / "out-x"
    assert run.is_dir(), sorted(p.name for p in (runs / "ng").iterdir())
    imported = json.loads((run / "imported.json").read_text())
    assert imported["tokenizer"] and imported["tokenizer"].endswith("meta.pkl")


def test_prompts_are_bounded_in_config_and_on_the_command_line():
    from engine.config import MAX_PROMPT_CHARS, ConfigError, sampling_from_dict
    with pytest.raises(ConfigError, match="a prompt of 20,001 characters, at most 20,000"):
        sampling_from_dict({"prompts": ["x" * (MAX_PROMPT_CHARS + 1)]}, "experiments.toml")
    with pytest.raises(ConfigError, match="at most 100"):
        sampling_from_dict({"prompts": ["x"] * 101}, "experiments.toml")
    assert sampling_from_dict({"prompts": ["x" * MAX_PROMPT_CHARS]}).prompts[0] == \
        "x" * MAX_PROMPT_CHARS
    from engine.model.gpt import GPT, GPTConfig
    from engine.data.tokenizers import CharTokenizer
    from engine.sample.generate import generate_samples
    model = GPT(GPTConfig(block_size=8, vocab_size=3, n_layer=1, n_head=1, n_embd=8))
    tok = CharTokenizer(["a", "b", "c"])
    with pytest.raises(ConfigError, match="prompt: a prompt of 10,000,000 characters"):
        generate_samples(model, tok, ["a" * 10_000_000], 1, 2, 1.0, None, None, 1)
