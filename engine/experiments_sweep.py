"""One [sweep.NAME] table of experiments.toml -> its run specs (engine.experiments reads
the file, the other tables and checks the whole).

Run names are stable and readable: `n_layer=8` for vary, `n_head=4,n_embd=128` for grid
(keys in the order written); with seeds > 1 the first seed's run keeps the plain name
and the others add theirs (`n_layer=8`, `n_layer=8,seed=1338`, ...), so raising `seeds`
later adds runs beside the ones already trained instead of renaming them; ids are
`<sweep>/<name>`. A run whose configuration is identical to one of an earlier sweep (the
width sweep's n_embd=256 is the heads sweep's n_head=8) is shared: `same_as` names the
earlier run, which is trained once and appears in both sweeps (set by
engine.experiments.mark_shared over every sweep; engine.runs.link_shared).

A run's length is set by one horizon key (max_iters, max_tokens, tokens_per_param or
train_flops) at any level: [defaults], fixed, vary, grid. The innermost level that sets
one wins (it replaces the outer levels' key); two at one level are an error. The key is
resolved to steps, with a schedule fitted to them, by engine.model.horizon once the
vocabulary is known (plan: assumed until the data is prepared; launch: after preparing).

Every value is checked as a TrainConfig value where it is written, so an error names the
line of the key.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import (
    HORIZON_KEYS,
    ConfigError,
    SamplingConfig,
    TrainConfig,
    check_train_keys,
    config_from_dict,
    did_you_mean,
)
from engine.experiments_options import ExperimentsError
from engine.runs import safe_part
from engine.sweep_kinds import BUDGET_KEY, budget_name, isoflop_cells, tune_axes, with_tuning
from engine.toml_lines import LineFinder

SWEEP_KEYS = ["description", "fixed", "vary", "grid", "isoflop", "tune", "seeds"]
MAX_SEEDS = 20
MAX_RUNS = 1000  # a typo'd grid should not create a million directories


@dataclass
class RunSpec:
    sweep: str
    name: str
    varied: dict[str, Any]
    cfg: TrainConfig | None          # None when `error` is set
    error: str | None = None
    line: int | None = None
    same_as: str | None = None       # id of the identical run of an earlier sweep
    meta: dict[str, Any] = field(default_factory=dict)  # [run] extras: kind, tune, checks

    @property
    def id(self) -> str:
        return f"{self.sweep}/{self.name}"


@dataclass
class Sweep:
    name: str
    description: str
    runs: list[RunSpec]
    line: int | None = None


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")) or v != int(v) or abs(v) >= 1e16:
            return repr(v)
        return f"{v:g}"
    return str(v)


@dataclass(frozen=True)
class _SweepAt:
    """Where a sweep and its keys are in the file, for `file:line:` errors."""

    name: str
    path: Path
    lines: LineFinder
    header: int | None

    @property
    def label(self) -> str:
        return f"[sweep.{self.name}]"

    def line_of(self, key: str) -> int | None:
        return self.lines.find(["sweep", self.name], key) or self.header

    def at(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line else str(self.path)

    def loc(self, key: str) -> str:
        return self.at(self.line_of(key))


def parse_sweep(sname: str, table: Any, defaults: dict[str, Any], sampling: SamplingConfig,
                 lines: LineFinder, path: Path) -> Sweep:
    w = _SweepAt(sname, path, lines, lines.find(["sweep", sname]))
    at, label = w.at(w.header), w.label
    if not safe_part(sname):
        raise ExperimentsError(f"{at}: sweep name {sname!r} cannot be a directory name "
                               f"(no '/', '\\', leading '.', or '..'); rename it")
    if not isinstance(table, dict):
        raise ExperimentsError(f"{at}: sweep.{sname} must be a table ({label})")
    for key in table:
        if key not in SWEEP_KEYS:
            line = lines.find(["sweep", sname], key)
            raise ExperimentsError(f"{path}:{line or w.header}: {label}: unknown key {key!r}"
                                   f"{did_you_mean(key, SWEEP_KEYS)}; expected description, "
                                   f"fixed, vary, grid, isoflop, tune or seeds")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise ExperimentsError(f"{w.loc('description')}: {label} description must be a string")
    fixed = table.get("fixed", {})
    if not isinstance(fixed, dict):
        raise ExperimentsError(f"{w.loc('fixed')}: {label} fixed must be a table, "
                               f"e.g. fixed = {{ n_head = 8 }}")
    fixed = _checked(fixed, f"{label} fixed", w.line_of("fixed"), lines, path)
    one_horizon(fixed, lambda k: f"{w.at(lines.find_in_line(w.line_of('fixed'), k))}: "
                                 f"{label} fixed")
    mode = [k for k in ("vary", "grid", "isoflop") if k in table]
    if not mode:
        raise ExperimentsError(f"{at}: {label} has no runs: add vary = {{ key = [values] }} "
                               f"(one key at a time), grid = {{ ... }} (all combinations) or "
                               f"isoflop = {{ train_flops = [...], n_layer = [...] }}")
    if len(mode) > 1:
        raise ExperimentsError(f"{w.loc(mode[1])}: {label} has both {mode[0]} and {mode[1]}; "
                               f"use one (or two sweeps)")
    kind = mode[0]
    meta: dict[str, Any] = {}
    if kind == "isoflop":
        def check(d: dict[str, Any]) -> dict[str, Any]:
            return _checked(d, f"{label} isoflop", w.line_of("isoflop"), lines, path)
        combos, options = isoflop_cells(table["isoflop"], label, w.loc, check)
        meta = {"kind": "isoflop", "budget_key": BUDGET_KEY, **options}
    else:
        axes = _axes(kind, table[kind], w)
        if kind == "grid":  # vary takes one key at a time: each run has one horizon key
            one_horizon(axes, lambda k: f"{w.at(lines.find_in_line(w.line_of('grid'), k))}: "
                                        f"{label} grid")
        combos = _combinations(kind, axes, w)
    if "tune" in table:
        tune = tune_axes(table["tune"], label, w.loc,
                         lambda d: _checked(d, f"{label} tune", w.line_of("tune"), lines, path))
        combos = with_tuning(combos, tune)
        meta["tune"] = list(tune)
        if len(combos) > MAX_RUNS:
            raise ExperimentsError(f"{w.loc('tune')}: {label} has more than {MAX_RUNS} runs "
                                   f"with its tuned values")
    seeds = table.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS:
        raise ExperimentsError(f"{w.loc('seeds')}: {label} seeds = {seeds!r}: expected a "
                               f"whole number from 1 to {MAX_SEEDS} (runs per configuration)")
    base = inner_horizon(defaults, fixed)
    if seeds == 1:
        runs = [_run_spec(varied, kind, base, sampling, w) for varied in combos]
    else:
        first = int(base.get("seed", TrainConfig.seed))
        runs = [_run_spec(varied, kind, {**base, "seed": first + i}, sampling, w,
                          suffix=f",seed={first + i}" if i else "")
                for varied in combos for i in range(seeds)]
    for r in runs:
        r.meta = dict(meta)
    return Sweep(sname, description, runs, w.header)


def _axes(kind: str, axes: Any, w: _SweepAt) -> dict[str, list[Any]]:
    """`vary` or `grid`: each key's list of values, each value checked as a config value."""
    if not isinstance(axes, dict) or not axes:
        raise ExperimentsError(f"{w.loc(kind)}: {w.label} {kind} must be a non-empty table of "
                               f"lists, e.g. {kind} = {{ n_layer = [2, 4] }}")
    checked: dict[str, list[Any]] = {}
    for key, values in axes.items():
        kline = w.lines.find_in_line(w.line_of(kind), key)
        if not isinstance(values, list) or not values:
            raise ExperimentsError(f"{w.at(kline)}: {w.label} {kind}.{key} = {values!r}: "
                                   f"expected a non-empty list of values, e.g. [2, 4]")
        out = [_checked({key: v}, f"{w.label} {kind}", kline, w.lines, w.path)[key]
               for v in values]
        if len(set(map(format_value, out))) != len(out):
            raise ExperimentsError(f"{w.at(kline)}: {w.label} {kind}.{key} lists a value "
                                   f"twice: {values!r}")
        checked[key] = out
    return checked


