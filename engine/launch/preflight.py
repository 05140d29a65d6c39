"""Refusals before anything is queued: runs that cannot work whatever the machine does,
found at plan and queue time instead of minutes into a run. One line each.

    horizon        below one optimizer step, above 1e9 steps, or an explicit warm-up of
                   10x the run or more (engine.model.horizon), with the vocabulary the
                   data has (assumed until it is prepared)
    dataset        a dataset file or data_dir that does not exist (for the whole file)
    max_iters      more steps than any run takes (max_iters = 1e20)
    block_size     at least as many tokens as the training split holds
    val split      fewer than block_size + 1 tokens: not one validation window
    memory         the estimate (engine.launch.estimate) above the largest card's memory,
                   or above the machine's RAM for a CPU run

The data checks need the data prepared (or named by data_dir); before that they are left
to the queue, which prepares it first. The memory check is made for local runs only: a
Slurm run's cards are not this machine's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from engine.config import TrainConfig
from engine.errors import UserError
from engine.launch.estimate import estimate, horizon_for, recorded_attention
from engine.launch.gpu import GpuSnapshot
from engine.model.horizon import HorizonError
from engine.units import format_bytes
ITEM_BYTES = {"uint16": 2, "uint32": 4, "int32": 4, "int64": 8}


def data_tokens(cfg: TrainConfig) -> tuple[Path, int, int] | None:
    """(data dir, train tokens, val tokens) of the run's prepared data; None when the data
    is not prepared yet (it is read from the .bin sizes, as training reads them)."""
    import json
    if cfg.data_dir:
        d: Path | None = Path(cfg.data_dir).expanduser()
    else:
        from engine.data.datasets import find_prepared  # a lookup: prepares nothing
        try:
            d = find_prepared(cfg)
        except Exception:
            d = None
    if d is None:
        return None
    try:
        meta = json.loads((d / "meta.json").read_text())
        item = ITEM_BYTES.get(str(meta.get("dtype") or "uint16"), 2) if isinstance(meta, dict) else 2
        return (d, (d / "train.bin").stat().st_size // item, (d / "val.bin").stat().st_size // item)
    except (OSError, ValueError):
        return None


def _machine_ram() -> int | None:
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except Exception:
        return None


def memory_problem(cfg: TrainConfig, gpus: Sequence[GpuSnapshot],
                   attention: str | None = None) -> str | None:
    """`attention`: the CPU attention path the run recorded, if it exists and trained."""
    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not gpus)
    if on_cpu:
        need, have = estimate(cfg, "cpu", attention).mem_bytes, _machine_ram()
        if have and need > have:
            return (f"needs about {format_bytes(need)} of memory, more than this machine's "
                    f"{format_bytes(have)}: a smaller model, batch_size or block_size fits")
        return None
    if (cfg.device.startswith("cuda") or cfg.device == "auto") and gpus:
        need = estimate(cfg, "gpu", attention).mem_bytes
        best = max(gpus, key=lambda g: g.memory_total)
        if need > best.memory_total:
            return (f"needs about {format_bytes(need)} of GPU memory, more than the largest "
                    f"card's {format_bytes(best.memory_total)} ({best.name}): a smaller model, "
                    f"batch_size or block_size fits")
    return None


def problems(cfg: TrainConfig, gpus: Sequence[GpuSnapshot] | None,
             attention: str | None = None) -> list[str]:
    """Why this run cannot work, one line each ([] when it can). gpus None: no memory check.
    `attention`: the CPU attention path the run recorded, if it exists and trained."""
    out = []
    try:
        cfg = horizon_for(cfg).config
    except HorizonError as e:
        return [str(e)]
    data = data_tokens(cfg)
    if data is not None:
        d, train, val = data
        T = cfg.block_size
        if train <= T:
            out.append(f"block_size = {T} needs more than {T} training tokens; {d} has "
                       f"{train:,}: lower block_size or use more data")
        if val < T + 1:
            out.append(f"the val split of {d} has {val:,} tokens, fewer than block_size + 1 = "
                       f"{T + 1}: lower block_size or give validation a larger share")
    if gpus is not None:
        mem = memory_problem(cfg, gpus, attention)
        if mem:
            out.append(mem)
    return out


def missing_data(cfg: TrainConfig) -> str | None:
    """The run's dataset file (or data_dir) when it does not exist, else None. Relative
    paths were made absolute against the experiments file's folder (engine.experiments)."""
    from engine.data.download import SOURCES
    if cfg.data_dir:
        return None if Path(cfg.data_dir).expanduser().exists() else f"data_dir {cfg.data_dir}"
    if cfg.dataset in SOURCES or Path(cfg.dataset).expanduser().exists():
        return None
    return f"dataset {cfg.dataset}"


def _dataset_names() -> list[str]:
    from engine.data.download import SOURCES
    return sorted(SOURCES)


def check_specs(specs: Sequence[Any], gpus: Sequence[GpuSnapshot] | None,
                runs_root: str | Path | None = None) -> None:
    """Set each RunSpec's error to its first problem (plan shows them; queue refuses).
    A missing dataset file is bad input for the whole file: one UserError. `runs_root`:
    where runs that exist already recorded their CPU attention path."""
    for s in specs:
        what = missing_data(s.cfg) if s.error is None and s.cfg is not None else None
        if what:
            raise UserError(f"{s.id}: {what}: no such file or directory (relative paths are "
                            f"read from the experiments file's folder; named datasets: "
                            f"{', '.join(_dataset_names())})")
    for s in specs:
        if s.error is None and s.cfg is not None:
            found = problems(s.cfg, gpus, recorded_attention(runs_root, s.same_as or s.id))
            if found:
                s.error = f"{s.id}: {found[0]}"


def check_cells(specs: Sequence[Any]) -> None:
    """Refuse an IsoFLOP grid with cells that cannot say anything (engine.sweep_kinds):
    fewer optimizer steps than the sweep's min_steps, or more epochs of the training
    split than its max_epochs (checked once the data is prepared). One line naming the
    first such cell, how many there are, and what to change; raises ExperimentsError."""
    from engine.experiments_options import ExperimentsError
    bad: list[str] = []
    for s in specs:
        meta = getattr(s, "meta", None) or {}
        if meta.get("kind") != "isoflop" or s.cfg is None or s.error:
            continue
        h = horizon_for(s.cfg)
        if h.max_iters < meta["min_steps"]:
            bad.append(f"{s.id} gets {h.max_iters} optimizer steps, fewer than min_steps = "
                       f"{meta['min_steps']}: raise its budget, drop the size or lower "
                       f"batch_size/block_size")
            continue
        data = data_tokens(h.config)
        if data is not None and data[1] > 0 and h.tokens / data[1] > meta["max_epochs"]:
            bad.append(f"{s.id} trains on {h.tokens:,} tokens, {h.tokens / data[1]:.1f} epochs "
                       f"of the {data[1]:,}-token training split, more than max_epochs = "
                       f"{meta['max_epochs']:g}: lower the budget or use more data")
    if bad:
        k = len(bad) - 1
        more = f" (and {k} more cell{'s' if k > 1 else ''} that cannot run)" if k else ""
        raise ExperimentsError(f"isoflop: {bad[0]}{more}")
