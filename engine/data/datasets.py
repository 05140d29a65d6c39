"""Dataset preparation: source -> train.bin, val.bin, meta.json, streaming, bounded memory.

Sources: "tinystories" and "shakespeare" (downloaded once into the data cache), a local
UTF-8 text file, or a directory that already holds prepared files. Prepared data lands in
`<cache>/prepared/<source>-<tokenizer>-<sha>[-val<F>]/` (or a directory the caller
names), keyed by the source's sha256, the tokenizer and the val fraction, built under a
file lock in a temporary directory and renamed when complete: an interrupted prepare never
leaves something that looks prepared, and two runs launching at once do the work once.

Splits follow nanoGPT exactly: a source's own validation file when it has one, else the
text is cut at character int(n * (1 - val_fraction)) and each part is tokenized alone
(data/shakespeare_char/prepare.py and data/shakespeare/prepare.py do the same).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.data.passes import build
from engine.files import (LockTimeout, NoSpace, atomic_write_bytes, is_no_space, read_regular,
                          regular_lock)
from engine.data.download import SOURCES, download_dir, fetch_source
from engine.data.nanogpt import nanogpt_data_meta
from engine.data.tokenizers import (DataError, cache_root, check_name,  # noqa: F401
                               from_meta, load_gpt2)

Progress = Callable[[int, int], None]
PREPARED_FILES = ("train.bin", "val.bin", "meta.json")
MAX_META_BYTES = 16 << 20   # a meta.json holds a char vocabulary at most
MAX_MEMO_BYTES = 16 << 20   # sha256.json: ~150 bytes per remembered file
FORMAT_VERSION = 1


# ---- reading prepared data ----------------------------------------------------------

def load_meta(data_dir: str | os.PathLike) -> dict:
    """meta.json of a prepared dir, checked against the .bin sizes; for a nanoGPT data
    dir (no meta.json), what engine.data.nanogpt reads from its bins and meta.pkl."""
    d = Path(data_dir)
    nanogpt = nanogpt_data_meta(d)
    if nanogpt is not None:
        return nanogpt
    missing = [f for f in PREPARED_FILES if not (d / f).is_file()]
    if missing:
        raise DataError(f"{d} holds no prepared data (missing {', '.join(missing)})")
    try:
        meta = json.loads(read_regular(d / "meta.json", MAX_META_BYTES).decode("utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{d / 'meta.json'}: unreadable: {e}") from None
    for key in ("vocab_size", "tokenizer", "dtype", "train_tokens", "val_tokens"):
        if key not in meta:
            raise DataError(f"{d / 'meta.json'}: missing key {key!r}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"{d / 'meta.json'}: dtype {meta['dtype']!r} is not uint16 or uint32")
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in ("train", "val"):
        size = (d / f"{split}.bin").stat().st_size
        if size != meta[f"{split}_tokens"] * itemsize:
            raise DataError(f"{d / f'{split}.bin'} has {size:,} bytes, meta.json says "
                            f"{meta[f'{split}_tokens']:,} {meta['dtype']} tokens")
    return meta


def is_prepared(data_dir: str | os.PathLike) -> bool:
    try:
        load_meta(data_dir)
        return True
    except DataError:
        return False


def check_fits(meta: dict, block_size: int) -> None:
    """Raise DataError unless both splits hold at least block_size + 2 tokens: training
    draws windows of block_size + 1 tokens (inputs and shifted targets) at random starts,
    and engine.train.process's get_batch needs at least two possible starts."""
    need = block_size + 2
    for split in ("train", "val"):
        n = meta[f"{split}_tokens"]
        if n < need:
            raise DataError(f"the {split} split has {n:,} tokens, fewer than block_size + 2 "
                            f"= {need}: use a smaller block_size or more text"
                            + (" (or a larger val_fraction)" if split == "val" else ""))


