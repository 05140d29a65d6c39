"""The checkpoint format: what ckpt.pt and best.pt hold, written atomically, read safely.

A checkpoint is a dict: format, model (state dict), model_args (GPTConfig's fields),
config (the run's TrainConfig as a dict), optimizer, iter_num, best_val_loss, best_iter
and rng. nanoGPT's ckpt.pt has the same model, model_args, iter_num, best_val_loss and
optimizer keys (its config holds nanoGPT's globals), so it loads too. It is loaded with weights_only=True, so a checkpoint never runs pickled code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.config import TrainConfig, config_from_dict
from engine.errors import UserError, one_line
from engine.files import atomic_write
from engine.model.gpt import GPT, GPTConfig

CKPT_FORMAT = 1


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or does not fit."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, rename over it: a reader (or a
    crash) never sees half a checkpoint."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint dict; weights_only=True, so no pickled code is ever executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load checkpoint ({one_line(e, 200)})") from None
    if not isinstance(ck, dict) or "model" not in ck or "model_args" not in ck:
        raise CheckpointError(f"{path}: not a nanotui checkpoint")
    if not isinstance(ck["model"], dict) or not isinstance(ck["model_args"], dict):
        raise CheckpointError(f"{path}: not a nanotui checkpoint (its model or model_args "
                              f"is not a table of tensors)")
    return ck


COMPILED_PREFIX = "_orig_mod."   # torch.compile's wrapper names every parameter this way


def model_state(ck: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's weights with torch.compile's `_orig_mod.` prefixes stripped, so a
    checkpoint saved from a compiled model (nanoGPT's GPU default) loads into a plain one.
    nanoGPT on a torch without flash attention also saves its causal mask as a buffer
    `transformer.h.N.attn.bias`: a constant, not a weight, so it is left out."""
    out = {}
    for k, v in ck["model"].items():
        k = k[len(COMPILED_PREFIX):] if k.startswith(COMPILED_PREFIX) else k
        if not k.endswith(".attn.bias"):  # the weights' biases are attn.c_attn.bias, ...
            out[k] = v
    return out


def checkpoint_config(ck: dict[str, Any], source: str) -> TrainConfig:
    return config_from_dict(ck.get("config", {}), source=source)


def build_model(ck: dict[str, Any], path: Path) -> GPT:
    """The checkpoint's model with its weights loaded, on the CPU. model_args are checked
    against the tensors' shapes on the meta device first (no memory), so a small file
    claiming a huge model is refused before anything is allocated; weights that are not
    finite (a diverged run) are refused too, since every output of them is NaN."""
    try:
        cfg = GPTConfig(**ck["model_args"])
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()
                    if not k.endswith(".attn.bias")}
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:
        raise CheckpointError(f"{path}: its model_args do not make a model: "
                              f"{one_line(e, 200)}") from None
    state = model_state(ck)
    have = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()}
    if have != want:
        bad = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        k = bad[0]
        raise CheckpointError(f"{path}: checkpoint does not fit its model_args: {k} is "
                              f"{have.get(k, 'missing')}, model_args make it "
                              f"{want.get(k, 'absent')} ({len(bad)} tensors differ)")
    nonfinite = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(f"{path}: weights are NaN or infinite ({nonfinite[0]} and "
                              f"{len(nonfinite) - 1} more): the run diverged; use an earlier "
                              f"checkpoint (best.pt) or a lower learning rate")
    model = GPT(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: checkpoint does not fit the model: "
                              f"{one_line(e, 200)}") from None
    return model