def _combinations(kind: str, axes: dict[str, list[Any]], w: _SweepAt) -> list[dict[str, Any]]:
    """vary: one key at a time; grid: every combination (at most MAX_RUNS)."""
    if kind == "vary":
        return [{k: v} for k, vs in axes.items() for v in vs]
    n = 1
    for vs in axes.values():
        n *= len(vs)
        if n > MAX_RUNS:
            raise ExperimentsError(f"{w.loc('grid')}: {w.label} grid has more than "
                                   f"{MAX_RUNS} combinations")
    return [dict(zip(axes, vals)) for vals in itertools.product(*axes.values())]


def _run_spec(varied: dict[str, Any], kind: str, base: dict[str, Any], sampling: SamplingConfig,
              w: _SweepAt, suffix: str = "") -> RunSpec:
    """One run of the sweep; a config that does not validate is kept with its error."""
    name = ",".join(f"{k}={budget_name(v) if kind == 'isoflop' and k == BUDGET_KEY else format_value(v)}"
                    for k, v in varied.items()) + suffix
    line = w.lines.find_in_line(w.line_of(kind), next(iter(varied)))
    rat = w.at(line)
    if not safe_part(name):
        raise ExperimentsError(f"{rat}: {w.label} run name {name!r} cannot be a directory "
                               f"name; vary a different value or use a data_dir "
                               f"without '/' in a sweep of its own")
    try:
        cfg = config_from_dict({**_anchored(inner_horizon(base, varied), w.path),
                                "sampling": dataclasses.asdict(sampling)},
                               f"{rat}: run {w.name}/{name}")
        return RunSpec(w.name, name, varied, cfg, None, line)
    except ConfigError as e:
        return RunSpec(w.name, name, varied, None, str(e), line)


