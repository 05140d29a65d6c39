"""nanoGPT's data artefacts, read safely: `meta.pkl` (char vocabularies), nanoGPT data
directories (data/<name>/ with train.bin, val.bin as uint16 and an optional meta.pkl),
and what a nanoGPT checkpoint implies about its tokenizer.

nanoGPT's prepare.py pickles {'vocab_size': 65, 'itos': {0: '\\n', ...}, 'stoi': {...}}.
Such a pickle holds only dicts, ints and strings, which pickle encodes with opcodes of its
own; a pickle that names any class or function (the way a malicious file runs code) is
refused before anything is built, so reading a stranger's meta.pkl executes nothing.
Without a meta.pkl, nanoGPT's sample.py assumes GPT-2's BPE; so do we, when the model's
vocabulary can hold it (>= 50257).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from engine.data.tokenizers import GPT2_TOKENS, DataError


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise DataError(f"meta.pkl names {module}.{name}: only plain dicts, lists, strings "
                        "and numbers are accepted (refusing to run code from a pickle)")


def read_meta_pkl(path: Path) -> dict[str, Any]:
    """A nanoGPT meta.pkl as nanotui's meta dict ({"vocab_size", "tokenizer", "chars"})."""
    path = Path(path)
    try:
        raw = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not a readable meta.pkl ({type(e).__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("vocab_size"), int):
        raise DataError(f"{path}: meta.pkl has no vocab_size")
    itos = raw.get("itos")
    if isinstance(itos, dict) and all(isinstance(v, str) for v in itos.values()):
        chars = [itos[i] for i in range(len(itos))] if set(itos) == set(range(len(itos))) else None
        if chars is None:
            raise DataError(f"{path}: meta.pkl itos is not indexed 0..{len(itos) - 1}")
        return {"vocab_size": raw["vocab_size"], "tokenizer": "char", "chars": chars,
                "eot_token": None, "source": str(path)}
    return {"vocab_size": raw["vocab_size"], "tokenizer": "gpt2" if raw["vocab_size"] >= GPT2_TOKENS
            else None, "source": str(path)}


def checkpoint_data_dirs(ckpt_path: Path, ck: dict[str, Any]) -> list[Path]:
    """Where a nanoGPT checkpoint's data/<dataset> may be, in the order nanoGPT's scripts
    (run from the repository, out_dir inside it) would find it: beside the out_dir, inside
    it, in the working directory. Only directories that exist."""
    config = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    dataset = config.get("dataset")
    if not isinstance(dataset, str) or not dataset or "/" in dataset or dataset.startswith("."):
        return []
    # a ckpt.pt that is a symlink: its own folder first, then its target's
    out_dirs = dict.fromkeys([Path(os.path.abspath(ckpt_path)).parent,
                              Path(ckpt_path).resolve().parent])
    found = [base / "data" / dataset for out_dir in out_dirs
             for base in (out_dir.parent, out_dir)] + [Path.cwd() / "data" / dataset]
    return [d for d in dict.fromkeys(found) if d.is_dir()]


def checkpoint_meta(ckpt_path: Path, ck: dict[str, Any]) -> dict[str, Any] | None:
    """The tokenizer meta of a nanoGPT checkpoint: data/<dataset>/meta.pkl looked for where
    nanoGPT's sample.py would find it (checkpoint_data_dirs), else GPT-2 when the
    vocabulary holds it; None when neither."""
    for d in checkpoint_data_dirs(ckpt_path, ck):
        if (d / "meta.pkl").is_file():
            return read_meta_pkl(d / "meta.pkl")
    vocab = (ck.get("model_args") or {}).get("vocab_size")
    if isinstance(vocab, int) and vocab >= GPT2_TOKENS:
        return {"vocab_size": GPT2_TOKENS, "tokenizer": "gpt2"}
    return None


NANOGPT_BINS = ("train.bin", "val.bin")


def nanogpt_data_meta(data_dir: Path) -> dict[str, Any] | None:
    """nanotui's meta dict for a nanoGPT data directory, used in place (nothing copied):
    train.bin and val.bin are uint16 token ids, as every nanoGPT prepare.py writes them;
    the vocabulary is meta.pkl's, or GPT-2's when there is none (nanoGPT's convention).
    None when `data_dir` is not one (a nanotui prepared dir has its meta.json instead)."""
    d = Path(data_dir)
    if (d / "meta.json").exists() or not all((d / f).is_file() for f in NANOGPT_BINS):
        return None
    sizes = {f: (d / f).stat().st_size for f in NANOGPT_BINS}
    odd = [f for f, n in sizes.items() if n % 2]
    if odd:
        raise DataError(f"{d / odd[0]}: {sizes[odd[0]]:,} bytes is not a whole number of "
                        "uint16 tokens (nanoGPT's .bin format)")
    if (d / "meta.pkl").is_file():
        meta = read_meta_pkl(d / "meta.pkl")
    else:
        meta = {"vocab_size": GPT2_TOKENS, "tokenizer": "gpt2", "eot_token": GPT2_TOKENS - 1}
    meta.update(dtype="uint16", train_tokens=sizes["train.bin"] // 2,
                val_tokens=sizes["val.bin"] // 2, format="nanogpt", data_dir=str(d))
    return meta


BYTES_SAMPLE_TOKENS = 1_000_000  # of val.bin: the mean is stable long before that


def measure_bytes_per_token(val_tokens, tokenizer) -> float | None:
    """UTF-8 bytes per token of `val_tokens` (an array of ids; its first million) under
    `tokenizer` (engine.data.tokenizers: char or GPT-2), for data whose meta does not
    record `bytes_per_token` (a nanoGPT data directory): each id's byte length from the
    vocabulary, `<|endoftext|>` counted as its 13 bytes of text, as nanotui's prepare
    counts the source. None when the ids do not fit the vocabulary."""
    import numpy as np

    from engine.data.tokenizers import EOT_TEXT
    if tokenizer.name == "char":
        lengths = [len(c.encode("utf-8")) for c in tokenizer.chars]
    else:
        enc = tokenizer.encoding
        lengths = [len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)]
    if tokenizer.eot_token is not None:
        lengths += [0] * (tokenizer.eot_token + 1 - len(lengths))
        lengths[tokenizer.eot_token] = len(EOT_TEXT.encode())
    ids = np.asarray(val_tokens[:BYTES_SAMPLE_TOKENS], dtype=np.int64)
    if not len(ids) or int(ids.max()) >= len(lengths):
        return None
    return float(np.asarray(lengths, dtype=np.float64)[ids].mean())
