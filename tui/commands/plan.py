"""`nanotui plan`: the pre-flight of a launch. Nothing is created."""

from __future__ import annotations

import json

HELP = ("show the runs a launch would start: parameters, horizon (steps, tokens, tokens per "
        "parameter, FLOPs), schedule, memory, time, errors, and existing runs whose saved "
        "config differs from the file; --budget: the largest horizon that fits a time")


def add_arguments(p) -> None:
    p.add_argument("selection", nargs="*", metavar="SWEEP|RUN",
                   help="sweeps or run ids (default: every sweep)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--device", choices=["gpu", "cpu"],
                   help="what the time estimate assumes (default: gpu when one is visible)")
    p.add_argument("--budget", metavar="TIME",
                   help="say the largest uniform horizon (every run's horizon times one "
                        "factor) with which the selected runs fit TIME (30m, 1h30m, 90s), "
                        "and the line to put in experiments.toml; writes nothing")
    p.add_argument("--gpus", type=int, metavar="N",
                   help="with --budget: plan for N GPUs (default: the cards visible, or the "
                        "CPU's concurrent runs when there are none)")


def run(args) -> int:
    from engine.launch.estimate import ASSUMED_FLOPS
    from engine.launch.plan import plan_runs
    from engine.launch.placement import Policy, describe_policy
    from engine.launch.queue import launch_options
    if args.gpus is not None and args.budget is None:
        from tui.commands import CommandError
        raise CommandError("--gpus goes with --budget")
    if args.budget is not None:
        return _budget(args)
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
    _table(rows)
    _summary(args, rows, placement)
    if errors:
        print(f"\n{len(errors)} invalid runs: fix them before launching.")
        return 1
    return 0


def _si(x: float) -> str:
    """1234567 -> '1.23M' (tokens), 3.1e15 -> '3.1P' (FLOPs): three significant digits."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6),
                        ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _table(rows) -> None:
    from engine.launch.drift import drift_summary
    from engine.units import format_bytes, format_seconds
    head = (f"{'run':30} {'params':>11} {'vocab':>7} {'iters':>8} {'tokens':>7} "
            f"{'tok/p':>6} {'FLOPs':>6} {'memory':>9} {'time':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.error:
            print(f"{r.id:30} ERROR {r.error}")
            continue
        if r.same_as:
            print(f"{r.id:30} = {r.same_as} (the same model: trained once, shown in both)")
            continue
        vocab = f"{r.vocab_size}{'*' if r.vocab_source == 'assumed' else ''}"
        exists = f"  exists ({r.state}): not queued again" if r.state else ""
        print(f"{r.id:30} {r.params:>11,} {vocab:>7} {r.max_iters:>8,} {_si(r.tokens):>7} "
              f"{r.tokens_per_param:>6.3g} {_si(r.train_flops):>6} "
              f"{format_bytes(r.est_mem_bytes):>9} {format_seconds(r.est_seconds):>7}{exists}")
        for w in r.warnings:
            print(f"  warning: {w}")
        if r.drift:
            print(f"  saved config differs: {drift_summary(r.drift)}")


def _summary(args, rows, placement: str) -> None:
    from engine.config import PARAM_CONVENTIONS, WARMUP_CAP
    from engine.launch.estimate import ASSUMED_FLOPS
    from engine.units import format_seconds
    ok = [r for r in rows if not r.error and not r.same_as]
    if not ok:
        return
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
    print(f"Training: {_si(sum(r.tokens for r in ok))} tokens, "
          f"{_si(sum(r.train_flops for r in ok))} FLOPs in all.")
    keys = sorted({f"{r.horizon['key']}" for r in ok})
    conv = sorted({r.param_convention for r in ok})
    print(f"Horizon set by {', '.join(keys)}; params and tok/p count N as "
          f"{' / '.join(conv)} ({'; '.join(PARAM_CONVENTIONS[c] for c in conv)}).")
    fitted = [r for r in ok if r.schedule_fitted]
    if fitted:
        print(f"Schedule fitted to the horizon for {len(fitted)} of {len(ok)} runs: warm-up "
              f"warmup_frac of max_iters (at most {WARMUP_CAP}), decay ending with the "
              f"run; a run's own warmup_iters / lr_decay_iters win (--json: schedule).")
    print(f"Placement: {placement}.")
    if any(r.vocab_source == "assumed" for r in ok):
        print("* vocabulary assumed until the data is prepared (`nanotui prepare`); launch "
              "resolves the horizon again with the prepared data's.")
    drifted = [r for r in ok if r.drift]
    if drifted:
        print(f"{len(drifted)} run{'s' * (len(drifted) != 1)} already exist with another saved "
              f"config: launch keeps the saved one; `nanotui launch --fresh RUN` starts "
              f"over (the old directory is kept in {args.runs.name}/.replaced/).")


def _budget(args) -> int:
    from engine.experiments import load_experiments, validate_runs
    from engine.launch.budget import fit_budget, parse_budget
    from engine.launch.estimate import ASSUMED_FLOPS
    from engine.launch.gpu import default_gpu_source
    from engine.launch.preflight import check_specs
    from engine.launch.queue import launch_options
    from engine.units import format_seconds
    from tui.commands import CommandError
    budget_s = parse_budget(args.budget)
    if args.gpus is not None and args.gpus < 1:
        raise CommandError(f"--gpus {args.gpus}: expected at least 1")
    exp = load_experiments(args.experiments)
    specs = exp.select(args.selection)
    gpus = default_gpu_source().snapshot()
    check_specs(specs, None)
    validate_runs(specs)
    opts = launch_options(args.experiments)[0]
    if args.gpus is not None:
        device, units = "gpu", args.gpus
    elif args.device == "cpu" or (args.device is None and not gpus):
        device, units = "cpu", opts.max_cpu_runs
    else:
        per = opts.max_runs_per_gpu if isinstance(opts.max_runs_per_gpu, int) else 1
        device, units = "gpu", max(1, len([g for g in gpus if g.ours])) * per
    res = fit_budget(specs, budget_s, units, device, args.runs)
    if args.json:
        print(json.dumps(res.to_dict(), indent=1))
        return 0
    n = len(res.runs)
    assumed = f"{ASSUMED_FLOPS[device] / 1e12:g} TFLOP/s"
    source = (f"measured throughput for {len(res.measured)} of {n} runs, the estimate's "
              f"assumed {assumed} for the rest" if res.measured else
              f"the estimate's assumed {assumed}: no run of these shapes measured here")
    print(f"{n} runs on {units} {device.upper()} unit{'s' * (units != 1)}, budget "
          f"{format_seconds(budget_s)}: every horizon x {res.scale:.4g} fits in "
          f"{format_seconds(res.seconds)}, evals and samples included.")
    print(f"Throughput: {source}.")
    for r in res.runs:
        value = f"{r['value']:,}" if isinstance(r["value"], int) else f"{r['value']:.4g}"
        print(f"  {r['id']:30} {r['key']} = {value:<10} {r['max_iters']:>9,} iters "
              f"{r['tokens_per_param']:>7.3g} tok/p {format_seconds(r['seconds']):>7}"
              f" ({r['throughput']})")
    print("Put in experiments.toml (nothing was written):")
    for line in res.lines:
        print(f"  {line}")
    return 0
