"""Tokenizers for prepared data: `char` (a vocabulary stored in meta.json) and `gpt2`
(tiktoken's GPT-2 BPE), offline-capable.

`from_meta(meta)` rebuilds the tokenizer a prepared dataset was made with; every
tokenizer has `name`, `vocab_size`, `eot_token` (int or None), `encode(str) -> list[int]`
and `decode(list[int]) -> str`. The text `<|endoftext|>` is one end-of-text token in both.

GPT-2's BPE files are looked up, in order, in: the files given to `load_gpt2` (the CLI's
`--tokenizer-file`), $NANOTUI_TOKENIZER_FILE, the data cache's `tokenizers/` folder, and
finally tiktoken's own cache ($TIKTOKEN_CACHE_DIR) or download. Files found the first way
are copied into the data cache so training processes find them later without settings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Iterable, Sequence

from engine.config import ConfigError
from engine.files import atomic_write

EOT_TEXT = "<|endoftext|>"
GPT2_EOT = 50256
GPT2_TOKENS = 50257      # GPT-2's BPE vocabulary as the tokenizer has it
# tiktoken's gpt2 pattern (equivalent to GPT-2's original regex, faster).
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# sha256 of OpenAI's files, the hashes tiktoken itself pins: anything else is not GPT-2.
GPT2_HASHES = {
    "gpt2.tiktoken": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
TOKENIZER_NAMES = ("char", "gpt2")


class DataError(ConfigError):
    """A data or tokenizer problem the user can fix; the message is one clear line.
    A ConfigError, so the CLI and the training process report it the same way."""


def cache_root() -> Path:
    """The data cache: $NANOTUI_DATA_DIR, else $XDG_CACHE_HOME/nanotui, else ~/.cache/nanotui."""
    env = os.environ.get("NANOTUI_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nanotui"


def tokenizer_cache_dir() -> Path:
    return cache_root() / "tokenizers"


# ---- char ---------------------------------------------------------------------------

class CharTokenizer:
    """nanoGPT's shakespeare_char scheme: id = index in the sorted distinct characters.
    When the data had `<|endoftext|>` separators, they get one extra id after the
    characters (eot_token = len(chars)), so plain characters keep nanoGPT's ids."""

    name = "char"

    def __init__(self, chars: Sequence[str], eot_token: int | None = None):
        self.chars = list(chars)
        if eot_token is not None and eot_token != len(self.chars):
            raise DataError(f"char tokenizer: eot_token {eot_token} must be {len(self.chars)} "
                            "(one past the characters)")
        self.eot_token = eot_token
        self.vocab_size = len(self.chars) + (1 if eot_token is not None else 0)
        self._stoi = {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        if self.eot_token is not None and EOT_TEXT in text:
            out: list[int] = []
            for i, part in enumerate(text.split(EOT_TEXT)):
                if i:
                    out.append(self.eot_token)
                out.extend(self._encode_plain(part))
            return out
        return self._encode_plain(text)

    def _encode_plain(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError as e:
            raise DataError(f"character {e.args[0]!r} is not in this dataset's char vocabulary "
                            f"({len(self.chars)} characters)") from None

    def decode(self, ids: Iterable[int]) -> str:
        chars, eot = self.chars, self.eot_token
        return "".join(EOT_TEXT if i == eot else chars[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, eot_token={self.eot_token})"


# ---- gpt2 ---------------------------------------------------------------------------

class Gpt2Tokenizer:
    """tiktoken's GPT-2 encoding. `<|endoftext|>` in text encodes to 50256."""

    name = "gpt2"

    def __init__(self, encoding):
        self.encoding = encoding
        self.vocab_size = encoding.n_vocab
        self.eot_token = encoding.eot_token

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, allowed_special={EOT_TEXT}, disallowed_special=())

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids))

    def __repr__(self) -> str:
        return f"Gpt2Tokenizer(vocab_size={self.vocab_size})"


