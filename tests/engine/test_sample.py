"""Sampling from a checkpoint: the API, `python -m engine.sample` and `nanotui sample`."""

from __future__ import annotations

import json

import pytest

from engine.train import process as T
from engine.sample.generate import generate_samples, load_model
from test_train import tiny_run  # tests/engine is on sys.path (pytest's rootdir-less import)
from tui.cli import main as nanotui


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture
def trained(tmp_path):
    run = tiny_run(tmp_path, max_iters=30, learning_rate=1e-2)
    assert T.main([str(run.path)]) == 0
    return run


def _gen(loaded, seed, **kw):
    args = dict(prompts=["the dog"], num_samples=2, max_new_tokens=24, temperature=1.0,
                top_k=None, top_p=None, seed=seed)
    args.update(kw)
    return generate_samples(loaded.model, loaded.tokenizer, **args)


def test_same_seed_same_text_and_each_sample_has_its_own_seed(trained):
    loaded = load_model(trained.path, device="cpu")
    a, b = _gen(loaded, 7), _gen(loaded, 7)
    assert [s["text"] for s in a] == [s["text"] for s in b]
    assert [s["seed"] for s in a] == [7, 8]
    assert a[0]["text"] != a[1]["text"]
    # sample 2 of seed 7 is sample 1 of seed 8: any recorded sample can be redrawn alone
    assert _gen(loaded, 8, num_samples=1)[0]["text"] == a[1]["text"]
    assert all(s["text"] == "the dog" + s["completion"] for s in a)
    assert a[0]["metrics"]["words"] >= 1


def test_cached_and_uncached_generation_give_the_same_text_within_block_size(trained):
    loaded = load_model(trained.path, device="cpu")
    bs = loaded.model.config.block_size
    for kw in (dict(top_k=5), dict(top_p=0.9), dict(temperature=0.7)):
        cached = _gen(loaded, 3, max_new_tokens=bs - 8, use_cache=True, **kw)
        plain = _gen(loaded, 3, max_new_tokens=bs - 8, use_cache=False, **kw)
        assert [s["text"] for s in cached] == [s["text"] for s in plain]


def test_eval_samples_are_reproduced_from_the_checkpoint(trained):
    """samples.jsonl at the last eval = sampling ckpt.pt with the recorded seed."""
    last = [s for s in trained.read_samples() if s["iter"] == 30]
    loaded = load_model(trained.path, device="cpu")
    cfg = loaded.config.sampling
    again = generate_samples(loaded.model, loaded.tokenizer, cfg.prompts, cfg.num_samples,
                             cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed)
    assert [s["text"] for s in again] == [s["text"] for s in last]
    # and say how they were drawn: a CPU run samples in float32 whatever its dtype, TF32 off
    assert all(s["precision"] == "float32" and s["tf32"] is False for s in last)


def test_best_and_latest_checkpoints(trained):
    latest = load_model(trained.path, device="cpu")
    best = load_model(trained.path, device="cpu", checkpoint="best")
    assert latest.path.name == "ckpt.pt" and best.path.name == "best.pt"
    assert latest.iter_num == 30
    assert load_model(trained.best_path, device="cpu").path == trained.best_path


def test_nanotui_sample_json(trained, capsys):
    rc = nanotui(["--runs", str(trained.path.parent.parent), "sample", "t/r", "--json",
                  "--prompt", "a cat", "--prompt", "the", "--num-samples", "2",
                  "--max-new-tokens", "12", "--seed", "5", "--top-k", "0"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["prompt"] for s in doc["samples"]] == ["a cat", "a cat", "the", "the"]
    assert [s["seed"] for s in doc["samples"]] == [5, 6, 5, 6]
    assert {s["precision"] for s in doc["samples"]} == {"float32"}
    assert all(s["top_k"] is None and s["text"].startswith(s["prompt"]) for s in doc["samples"])
    assert set(doc["metrics"]) == {"ttr", "mattr", "distinct_1", "distinct_2", "distinct_3",
                                   "repetition_4", "words"}
    assert doc["iter"] == 30


def test_nanotui_sample_text_output_by_path(trained, capsys):
    assert nanotui(["sample", str(trained.path), "--max-new-tokens", "10",
                    "--checkpoint", "best"]) == 0
    out = capsys.readouterr().out
    assert "best.pt" in out and "the cat" in out and "ttr" in out


def test_sampling_a_run_without_checkpoint_is_one_line(tmp_path, capsys):
    run = tiny_run(tmp_path)
    assert nanotui(["--runs", str(tmp_path / "runs"), "sample", "t/r"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no ckpt.pt yet" in err
    assert nanotui(["--runs", str(tmp_path / "runs"), "sample", "t/missing"]) == 2
    assert "no run" in capsys.readouterr().err
    assert not run.ckpt_path.exists()


def test_python_m_engine_sample_bad_checkpoint_is_one_line(tmp_path, capsys):
    from engine.sample.generate import main
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load checkpoint" in err


def test_prompt_characters_outside_the_vocabulary_are_dropped(trained):
    loaded = load_model(trained.path, device="cpu")
    s = _gen(loaded, 1, prompts=["Once the dog!"], num_samples=1)[0]   # no capitals, no "!"
    assert s["prompt"] == "Once the dog!"
    assert s["text"] == "nce the dog" + s["completion"] and len(s["completion"]) == 24
