"""Config drift: a run directory whose saved config.toml no longer matches its entry in
experiments.toml. Launch and resume keep the saved config (the run was trained with it)
and say which keys differ; `launch --fresh` moves the old directory aside, to
RUNS/.replaced/<sweep>/<run>.<UTC time>/ (kept, never deleted; not a run: list_runs looks
two levels deep), and starts the run over."""

from __future__ import annotations

import time
from pathlib import Path

from engine.config import ConfigError, TrainConfig, load_horizon_record
from engine.experiments import load_experiments
from engine.runs import RunDir

REPLACED = ".replaced"


def _flat(d: dict) -> dict:
    return {**{k: v for k, v in d.items() if k != "sampling"},
            **{f"sampling.{k}": v for k, v in (d.get("sampling") or {}).items()}}


def config_drift(run: RunDir, cfg: TrainConfig) -> list[str]:
    """How a run's saved config differs from `cfg` (as written in the experiments file,
    unresolved): "key: old → new" per key ([] when the same, or when the saved config
    cannot be read). The saved keys its `[horizon]` table lists as derived (a length
    resolved from tokens_per_param, a schedule fitted to it) were not written by the
    user, so they are compared only through the keys that set them."""
    try:
        old = _flat(run.load_config().to_dict())
    except (ConfigError, OSError):
        return []
    for key in load_horizon_record(run.config_path).get("derived") or []:
        old.pop(key, None)
    new = _flat(cfg.to_dict())
    return [f"{k}: {old.get(k, '(unset)')} → {new.get(k, '(unset)')}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def drift_summary(changes: list[str], show: int = 3) -> str:
    """The first `show` of config_drift's "key: old → new" lines on one line, and how
    many more."""
    more = len(changes) - show
    return "; ".join(changes[:show]) + (f" (+{more} more)" if more > 0 else "")


def drift_from_file(experiments_path: str | Path | None, run: RunDir) -> list[str]:
    """config_drift of a run against its entry in the experiments file ([] when the file
    is missing, broken, or no longer names the run: nothing to compare with)."""
    if not experiments_path or not Path(experiments_path).exists():
        return []
    try:
        specs = {r.id: r for r in load_experiments(experiments_path).all_runs()}
    except ConfigError:
        return []
    spec = specs.get(run.id)
    return config_drift(run, spec.cfg) if spec is not None and spec.cfg is not None else []


def move_aside(run: RunDir, runs_root: Path) -> Path:
    """Move a run directory to runs_root/.replaced/<sweep>/<run>.<UTC time> (kept, not
    listed as a run)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = Path(runs_root) / REPLACED / run.sweep / f"{run.name}.{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{run.name}.{stamp}-{n}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    run.path.rename(dest)
    return dest
