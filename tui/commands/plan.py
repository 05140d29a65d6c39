"""`nanotui plan`: the pre-flight of a launch. Nothing is created."""

from __future__ import annotations

import json

HELP = ("show the runs a launch would start: parameters, memory, time, errors, and existing "
        "runs whose saved config differs from the file")


def add_arguments(p) -> None:
    p.add_argument("selection", nargs="*", metavar="SWEEP|RUN",
                   help="sweeps or run ids (default: every sweep)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--device", choices=["gpu", "cpu"],
                   help="what the time estimate assumes (default: gpu when one is visible)")


def run(args) -> int:
    from engine.launch.estimate import ASSUMED_FLOPS
    from engine.units import format_bytes, format_seconds
    from engine.launch.drift import drift_summary
    from engine.launch.queue import plan_runs
    from engine.launch.placement import Policy, describe_policy
    from engine.launch.queue import launch_options
    rows = plan_runs(args.experiments, args.selection, device=args.device, runs_root=args.runs)
    errors = [r for r in rows if r.error]
    opts = launch_options(args.experiments)[0]
    placement = describe_policy(Policy(opts.max_runs_per_gpu, opts.max_cpu_runs, opts.gpus))
    if args.json:
        print(json.dumps({"experiments": str(args.experiments), "runs": [r.to_dict() for r in rows],
                          "placement": {"max_runs_per_gpu": opts.max_runs_per_gpu,
                                        "description": placement},
                          "assumed_flops_per_s": ASSUMED_FLOPS,
                          "errors": len(errors)}, indent=1))
        return 1 if errors else 0
    head = f"{'run':34} {'params':>12} {'total':>12} {'vocab':>6} {'memory':>9} {'time':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.error:
            print(f"{r.id:34} ERROR {r.error}")
            continue
        if r.same_as:
            print(f"{r.id:34} = {r.same_as} (the same model: trained once, shown in both)")
            continue
        vocab = f"{r.vocab_size}{'*' if r.vocab_source == 'assumed' else ''}"
        exists = f"  exists ({r.state}): not queued again" if r.state else ""
        print(f"{r.id:34} {r.params:>12,} {r.params_total:>12,} {vocab:>6} "
              f"{format_bytes(r.est_mem_bytes):>9} {format_seconds(r.est_seconds):>8}{exists}")
        if r.drift:
            print(f"  saved config differs: {drift_summary(r.drift)}")
    ok = [r for r in rows if not r.error and not r.same_as]
    if ok:
        new = [r for r in ok if r.state is None]
        total = sum(r.est_seconds for r in new)
        dev = ok[0].est_device
        shared = sum(1 for r in rows if r.same_as)
        also = f" (+ {shared} shared, trained once)" if shared else ""
        existing = len(ok) - len(new)
        count = (f"{len(ok)} runs{also}: {len(new)} new, {existing} already exist (not "
                 f"queued again); the new ones take" if existing else f"{len(ok)} runs{also},")
        print(f"\n{count} about {format_seconds(total)} of {dev.upper()} time in all, "
              f"assuming {ASSUMED_FLOPS[dev] / 1e12:g} TFLOP/s achieved (6N + attention "
              f"FLOPs per token; evals included). Memory: weights, grads, AdamW, "
              f"activations, logits, CUDA context.")
        print(f"Placement: {placement}.")
        if any(r.vocab_source == "assumed" for r in ok):
            print("* vocabulary assumed until the data is prepared (`nanotui prepare`).")
    drifted = [r for r in ok if r.drift]
    if drifted:
        print(f"{len(drifted)} run{'s' * (len(drifted) != 1)} already exist with another saved "
              f"config: launch keeps the saved one; `nanotui launch --fresh RUN` starts "
              f"over (the old directory is kept in {args.runs.name}/.replaced/).")
    if errors:
        print(f"\n{len(errors)} invalid runs: fix them before launching.")
        return 1
    return 0
