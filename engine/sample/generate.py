"""Generate text from a run's checkpoint: an API for the TUI and `python -m engine.sample`.

    loaded = load_model("runs/depth/n_layer=2")            # or a path to a .pt file
    samples = generate_samples(loaded.model, loaded.tokenizer, ["Once upon a time"],
                               num_samples=2, max_new_tokens=200, temperature=0.8,
                               top_k=200, top_p=None, seed=1337)

Checkpoints are read with torch.load(weights_only=True): no pickled code is executed.

How samples are drawn. The num_samples samples of a prompt are decoded as one batch
through the KV cache (GPT.generate), with no host sync per token: each prompt reads its
tokens back once, at the end. Sample j draws token t by inverse CDF from the t-th
uniform of its own CPU generator seeded seed + j (gpt.sample_next), so a sample asked for
alone with its recorded seed is the same sample as in the batch, and the uniforms are
the same on every device. On CUDA the forward passes run under autocast in `precision`
(eval samples: the run's training dtype; `nanotui sample`: the same by default) and TF32
is always off; elsewhere in float32. Each sample records its precision and tf32.

Where exactness stops. Same seed, settings, precision and device: the same text, in the
trainer's eval samples, `nanotui sample` and the TUI alike (one code path). Alone versus
in a batch: exact on the CPU in float32 (tested); under bf16/fp16 autocast on a GPU a
batch of another size may pick other kernels, whose rounding can flip a near-tie token
and the text from there on. Across devices (CPU vs GPU) the logits round differently,
so texts agree only where no token is a near tie.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

from engine.config import ConfigError, SamplingConfig, TrainConfig, check_prompts
from engine.data.nanogpt import checkpoint_meta
from engine.data.tokenizers import DataError, from_meta
from engine.errors import UserError, one_line
from engine.model import device as dev
from engine.model.checkpoint import (
    CheckpointError,
    build_model,
    checkpoint_config,
    load_checkpoint,
)
from engine.model.gpt import GPT
from engine.sample.metrics import eval_metrics, text_metrics
from engine.sample.options import add_sample_arguments
from engine.text import safe_text


class Tokenizer(Protocol):
    vocab_size: int
    eot_token: int | None

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


def load_tokenizer(meta: dict[str, Any]) -> tuple[Tokenizer | None, str]:
    """(tokenizer, "") or (None, why not): a checkpoint without a usable tokenizer still
    loads (its weights can be sampled as ids); the reason is shown instead of text."""
    try:
        return from_meta(meta), ""
    except Exception as e:
        return None, f"tokenizer: {one_line(e)}"


def generate_samples(model: GPT, tokenizer: Tokenizer, prompts: Sequence[str], num_samples: int,
                     max_new_tokens: int, temperature: float, top_k: int | None,
                     top_p: float | None, seed: int, use_cache: bool = True,
                     context: str = "full", precision: str = "float32") -> list[dict[str, Any]]:
    """num_samples continuations of each prompt; each a dict with prompt, temperature,
    top_k, top_p, seed, max_new_tokens, context (GPT.generate's: "full" as nanoGPT, or
    the faster "rebuild"), precision and tf32 (how the forward passes ran), text (prompt
    + continuation), completion (the continuation) and metrics
    (engine.sample.metrics.text_metrics of the completion). Prompt characters the
    vocabulary lacks are left out (text shows the prompt the model saw).

    The samples of a prompt are decoded as one batch; sample j draws its tokens from
    uniforms of its own CPU generator seeded seed + j (see the module docstring).
    `precision` ("float32", "bfloat16", "float16") is the autocast dtype on CUDA; on other
    devices samples are drawn in float32 and recorded so."""
    check_prompts(list(prompts), "prompt")
    device = next(model.parameters()).device
    if precision not in dev.DTYPES:
        raise ValueError(f"precision must be one of {', '.join(dev.DTYPES)}, not {precision!r}")
    used = precision if device.type == "cuda" else "float32"
    out = []
    # TF32 off: training turns it on, and eval samples must be `nanotui sample`'s text
    with dev.no_tf32(), dev.autocast_context(device, dev.DTYPES[used]):
        for prompt in prompts:
            ids = encode_prompt(tokenizer, prompt)
            shown = tokenizer.decode(ids) if ids else ""
            if not ids:  # an empty (or all-unknown) prompt starts from the end-of-text token
                ids = [tokenizer.eot_token if tokenizer.eot_token is not None else 0]
            idx = torch.tensor([ids], dtype=torch.long, device=device).repeat(num_samples, 1)
            # drawn on the CPU: the same seed gives the same uniforms on every device
            u = torch.stack([torch.rand(max_new_tokens,
                                        generator=torch.Generator().manual_seed(seed + j))
                             for j in range(num_samples)])
            y = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                               top_p=top_p, use_cache=use_cache, context=context,
                               uniforms=u.to(device))
            rows = y[:, len(ids):].tolist()  # the prompt's one read back to the host
            for j, row in enumerate(rows):
                # a padded vocabulary (GPT-2's 50304) has ids no tokenizer can decode
                completion = tokenizer.decode([i for i in row if i < tokenizer.vocab_size])
                out.append({
                    "prompt": prompt, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                    "seed": seed + j, "max_new_tokens": max_new_tokens, "context": context,
                    "precision": used, "tf32": False,
                    "text": shown + completion, "completion": completion,
                    "metrics": text_metrics(completion),
                })
    return out


def sampling_precision(loaded: "LoadedModel", dtype: str | None = None) -> str:
    """The precision generate_samples runs a loaded checkpoint in: `dtype` ("auto",
    "float32", ...) if given, else the run's training dtype, resolved for the model's
    device as the trainer resolves it, so eval samples and `nanotui sample` agree."""
    name = dtype or (loaded.config.dtype if loaded.config else "float32")
    return dev.dtype_name(dev.resolve_dtype(name, next(loaded.model.parameters()).device))


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's tokens; a char vocabulary may lack some of its characters (a TinyStories
    prompt on a Shakespeare model): those are dropped rather than failing the sample."""
    try:
        return tokenizer.encode(prompt)
    except Exception:
        kept = []
        for c in prompt:
            try:
                kept.extend(tokenizer.encode(c))
            except Exception:
                continue
        return kept


