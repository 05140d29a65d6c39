"""`nanotui doctor`: what nanotui sees on this machine and what will work (run it first on
a new machine; paste it into bug reports). The checks live in engine.launch.doctor."""

from __future__ import annotations

import argparse
import json

HELP = "check this machine: driver, GPUs (bf16, compile, tokens/s), CPU path, compiler, data, Slurm"

EPILOG = """\
Each line is ok, info, warn or missing. The exit status is 1 only when something
experiments need is missing (torch; a writable data cache; a GPU of ours on which a
training step fails; cards NVML lists that torch cannot use), else 0 -- a machine
without a GPU is fine: runs train on the CPU.

On CUDA each card of ours runs a tiny compiled training step in a child process pinned
to it (CUDA_VISIBLE_DEVICES=<uuid>, as a run would be): about 10-60 s per card, mostly
compilation; --no-steps skips them.

--json prints one document:
  {"checks":  [{"section", "name", "status", "detail"}, ...],
   "gpus":    [{"index", "label", "uuid", "name", "mig", "ours", "memory_total", ...,
                "cuda": {"cuda_index", "uuid", "capability", "bf16", ...} | null,
                "step": {"works", "compile", "tokens_per_s", "reason"?} (when run)}],
   "mapping": [{"cuda_index", "uuid", "nvml"}],
   "share":   {"source", "spec", "note", "description"},
   "cpu":     {"model", "class", "avx2", "avx512", "native_bf16", "dtype", "attention"},
   "missing": N}"""

MARK = {"ok": "ok", "info": "--", "warn": "WARN", "missing": "MISSING"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--json", action="store_true", help="one JSON document on stdout (below)")
    p.add_argument("--no-steps", action="store_true",
                   help="do not run the training step on each GPU")


def format_report(r: dict) -> str:
    from engine.units import format_bytes
    out = []
    section = None
    for c in r["checks"]:
        if c["section"] != section:
            section = c["section"]
            out.append(f"{section}:")
        out.append(f"  {MARK[c['status']]:8} {c['name']:15} {c['detail']}")
    if r["gpus"]:
        out.append("")
        out.append(f"{'unit':5} {'cuda':>4}  {'name':34} {'memory':>9}  {'sm':4} {'bf16':4}  "
                   f"{'ours':8} uuid")
        for g in r["gpus"]:
            c = g.get("cuda") or {}
            cuda = str(c["cuda_index"]) if c else "-"
            bf16 = ("yes" if c["bf16"] else "no") if c else "-"
            out.append(f"{g['label']:5} {cuda:>4}  {g['name'][:34]:34} "
                       f"{format_bytes(g['memory_total']):>9}  {c.get('capability') or g.get('capability') or '-':4} "
                       f"{bf16:4}  {'yes' if g['ours'] else 'not ours':8} {g['uuid']}")
        out.append(f"share: {r['share']['description']}")
    if r["mapping"]:
        out.append("CUDA index -> NVML unit (this environment): " + ", ".join(
            f"{m['cuda_index']} -> {m['nvml'] or '?'}" for m in r["mapping"]))
    out.append("")
    out.append(f"{r['missing']} missing" if r["missing"] else
               "nothing missing: experiments can run here")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from engine.launch.doctor import diagnose
    report = diagnose(steps=not args.no_steps)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_report(report))
    return 1 if report["missing"] else 0
