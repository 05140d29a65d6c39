"""`nanotui gpus`: the cards now (NVML; NANOTUI_FAKE_GPUS=FILE.json for described ones)."""

from __future__ import annotations

import json

HELP = "list the GPUs: memory, utilization, temperature, power, processes"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def run(args) -> int:
    from engine.launch.gpu import default_gpu_source
    from engine.units import format_bytes
    gpus = default_gpu_source().snapshot()
    if args.json:
        print(json.dumps({"gpus": [g.to_dict() for g in gpus]}, indent=1))
        return 0
    if not gpus:
        print("no GPUs visible (no NVIDIA driver/NVML here): runs go to the CPU")
        return 0
    for g in gpus:
        util = f"{g.utilization}%" if g.utilization is not None else "—"
        temp = f"{g.temperature}°C" if g.temperature is not None else "—"
        power = f"{g.power_w:.0f} W" if g.power_w is not None else "—"
        print(f"{g.index}  {g.name:34} {util:>5}  {format_bytes(g.memory_used)} / "
              f"{format_bytes(g.memory_total)}  {temp:>5}  {power:>6}  "
              f"{len(g.processes)} processes  {g.uuid}")
    return 0
