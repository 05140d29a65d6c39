"""Loss of a finished model on any text at a fixed context: `nanotui eval RUN --text FILE`.

The protocol, the same for every run so that students' models compare on one text:
  - the text is tokenised with the run's own tokenizer (char or GPT-2 BPE);
  - it is cut into non-overlapping windows of `block_size` + 1 tokens that share their
    edge token (x = ids[s:s+T], y = ids[s+1:s+T+1], s = 0, T, 2T, ...), so every token
    after the first is predicted exactly once, with between 1 and T tokens of context;
    the last window may be shorter;
  - loss = total nats / predicted tokens; perplexity = exp(loss), per token;
  - bits per byte = total nats / ln 2 / UTF-8 bytes of the text those predicted tokens
    decode to. Bytes do not depend on the tokenizer, so char and BPE runs compare here
    (per-token loss and perplexity do not).
The model is the run's best.pt (its best val loss), in fp32, without dropout.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.runs import RunDir
from engine.sample.generate import load_model

MAX_TEXT_BYTES = 256 * 1024 * 1024   # read no more than this from a text file
BATCH = 16                           # windows per forward pass


class EvalError(UserError):
    """A text or a run that cannot be evaluated."""


@dataclass(frozen=True)
class EvalText:
    path: Path
    text: str
    sha256: str


def read_text(path: str | Path) -> EvalText:
    """The file's text, refused in one line when it is not a regular, non-empty UTF-8 file."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"{p}: no such file (or not a regular file)")
    with open(p, "rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise EvalError(f"{p}: larger than {MAX_TEXT_BYTES // 2**20} MiB; pass a smaller text")
    if not data.strip():
        raise EvalError(f"{p}: empty, nothing to evaluate")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise EvalError(f"{p}: binary, not UTF-8 text")
    return EvalText(p, text, hashlib.sha256(data).hexdigest())


@torch.no_grad()
def nats_of(model: torch.nn.Module, ids: list[int], block_size: int) -> float:
    """Total cross-entropy (nats) of ids[1:] given the windows the module docstring states."""
    device = next(model.parameters()).device
    starts = list(range(0, len(ids) - 1, block_size))
    total = 0.0
    full = [s for s in starts if s + block_size + 1 <= len(ids)]
    for i in range(0, len(full), BATCH):
        chunk = torch.tensor([ids[s:s + block_size + 1] for s in full[i:i + BATCH]],
                             dtype=torch.long, device=device)
        total += _sum_loss(model, chunk)
    rest = [s for s in starts if s + block_size + 1 > len(ids)]
    for s in rest:  # at most one: the text's tail
        total += _sum_loss(model, torch.tensor([ids[s:]], dtype=torch.long, device=device))
    return total


def _sum_loss(model: torch.nn.Module, chunk: torch.Tensor) -> float:
    x, y = chunk[:, :-1], chunk[:, 1:]
    logits, _ = model(x, y)
    return float(F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                 reduction="sum"))


def evaluate_run(run: RunDir, text: EvalText, block_size: int | None = None,
                 max_tokens: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Evaluate `run`'s best model on `text`; the record that `eval.jsonl` keeps."""
    loaded = load_model(run.path, device=device, checkpoint="best")
    if loaded.tokenizer is None:
        raise EvalError(f"{run.id}: cannot tokenise text: {loaded.why_no_tokenizer}")
    limit = loaded.model.config.block_size
    T = limit if block_size is None else block_size
    if not 1 <= T <= limit:
        raise EvalError(f"{run.id}: --block-size {T} is outside 1..{limit} (the model's context)")
    try:
        ids = loaded.tokenizer.encode(text.text)
    except UserError as e:
        raise EvalError(f"{run.id}: {text.path}: {e}") from None
    if max_tokens is not None:
        if max_tokens < 1:
            raise EvalError("--tokens must be at least 1")
        ids = ids[:max_tokens + 1]
    if len(ids) < 2:
        raise EvalError(f"{text.path}: fewer than 2 tokens for {run.id}; nothing to predict")
    t0 = time.time()
    nats = nats_of(loaded.model, ids, T)
    dec = loaded.tokenizer.decode
    n_bytes = len(dec(ids).encode("utf-8")) - len(dec(ids[:1]).encode("utf-8"))
    predicted = len(ids) - 1
    loss = nats / predicted
    return {
        "text": str(text.path.resolve()), "text_sha256": text.sha256, "tokenizer": run_tokenizer(loaded),
        "checkpoint": loaded.path.name, "iter": loaded.iter_num, "block_size": T,
        "tokens": predicted, "bytes": n_bytes, "loss": loss,
        "bits_per_byte": nats / math.log(2) / max(n_bytes, 1),
        "perplexity": math.exp(loss) if loss < 700 else None,
        "eval_s": round(time.time() - t0, 3), "t": time.time(),
    }


def run_tokenizer(loaded) -> str:
    return loaded.config.tokenizer if loaded.config is not None else "?"
