"""A run's model as a Hugging Face transformers GPT-2 (`nanotui export RUN --format hf DIR`):
config.json + model.safetensors that `GPT2LMHeadModel.from_pretrained(DIR)` loads, with the
tokenizer files `AutoTokenizer.from_pretrained(DIR)` loads (engine.interop.hf_tokenizer).

nanoGPT's architecture is GPT-2's, so the mapping is exact:
  - the parameter names are the same (transformer.wte, transformer.h.N.attn.c_attn, ...);
  - GPT-2's attention and MLP projections are Conv1D layers, whose weight is stored
    (in, out): the transpose of nn.Linear's (out, in);
  - GPT-2 always has biases: a model trained with bias = false gets zero biases, which
    compute exactly what no bias does;
  - the output head is tied to the token embedding (tie_word_embeddings), so only
    transformer.wte.weight is stored;
  - nn.GELU() is the exact (erf) GELU: activation_function "gelu", not GPT-2's "gelu_new";
  - the vocabulary is the model's, padded as trained (GPT-2's 50257 as 50304): the
    tokenizer never produces the padding ids and they are never trained, so a greedy
    continuation matches nanotui's own.
Written fp32. safetensors is needed to write (the `hf` extra); transformers only to load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import UserError
from engine.interop.hf_tokenizer import write_tokenizer
from engine.model.gpt import GPT
from engine.sample.generate import LoadedModel, load_model

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
BIASED = {"ln_1": 1, "ln_2": 1, "attn.c_attn": 3, "attn.c_proj": 1, "mlp.c_fc": 4,
          "mlp.c_proj": 1}  # layer -> bias width in multiples of n_embd
MISSING_EXTRA = ("exporting to Hugging Face needs safetensors: pip install 'nanotui[hf]' "
                 "(transformers too, to load the export)")


class ExportError(UserError):
    """A run that cannot be exported, or a destination that would be overwritten."""


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel's state dict (without the tied lm_head) from nanotui's GPT."""
    C = model.config.n_embd
    out: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue  # tied: the same tensor as transformer.wte.weight
        v = v.detach().to("cpu", torch.float32)
        out[k] = (v.t() if k.endswith(CONV1D) else v).contiguous().clone()
    if not model.config.bias:
        for i in range(model.config.n_layer):
            for layer, width in BIASED.items():
                out[f"transformer.h.{i}.{layer}.bias"] = torch.zeros(width * C)
        out["transformer.ln_f.bias"] = torch.zeros(C)
    return out


def hf_config(model: GPT, eot_token: int | None) -> dict[str, Any]:
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_ctx": c.block_size,
        "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": 4 * c.n_embd,
        "activation_function": "gelu", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
        "tie_word_embeddings": True, "bos_token_id": eot_token, "eos_token_id": eot_token,
        "torch_dtype": "float32",
    }


def _model_card(loaded: LoadedModel, source: str, where: str) -> str:
    cfg = loaded.config
    lines = [f"# {source}", "",
             (f"A GPT of nanoGPT's architecture, exported by nanotui from `{source}` "
              f"({loaded.path.name}, iteration {loaded.iter_num})."), ""]
    if loaded.best_val_loss is not None:
        lines += [f"Best validation loss: {loaded.best_val_loss:.4f} nats per token.", ""]
    if cfg is not None:
        lines += [(f"Data: `{cfg.dataset}`, tokenizer `{cfg.tokenizer}`; n_layer {cfg.n_layer}, "
                   f"n_head {cfg.n_head}, n_embd {cfg.n_embd}, block_size {cfg.block_size}."), ""]
    n = loaded.model.config.block_size
    lines += ["```python", "from transformers import AutoTokenizer, GPT2LMHeadModel",
              f"tok = AutoTokenizer.from_pretrained({where!r})",
              f"model = GPT2LMHeadModel.from_pretrained({where!r})",
              "ids = tok(\"Once upon a time\", return_tensors=\"pt\").input_ids",
              f"out = model.generate(ids, max_length={n}, do_sample=True)", "```", "",
              # a GPT-2 has no positions past n_positions: a longer sequence fails (an
              # index error) instead of sliding its window as nanotui's sampler does
              (f"Generation must stay within n_positions = {n} tokens (the training "
               f"block_size), prompt included: pass `max_length <= {n}` (or keep "
               f"prompt + `max_new_tokens` within it). Longer sequences fail in transformers, "
               f"which does not crop the context as nanotui's sampler does."), ""]
    return "\n".join(lines)


def export_hf(target: Path, out_dir: Path, checkpoint: str = "best") -> list[str]:
    """Write the run's (or checkpoint file's) model into out_dir, which must not exist or
    be empty; returns the names of the files written. Built in a temporary directory
    beside out_dir and renamed into place: a failed export leaves nothing behind."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError(MISSING_EXTRA) from None
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} already exists and is not empty: not overwritten")
    if checkpoint == "best" and Path(target).is_dir() and not (Path(target) / "best.pt").is_file():
        checkpoint = "latest"
    loaded = load_model(target, device="cpu", checkpoint=checkpoint)
    if loaded.tokenizer is None:
        raise ExportError(f"{loaded.path}: no tokenizer to export with it ({loaded.why_no_tokenizer})")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.export-"))
    try:
        save_file(hf_state_dict(loaded.model), str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "config.json").write_text(
            json.dumps(hf_config(loaded.model, loaded.tokenizer.eot_token), indent=1) + "\n")
        files = ["config.json", "model.safetensors"]
        files += write_tokenizer(tmp, loaded.tokenizer, loaded.model.config.block_size)
        (tmp / "README.md").write_text(_model_card(loaded, str(target), str(out_dir)))
        files.append("README.md")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide it from a shared group
        os.chmod(tmp / "model.safetensors", 0o666 & ~umask)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return files
