"""`nanotui gpus`: the cards now (NVML; NANOTUI_FAKE_GPUS=FILE.json for described ones),
each MIG instance on a line of its own, those outside our share marked "not ours", with
our runs on each and the memory others hold there (engine.report.reading.others_on_gpu,
as the TUI's GPU panel shows it)."""

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
        "runs, queued runs and GPU-hours follow (docs/course-server.md). Under each unit: "
        "this runs directory's runs on it and the memory other processes hold there (what "
        "our runs report holding counts as ours, also in a container, where NVML's process "
        "ids are the host's).")
    p.add_argument("--json", action="store_true",
                   help='one JSON document on stdout: {"gpus": [{..., "our_runs", '
                        '"others_bytes"}], "share": {...}, "fair_share": {...} with a '
                        'policy.toml}')


def run(args) -> int:
    from engine.launch.gpu import default_gpu_source
    from engine.units import format_bytes
    from engine.launch.share_view import share_summary, users_table
    from engine.report.reading import others_on_gpu, read_run, runs_on_gpu
    from engine.runs import list_runs
    from engine.text import safe_text
    source = default_gpu_source()
    gpus = source.snapshot()
    share = source.share
    fair = share_summary()  # policy.toml in the reservations directory, if any
    views = [v for v in (read_run(r) for r in list_runs(args.runs)) if v.state == "running"]
    ours = {g.uuid: [v.id for v in runs_on_gpu(g, views)] for g in gpus}
    others = {g.uuid: others_on_gpu(g, views) for g in gpus}
    if args.json:
        doc = {"gpus": [{**g.to_dict(), "our_runs": ours[g.uuid], "others_bytes": others[g.uuid]}
                        for g in gpus],
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
        if ours[g.uuid] or others[g.uuid]:
            print(f"     └ runs: {safe_text(', '.join(ours[g.uuid])) or 'none of ours'}"
                  + (f"  others: {format_bytes(others[g.uuid])}" if others[g.uuid] else ""))
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