@dataclass
class LoadedModel:
    model: GPT
    tokenizer: Tokenizer | None
    config: TrainConfig | None
    path: Path
    iter_num: int | None
    best_val_loss: float | None
    why_no_tokenizer: str = ""


def checkpoint_path(run_dir_or_ckpt: str | Path, checkpoint: str = "latest") -> Path:
    """A .pt file as given, or a run directory's ckpt.pt (latest) / best.pt (best)."""
    p = Path(run_dir_or_ckpt)
    if p.is_file():
        return p
    from engine.runs import RunDir
    run = RunDir(p)
    if checkpoint not in ("latest", "best"):
        raise ValueError(f"checkpoint must be latest or best, not {checkpoint!r}")
    path = run.best_path if checkpoint == "best" else run.ckpt_path
    if not path.is_file():
        raise CheckpointError(f"{p}: no {path.name} yet (a run writes it at its first eval)")
    return path


def load_model(run_dir_or_ckpt: str | Path, device: str = "auto",
               checkpoint: str = "latest") -> LoadedModel:
    """Rebuild the model of a checkpoint in eval mode, with its tokenizer."""
    path = checkpoint_path(run_dir_or_ckpt, checkpoint)
    dv = dev.resolve_device(device)
    ck = load_checkpoint(path, map_location="cpu")  # then .to(dv) below
    model = build_model(ck, path)
    model.to(dv).eval()
    cfg = None
    try:
        cfg = checkpoint_config(ck, str(path))
    except ConfigError:
        pass
    meta = ck.get("meta")
    if meta is None and cfg is not None:  # an old checkpoint: read the data dir's meta.json
        meta = _meta_from_data_dir(cfg)
    if meta is None:  # a nanoGPT checkpoint: its meta.pkl, or GPT-2 as nanoGPT assumes
        try:
            meta = checkpoint_meta(path, ck)
        except DataError as e:
            return LoadedModel(model, None, cfg, path, ck.get("iter_num"), None, one_line(e))
    tok, why = load_tokenizer(meta or {})
    best = ck.get("best_val_loss")
    best = float(best) if isinstance(best, (float, torch.Tensor)) else None  # nanoGPT: a tensor
    return LoadedModel(model, tok, cfg, path, ck.get("iter_num"), best, why)


