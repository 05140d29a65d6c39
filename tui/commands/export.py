"""`nanotui export RUN --format hf OUT_DIR`: a run's model as a Hugging Face transformers
GPT-2 with its tokenizer (engine.interop.hf_export), ready for from_pretrained or the Hub."""

from __future__ import annotations

from pathlib import Path

HELP = "write a run's model for Hugging Face transformers (GPT2LMHeadModel + tokenizer)"


def add_arguments(p) -> None:
    p.add_argument("target", metavar="RUN", help="a run id (depth/n_layer=8), run dir or .pt file")
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (must be new or empty)")
    p.add_argument("--format", choices=["hf"], default="hf",
                   help="hf: config.json + model.safetensors + tokenizer files (default)")
    p.add_argument("--checkpoint", choices=["best", "latest"], default="best",
                   help="which of a run's checkpoints (default: best, else latest)")


def run(args) -> int:
    from engine.interop.hf_export import export_hf
    from engine.runs import RunError, find_run
    from tui.commands.stop import unknown_run
    target = Path(args.target)
    if not target.is_file():
        try:
            target = find_run(args.runs, args.target).path
        except RunError:
            raise unknown_run(args.runs, args.target) from None
    files = export_hf(target, Path(args.out_dir), checkpoint=args.checkpoint)
    print(f"wrote {args.out_dir}: {', '.join(files)}")
    print(f"load it: GPT2LMHeadModel.from_pretrained({str(args.out_dir)!r}) and "
          f"AutoTokenizer.from_pretrained({str(args.out_dir)!r})")
    return 0
