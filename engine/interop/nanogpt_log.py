"""nanoGPT's stdout, as `python train.py ... | tee log.txt` saves it, read back as
metrics.jsonl records.

train.py prints, among other lines:

    tokens per iteration will be: 16,384
    step 250: train loss 1.9712, val loss 2.0801
    iter 250: loss 2.0304, time 31.05ms, mfu 5.43%

`step N` is the eval after N optimizer steps, which is nanotui's eval record at iter N.
`iter N` is the loss of the step that *starts* at N (train.py prints, then increments
iter_num), so it is nanotui's train record at iter N + 1 ("the loss of the (N+1)-th step").
The first iterations print `mfu -100.00%` (train.py's placeholder before it has measured):
recorded as unknown. A run that was resumed prints its iterations again from the checkpoint;
the last value printed for an iteration wins, and records are kept in iteration order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_NUM = r"(-?[0-9.]+(?:e[-+]?\d+)?|nan|inf)"
TRAIN_LINE = re.compile(rf"^iter (\d+): loss {_NUM}, time {_NUM}ms(?:, mfu {_NUM}%)?")
EVAL_LINE = re.compile(rf"^step (\d+): train loss {_NUM}, val loss {_NUM}")
TOKENS_LINE = re.compile(r"^tokens per iteration will be: ([0-9,]+)")


@dataclass
class NanoGptLog:
    path: Path
    trains: dict[int, dict[str, Any]] = field(default_factory=dict)
    evals: dict[int, dict[str, Any]] = field(default_factory=dict)
    tokens_per_iter: int | None = None

    def records(self, tokens_per_iter: int) -> list[dict[str, Any]]:
        """metrics.jsonl records (kind train | eval), in iteration order, an eval before
        the train record of the same iteration (the eval at N sees the model after N
        steps; the train record N is the N-th step's loss)."""
        tpi = self.tokens_per_iter or tokens_per_iter
        out = []
        for it in sorted(set(self.trains) | set(self.evals)):
            if it in self.evals:
                out.append({"kind": "eval", "iter": it, **self.evals[it], "tokens": it * tpi})
            if it in self.trains:
                rec = {"kind": "train", "iter": it, **self.trains[it], "tokens": it * tpi}
                dt = rec.get("dt_ms")
                rec["tok_s"] = tpi / (dt / 1000) if dt else None
                out.append(rec)
        return out


def read_log(path: Path) -> NanoGptLog:
    """The train and eval lines of a nanoGPT log; other lines are ignored."""
    log = NanoGptLog(Path(path))
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if m := TRAIN_LINE.match(line):
                mfu = float(m.group(4)) if m.group(4) is not None else None
                log.trains[int(m.group(1)) + 1] = {
                    "loss": float(m.group(2)), "dt_ms": float(m.group(3)),
                    "mfu": mfu / 100 if mfu is not None and mfu >= 0 else None}
            elif m := EVAL_LINE.match(line):
                log.evals[int(m.group(1))] = {"train_loss": float(m.group(2)),
                                              "val_loss": float(m.group(3))}
            elif m := TOKENS_LINE.match(line):
                log.tokens_per_iter = int(m.group(1).replace(",", ""))
    return log
