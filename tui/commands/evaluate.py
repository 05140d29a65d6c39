"""`nanotui eval RUN|SWEEP --text FILE`: loss and bits per byte of finished runs on any text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("loss, bits per byte and perplexity of finished runs (their best.pt) on any text at a "
        "fixed context, each run with its own tokenizer; appended to the run's eval.jsonl "
        "and shown in the reports (report.md, runs.csv, the course report) and the leaderboard")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="RUN|SWEEP", help="a run id (sweep/name) or a sweep")
    p.add_argument("--text", metavar="FILE", required=True, help="UTF-8 text file to evaluate on")
    p.add_argument("--block-size", metavar="T", type=int, default=None,
                   help="context length of the windows (default: each run's block_size)")
    p.add_argument("--tokens", metavar="N", type=int, default=None,
                   help="evaluate only the first N predicted tokens (default: the whole text)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--json", action="store_true", help="print the records as one JSON document")


def _runs(runs_root: Path, ref: str) -> list:
    from engine.runs import find_run, list_runs, list_shared
    from tui.commands import CommandError
    if "/" in ref:
        runs = [find_run(runs_root, ref)]
    else:
        runs = [r for r in list_runs(runs_root) if r.sweep == ref]
        runs += [owner for link, owner in list_shared(runs_root) if link.sweep == ref]
        if not runs:
            raise CommandError(f"no sweep or run {ref!r} under {runs_root}")
    done = [r for r in runs if r.read_status().get("state") == "done" and r.best_path.is_file()]
    if not done:
        raise CommandError(f"{ref}: no finished run with a best.pt")
    return done


def run(args: argparse.Namespace) -> int:
    from engine.sample.evaluate import evaluate_run, read_text
    from engine.report.tables import fmt
    from engine.report.text_evals import SHORT_SHA

    text = read_text(args.text)  # a bad file is refused before any model loads
    runs = _runs(Path(args.runs), args.target)
    records = []
    for r in runs:
        rec = evaluate_run(r, text, block_size=args.block_size, max_tokens=args.tokens,
                           device=args.device)
        r.log_text_eval(**rec)
        records.append({"run": r.id, **rec})
    if args.json:
        print(json.dumps({"text": str(text.path), "text_sha256": text.sha256, "evals": records},
                         indent=1))
        return 0
    print(f"{text.path} (sha256 {text.sha256[:SHORT_SHA]}, as the reports name it)")
    print(f"{'run':<28} {'tokenizer':<9} {'T':>5} {'tokens':>9} {'bytes':>9} "
          f"{'loss':>8} {'bits/byte':>9} {'ppl':>9}")
    for x in records:
        print(f"{x['run']:<28} {x['tokenizer']:<9} {x['block_size']:>5} {x['tokens']:>9,} "
              f"{x['bytes']:>9,} {fmt(x['loss'], 'loss'):>8} {x['bits_per_byte']:>9.4f} "
              f"{fmt(x['perplexity'], 'ppl'):>9}")
    return 0
