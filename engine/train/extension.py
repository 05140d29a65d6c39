"""Extending a finished run to a longer horizon: the learning rate of the added iterations.

A cosine (or linear) schedule that has decayed cannot simply be given a later
lr_decay_iters: at the old horizon the rate would jump back up the curve (a warm restart)
and the loss with it. An extension instead *re-decays from the rate the run ended at to
min_lr over the added iterations*, in the run's own schedule shape:

  - a run whose decay had finished (the usual case, lr_decay_iters = max_iters) continues
    at min_lr;
  - a run whose decay was not finished (lr_decay_iters beyond max_iters) spends what was
    left of its rate over the tail and ends at min_lr, as a planned run does;
  - a constant schedule (or decay_lr = false) keeps its rate.

The rate never rises, so the loss curve continues without a bump. An extended run is not
the run a longer horizon would have trained from the start (that one decays later and
usually ends lower): fits should compare planned runs; extending is for a run that was
still improving.

Each extension is recorded in config.toml's [run] table (RunDir.record_extension) as
`extensions = [{from_iter, to_iter, lr_from, lr_to, schedule}]`, so every process that
resumes the run follows the same schedule and views can say the run was extended.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from engine.config import TrainConfig
from engine.errors import UserError
from engine.train.trainer import get_lr


@dataclass(frozen=True)
class Extension:
    """Iterations from_iter+1 .. to_iter go from lr_from to lr_to in `schedule`'s shape."""

    from_iter: int
    to_iter: int
    lr_from: float
    lr_to: float
    schedule: str  # "cosine" | "linear" | "constant"

    def lr(self, it: int) -> float:
        """The rate of the step that completes iteration `it` (as get_lr): the first added
        step is a fraction below lr_from, the last one is exactly lr_to."""
        ratio = min(max((it - self.from_iter) / (self.to_iter - self.from_iter), 0.0), 1.0)
        if self.schedule == "cosine":
            return self.lr_to + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (self.lr_from - self.lr_to)
        if self.schedule == "linear":
            return self.lr_from + ratio * (self.lr_to - self.lr_from)
        return self.lr_from

    def describe(self) -> str:
        if self.schedule == "constant" or self.lr_from == self.lr_to:
            how = f"at lr {self.lr_from:.3g}"
        else:
            how = f"lr {self.lr_from:.3g} → {self.lr_to:.3g} ({self.schedule})"
        return f"extended {self.from_iter} → {self.to_iter}, {how}"


def lr_at(it: int, cfg: TrainConfig, extensions: list[Extension]) -> float:
    """The learning rate of the step that completes iteration `it`, extended or not."""
    for ext in reversed(extensions):
        if it > ext.from_iter:
            return ext.lr(it)
    return get_lr(it, cfg)


def plan_extension(cfg: TrainConfig, extensions: list[Extension], max_iters: int) -> Extension:
    """The extension of a run trained to cfg.max_iters (with `extensions` so far) to
    `max_iters`."""
    old = cfg.max_iters
    if max_iters <= old:
        raise UserError(f"max_iters {max_iters} is not beyond the run's {old}: raise max_iters "
                        f"(in the experiments file, or --max-iters) to extend it")
    lr_from = lr_at(old, cfg, extensions)  # the rate of the step that completed the run
    schedule = cfg.lr_schedule if cfg.decay_lr else "constant"
    # never rises: a run that ended below min_lr (still warming up) keeps its rate
    lr_to = lr_from if schedule == "constant" else min(lr_from, cfg.min_lr)
    return Extension(old, max_iters, lr_from, lr_to, schedule)


def extensions_from_table(run_table: dict[str, Any]) -> list[Extension]:
    """The extensions recorded in a config.toml [run] table (none: [])."""
    out = []
    for i, e in enumerate(run_table.get("extensions") or []):
        try:
            ext = Extension(int(e["from_iter"]), int(e["to_iter"]), float(e["lr_from"]),
                            float(e["lr_to"]), str(e["schedule"]))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"config.toml: run.extensions[{i}] is not a valid extension "
                            f"(from_iter, to_iter, lr_from, lr_to, schedule)") from None
        if ext.to_iter <= ext.from_iter or ext.schedule not in ("cosine", "linear", "constant"):
            raise UserError(f"config.toml: run.extensions[{i}] is not a valid extension")
        out.append(ext)
    return out


def extension_record(ext: Extension) -> dict[str, Any]:
    return asdict(ext)
