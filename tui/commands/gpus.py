"""`nanotui gpus`: the cards now (NVML; NANOTUI_FAKE_GPUS=FILE.json for described ones),
each MIG instance on a line of its own, those outside our share marked "not ours"."""

from __future__ import annotations

import json

HELP = "list the GPUs: memory, utilization, temperature, power, processes, which are ours"


def add_arguments(p) -> None:
    p.description = (
        "List the GPU units (cards, and the MIG instances of cards in MIG mode) with "
        "memory, utilization, temperature, power and processes. Units outside this "
        "shell's share (an inherited CUDA_VISIBLE_DEVICES, or Slurm's SLURM_STEP_GPUS/"
        "SLURM_JOB_GPUS) are marked 'not ours': nanotui never places runs on them.")
    p.add_argument("--json", action="store_true",
                   help='one JSON document on stdout: {"gpus": [...], "share": {...}}')


def run(args) -> int:
    from engine.launch.gpu import default_gpu_source
    from engine.units import format_bytes
    source = default_gpu_source()
    gpus = source.snapshot()
    share = source.share
    if args.json:
        print(json.dumps({"gpus": [g.to_dict() for g in gpus],
                          "share": {"source": share.source, "spec": share.spec,
                                    "note": share.note}}, indent=1))
        return 0
    if not gpus:
        print("no GPUs visible (no NVIDIA driver/NVML here): runs go to the CPU")
        return 0
    for g in gpus:
        util = f"{g.utilization}%" if g.utilization is not None else "—"
        temp = f"{g.temperature}°C" if g.temperature is not None else "—"
        power = f"{g.power_w:.0f} W" if g.power_w is not None else "—"
        mark = ("" if g.ours else "  not ours") + (
            f"  {g.compute_mode.replace('_', '-')}" if g.exclusive else "")
        cuda = f"cuda:{g.cuda_index}" if g.cuda_index is not None else "—"
        print(f"{g.label:4} {cuda:7} {g.name:34} {util:>5}  {format_bytes(g.memory_used)} / "
              f"{format_bytes(g.memory_total)}  {temp:>5}  {power:>6}  "
              f"{len(g.processes)} processes  {g.uuid}{mark}")
        if g.problem:  # engine.model.cuda_compat: never placed on
            print(f"     └ unusable: {g.problem}")
    if share.allowed is not None:
        ours = sum(g.ours for g in gpus)
        print(f"ours: {ours} of {len(gpus)} ({share.describe()})"
              + ("" if ours else ": runs go to the CPU"))
    if share.note:
        print(f"note: {share.note}")
    print("--gpu N and [launch] gpus take the first column (NVML's numbering, as in "
          "nvidia-smi); cuda:N is torch's numbering in this shell")
    return 0