def open_split(data_dir: str | os.PathLike, split: str, meta: dict | None = None) -> np.memmap:
    """A read-only memmap of train.bin or val.bin with the right dtype."""
    meta = meta or load_meta(data_dir)
    return np.memmap(Path(data_dir) / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")


# ---- entry points -------------------------------------------------------------------

def prepared_dir_for(cfg, progress: Progress | None = None) -> Path:
    """The prepared dir a TrainConfig trains on: cfg.data_dir when set (it must hold
    prepared data), else cfg.dataset prepared with cfg.tokenizer into the cache."""
    if cfg.data_dir:
        d = Path(cfg.data_dir).expanduser()
        load_meta(d)
        return d
    return prepare(cfg.dataset, cfg.tokenizer, cfg.val_fraction, progress=progress)


def prepare(source: str, tokenizer: str = "char", val_fraction: float = 0.1,
            out_dir: str | os.PathLike | None = None, tokenizer_files=None,
            progress: Progress | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Prepare `source` and return the prepared dir (reused when already there)."""
    check_name(tokenizer)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val fraction {val_fraction} must be between 0 and 1")
    files, label = resolve_source(source, progress, log)
    if files is None:  # an already-prepared directory
        return label
    if tokenizer == "gpt2":
        load_gpt2(tokenizer_files)  # fail early, before any long pass, when it is missing
    for f in files.values():
        _check_text_file(f)
    shas = {role: file_sha256(path, progress, log) for role, path in files.items()}
    source_sha = _combined_sha(shas)
    vf = val_fraction if "text" in files else None
    ident = {"source_sha256": source_sha, "tokenizer": tokenizer, "val_fraction": vf}
    out = (Path(out_dir).expanduser() if out_dir is not None
           else _cache_dir_for(label, tokenizer, source_sha, vf))
    if _matches(out, ident):
        return out
    with _prepare_lock(out, log):
        if _matches(out, ident):  # another process prepared it while we waited
            return out
        _mkdir(out.parent, out)
        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed prepare
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(_mkdtemp(out, f".{out.name}.tmp-"))
        try:
            if log:
                log(f"tokenizing {label} ({tokenizer})")
            try:
                meta = build(files, tokenizer, val_fraction, tmp, tokenizer_files, progress)
            except OSError as e:  # disk full, vanished source, ...
                if is_no_space(e):
                    raise DataError(f"cannot prepare {source}: {NoSpace(out)}") from None
                raise DataError(f"cannot prepare {source}: {e.strerror or e}"
                                + (f": {e.filename}" if e.filename else "")) from None
            meta.update(source=source if source in SOURCES else str(Path(source).resolve()),
                        source_sha256=source_sha,
                        source_files={r: {"path": str(p), "sha256": shas[r],
                                          "bytes": p.stat().st_size} for r, p in files.items()},
                        val_fraction=vf, split="fraction" if vf is not None else "source",
                        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        format_version=FORMAT_VERSION)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
            _limit_modes(tmp, _source_access(files.values()))
            _install(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@contextlib.contextmanager
def _prepare_lock(out: Path, log: Callable[[str], None] | None) -> Iterator[None]:
    """One process prepares a given output dir at a time; the others say they wait."""
    lock_dir = cache_root() / "locks"
    _mkdir(lock_dir)
    path = lock_dir / (hashlib.sha1(str(out.resolve()).encode()).hexdigest() + ".lock")
    with contextlib.ExitStack() as stack:
        try:
            try:
                stack.enter_context(regular_lock(path, 0.2))
            except LockTimeout:
                if log:
                    log(f"waiting for another process preparing {out}")
                stack.enter_context(regular_lock(path, float("inf")))
        except OSError as e:
            raise DataError(f"cannot lock {path}: {e.strerror or e}") from None
        yield


def find_prepared(cfg) -> Path | None:
    """The prepared dir `cfg` would train on, if it is already there; None otherwise.
    Cheap and side-effect free (for plans and reports): never downloads or prepares, and
    only hashes a source file when its checksum is not remembered and it is small."""
    if cfg.data_dir:
        d = Path(cfg.data_dir).expanduser()
        return d if is_prepared(d) else None
    if cfg.dataset in SOURCES:
        files = {role: download_dir(cfg.dataset) / name
                 for role, name in SOURCES[cfg.dataset].items()}
        label = cfg.dataset
    else:
        p = Path(cfg.dataset).expanduser()
        if p.is_dir():
            return p if is_prepared(p) else None
        files, label = {"text": p}, _label_of(p)
    if not all(f.is_file() for f in files.values()):
        return None
    # a lookup (plan, report): it hashes small files but writes nothing, not even the memo
    shas = {r: file_sha256(f, memo_only=f.stat().st_size > SMALL_FILE, remember=False)
            for r, f in files.items()}
    if None in shas.values():
        return None
    vf = cfg.val_fraction if "text" in files else None
    out = _cache_dir_for(label, cfg.tokenizer, _combined_sha(shas), vf)
    ident = {"source_sha256": _combined_sha(shas), "tokenizer": cfg.tokenizer, "val_fraction": vf}
    return out if _matches(out, ident) else None


SMALL_FILE = 64 << 20  # find_prepared hashes files up to this size when not remembered


def _label_of(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem)[:40] or "text"


def _combined_sha(shas: dict[str, str]) -> str:
    """One identity for a source: its file's sha256, or a hash over role:sha lines."""
    if set(shas) == {"text"}:
        return shas["text"]
    return hashlib.sha256("".join(f"{r}:{shas[r]}\n" for r in sorted(shas)).encode()).hexdigest()


def _cache_dir_for(label: str, tokenizer: str, source_sha: str, vf: float | None) -> Path:
    key = f"{label}-{tokenizer}-{source_sha[:16]}" + (f"-val{vf:g}" if vf is not None else "")
    return cache_root() / "prepared" / key


def resolve_source(source: str, progress=None, log=None) -> tuple[dict[str, Path] | None, object]:
    """(role -> file, label) for a source; (None, dir) for an already-prepared dir."""
    if source in SOURCES:
        return fetch_source(source, progress, log), source
    p = Path(source).expanduser()
    if p.is_dir():
        load_meta(p)  # raises a clear error when the dir holds no prepared data
        return None, p
    if p.is_file():
        return {"text": p}, _label_of(p)
    if p.exists():
        raise DataError(f"{source} is not a regular file")
    raise DataError(f"no such file or dataset: {source!r} (use tinystories, shakespeare, "
                    "a UTF-8 text file or a prepared directory)")


# ---- helpers ------------------------------------------------------------------------

def _check_text_file(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if size == 0:
        raise DataError(f"{path} is empty")


def file_sha256(path: Path, progress: Progress | None = None, log=None,
                memo_only: bool = False, remember: bool = True) -> str | None:
    """sha256 of a file, remembered by (path, size, mtime) so reuse costs no re-read.
    With memo_only, None when it is not remembered; remember=False writes no memo."""
    st = path.stat()
    memo_path = cache_root() / "sha256.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(read_regular(memo_path, MAX_MEMO_BYTES))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    if memo_only:
        return None
    if log:
        log(f"checksumming {path.name}")
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
            done += len(block)
            if progress:
                progress(done, st.st_size)
    digest = h.hexdigest()
    memo[key] = digest
    if not remember:
        return digest
    try:
        _mkdir(memo_path.parent)
        atomic_write_bytes(memo_path, json.dumps(memo).encode())
    except (OSError, DataError):
        pass  # the memo is only a speed-up
    return digest


def _matches(out: Path, ident: dict) -> bool:
    try:
        meta = load_meta(out)
    except DataError:
        return False
    return all(meta.get(k) == v for k, v in ident.items())


def _mkdir(d: Path, for_path: Path | None = None) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {for_path or d}: {e.strerror or e}") from None


def _mkdtemp(out: Path, prefix: str) -> str:
    """A private build dir beside `out` (same filesystem, so the final rename is atomic),
    readable like an ordinary directory once installed (a course's shared folder)."""
    try:
        tmp = tempfile.mkdtemp(dir=out.parent, prefix=prefix)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        return tmp
    except OSError as e:
        raise DataError(f"cannot write to {out}: {e.strerror or e}") from None


def _source_access(files) -> int:
    """The permission bits prepared data may have: the group's and others' only where they
    can read every source file (its read bit, and search on its folder), since train.bin
    decodes back to the source: a private file never becomes a world-readable cache."""
    bits = 0o777
    for f in files:
        file_mode = f.stat().st_mode
        dir_mode = f.resolve().parent.stat().st_mode
        for shift in (3, 0):  # group, others
            if not (file_mode & (0o4 << shift) and dir_mode & (0o1 << shift)):
                bits &= ~(0o7 << shift)
    return bits


def _limit_modes(tmp: Path, bits: int) -> None:
    """The build dir and its files as a plain mkdir/open would make them, cut to `bits`."""
    umask = os.umask(0)
    os.umask(umask)
    for p in tmp.iterdir():
        os.chmod(p, 0o666 & ~umask & bits)
    os.chmod(tmp, 0o777 & ~umask & bits)


def _install(tmp: Path, out: Path) -> None:
    """Move the finished files into `out`; meta.json last, so its presence (with matching
    .bin sizes) means complete."""
    try:
        if not out.exists():
            os.rename(tmp, out)
            tmp.mkdir()  # so the caller's rmtree has something harmless to remove
            return
        os.chmod(out, stat.S_IMODE(out.stat().st_mode) & stat.S_IMODE(tmp.stat().st_mode))
        old_meta = out / "meta.json"
        if old_meta.exists():
            old_meta.unlink()  # out is being replaced: stop it looking prepared first
        for name in ("train.bin", "val.bin", "meta.json"):
            os.replace(tmp / name, out / name)
    except OSError as e:
        raise DataError(f"cannot write to {out}: {e.strerror or e}") from None
