"""experiments.toml -> validated run specs.

    [defaults]          any TrainConfig key (engine.config); the base of every run
    [sampling]          SamplingConfig keys, for every run
    [launch]            nanotui's own knobs (all optional):
                          max_runs_per_gpu = 1     runs of ours sharing one card, or
                                                   "auto": pack while measured load is low
                          max_cpu_runs = 1         concurrent runs when placed on the CPU
                          gpus = [0, "GPU-..."]    cards auto placement may use (NVML
                                                   index, "cuda:N" or uuid)
                          stop_grace_s = 10.0      SIGTERM -> SIGKILL grace for `stop`
    [executor]          kind = "local" (default) | "slurm"; with "slurm" the other keys are
                        Slurm options, validated by engine.launch.slurm.executor
    [sweep.NAME]        description = "..."
                        fixed = { key = value, ... }      applied to every run of the sweep
                        vary  = { key = [v1, v2], ... }   one key at a time around
                                                          defaults + fixed: a run per value
                        grid  = { key = [...], ... }      the cartesian product
                        isoflop = { train_flops = [...], n_layer = [...] }
                                                          one run per (budget, size)
                        tune  = { learning_rate = [...] } beside vary/grid/isoflop: each
                                                          configuration at each value
                                                          (engine.sweep_kinds)
                        seeds = N                         each run N times, seeds
                                                          seed, seed+1, ... (default 1)

A [sweep.NAME] table becomes its runs in engine.experiments_sweep (run names, seeds,
shared runs, horizon keys: its docstring). Every run is built into a TrainConfig (so
unknown keys, wrong types and impossible shapes are caught) before anything starts. Errors are one line naming the file, the line and the key; the line is
found by scanning the text, since tomllib reports no positions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import ConfigError, check_train_keys, did_you_mean, parse_toml, sampling_from_dict
from engine.experiments_options import (  # noqa: F401 (LaunchOptions, LAUNCH_KEYS: re-exported)
    LAUNCH_KEYS, ExperimentsError, LaunchOptions, parse_executor, parse_launch_options)
from engine.experiments_sweep import (  # noqa: F401 (RunSpec, Sweep, format_value: re-exported)
    MAX_RUNS, RunSpec, Sweep, format_value, one_horizon, parse_sweep)
from engine.toml_lines import LineFinder, read_limited

TOP_TABLES = ["defaults", "sampling", "launch", "executor", "sweep"]
MAX_FILE_BYTES = 1 << 20  # a course's file is 2 KB: parsing far more costs memory for nothing


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

def load_experiments(path: str | Path) -> Experiments:
    path = Path(path)
    try:
        text = read_limited(path, MAX_FILE_BYTES)
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
        doc = parse_toml(text, path, MAX_FILE_BYTES)
    except ConfigError as e:
        raise ExperimentsError(str(e)) from None
    if len(doc.get("sweep", {})) > MAX_RUNS:  # refused before the per-sweep work
        raise ExperimentsError(f"{path}: more than {MAX_RUNS} sweeps; is this the "
                               f"intended file?")
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
    one_horizon(defaults, lambda k: f"{where(['defaults'], k)}: [defaults]")
    raw_sampling = doc.get("sampling", {})
    for key, value in raw_sampling.items():
        sampling_from_dict({key: value}, where(["sampling"], key))
    sampling = sampling_from_dict(raw_sampling, where(["sampling"]))
    launch = parse_launch_options(doc.get("launch", {}), where)
    executor = parse_executor(doc.get("executor", {}), where)

    sweeps: dict[str, Sweep] = {}
    sweep_tables = doc.get("sweep", {})
    total = 0
    for sname, table in sweep_tables.items():
        sweep = parse_sweep(sname, table, defaults, sampling, lines, path)
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


def validate_runs(runs: list[RunSpec]) -> None:
    """Raise for the first invalid run (and say how many there are)."""
    bad = [r for r in runs if r.error]
    if bad:
        more = f" (and {len(bad) - 1} more invalid runs; see `nanotui plan`)" if len(bad) > 1 else ""
        raise ExperimentsError(f"{bad[0].error}{more}")