_encodings: dict[tuple, object] = {}
_encodings_lock = threading.Lock()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named directly, or the known GPT-2 files inside a named folder."""
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            out.extend(p / n for n in GPT2_HASHES if (p / n).is_file())
        else:
            out.append(p)
    return out


def _pick_files(files: list[Path], where: str) -> dict[str, Path]:
    """Choose gpt2.tiktoken, or vocab.bpe + encoder.json, among `files`; check hashes."""
    for f in files:
        if not f.is_file():
            raise DataError(f"{where}: tokenizer file {f} does not exist")
    by_kind: dict[str, Path] = {}
    for f in files:
        kind = ("gpt2.tiktoken" if f.suffix == ".tiktoken" else
                "encoder.json" if f.suffix == ".json" else
                "vocab.bpe" if f.suffix == ".bpe" else None)
        if kind is None:
            raise DataError(f"{where}: {f} is not a .tiktoken, vocab.bpe or encoder.json file")
        by_kind[kind] = f
    if "gpt2.tiktoken" in by_kind:
        chosen = {"gpt2.tiktoken": by_kind["gpt2.tiktoken"]}
    elif "vocab.bpe" in by_kind and "encoder.json" in by_kind:
        chosen = {k: by_kind[k] for k in ("vocab.bpe", "encoder.json")}
    else:
        raise DataError(f"{where}: need a gpt2.tiktoken file, or both vocab.bpe and "
                        f"encoder.json (got {', '.join(str(f) for f in files)})")
    for kind, f in chosen.items():
        if _sha256(f) != GPT2_HASHES[kind]:
            raise DataError(f"{where}: {f} is not OpenAI's GPT-2 {kind} (sha256 differs)")
    return chosen


def _ranks_from_tiktoken_file(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _ranks_from_data_gym(vocab_bpe: Path, encoder_json: Path) -> dict[bytes, int]:
    # GPT-2's byte-to-unicode table, as in tiktoken.load.data_gym_to_mergeable_bpe_ranks
    # (reimplemented so tiktoken does not copy local files into its temp cache).
    order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    to_byte = {chr(b): b for b in order}
    n = 0
    for b in range(256):
        if b not in order:
            order.append(b)
            to_byte[chr(256 + n)] = b
            n += 1
    ranks = {bytes([b]): i for i, b in enumerate(order)}
    merges = vocab_bpe.read_text(encoding="utf-8").split("\n")[1:-1]
    for merge in merges:
        first, second = merge.split()
        ranks[bytes(to_byte[c] for c in first) + bytes(to_byte[c] for c in second)] = len(ranks)
    encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    if len(encoder) != len(ranks) + 1:  # + <|endoftext|>
        raise DataError(f"{encoder_json} does not match {vocab_bpe}")
    return ranks


def _encoding_from_files(chosen: dict[str, Path]):
    import tiktoken
    key = tuple(sorted((k, str(p)) for k, p in chosen.items()))
    with _encodings_lock:
        if key not in _encodings:
            if "gpt2.tiktoken" in chosen:
                ranks = _ranks_from_tiktoken_file(chosen["gpt2.tiktoken"])
            else:
                ranks = _ranks_from_data_gym(chosen["vocab.bpe"], chosen["encoder.json"])
            _encodings[key] = tiktoken.Encoding(
                name="gpt2", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                special_tokens={EOT_TEXT: GPT2_EOT}, explicit_n_vocab=GPT2_TOKENS)
        return _encodings[key]


def _remember(chosen: dict[str, Path]) -> None:
    """Copy user-given BPE files into the data cache so later runs find them unasked."""
    dest = tokenizer_cache_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for kind, src in chosen.items():
            target = dest / kind
            if target.exists() or src.resolve().parent == dest.resolve():
                continue
            atomic_write(target, _copier(src))  # the umask's mode, not mkstemp's 0600
    except OSError:
        pass  # a read-only cache only costs the convenience


def _copier(src: Path):
    def write(f) -> None:
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f)
    return write


def offline_help() -> str:
    return (f"put gpt2.tiktoken (or vocab.bpe + encoder.json) in {tokenizer_cache_dir()}, "
            "or pass --tokenizer-file / set NANOTUI_TOKENIZER_FILE to them, "
            "or pre-fill TIKTOKEN_CACHE_DIR (see docs/data.md)")


def load_gpt2(tokenizer_files: Sequence[str | os.PathLike] | None = None) -> Gpt2Tokenizer:
    """The GPT-2 tokenizer, from local files when given or found, else through tiktoken."""
    if tokenizer_files:
        chosen = _pick_files(_expand(tokenizer_files), "--tokenizer-file")
        enc = _encoding_from_files(chosen)
        _remember(chosen)
        return Gpt2Tokenizer(enc)
    env = os.environ.get("NANOTUI_TOKENIZER_FILE")
    if env:
        chosen = _pick_files(_expand(p for p in env.split(os.pathsep) if p),
                             "NANOTUI_TOKENIZER_FILE")
        enc = _encoding_from_files(chosen)
        _remember(chosen)
        return Gpt2Tokenizer(enc)
    cached = _expand([tokenizer_cache_dir()]) if tokenizer_cache_dir().is_dir() else []
    if cached:
        try:
            return Gpt2Tokenizer(_encoding_from_files(_pick_files(cached, str(tokenizer_cache_dir()))))
        except DataError:
            pass  # incomplete or foreign files: fall through to tiktoken
    import tiktoken
    with _encodings_lock:
        if ("tiktoken",) not in _encodings:
            try:
                _encodings[("tiktoken",)] = tiktoken.get_encoding("gpt2")
            except Exception as e:  # requests' ConnectionError, hash mismatch, ...
                raise DataError(
                    f"cannot load the GPT-2 BPE (no local file, and tiktoken could not "
                    f"download it: {type(e).__name__}): {offline_help()}") from None
        return Gpt2Tokenizer(_encodings[("tiktoken",)])


def get_tokenizer(name: str, tokenizer_files=None):
    """gpt2 by name (char needs a vocabulary: use from_meta or the prepare pass)."""
    if name == "gpt2":
        return load_gpt2(tokenizer_files)
    check_name(name)
    raise DataError("the char tokenizer's vocabulary comes from the data; use from_meta(meta)")


def check_name(name: str) -> None:
    if name not in TOKENIZER_NAMES:
        raise DataError(f"unknown tokenizer {name!r}: choose one of {', '.join(TOKENIZER_NAMES)}")


def from_meta(meta: dict, tokenizer_files=None):
    """The tokenizer a prepared dataset (its meta.json as a dict) was made with."""
    name = meta.get("tokenizer")
    if name == "char":
        if not isinstance(meta.get("chars"), list):
            raise DataError("meta.json: a char dataset needs a 'chars' list")
        return CharTokenizer(meta["chars"], meta.get("eot_token"))
    if name == "gpt2":
        return load_gpt2(tokenizer_files)
    raise DataError(f"meta.json: unknown tokenizer {name!r}: expected one of "
                    f"{', '.join(TOKENIZER_NAMES)}")