def _meta_from_data_dir(cfg: TrainConfig) -> dict[str, Any] | None:
    try:
        return json.loads((Path(cfg.data_dir) / "meta.json").read_text())
    except (OSError, ValueError):
        return None


# ---- command line (shared by `python -m engine.sample` and `nanotui sample`) -------------------

def sample_command(target: Path, args: argparse.Namespace) -> int:
    """Generate as `args` asks and print; errors are raised as one-line exceptions."""
    loaded = load_model(target, device=args.device, checkpoint=args.checkpoint)
    if loaded.tokenizer is None:
        raise ValueError(f"{loaded.path}: cannot decode text: {loaded.why_no_tokenizer}")
    s = loaded.config.sampling if loaded.config else SamplingConfig()
    top_k = s.top_k if args.top_k is None else (args.top_k or None)
    top_p = s.top_p if args.top_p is None else (args.top_p if args.top_p < 1 else None)
    if args.temperature is not None and len(args.temperature) > 1:
        raise ValueError("several temperatures make a temperature study: `nanotui sample "
                         "RUN|SWEEP --temperature A,B,...` samples, saves and compares them")
    temperature = s.temperature if args.temperature is None else args.temperature[0]
    num = s.num_samples if args.num_samples is None else args.num_samples
    max_new = s.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens
    if temperature < 0 or num < 1 or max_new < 1 or (top_k is not None and top_k < 0) \
            or (top_p is not None and top_p <= 0):
        raise ValueError("--temperature must be >= 0 (0 = greedy), --top-p positive, "
                         "--num-samples and --max-new-tokens at least 1")
    samples = generate_samples(loaded.model, loaded.tokenizer, args.prompt or s.prompts, num,
                               max_new, temperature, top_k, top_p,
                               s.seed if args.seed is None else args.seed,
                               context=getattr(args, "context", None) or s.context,
                               precision=sampling_precision(loaded, getattr(args, "dtype", None)))
    summary = eval_metrics([x["completion"] for x in samples])
    if args.json:
        json.dump({"checkpoint": str(loaded.path), "iter": loaded.iter_num,
                   "best_val_loss": loaded.best_val_loss, "samples": samples,
                   "metrics": summary}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"# {loaded.path} (iter {loaded.iter_num})")
    for x in samples:
        m = x["metrics"]
        print(f"--- prompt {safe_text(x['prompt'])!r} seed {x['seed']} · words {m['words']} ttr {m['ttr']:.3f} "
              f"mattr {m['mattr']:.3f} distinct_2 {m['distinct_2']:.3f} "
              f"repetition_4 {m['repetition_4']:.3f}")
        print(safe_text(x["text"]))  # a model can write escape sequences
    print(f"--- all samples: ttr {summary['ttr']:.3f} distinct_1 {summary['distinct_1']:.3f} "
          f"distinct_2 {summary['distinct_2']:.3f} distinct_3 {summary['distinct_3']:.3f} "
          f"repetition_4 {summary['repetition_4']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.sample",
                                description="Generate text from a run directory or checkpoint file.")
    p.add_argument("target", metavar="RUN_DIR_OR_CKPT")
    add_sample_arguments(p)
    args = p.parse_args(argv)
    try:
        return sample_command(Path(args.target), args)
    except (UserError, ValueError, OSError) as e:
        print(f"engine.sample: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