def one_horizon(level: dict[str, Any], where) -> None:
    """At most one horizon key per level; the error names the line of the second one."""
    keys = [k for k in level if k in HORIZON_KEYS]
    if len(keys) > 1:
        raise ExperimentsError(f"{where(keys[1])}: {keys[1]}: a second horizon key at this "
                               f"level beside {keys[0]}; set one of "
                               f"{', '.join(HORIZON_KEYS)} per level (the innermost wins)")


def inner_horizon(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    """`outer` updated by `inner`, where a horizon key in `inner` replaces the outer
    level's: a course file's [defaults] max_iters does not block a sweep that sets
    tokens_per_param."""
    if any(k in HORIZON_KEYS for k in inner):
        outer = {k: v for k, v in outer.items() if k not in HORIZON_KEYS}
    return {**outer, **inner}


def _anchored(d: dict[str, Any], experiments_path: Path) -> dict[str, Any]:
    """Relative `dataset` and `data_dir` paths are read from the experiments file's folder
    (as runs/ is), not from wherever nanotui was started, so one file means the same runs
    from anywhere. A bare word with no '/' and no suffix is a dataset name (tinystories)."""
    out = dict(d)
    for key in ("dataset", "data_dir"):
        value = out.get(key)
        if not isinstance(value, str) or not value:
            continue
        p = Path(value).expanduser()
        if p.is_absolute() or (key == "dataset" and "/" not in value and not p.suffix):
            continue
        out[key] = str(Path(experiments_path).resolve().parent / p)
    return out


def _checked(d: dict[str, Any], label: str, line: int | None, lines: LineFinder,
             path: Path) -> dict[str, Any]:
    """Type-check TrainConfig keys; the error names the line of the offending key."""
    for key in d:
        kline = lines.find_in_line(line, key) if line else None
        at = f"{path}:{kline}" if kline else str(path)
        check_train_keys({key: d[key]}, f"{at}: {label}")
    return check_train_keys(d, label)
