"""`nanotui import PATH...`: nanoGPT out_dirs (ckpt.pt, and log.txt when the user kept
train.py's output) become finished runs under runs/ (engine.interop.nanogpt_run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HELP = "bring nanoGPT out_dirs (ckpt.pt + optional log.txt) into runs/ as finished runs"


def add_arguments(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="a nanoGPT out_dir (holding ckpt.pt) or a checkpoint file")
    p.add_argument("--sweep", default="imported",
                   help="the sweep the runs go into (default: imported)")
    p.add_argument("--name", help="the run's name (default: the out_dir's); one PATH only")
    p.add_argument("--meta", metavar="PATH", type=Path,
                   help="the tokenizer: a meta.pkl or a nanoGPT data dir (default: "
                        "data/<dataset>/ where nanoGPT looks, else GPT-2 for vocab >= 50257)")
    p.add_argument("--log", metavar="FILE", type=Path,
                   help="train.py's saved output (default: PATH/log.txt when there); one PATH only")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def run(args) -> int:
    from engine.interop.nanogpt_run import import_out_dirs, status_fields
    from tui.progress import StageBars

    bars = StageBars(sys.stderr.isatty() and not args.json)   # a long run's log takes a while
    try:
        done = import_out_dirs([Path(p) for p in args.paths], args.runs, args.sweep,
                               meta_path=args.meta, log_path=args.log, name=args.name,
                               stage=bars.stage)
    finally:
        bars.close()
    if args.json:
        print(json.dumps({"runs": [{"id": rd.id, "path": str(rd.path), "source": str(r.source),
                                    "unmapped": sorted(r.unmapped), "notes": r.notes,
                                    **{k: v for k, v in status_fields(r).items()
                                       if k in ("iter", "best_val_loss", "best_iter",
                                                "params")}} for rd, r in done]}, indent=1))
        return 0
    for rd, r in done:
        st = status_fields(r)
        best = st["best_val_loss"]
        log = (f"{r.curve.trains:,} train + {r.curve.evals:,} eval records from {r.log.path}"
               if r.log and r.curve else "no log")
        best = f"{best:.4f} (iter {st['best_iter']})" if best is not None else "—"
        print(f"imported {r.source} -> {rd.id}: {st['params']:,} params, iter {st['iter']}, "
              f"best val {best}; tokenizer: {r.meta_source or 'none'}; {log}")
        if r.unmapped:
            print(f"  kept aside in {rd.path / 'imported.json'}: {', '.join(sorted(r.unmapped))}")
        for note in r.notes:
            print(f"  note: {note}")
    return 0
