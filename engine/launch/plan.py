"""`plan`: what a launch would start, nothing created. One row per run: parameters,
vocabulary (assumed until the data is prepared, and marked), memory, time, the resolved
horizon (engine.model.horizon: steps, tokens, tokens per parameter, training FLOPs, the
key that set it) and the schedule fitted to it, with warnings where an explicit schedule
does not fit the horizon; and, with a runs directory, which runs exist and how their
saved config differs from the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.experiments import RunSpec, load_experiments
from engine.launch.drift import config_drift
from engine.launch.estimate import estimate, horizon_for, recorded_attention
from engine.launch.gpu import GpuSource, default_gpu_source
from engine.launch.preflight import check_cells, check_specs
from engine.runs import RunDir


@dataclass
class PlanRow:
    id: str
    sweep: str
    name: str
    varied: dict[str, Any]
    params: int | None = None
    params_total: int | None = None
    vocab_size: int | None = None
    vocab_source: str | None = None
    est_mem_bytes: int | None = None
    est_seconds: float | None = None
    est_device: str | None = None
    max_iters: int | None = None
    tokens: int | None = None
    train_flops: float | None = None
    tokens_per_param: float | None = None
    param_convention: str | None = None
    lr_decay_iters: int | None = None
    warmup_iters: int | None = None
    horizon: dict[str, Any] | None = None   # {"key", "value"}: what set the length
    schedule: str | None = None             # the horizon and schedule in one line
    schedule_fitted: bool | None = None     # warm-up and decay both follow the horizon
    warnings: list[str] = field(default_factory=list)  # explicit schedule vs horizon
    error: str | None = None
    same_as: str | None = None        # a shared run: trained once, as this run id
    drift: list[str] = field(default_factory=list)  # saved config differs: "key: old → new"
    state: str | None = None          # the existing run's state; None: new, launch creates it

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_rows(specs: list[RunSpec], device: str, runs_root: str | Path | None = None
              ) -> list[PlanRow]:
    """`runs_root`: where existing runs' recorded attention paths are read for the
    memory estimate."""
    rows = []
    for s in specs:
        row = PlanRow(s.id, s.sweep, s.name, s.varied, error=s.error, same_as=s.same_as)
        if s.cfg is not None and s.error is None:
            h = horizon_for(s.cfg)   # check_specs has refused those that do not resolve
            e = estimate(h.config, device,
                         recorded_attention(runs_root, s.same_as or s.id))
            row.params, row.params_total = e.params, e.params_total
            row.vocab_size, row.vocab_source = e.vocab_size, e.vocab_source
            row.est_mem_bytes, row.est_seconds, row.est_device = e.mem_bytes, e.seconds, device
            row.max_iters, row.tokens = h.max_iters, h.tokens
            row.train_flops, row.tokens_per_param = h.train_flops, h.tokens_per_param
            row.param_convention = h.param_convention
            row.lr_decay_iters, row.warmup_iters = h.lr_decay_iters, h.warmup_iters
            row.horizon = {"key": h.key, "value": h.value}
            row.schedule, row.schedule_fitted = h.schedule_line(), h.fitted
            row.warnings = h.warnings()
        rows.append(row)
    return rows


def plan_runs(experiments_path: str | Path, selection: list[str] | None = None,
              device: str | None = None, gpu_source: GpuSource | None = None,
              runs_root: str | Path | None = None) -> list[PlanRow]:
    """One row per selected run; nothing is created. `device` ("gpu"/"cpu") is what the
    time estimate assumes; by default "gpu" when a card is visible, else "cpu". With
    `runs_root`, a run whose directory exists has its `state` (launch does not queue it
    again), and says in `drift` how its saved config differs from the file (launch keeps
    that config unless told --fresh)."""
    exp = load_experiments(experiments_path)
    specs = exp.select(selection)
    gpus = (gpu_source or default_gpu_source()).snapshot()
    if device is None:
        device = "gpu" if gpus else "cpu"
    check_specs(specs, gpus if exp.executor.get("kind", "local") == "local" else None,
                runs_root)
    check_cells(specs)   # an IsoFLOP grid with cells that cannot run: refused, one line
    rows = plan_rows(specs, device, runs_root)
    if runs_root is not None:
        for row, s in zip(rows, specs):
            run = RunDir(Path(runs_root) / (s.same_as or s.id))
            if run.exists():
                row.state = run.read_status().get("state") or "unknown"
                if s.cfg is not None:
                    row.drift = config_drift(run, s.cfg)
    return rows
