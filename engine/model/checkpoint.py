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
