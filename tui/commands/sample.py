"""`nanotui sample RUN|SWEEP`: generate text from a run's checkpoint, with diversity scores;
with several temperatures, a temperature study of a run or of every finished run of a
sweep, saved in each run's temperature.jsonl for the report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = ("generate text from a run's checkpoint (RUN is an id like depth/n_layer=2 or a path); "
        "--temperature 0.5,0.8,1.0,1.2 on a run or a SWEEP is a temperature study")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN|SWEEP",
                   help="run id (sweep/name), run directory, or a checkpoint .pt file; a "
                        "sweep name with several --temperature values")
    from engine.sample.options import add_sample_arguments  # torch-free
    add_sample_arguments(p)


def _study_runs(runs_root: Path, ref: str) -> list:
    """The runs a temperature study samples: one run, or a sweep's finished runs (its
    shared runs once, under their owner)."""
    from engine.runs import find_run, list_runs
    from tui.commands import CommandError
    if "/" in ref or Path(ref).is_dir():
        return [find_run(runs_root, ref)]
    runs = [r for r in list_runs(runs_root) if r.sweep == ref]
    from engine.runs import list_shared
    runs += [owner for link, owner in list_shared(runs_root) if link.sweep == ref]
    done = [r for r in runs if r.read_status().get("state") == "done" and r.ckpt_path.is_file()]
    if not done:
        raise CommandError(f"no finished run with a checkpoint in sweep {ref!r} under {runs_root}"
                           if runs else f"no sweep or run {ref!r} under {runs_root}")
    return done


def _is_sweep(runs_root: Path, ref: str) -> bool:
    """A bare name (no '/', not a directory) that names a sweep under runs_root."""
    from engine.runs import list_runs
    return "/" not in ref and not Path(ref).is_dir() and any(
        r.sweep == ref for r in list_runs(runs_root))


def _sampling_need(target: Path, num_samples: int | None) -> int:
    """Bytes to sample from the run at `target` (a run directory or a checkpoint file):
    from its config when there is one, else the checkpoint's size as an upper bound."""
    from engine.launch.estimate import CUDA_CONTEXT_BYTES, estimate, sampling_bytes
    from engine.runs import RunDir
    try:
        cfg = RunDir(target if target.is_dir() else target.parent).load_config()
    except Exception:  # a bare checkpoint: no config beside it
        size = target.stat().st_size if target.is_file() else 0
        return size + CUDA_CONTEXT_BYTES
    est = estimate(cfg)
    return sampling_bytes(cfg, est.params_total, est.vocab_size,
                          num_samples or cfg.sampling.num_samples)


def _place(args: argparse.Namespace, targets: list[Path]):
    """--device auto goes through placement (engine.launch.outside): a card of ours with
    room, never simply cuda:0; the choice and its reason on stderr (stdout may be --json)."""
    from contextlib import nullcontext
    if args.device != "auto" or not all(t.is_file() or any(t.glob("*.pt")) for t in targets):
        return nullcontext()  # no checkpoint: sample_command says so, nothing to place
    from engine.launch.outside import auto_device
    need = max(_sampling_need(t, args.num_samples) for t in targets)
    placed = auto_device(need, f"nanotui sample {args.run}", args.experiments)
    print(f"sample: {placed.reason}", file=sys.stderr, flush=True)
    args.device = placed.device
    return placed


def _study(args: argparse.Namespace) -> int:
    runs = _study_runs(Path(args.runs), args.run)
    with _place(args, [r.path for r in runs]):
        return _study_table(args, runs)


def _study_table(args: argparse.Namespace, runs: list) -> int:
    from engine.sample.temperature import temperature_study
    table = []
    for r in runs:
        for row in temperature_study(r, args.temperature, args.num_samples, args.max_new_tokens,
                                     args.seed, args.device, args.checkpoint,
                                     args.dtype):
            table.append({"run": r.id, **row})
            if not args.json:
                print(f"{r.id:<34} T={row['temperature']:<4g} samples {row['samples']} "
                      f"words {row['words']:>5} ttr {row['ttr']:.3f} distinct_2 "
                      f"{row['distinct_2']:.3f} repetition_4 {row['repetition_4']:.3f}",
                      flush=True)
    if args.json:
        print(json.dumps({"runs": table}, indent=1))
    else:
        print("saved in each run's temperature.jsonl; `nanotui report` adds a temperature "
              "study section")
    return 0


def run(args: argparse.Namespace) -> int:
    from engine.runs import find_run
    from engine.sample.generate import sample_command
    from tui.commands import CommandError

    ref = Path(args.run)
    try:
        sweep = not ref.is_file() and _is_sweep(Path(args.runs), args.run)
        if args.temperature is not None and not ref.is_file() and (
                len(args.temperature) > 1 or sweep):
            return _study(args)   # a sweep is always a study, even at one temperature
        if sweep:
            raise CommandError(f"{args.run!r} is a sweep: name one of its runs "
                               f"({args.run}/NAME) or give --temperature to sample every "
                               f"finished run of it")
        target = ref if ref.is_file() else find_run(args.runs, args.run).path
        with _place(args, [target]):
            return sample_command(target, args)
    except (ValueError, OSError) as e:
        raise CommandError(str(e)) from None
