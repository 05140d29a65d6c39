"""Where the next run goes: pure functions over GPU snapshots and the runs already out.

A run may go on a card when
  - the card is allowed (`[launch] gpus = [...]`, by index or uuid; empty = all),
  - fewer than `max_runs_per_gpu` of our runs are on it, and
  - its free memory, minus memory PROMISED to our runs launched on it that have not
    allocated yet, fits the run's estimated need.
Among those, the least-loaded wins: utilization + memory in use (counting promises),
plus a penalty per run of ours already there (they may not show in utilization yet).
A run that fits on no allowed card even when it is idle cannot be placed (an error);
one that fits but not now waits (None).

"Not allocated yet": a launched run's pid does not appear among the card's processes,
and it was launched less than `promise_ttl_s` ago (after that its memory shows in
memory_used, or NVML cannot list processes here and we stop double counting).

Without cards (or with `--gpu cpu`), runs go to the CPU, at most `max_cpu_runs` at a
time (default 1: a 2-core box is not helped by two runs fighting for the cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.launch.executor import Placement
from engine.launch.gpu import GpuSnapshot
from engine.runs import RunError


class PlacementError(RunError):
    """The run can never be placed as asked (no such card, too big for every card)."""


@dataclass(frozen=True)
class ActiveRun:
    """One of our runs holding (or about to hold) a device."""

    run_id: str
    uuid: str | None           # None: on the CPU
    est_mem_bytes: int = 0
    started_at: float = 0.0
    pid: int | None = None


@dataclass(frozen=True)
class Policy:
    max_runs_per_gpu: int = 1
    max_cpu_runs: int = 1
    gpus: tuple[int | str, ...] = ()
    promise_ttl_s: float = 600.0


def parse_request(request: str | int | None) -> str:
    """Normalise a `--gpu` value: "auto", "cpu", a card index ("0") or a uuid."""
    r = "auto" if request in (None, "") else str(request).strip()
    return r.lower() if r.lower() in ("auto", "cpu") else r


def find_card(gpus: list[GpuSnapshot], ref: str | int) -> GpuSnapshot | None:
    ref = str(ref)
    for g in gpus:
        if ref == g.uuid or (ref.isdigit() and int(ref) == g.index):
            return g
    return None


def promised_bytes(card: GpuSnapshot, active: list[ActiveRun], now: float, ttl: float) -> int:
    pids = {p.pid for p in card.processes}
    return sum(a.est_mem_bytes for a in active
               if a.uuid == card.uuid and a.pid not in pids and now - a.started_at < ttl)


def load_score(card: GpuSnapshot, active: list[ActiveRun], now: float, ttl: float) -> float:
    ours = sum(1 for a in active if a.uuid == card.uuid)
    mem = (card.memory_used + promised_bytes(card, active, now, ttl)) / max(card.memory_total, 1)
    return (card.utilization or 0) / 100.0 + mem + 0.5 * ours


def gpu_env(card: GpuSnapshot) -> dict[str, str]:
    # PCI bus order makes CUDA's numbering match NVML's; the uuid pins the card anyway.
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": card.uuid}


def cpu_env(max_cpu_runs: int) -> dict[str, str]:
    """Hide the cards and share the cores between the concurrent CPU runs."""
    threads = max(1, (os.cpu_count() or 1) // max(1, max_cpu_runs))
    env = {"CUDA_VISIBLE_DEVICES": ""}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _cpu(active: list[ActiveRun], policy: Policy, need: int) -> Placement | None:
    if sum(1 for a in active if a.uuid is None) >= policy.max_cpu_runs:
        return None
    return Placement("cpu", None, cpu_env(policy.max_cpu_runs), need)


def _gpu(card: GpuSnapshot, need: int) -> Placement:
    return Placement("gpu", {"index": card.index, "uuid": card.uuid, "name": card.name},
                     gpu_env(card), need)


def fits_now(card: GpuSnapshot, need: int, active: list[ActiveRun], policy: Policy,
             now: float) -> bool:
    ours = sum(1 for a in active if a.uuid == card.uuid)
    room = card.memory_free - promised_bytes(card, active, now, policy.promise_ttl_s)
    return ours < policy.max_runs_per_gpu and room >= need


def choose(need: int, gpus: list[GpuSnapshot], active: list[ActiveRun], policy: Policy,
           request: str = "auto", now: float = 0.0) -> Placement | None:
    """The placement for a run needing `need` bytes; None: wait and ask again later.
    Raises PlacementError when waiting cannot help."""
    request = parse_request(request)
    if request == "cpu":
        return _cpu(active, policy, need)
    if request != "auto":
        card = find_card(gpus, request)
        if card is None:
            have = ", ".join(f"{g.index} ({g.uuid})" for g in gpus) or "none"
            raise PlacementError(f"no GPU {request!r}; cards here: {have}")
        if need > card.memory_total:
            raise PlacementError(f"needs about {need / 2**30:.1f} GiB, more than GPU "
                                 f"{card.index} has ({card.memory_total / 2**30:.1f} GiB)")
        return _gpu(card, need) if fits_now(card, need, active, policy, now) else None
    if not gpus:
        return _cpu(active, policy, need)
    allowed = [g for g in gpus if not policy.gpus or any(
        find_card([g], ref) is not None for ref in policy.gpus)]
    if not allowed:
        raise PlacementError(f"none of the allowed GPUs {list(policy.gpus)} is present "
                             f"(cards here: {', '.join(str(g.index) for g in gpus)})")
    if all(need > g.memory_total for g in allowed):
        raise PlacementError(f"needs about {need / 2**30:.1f} GiB, more than any allowed "
                             f"GPU has; use a smaller batch_size or model, or --gpu cpu")
    ok = [g for g in allowed if fits_now(g, need, active, policy, now)]
    if not ok:
        return None
    best = min(ok, key=lambda g: (load_score(g, active, now, policy.promise_ttl_s), g.index))
    return _gpu(best, need)
