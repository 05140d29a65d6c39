"""experiments.toml -> validated run specs.

    [defaults]          any TrainConfig key (engine.config); the base of every run
    [sampling]          SamplingConfig keys, for every run
    [launch]            nanotui's own knobs (all optional):
                          max_runs_per_gpu = 1     runs of ours sharing one card, or
                                                   "auto": pack while measured load is low
                          max_cpu_runs = 1         concurrent runs when placed on the CPU
                          gpus = [0, "GPU-..."]    cards auto placement may use (index/uuid)
                          stop_grace_s = 10.0      SIGTERM -> SIGKILL grace for `stop`
    [executor]          kind = "local" (default) | "slurm"; with "slurm" the other keys are
                        Slurm options, validated by engine.launch.slurm.executor
    [sweep.NAME]        description = "..."
                        fixed = { key = value, ... }      applied to every run of the sweep
                        vary  = { key = [v1, v2], ... }   one key at a time around
                                                          defaults + fixed: a run per value
                        grid  = { key = [...], ... }      the cartesian product
                        seeds = N                         each run N times, seeds
                                                          seed, seed+1, ... (default 1)

Run names are stable and readable: `n_layer=8` for vary, `n_head=4,n_embd=128` for grid
(keys in the order written); with seeds > 1 the first seed's run keeps the plain name
and the others add theirs (`n_layer=8`, `n_layer=8,seed=1338`, ...), so raising `seeds`
later adds runs beside the ones already trained instead of renaming them; ids are
`<sweep>/<name>`. A run whose configuration is identical to one of an earlier sweep (the
width sweep's n_embd=256 is the heads sweep's n_head=8) is shared: `same_as` names the
earlier run, which is trained once and appears in both sweeps (engine.runs.link_shared).

Every run is built into a
TrainConfig (so unknown keys, wrong types and impossible shapes are caught) before
anything starts. Errors are one line naming the file, the line and the key; the line is
found by scanning the text, since tomllib reports no positions.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from engine.config import (
    ConfigError,
    SamplingConfig,
    TrainConfig,
    check_train_keys,
    config_from_dict,
    did_you_mean,
    sampling_from_dict,
)
from engine.executor_config import SlurmConfig
from engine.runs import safe_part
from engine.toml_lines import LineFinder

TOP_TABLES = ["defaults", "sampling", "launch", "executor", "sweep"]
SWEEP_KEYS = ["description", "fixed", "vary", "grid", "seeds"]
MAX_SEEDS = 20
LAUNCH_KEYS = ["max_runs_per_gpu", "max_cpu_runs", "gpus", "stop_grace_s"]
MAX_RUNS = 1000  # a typo'd grid should not create a million directories


class ExperimentsError(ConfigError):
    """A problem in an experiments file; one line: `FILE:LINE: where: what`."""


@dataclass(frozen=True)
class LaunchOptions:
    max_runs_per_gpu: int | str = 1      # or "auto" (engine.launch.placement)
    max_cpu_runs: int = 1
    gpus: tuple[int | str, ...] = ()     # empty: every card
    stop_grace_s: float = 10.0


@dataclass
class RunSpec:
    sweep: str
    name: str
    varied: dict[str, Any]
    cfg: TrainConfig | None          # None when `error` is set
    error: str | None = None
    line: int | None = None
    same_as: str | None = None       # id of the identical run of an earlier sweep

    @property
    def id(self) -> str:
        return f"{self.sweep}/{self.name}"


@dataclass
class Sweep:
    name: str
    description: str
    runs: list[RunSpec]
    line: int | None = None


@dataclass
class Experiments:
    path: Path
    sweeps: dict[str, Sweep]
    launch: LaunchOptions = field(default_factory=LaunchOptions)
    executor: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})

    def all_runs(self) -> list[RunSpec]:
        return [r for s in self.sweeps.values() for r in s.runs]

    def select(self, selection: list[str] | None) -> list[RunSpec]:
        """Runs named by sweep names and/or run ids; all runs when empty."""
        if not selection:
            return self.all_runs()
        ids = {r.id: r for r in self.all_runs()}
        out: dict[str, RunSpec] = {}
        for ref in selection:
            if ref in self.sweeps:
                out.update((r.id, r) for r in self.sweeps[ref].runs)
            elif ref in ids:
                out[ref] = ids[ref]
            else:
                choices = list(self.sweeps) + list(ids)
                raise ExperimentsError(f"{self.path}: no sweep or run {ref!r}"
                                       f"{did_you_mean(ref, choices)}; sweeps: "
                                       f"{', '.join(self.sweeps) or '(none)'}")
        return list(out.values())


# ---- parsing -------------------------------------------------------------------------------

def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")) or v != int(v) or abs(v) >= 1e16:
            return repr(v)
        return f"{v:g}"
    return str(v)


def load_experiments(path: str | Path) -> Experiments:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentsError(f"{path}: no such experiments file (create one, or pass "
                               f"--experiments FILE; `nanotui demo` writes an example)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ExperimentsError(f"{path}: cannot read: {e}") from None
    return parse_experiments(text, path)


def parse_experiments(text: str, path: str | Path = "experiments.toml") -> Experiments:
    """Parse and validate; raises ExperimentsError (one line) on structural problems.
    Per-run config errors (n_embd % n_head, ...) are kept in RunSpec.error so `plan`
    can show them all; `Experiments.check()`-style callers use `validate_runs`."""
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ExperimentsError(f"{path}: invalid TOML: {e}") from None
    lines = LineFinder(text)

    def where(table: list[str], key: str | None = None) -> str:
        line = lines.find(table, key)
        return f"{path}:{line}" if line else str(path)

    for key in doc:
        if key not in TOP_TABLES:
            raise ExperimentsError(f"{where([], key)}: unknown table or key {key!r}"
                                   f"{did_you_mean(key, TOP_TABLES)}; expected "
                                   f"{', '.join(f'[{t}]' for t in TOP_TABLES)}")
        if not isinstance(doc[key], dict):
            raise ExperimentsError(f"{where([], key)}: {key} must be a table ([{key}])")

    defaults: dict[str, Any] = {}
    for key, value in doc.get("defaults", {}).items():
        defaults.update(check_train_keys({key: value}, f"{where(['defaults'], key)}: [defaults]"))
    raw_sampling = doc.get("sampling", {})
    for key, value in raw_sampling.items():
        sampling_from_dict({key: value}, where(["sampling"], key))
    sampling = sampling_from_dict(raw_sampling, where(["sampling"]))
    launch = _launch_options(doc.get("launch", {}), where)
    executor = _executor(doc.get("executor", {}), where)

    sweeps: dict[str, Sweep] = {}
    sweep_tables = doc.get("sweep", {})
    total = 0
    for sname, table in sweep_tables.items():
        sweep = _parse_sweep(sname, table, defaults, sampling, lines, path)
        total += len(sweep.runs)
        if total > MAX_RUNS:
            raise ExperimentsError(f"{where(['sweep', sname])}: more than {MAX_RUNS} runs; "
                                   f"is a grid larger than intended?")
        sweeps[sname] = sweep
    mark_shared(list(sweeps.values()))
    return Experiments(path=path, sweeps=sweeps, launch=launch, executor=executor)


def mark_shared(sweeps: list[Sweep]) -> None:
    """Set `same_as` on every run whose configuration equals a run of an earlier sweep:
    one model, trained once, shown in every sweep that names it."""
    owners: dict[str, RunSpec] = {}
    for sweep in sweeps:
        for r in sweep.runs:
            if r.cfg is None:
                continue
            key = json.dumps(r.cfg.to_dict(), sort_keys=True, default=str)
            owner = owners.setdefault(key, r)
            if owner is not r and owner.sweep != r.sweep:
                r.same_as = owner.id


def _launch_options(d: dict[str, Any], where) -> LaunchOptions:
    kw: dict[str, Any] = {}
    for key, v in d.items():
        w = f"{where(['launch'], key)}: launch.{key}"
        if key not in LAUNCH_KEYS:
            raise ExperimentsError(f"{where(['launch'], key)}: unknown key launch.{key}"
                                   f"{did_you_mean(key, LAUNCH_KEYS)}")
        if key == "max_runs_per_gpu" and v == "auto":
            kw[key] = v  # packing by measured load: engine.launch.placement
        elif key in ("max_runs_per_gpu", "max_cpu_runs"):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                auto = ' or "auto"' if key == "max_runs_per_gpu" else ""
                raise ExperimentsError(f"{w} = {v!r}: expected an integer of at least 1{auto}")
            kw[key] = v
        elif key == "stop_grace_s":
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1e6:
                raise ExperimentsError(f"{w} = {v!r}: expected seconds (a number >= 0)")
            kw[key] = float(v)
        elif key == "gpus":
            if not isinstance(v, list) or not all(
                    (isinstance(g, int) and not isinstance(g, bool) and g >= 0)
                    or (isinstance(g, str) and g) for g in v):
                raise ExperimentsError(f"{w} = {v!r}: expected a list of card indices or "
                                       f"UUIDs, e.g. [0, 1]")
            kw[key] = tuple(v)
    return LaunchOptions(**kw)


def _executor(d: dict[str, Any], where) -> dict[str, Any]:
    d = dict(d)
    kind = d.setdefault("kind", "local")
    if kind not in ("local", "slurm"):
        raise ExperimentsError(f"{where(['executor'], 'kind')}: executor.kind = {kind!r}: "
                               f"expected \"local\" or \"slurm\"")
    if kind == "local" and len(d) > 1:
        extra = sorted(k for k in d if k != "kind")
        raise ExperimentsError(f"{where(['executor'], extra[0])}: executor.{extra[0]}: only "
                               f"kind is accepted with kind = \"local\" (Slurm options need "
                               f"kind = \"slurm\")")
    if kind == "slurm":
        # Slurm options are checked here, before anything is queued, so a typo names the
        # file and line (engine.executor_config imports no Slurm client: cheap and safe).
        key = next((k for k in d if k != "kind"), "kind")
        SlurmConfig.from_dict(d, f"{where(['executor'], key)}: [executor]")
    return d


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


def _parse_sweep(sname: str, table: Any, defaults: dict[str, Any], sampling: SamplingConfig,
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
                                   f"fixed, vary, grid or seeds")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise ExperimentsError(f"{w.loc('description')}: {label} description must be a string")
    fixed = table.get("fixed", {})
    if not isinstance(fixed, dict):
        raise ExperimentsError(f"{w.loc('fixed')}: {label} fixed must be a table, "
                               f"e.g. fixed = {{ n_head = 8 }}")
    fixed = _checked(fixed, f"{label} fixed", w.line_of("fixed"), lines, path)
    mode = [k for k in ("vary", "grid") if k in table]
    if not mode:
        raise ExperimentsError(f"{at}: {label} has no runs: add vary = {{ key = [values] }} "
                               f"(one key at a time) or grid = {{ ... }} (all combinations)")
    if len(mode) == 2:
        raise ExperimentsError(f"{w.loc('grid')}: {label} has both vary and grid; use one "
                               f"(or two sweeps)")
    kind = mode[0]
    combos = _combinations(kind, _axes(kind, table[kind], w), w)
    seeds = table.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS:
        raise ExperimentsError(f"{w.loc('seeds')}: {label} seeds = {seeds!r}: expected a "
                               f"whole number from 1 to {MAX_SEEDS} (runs per configuration)")
    base = {**defaults, **fixed}
    if seeds == 1:
        runs = [_run_spec(varied, kind, base, sampling, w) for varied in combos]
    else:
        first = int(base.get("seed", TrainConfig.seed))
        runs = [_run_spec(varied, kind, {**base, "seed": first + i}, sampling, w,
                          suffix=f",seed={first + i}" if i else "")
                for varied in combos for i in range(seeds)]
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
    name = ",".join(f"{k}={format_value(v)}" for k, v in varied.items()) + suffix
    line = w.lines.find_in_line(w.line_of(kind), next(iter(varied)))
    rat = w.at(line)
    if not safe_part(name):
        raise ExperimentsError(f"{rat}: {w.label} run name {name!r} cannot be a directory "
                               f"name; vary a different value or use a data_dir "
                               f"without '/' in a sweep of its own")
    try:
        cfg = config_from_dict({**_anchored({**base, **varied}, w.path),
                                "sampling": dataclasses.asdict(sampling)},
                               f"{rat}: run {w.name}/{name}")
        return RunSpec(w.name, name, varied, cfg, None, line)
    except ConfigError as e:
        return RunSpec(w.name, name, varied, None, str(e), line)


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


def validate_runs(runs: list[RunSpec]) -> None:
    """Raise for the first invalid run (and say how many there are)."""
    bad = [r for r in runs if r.error]
    if bad:
        more = f" (and {len(bad) - 1} more invalid runs; see `nanotui plan`)" if len(bad) > 1 else ""
        raise ExperimentsError(f"{bad[0].error}{more}")
