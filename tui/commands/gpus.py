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
        "SLURM_JOB_GPUS) are marked 'not ours': nanotui never places runs on them. With a "
        "fair-share policy.toml in the reservations directory, each user's share, GPU "
        "runs, queued runs and GPU-hours follow (docs/course-server.md).")
    p.add_argument("--json", action="store_true",
                   help='one JSON document on stdout: {"gpus": [...], "share": {...}, '
                        '"fair_share": {...} with a policy.toml}')


def run(args) -> int:
    from engine.launch.gpu import default_gpu_source
    from engine.units import format_bytes
    from engine.launch.share_view import share_summary, users_table
    source = default_gpu_source()
    gpus = source.snapshot()
    share = source.share
    fair = share_summary()  # policy.toml in the reservations directory, if any
    if args.json:
        doc = {"gpus": [g.to_dict() for g in gpus],
               "share": {"source": share.source, "spec": share.spec, "note": share.note}}
        if fair["policy"] is not None:
            doc["fair_share"] = fair
        print(json.dumps(doc, indent=1))
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
    pol = fair["policy"]
    if pol is not None:  # without a policy file the fair share is not shown (nor applied)
        print()
        if pol["in_force"]:
            print(f"policy: {pol['path']}; yours: {pol['yours']}")
        if pol["line"]:
            print(pol["line"])
        for line in users_table(fair, gpus):
            print(line)
    return 0
