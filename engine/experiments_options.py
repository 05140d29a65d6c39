"""The `[launch]` and `[executor]` tables of an experiments file (engine.experiments):
nanotui's own knobs and where runs execute, checked before anything is queued."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.config import ConfigError, did_you_mean
from engine.executor_config import SlurmConfig

LAUNCH_KEYS = ["max_runs_per_gpu", "max_cpu_runs", "gpus", "stop_grace_s"]


class ExperimentsError(ConfigError):
    """A problem in an experiments file; one line: `FILE:LINE: where: what`."""


@dataclass(frozen=True)
class LaunchOptions:
    max_runs_per_gpu: int | str = 1      # or "auto" (engine.launch.placement)
    max_cpu_runs: int = 1
    gpus: tuple[int | str, ...] = ()     # empty: every card
    stop_grace_s: float = 10.0


def parse_launch_options(d: dict[str, Any], where) -> LaunchOptions:
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


def parse_executor(d: dict[str, Any], where) -> dict[str, Any]:
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
