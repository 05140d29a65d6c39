"""A tuned sweep (`tune = { learning_rate = [...] }`, engine.sweep_kinds): each
configuration's best value, which every table, fit and frontier of the report then uses.

    best_tuned(summaries) -> (kept summaries, Tuning | None)

A configuration is the runs that agree on everything but the tuned keys and the seed; a
value's score is its mean final val loss over its finished seeds (the loss the run ends
with, which is what the value was chosen for). The best value at the edge of its grid may
not be the best value at all: the report warns and names the value to add (one grid step
beyond, geometric for a grid of one sign).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from engine.config import ConfigError
from engine.report.course import label_of
from engine.report.summary import RunSummary


@dataclass(frozen=True)
class TunedConfig:
    label: str                               # the configuration without the tuned keys
    params: int | None
    scores: tuple[tuple[Any, float | None, int], ...]   # (value, mean final val, seeds)
    best: Any
    warning: str = ""

    def to_dict(self, key: str) -> dict[str, Any]:
        return {"config": self.label, "params": self.params, "best": self.best,
                "scores": [{key: v, "final_val": s, "seeds": n} for v, s, n in self.scores],
                "warning": self.warning}


@dataclass(frozen=True)
class Tuning:
    key: str
    grid: tuple[Any, ...]
    configs: tuple[TunedConfig, ...]

    @property
    def warnings(self) -> list[str]:
        return [c.warning for c in self.configs if c.warning]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "grid": list(self.grid),
                "configs": [c.to_dict(self.key) for c in self.configs],
                "warnings": self.warnings}


def tuned_keys(summaries: list[RunSummary]) -> list[str]:
    for s in summaries:
        try:
            keys = s.run.run_table().get("tune")
        except (ConfigError, OSError):
            continue
        if isinstance(keys, list) and keys:
            return [str(k) for k in keys]
    return []


def _beyond(grid: list[float], i: int) -> float:
    """The next grid value past end i (0 or -1): a geometric step when the grid is of one
    sign, else a linear one."""
    a, b = (grid[1], grid[0]) if i == 0 else (grid[-2], grid[-1])
    if a > 0 and b > 0:
        return b * b / a
    return 2 * b - a


def best_tuned(summaries: list[RunSummary]) -> tuple[list[RunSummary], Tuning | None]:
    """The summaries of each configuration's best value (all seeds of it), and the
    tuning table; the summaries unchanged when the sweep tunes nothing."""
    keys = tuned_keys(summaries)
    if not keys:
        return summaries, None
    key = keys[0]   # one tuned key is what the report shows; several: the first named

    def cfg(s: RunSummary) -> dict[str, Any]:
        return s.config.to_dict() if s.config else {}

    groups: dict[str, list[RunSummary]] = {}
    for s in summaries:
        d = {k: v for k, v in cfg(s).items() if k not in keys and k != "seed"}
        groups.setdefault(json.dumps(d, sort_keys=True, default=str), []).append(s)
    grid = sorted({cfg(s).get(key) for s in summaries if cfg(s).get(key) is not None})
    kept, configs = [], []
    for runs in groups.values():
        by_value: dict[Any, list[RunSummary]] = {}
        for s in runs:
            by_value.setdefault(tuple(cfg(s).get(k) for k in keys), []).append(s)
        scores = []
        for vals, rs in sorted(by_value.items(), key=lambda kv: kv[0]):
            xs = [s.final_val for s in rs if s.finished and s.final_val is not None
                  and math.isfinite(s.final_val)]
            scores.append((vals, statistics.fmean(xs) if xs else None, len(xs)))
        done = [sc for sc in scores if sc[1] is not None]
        label = ",".join(part for part in label_of(runs[0]).split(",")
                         if part.split("=")[0] not in keys) or "(the sweep's one configuration)"
        if not done:
            kept += runs
            configs.append(TunedConfig(label, runs[0].params,
                                       tuple((v[0], None, 0) for v, _, _ in scores), None))
            continue
        best_vals = min(done, key=lambda sc: sc[1])[0]
        kept += by_value[best_vals]
        best = best_vals[0]
        warning = ""
        tried = [v[0] for v, _, _ in done]
        if len(grid) >= 2 and best in (min(tried), max(tried)):
            i = 0 if best == grid[0] else -1
            if best == grid[i]:
                warning = (f"{label}: the best {key} = {best:g} is at the "
                           f"{'low' if i == 0 else 'high'} edge of its grid; add {key} = "
                           f"{_beyond(grid, i):.3g} to know it is the best")
            else:
                warning = (f"{label}: the best {key} = {best:g} is the "
                           f"{'lowest' if best == min(tried) else 'highest'} value that "
                           f"finished; the others did not")
        configs.append(TunedConfig(label, runs[0].params,
                                   tuple((v[0], sc, n) for v, sc, n in scores), best, warning))
    configs.sort(key=lambda c: (c.params or 0, c.label))
    order = {id(s): i for i, s in enumerate(summaries)}
    return sorted(kept, key=lambda s: order[id(s)]), Tuning(key, tuple(grid), tuple(configs))
