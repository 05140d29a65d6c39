"""What a run that ran out of memory says: the unit's real label (not "cuda:0", which
every placed run sees) and whether this run or other processes held the memory, since a
smaller batch is the fix only in the first case."""

from __future__ import annotations

import torch

from engine.model import device as dev


def oom_reason(device: torch.device) -> str:
    """Out of memory, on the unit's real label, and whether someone else took the memory
    (then a smaller batch is not the fix: waiting, or another card, is)."""
    where = dev.placed_gpu() or str(device)
    if device.type != "cuda":
        return f"out of memory on {where}: try a smaller batch_size or model"
    mine = torch.cuda.memory_reserved(device)
    try:
        free, total = torch.cuda.mem_get_info(device)
    except Exception:
        free, total = 0, 0
    others = max(0, total - free - mine - dev.CUDA_CONTEXT_BYTES) if total else 0
    gib = 1024 ** 3
    if others > 0.05 * total:
        return (f"out of memory on {where}: this run held {mine / gib:.1f} GiB and other "
                f"processes about {others / gib:.1f} GiB of {total / gib:.1f} GiB; wait for "
                f"them or place the run on another card")
    return (f"out of memory on {where}: this run held {mine / gib:.1f} GiB of "
            f"{total / gib:.1f} GiB; try a smaller batch_size or model")
