"""The `[executor]` table of experiments.toml for kind = "slurm", validated into a
SlurmConfig. It is part of the experiments contract (engine.experiments checks it before
anything is queued, so a typo names the file and line), and imports no Slurm client; the
launch room's Slurm executor (engine.launch.slurm) reads the SlurmConfig it produces.

    [executor]
    kind = "slurm"
    partition = "accel"            # sbatch --partition
    account = "nn1234k"            # sbatch --account (many clusters require one)
    qos = "devel"                  # sbatch --qos
    time = "02:00:00"              # per job: minutes (int) or Slurm's [D-]HH:MM:SS forms
    gpus_per_run = 1               # --gpus-per-node
    cpus_per_run = 8               # --cpus-per-task
    mem = "32G"                    # --mem (K/M/G/T suffix)
    sbatch_extra = ["--constraint=a100"]    # or { constraint = "a100" }
    setup = ["module load PyTorch/2.1", "source ~/venv/bin/activate"]
    python = "python3"             # the python the job runs (default: this one)
    signal_delay_s = 120           # time-limit warning: checkpoint + requeue this early
    max_requeues = 3               # time-limit requeues per run before giving up
    array_parallelism = 8          # at most this many runs of one sweep at once

Every key is optional except kind. Unknown keys and wrong types are one-line ConfigErrors
with a did-you-mean, raised before anything is submitted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from engine.config import ConfigError, did_you_mean

KEYS = ["kind", "partition", "account", "qos", "time", "gpus_per_run", "cpus_per_run",
        "mem", "sbatch_extra", "setup", "python", "signal_delay_s", "max_requeues",
        "array_parallelism"]

# [D-]HH:MM:SS, [D-]HH:MM, [D-]HH, MM:SS, MM (Slurm's --time forms)
_TIME_RE = re.compile(r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                      r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$")
_MEM_RE = re.compile(r"^\d+(\.\d+)?\s*[KMGT]B?$", re.IGNORECASE)


@dataclass(frozen=True)
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem: str | None = None
    sbatch_extra: dict[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    python: str | None = None
    signal_delay_s: int = 120
    max_requeues: int = 3
    array_parallelism: int = 256

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, source: str = "[executor]") -> "SlurmConfig":
        d = dict(d or {})
        kind = d.pop("kind", "slurm")
        if kind != "slurm":
            raise ConfigError(f"{source}: kind = {kind!r}: expected \"slurm\" here")
        for key in d:
            if key not in KEYS:
                raise ConfigError(f"{source}: unknown Slurm option {key!r}"
                                  f"{did_you_mean(key, KEYS)}; known: {', '.join(KEYS[1:])}")
        kw: dict[str, Any] = {}

        def where(key: str) -> str:
            return f"{source}: {key} = {d[key]!r}"

        for key in ("partition", "account", "qos", "python"):
            if key in d:
                if not isinstance(d[key], str) or not d[key].strip():
                    raise ConfigError(f"{where(key)}: expected a non-empty string")
                kw[key] = d[key].strip()
        if "time" in d:
            kw["time_min"] = parse_time_min(d["time"], where("time"))
        for key, low in (("gpus_per_run", 0), ("cpus_per_run", 1), ("signal_delay_s", 1),
                         ("max_requeues", 0), ("array_parallelism", 1)):
            if key in d:
                v = d[key]
                if not isinstance(v, int) or isinstance(v, bool) or v < low:
                    raise ConfigError(f"{where(key)}: expected a whole number >= {low}")
                kw[key] = v
        if "mem" in d:
            v = d["mem"]
            if not isinstance(v, str) or not _MEM_RE.match(v.strip()):
                raise ConfigError(f"{where('mem')}: expected a size with a unit, e.g. \"16G\" "
                                  f"or \"500M\"")
            kw["mem"] = v.strip().upper().replace(" ", "")
        if "sbatch_extra" in d:
            kw["sbatch_extra"] = parse_sbatch_extra(d["sbatch_extra"], where("sbatch_extra"))
        if "setup" in d:
            v = d["setup"]
            if isinstance(v, str):
                v = [v]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{where('setup')}: expected a list of shell commands, e.g. "
                                  f"[\"module load CUDA\", \"source venv/bin/activate\"]")
            kw["setup"] = tuple(v)
        cfg = cls(**kw)
        if cfg.signal_delay_s >= cfg.time_min * 60:
            raise ConfigError(f"{source}: signal_delay_s = {cfg.signal_delay_s} must be shorter "
                              f"than the time limit ({cfg.time_min} min): it is how long before "
                              f"the limit a run checkpoints for its requeue")
        return cfg

    def sbatch_parameters(self) -> dict[str, Any]:
        """Parameters for submitit.SlurmExecutor.update_parameters."""
        p: dict[str, Any] = {"time": self.time_min, "cpus_per_task": self.cpus_per_run,
                             "signal_delay_s": self.signal_delay_s,
                             "array_parallelism": self.array_parallelism}
        for key in ("partition", "account", "qos", "mem"):
            if getattr(self, key):
                p[key] = getattr(self, key)
        if self.gpus_per_run:
            p["gpus_per_node"] = self.gpus_per_run
        if self.setup:
            p["setup"] = list(self.setup)
        if self.sbatch_extra:
            p["additional_parameters"] = dict(self.sbatch_extra)
        return p


def parse_time_min(v: Any, where: str) -> int:
    """Slurm --time value -> whole minutes (rounded up, at least 1)."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise ConfigError(f"{where}: expected at least 1 minute")
        return v
    m = _TIME_RE.match(v.strip()) if isinstance(v, str) else None
    if m is None:
        raise ConfigError(f"{where}: expected minutes (e.g. 30) or a Slurm time such as "
                          f"\"00:30:00\" or \"1-12:00:00\"")
    g = {k: int(x) if x is not None else None for k, x in m.groupdict().items()}
    if g["d"] is not None:
        seconds = ((g["d"] * 24 + g["dh"]) * 60 + (g["dm"] or 0)) * 60 + (g["ds"] or 0)
    elif g["c"] is not None:  # HH:MM:SS
        seconds = (g["a"] * 60 + g["b"]) * 60 + g["c"]
    elif g["b"] is not None:  # MM:SS
        seconds = g["a"] * 60 + g["b"]
    else:  # MM
        seconds = g["a"] * 60
    if seconds < 60:
        raise ConfigError(f"{where}: expected at least 1 minute")
    return math.ceil(seconds / 60)


def parse_sbatch_extra(v: Any, where: str) -> dict[str, Any]:
    """["--constraint=a100", "--exclusive"] or {constraint = "a100"} -> {key: value|True}."""
    out: dict[str, Any] = {}
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(x, (str, int, bool)) or isinstance(x, bool) and not x:
                raise ConfigError(f"{where}: {k} = {x!r}: expected a string, a number or true")
            out[k.lstrip("-").replace("_", "-")] = x
        return out
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{where}: expected a list of sbatch options such as "
                          f"[\"--constraint=a100\"] or a table {{ constraint = \"a100\" }}")
    for item in v:
        item = item.strip()
        if item.startswith("#SBATCH"):
            item = item[len("#SBATCH"):].strip()
        if not item.startswith("--") or len(item) < 3:
            raise ConfigError(f"{where}: {item!r}: write long options, e.g. \"--constraint=a100\"")
        key, sep, value = item[2:].partition("=")
        out[key] = value if sep else True
    return out
