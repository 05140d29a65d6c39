"""The options of `nanotui sample` and `python -m engine.sample`, in a module without
torch, so building the `nanotui` parser stays fast."""

from __future__ import annotations

import argparse


def temperatures(text: str) -> list[float]:
    """ "0.8" -> [0.8]; "0.5,0.8,1.0" -> [0.5, 0.8, 1.0] (argparse reports a ValueError)."""
    temps = [float(t) for t in str(text).split(",") if t.strip()]
    if not temps or any(not t >= 0 for t in temps):
        raise ValueError(text)
    return temps


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", action="append", metavar="P",
                   help="prompt (repeatable; default: the run's sampling.prompts)")
    p.add_argument("--num-samples", type=int, metavar="N", help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, metavar="M")
    p.add_argument("--temperature", type=temperatures, metavar="T[,T...]",
                   help="0 is greedy: always the most likely token; several (0.5,0.8,1.0,1.2) "
                        "make a temperature study, saved for the report (nanotui sample)")
    p.add_argument("--top-k", type=int, metavar="K", help="0 turns top-k off")
    p.add_argument("--top-p", type=float, metavar="P", help="1 turns top-p off")
    p.add_argument("--seed", type=int, metavar="S", help="sample j of a prompt uses seed S+j")
    p.add_argument("--context", choices=["full", "rebuild"],
                   help="past block_size: full (default: each token sees block_size tokens, as "
                        "nanoGPT's sample.py) or rebuild (faster: from half a window)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                   help="autocast dtype on CUDA (default: the run's training dtype, as its eval "
                        "samples, so the same seed gives their text); elsewhere float32")
    p.add_argument("--checkpoint", choices=["latest", "best"], default="latest",
                   help="ckpt.pt (latest, default) or best.pt (best val loss)")
    p.add_argument("--device", default="auto",
                   help="auto (default): a GPU of ours with room for the model, counting every "
                        "user's reservations (held while sampling), else the CPU with the reason "
                        "on stderr; or cpu, cuda:N (torch's numbering in this shell), mps")
    p.add_argument("--json", action="store_true",
                   help="one JSON document: each sample's text and metrics, and the pooled metrics")
