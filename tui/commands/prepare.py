"""`nanotui prepare SOURCE`: download (named sources) and tokenize into train.bin/val.bin."""

from __future__ import annotations

import argparse
import json
import sys

from tui.commands import CommandError
from tui.progress import StageBars

HELP = "download and tokenize a dataset into train.bin, val.bin and meta.json"

# Below this many tokens in a split, the usual block sizes cannot train (nanoGPT's
# default block_size is 1024; the check that matters is engine.data.datasets.check_fits).
SMALL_SPLIT = 1025


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="tinystories, shakespeare, a UTF-8 text file, or a directory that "
                        "already holds prepared data")
    p.add_argument("--tokenizer", default="char", metavar="NAME",
                   help="char (sorted distinct characters) or gpt2 (tiktoken BPE); "
                        "default: char")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="last fraction of the text used for validation when the source has "
                        "no validation file of its own (default: 0.1, as nanoGPT)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="write the prepared files here (default: the data cache, "
                        "$NANOTUI_DATA_DIR or ~/.cache/nanotui)")
    p.add_argument("--tokenizer-file", action="append", metavar="FILE",
                   help="GPT-2 BPE for offline use: gpt2.tiktoken, or vocab.bpe and "
                        "encoder.json (repeat the option), or a folder holding them")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (the prepared dir and its meta.json)")


def run(args: argparse.Namespace) -> int:
    from engine.data.datasets import load_meta, prepare
    from engine.data.tokenizers import DataError

    bars = StageBars(sys.stderr.isatty() and not args.json)
    try:
        out = prepare(args.source, args.tokenizer, args.val_fraction, out_dir=args.data_dir,
                      tokenizer_files=args.tokenizer_file, progress=bars.progress,
                      log=bars.stage)
        meta = load_meta(out)
    except DataError:
        raise
    except OSError as e:  # anything the engine did not word itself
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        raise CommandError(f"cannot prepare {args.source}:{where} {e.strerror or e}") from None
    finally:
        bars.close()

    small = [s for s in ("train", "val") if meta[f"{s}_tokens"] < SMALL_SPLIT]
    if args.json:
        print(json.dumps({"data_dir": str(out), **meta}, indent=1))
    else:
        print(f"prepared {out}")
        print(f"  tokenizer {meta['tokenizer']}  vocab {meta['vocab_size']:,}  "
              f"{meta['dtype']}  eot {meta['eot_token']}")
        per = (f"{meta['bytes_per_token']:.3f} bytes/token" if "bytes_per_token" in meta
               else "(nanoGPT's format: used in place)")
        print(f"  train {meta['train_tokens']:,} tokens  val {meta['val_tokens']:,} tokens  {per}")
    for split in small:
        print(f"nanotui: warning: the {split} split has only {meta[f'{split}_tokens']:,} "
              "tokens; training needs more than block_size tokens in each split",
              file=sys.stderr)
    return 0
