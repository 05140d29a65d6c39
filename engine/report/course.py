"""The study behind a course report: several sweeps read as configurations and models.

    Member   one configuration of one sweep ("heads" n_head=8), its seeds pooled
    Model    one distinct model of the study: the members that name the same configuration
             (a shared run, engine.runs.link_shared) are one model, trained once

Seeds: runs of a sweep that differ only in `seed` (`seeds = N` in experiments.toml, named
`n_layer=2`, `n_layer=2,seed=1338`, ...) are one member; its numbers are the mean over the
seeds with their spread, the sample standard deviation (n - 1), shown when there are at
least two. A sweep's own report (engine.report.markdown) pools seeds the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.report.summary import RunSummary
from engine.report.tables import natural_key
from engine.runs import RunDir

_SEED = re.compile(r",seed=\d+$")


@dataclass
class Stat:
    """A number over seeds: mean, sample standard deviation (None below 2), count."""
    mean: float
    sd: float | None
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> "Stat | None":
        xs = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not xs:
            return None
        return cls(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))

    def text(self, digits: int = 4) -> str:
        if self.sd is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def model_key(s: RunSummary) -> str:
    """Two runs are the same model when their configs agree on everything but the seed."""
    if s.config is None:
        return f"?{s.run.path.resolve()}"
    d = s.config.to_dict()
    d.pop("seed", None)
    return json.dumps(d, sort_keys=True, default=str)


def label_of(s: RunSummary) -> str:
    """The run's name in its sweep without the seed suffix: the configuration's name."""
    return _SEED.sub("", s.run.name)


@dataclass
class Member:
    sweep: str
    label: str
    runs: list[RunSummary]                 # one per seed, finished or not
    shared: bool = False                   # the run directory is another sweep's (a link)
    model: "Model | None" = None

    @property
    def finished(self) -> list[RunSummary]:
        return [s for s in self.runs if s.finished]

    @property
    def first(self) -> RunSummary:
        return self.runs[0]

    @property
    def params(self) -> int | None:
        return self.first.params

    def stat(self, get: Callable[[RunSummary], float | None]) -> Stat | None:
        return Stat.of([get(s) for s in self.finished])

    @property
    def best_val(self) -> Stat | None:
        return self.stat(lambda s: s.best_val)

    def value(self, key: str) -> Any:
        return self.first.config.to_dict().get(key) if self.first.config else None

    @property
    def still_improving(self) -> bool:
        return any(len(s.evals) > 1 and s.best_iter == s.final_iter for s in self.finished)

    @property
    def tokens(self) -> int | None:
        """Tokens trained per run: the last eval's iteration × tokens per iteration."""
        c, it = self.first.config, self.first.final_iter
        return None if c is None or it is None else int(it * c.tokens_per_iter)


@dataclass
class Model:
    key: str
    members: list[Member] = field(default_factory=list)

    @property
    def runs(self) -> list[RunSummary]:
        return self.members[0].runs

    def varied_keys(self, varied: dict[str, list[str]]) -> set[str]:
        return {k for m in self.members for k in varied.get(m.sweep, [])}


@dataclass
class Study:
    sweeps: dict[str, list[Member]]         # sweep -> members, ordered by the varied value
    models: list[Model]
    varied: dict[str, list[str]]            # sweep -> the keys it varies

    def members(self) -> list[Member]:
        return [m for ms in self.sweeps.values() for m in ms]

    def representatives(self) -> list[RunSummary]:
        """One summary per finished model with its best val loss the mean over seeds: the
        points a fit over the study uses (the min over seeds would be biased low)."""
        out = []
        for model in self.models:
            m = model.members[0]
            stat = m.best_val
            if stat is not None:  # named as the configuration (no seed): it is the mean
                out.append(dataclasses.replace(
                    m.finished[0], best_val=stat.mean,
                    run=RunDir(m.finished[0].run.path.parent / m.label)))
        return out

    def budgets(self) -> dict[int, list[Member]]:
        out: dict[int, list[Member]] = {}
        for m in self.members():
            if m.finished and m.tokens is not None and not m.shared:
                out.setdefault(m.tokens, []).append(m)
        return out


def varied_keys(summaries: list[RunSummary]) -> list[str]:
    """The keys a sweep varies: those its runs name (config.toml [run] varied), else the
    config keys that differ between its runs (the seed never counts)."""
    # a shared run's [run] table is its owner's (another sweep's key): not this sweep's
    own = [s for s in summaries if not s.run.path.is_symlink()] or summaries
    named = list(dict.fromkeys(k for s in own for k in s.varied if k != "seed"))
    if named:
        return named
    cfgs = [s.config.to_dict() for s in summaries if s.config]
    keys = sorted({k for c in cfgs for k in c if k not in ("seed", "sampling")})
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in cfgs}) > 1]


def build_study(per_sweep: dict[str, list[RunSummary]]) -> Study:
    """Members per sweep (ordered by the varied value, numbers as numbers) and the
    distinct models, in the order the sweeps first name them."""
    sweeps: dict[str, list[Member]] = {}
    varied: dict[str, list[str]] = {}
    models: dict[str, Model] = {}
    for name, summaries in per_sweep.items():
        varied[name] = varied_keys(summaries)
        groups: dict[str, Member] = {}
        for s in sorted(summaries, key=lambda s: natural_key(s.run.name)):
            m = groups.setdefault(label_of(s), Member(name, label_of(s), []))
            m.runs.append(s)
            m.shared = m.shared or s.run.path.is_symlink()
        keys = varied[name]
        sweeps[name] = sorted(groups.values(), key=lambda m: _order(m, keys))
        for m in sweeps[name]:
            model = models.setdefault(model_key(m.first), Model(model_key(m.first)))
            model.members.append(m)
            m.model = model
    return Study(sweeps, list(models.values()), varied)


def _order(m: Member, keys: list[str]) -> tuple:
    vals = [m.value(k) for k in keys]
    return tuple((0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool)
                 else (1, 0.0, str(v)) for v in vals) + (natural_key(m.label),)


def same_params(members: list[Member]) -> bool:
    """Whether the sweep's configurations all have one parameter count (the heads sweep):
    then loss is plotted against the varied key, not against parameters."""
    counts = {m.params for m in members if m.params}
    return len(counts) <= 1
