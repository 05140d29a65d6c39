"""Checkpoints that lie: model_args claiming a model far larger than the tensors (checked
on the meta device, nothing allocated), a `model` that is not a table, NaN weights."""

from __future__ import annotations

import resource
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from engine.model.checkpoint import CheckpointError
from engine.model.gpt import GPT, GPTConfig
from engine.sample.generate import load_model

REPO = Path(__file__).resolve().parents[2]
CFG = GPTConfig(block_size=16, vocab_size=65, n_layer=1, n_head=2, n_embd=16)


def save(path: Path, model=None, model_args=None) -> Path:
    torch.manual_seed(0)
    state = GPT(CFG).state_dict() if model is None else model
    torch.save({"format": 1, "model": state, "model_args": model_args or asdict(CFG),
                "config": {}, "iter_num": 0}, path)
    return path


def test_model_args_far_larger_than_the_tensors_are_refused_before_building(tmp_path):
    """24 x 8192 would be ~79 GB of fp32 weights: refused in one line from a small file,
    in a child whose memory is capped far below that."""
    ck = save(tmp_path / "ckpt.pt", model_args={**asdict(CFG), "n_layer": 24, "n_embd": 8192,
                                                "n_head": 64})
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
            "from engine.sample.generate import load_model\n"
            "from engine.errors import UserError\n"
            f"try: load_model({str(ck)!r}, device='cpu')\n"
            "except UserError as e: print(e); sys.exit(2)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr[-800:]
    assert "does not fit its model_args" in p.stdout and p.stdout.count("\n") == 1
    assert "model_args make it" in p.stdout


def test_a_smaller_mismatch_names_the_tensor(tmp_path):
    ck = save(tmp_path / "ckpt.pt", model_args={**asdict(CFG), "n_embd": 32})
    with pytest.raises(CheckpointError, match=r"\S+\.weight is \(65, 16\), model_args make it \(65, 32\)"):
        load_model(ck, device="cpu")


@pytest.mark.parametrize("model", [[1, 2, 3], "weights", {"w": [1.0]}])
def test_a_model_that_is_not_a_table_of_tensors_is_one_line(tmp_path, model):
    ck = save(tmp_path / "ckpt.pt", model=model)
    with pytest.raises(CheckpointError) as e:
        load_model(ck, device="cpu")
    assert "\n" not in str(e.value)


def test_nan_weights_are_refused_by_sample_and_export(tmp_path):
    from engine.interop.hf_export import export_hf
    torch.manual_seed(0)
    state = GPT(CFG).state_dict()
    state["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    ck = save(tmp_path / "ckpt.pt", model=state)
    with pytest.raises(CheckpointError, match="NaN or infinite .*mlp.c_fc.weight"):
        load_model(ck, device="cpu")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        export_hf(ck, tmp_path / "hf", checkpoint="latest")
    assert not (tmp_path / "hf").exists()


