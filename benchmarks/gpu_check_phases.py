"""The in-process phases of the GPU check (benchmarks/gpu_check.py runs this file as a
child pinned to the card, and reads its one JSON line):

  profile  5 training steps of the baby GPT under torch.profiler: host->device copies from
           pageable memory and host synchronisations per step (0 and ~1 expected: pinned
           non-blocking batches, one .item() at log points)
  memory   real peak memory of 3 training steps against engine.launch.estimate's
           estimate for two shapes (the dispatcher places runs by that estimate)
  fp16     30 float16 steps through the GradScaler (the path of cards without bf16:
           T4, V100): finite losses, the scale, whether steps were skipped

    python benchmarks/gpu_check_phases.py [--device cuda|cpu] [--only profile,memory,fp16]

On the CPU (the rehearsal) the same code runs with tiny shapes: pageable copies and CUDA
peaks do not exist there and are reported as null, never as figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

BABY = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.0)
TINY = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8, dropout=0.0)
SHAPES = {"cuda": [BABY, dict(BABY, n_layer=12, n_embd=768, n_head=12, batch_size=32)],
          "cpu": [TINY, dict(TINY, n_layer=4, batch_size=16)]}


def _trainer(shape: dict, device: str, dtype: str):
    if device == "cpu" and dtype == "auto":
        dtype = "float32"  # the rehearsal: no CPU precision tuning, which takes minutes
    import numpy as np
    import torch

    from engine.config import TrainConfig
    from engine.train.trainer import Trainer
    cfg = TrainConfig(**shape, vocab_size=65, dtype=dtype, compile=False, device=device,
                      gradient_accumulation_steps=1, cpu_attention="sdpa")
    data = (np.arange(200_000) % 65).astype(np.uint16)
    return cfg, Trainer(cfg, data, data, 65, torch.device(device), log=lambda s: None)


def profile(device: str) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile as prof
    shape = SHAPES[device][0]
    _, t = _trainer(shape, device, "auto")
    for _ in range(2):
        t.train_step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    steps = 5
    with prof(activities=acts) as p:
        for _ in range(steps):
            t.train_step()
        loss = t.train_step().item()  # the one sync of a log point
    names = [e.name for e in p.events()]
    pageable = sum(1 for n in names if "Pageable" in n and "HtoD" in n) if device == "cuda" else None
    syncs = sum(1 for n in names if n in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                          "aten::_local_scalar_dense"))
    return {"steps": steps + 1, "pageable_htod": pageable, "host_syncs": syncs,
            "loss": loss}


def memory(device: str) -> list[dict]:
    import torch

    from engine.launch.estimate import estimate
    from engine.model import device as dev
    out = []
    for shape in SHAPES[device]:
        cfg, t = _trainer(shape, device, "auto")
        dv = torch.device(device)
        dev.reset_peak_memory(dv)
        for _ in range(3):
            t.train_step()
        dev.synchronize(dv)
        peak = (torch.cuda.max_memory_allocated(dv) + dev.CUDA_CONTEXT_BYTES
                if device == "cuda" else None)
        est = estimate(cfg, "gpu").mem_bytes
        out.append({"shape": "/".join(str(shape[k]) for k in ("n_layer", "n_head", "n_embd"))
                    + f" B{shape['batch_size']} T{shape['block_size']}",
                    "dtype": dev.dtype_name(t.dtype), "peak_bytes": peak, "estimate_bytes": est,
                    "ratio": (est / peak) if peak else None})
        del t
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def fp16(device: str, steps: int = 30) -> dict:
    _, t = _trainer(SHAPES[device][0], device, "float16")
    losses, skipped, scale = [], 0, None
    for _ in range(steps):
        before = t.scaler.get_scale() if t.scaler.is_enabled() else None
        losses.append(float(t.train_step()))
        if t.scaler.is_enabled():
            scale = t.scaler.get_scale()
            skipped += int(scale < before)
    return {"steps": steps, "scaler": t.scaler.is_enabled(), "scale": scale,
            "skipped": skipped, "first_loss": losses[0], "last_loss": losses[-1],
            "finite": all(math.isfinite(x) for x in losses)}


PHASES = {"profile": profile, "memory": memory, "fp16": fp16}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--only", default=",".join(PHASES))
    args = ap.parse_args()
    out = {}
    for name in [x for x in args.only.split(",") if x]:
        t0 = time.monotonic()
        try:
            out[name] = {"ok": True, "result": PHASES[name](args.device)}
        except Exception as e:  # reported as a failed phase by gpu_check
            out[name] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        out[name]["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
