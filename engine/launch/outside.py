"""A device for work outside the queue: `nanotui sample` and `nanotui bench` with
`--device auto`.

torch's own "auto" is cuda:0, which on a shared server may be the card another user has
filled. Here "auto" goes through placement (engine.launch.placement.choose) as a queued
run does: a usable unit of our share, named by `[launch] gpus` when that is set, whose
free memory minus every live reservation on the machine (our dispatchers' and other
users', engine.launch.reservations) fits the job; the least loaded of those. The job
holds a reservation on its unit while this process lives (one small file under the
machine-wide lock), so a dispatcher placing a run in the same second does not count the
same free memory twice. When no unit fits, or torch cannot use any, the CPU, and the
reason is said.

The unit is handed to torch as cuda:K, its number in this process
(engine.launch.visible.cuda_indices): CUDA may already be initialised here, so changing
CUDA_VISIBLE_DEVICES now would not be seen.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError, one_line
from engine.launch.gpu import GpuSnapshot
from engine.launch.placement import PlacementError, Policy, choose, why_waiting
from engine.launch.reservations import Board
from engine.runs import process_start_time

# reservations name a runs directory; work outside the queue has none of its own, and a
# real one would make that directory's dispatcher take this job for one of its runs
OUTSIDE_ROOT = Path("/outside-the-queue")


@dataclass
class OutsidePlacement:
    device: str                 # what torch is given: "cuda:K" or "cpu"
    reason: str                 # one line for the user: where, and why there
    ticket: Path | None = None  # our reservation, removed by release()

    def release(self) -> None:
        Board.remove(self.ticket)
        self.ticket = None

    def __enter__(self) -> "OutsidePlacement":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


def place_outside_queue(need: int, job: str, gpus: list[GpuSnapshot],
                        allowed: tuple[int | str, ...] = (), board: Board | None = None,
                        now: float | None = None) -> OutsidePlacement:
    """Where `job` (e.g. "nanotui sample depth/n_layer=2"), needing about `need` bytes,
    runs when asked for device "auto"."""
    if not gpus:
        return OutsidePlacement("cpu", "on the CPU: no GPU here")
    if not any(g.ours for g in gpus):
        return OutsidePlacement("cpu", "on the CPU: no GPU of ours (CUDA_VISIBLE_DEVICES or "
                                       "the Slurm allocation hides every card)")
    now = time.time() if now is None else now
    board = board or Board()
    policy = Policy(gpus=tuple(allowed))
    try:
        with board.locked():
            others = [r.as_promise() for r in board.read(now)]
            placement = _choose(need, gpus, policy, now, others)
            if isinstance(placement, OutsidePlacement):
                return placement
            unit = next(g for g in gpus if g.uuid == placement.gpu["uuid"])
            chosen = _on(unit, need)
            if chosen.device != "cpu":
                me = os.getpid()
                chosen.ticket = board.add(unit.uuid, need, OUTSIDE_ROOT,
                                          f"{job} (pid {me})", now)
                # once this process shows among the unit's processes its memory is in
                # memory_used, and the reservation stops counting
                board.started(chosen.ticket, me, process_start_time(me))
            return chosen
    except (UserError, OSError) as e:  # an unusable reservations directory
        placement = _choose(need, gpus, policy, now, [])
        if isinstance(placement, OutsidePlacement):
            return placement
        unit = next(g for g in gpus if g.uuid == placement.gpu["uuid"])
        chosen = _on(unit, need)
        chosen.reason += f" (machine-wide reservations off: {one_line(e)})"
        return chosen


def _choose(need, gpus, policy, now, others):
    """choose() for one job, or the CPU placement with the reason it gives instead."""
    try:
        placement = choose(need, gpus, [], policy, "auto", now, others=others)
    except PlacementError as e:
        return OutsidePlacement("cpu", f"on the CPU: {one_line(e).split('; `--gpu cpu`')[0]}")
    if placement is None:
        why = why_waiting(need, gpus, [], policy, "auto", now, others).removeprefix("waiting: ")
        return OutsidePlacement("cpu", f"on the CPU: no GPU of ours has room now ({why})")
    if placement.gpu is None:
        return OutsidePlacement("cpu", "on the CPU: no GPU of ours")
    return placement


def _on(unit: GpuSnapshot, need: int) -> OutsidePlacement:
    where = f"GPU {unit.label} ({unit.name})"
    if unit.simulated:
        return OutsidePlacement("cpu", f"on the CPU: {where} is a fake card "
                                       f"(NANOTUI_FAKE_GPUS), a simulation")
    if unit.cuda_index is None:
        return OutsidePlacement("cpu", f"on the CPU: {where} has room but no cuda:N torch "
                                       f"can be given in this shell; `--device cuda:N` "
                                       f"picks a device yourself")
    return OutsidePlacement(f"cuda:{unit.cuda_index}",
                            f"on {unit.names} ({unit.name}): {_gib(unit.memory_free)} free, "
                            f"needs about {_gib(need)}")


def auto_device(need: int, job: str, experiments: str | Path | None = None
                ) -> OutsidePlacement:
    """place_outside_queue on this shell's units, with the experiments file's
    `[launch] gpus` when it has one."""
    from engine.launch.gpu import default_gpu_source
    from engine.launch.queue import launch_options
    allowed = launch_options(experiments)[0].gpus if experiments else ()
    return place_outside_queue(need, job, default_gpu_source().snapshot(), allowed)
