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

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock, Timeout

from engine.download import SOURCES, fetch_source
from engine.tokenizers import (EOT_TEXT, DataError, cache_root, check_name,  # noqa: F401
                               from_meta, load_gpt2)

Progress = Callable[[int, int], None]
PREPARED_FILES = ("train.bin", "val.bin", "meta.json")
FORMAT_VERSION = 1


# ---- reading prepared data ----------------------------------------------------------

def load_meta(data_dir: str | os.PathLike) -> dict:
    """meta.json of a prepared dir, checked against the .bin sizes."""
    d = Path(data_dir)
    missing = [f for f in PREPARED_FILES if not (d / f).is_file()]
    if missing:
        raise DataError(f"{d} holds no prepared data (missing {', '.join(missing)})")
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{d / 'meta.json'}: unreadable: {e}") from None
    for key in ("vocab_size", "tokenizer", "dtype", "train_tokens", "val_tokens"):
        if key not in meta:
            raise DataError(f"{d / 'meta.json'}: missing key {key!r}")
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
    """Raise DataError unless both splits hold more than block_size tokens (training
    samples windows of block_size + 1 tokens from each)."""
    for split in ("train", "val"):
        n = meta[f"{split}_tokens"]
        if n <= block_size:
            raise DataError(f"the {split} split has {n:,} tokens, not more than block_size "
                            f"{block_size}: use a smaller block_size or more text"
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
    source_sha = (shas["text"] if "text" in shas else
                  hashlib.sha256("".join(f"{r}:{shas[r]}\n" for r in sorted(shas)).encode())
                  .hexdigest())
    vf = val_fraction if "text" in files else None
    ident = {"source_sha256": source_sha, "tokenizer": tokenizer, "val_fraction": vf}

    if out_dir is None:
        key = f"{label}-{tokenizer}-{source_sha[:16]}" + (f"-val{vf:g}" if vf is not None else "")
        out = cache_root() / "prepared" / key
    else:
        out = Path(out_dir).expanduser()
    if _matches(out, ident):
        return out
    lock_dir = cache_root() / "locks"
    _mkdir(lock_dir)
    lock = FileLock(str(lock_dir / (hashlib.sha1(str(out.resolve()).encode()).hexdigest()
                                    + ".lock")))
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        if log:
            log(f"waiting for another process preparing {out}")
        lock.acquire()
    try:
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
                meta = _build(files, tokenizer, val_fraction, tmp, tokenizer_files, progress)
            except OSError as e:  # disk full, vanished source, ...
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
            _install(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return out


def resolve_source(source: str, progress=None, log=None) -> tuple[dict[str, Path] | None, object]:
    """(role -> file, label) for a source; (None, dir) for an already-prepared dir."""
    if source in SOURCES:
        return fetch_source(source, progress, log), source
    p = Path(source).expanduser()
    if p.is_dir():
        load_meta(p)  # raises a clear error when the dir holds no prepared data
        return None, p
    if p.is_file():
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in p.stem)[:40] or "text"
        return {"text": p}, stem
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


def file_sha256(path: Path, progress: Progress | None = None, log=None) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so reuse costs no re-read."""
    st = path.stat()
    memo_path = cache_root() / "sha256.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
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
    try:
        _mkdir(memo_path.parent)
        fd, tmp = tempfile.mkstemp(dir=memo_path.parent, prefix=".sha256.")
        with os.fdopen(fd, "w") as f:
            json.dump(memo, f)
        os.replace(tmp, memo_path)
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


def _install(tmp: Path, out: Path) -> None:
    """Move the finished files into `out`; meta.json last, so its presence (with matching
    .bin sizes) means complete."""
    try:
        if not out.exists():
            os.rename(tmp, out)
            tmp.mkdir()  # so the caller's rmtree has something harmless to remove
            return
        old_meta = out / "meta.json"
        if old_meta.exists():
            old_meta.unlink()  # out is being replaced: stop it looking prepared first
        for name in ("train.bin", "val.bin", "meta.json"):
            os.replace(tmp / name, out / name)
    except OSError as e:
        raise DataError(f"cannot write to {out}: {e.strerror or e}") from None


# ---- the passes ---------------------------------------------------------------------
# Files are read in blocks cut at boundaries where tokenization does not depend on
# what follows (after a newline for char; after <|endoftext|>, or after a newline between
# two non-blank ASCII characters, for GPT-2's regex), so streaming gives the same ids as
# tokenizing whole texts. Memory is a few blocks, whatever the file size.

CHAR_BLOCK = 8 << 20
GPT2_BLOCK = 1 << 20
EOT_B = EOT_TEXT.encode()
PLACEHOLDER = 0  # NUL stands in for <|endoftext|> while mapping; text with NUL is refused


def _cut_newline(buf: bytes) -> int:
    return buf.rfind(b"\n") + 1


def _cut_gpt2(buf: bytes) -> int:
    j = buf.rfind(EOT_B)
    best = j + len(EOT_B) if j >= 0 else 0
    end = len(buf) - 1
    while (i := buf.rfind(b"\n", best, end)) > 0:
        if 0x21 <= buf[i - 1] <= 0x7E and 0x21 <= buf[i + 1] <= 0x7E:
            return i + 1
        end = i
    return best


def _cut_anywhere(buf: bytes) -> int:
    """The last UTF-8 character boundary that is not inside <|endoftext|>."""
    i = max(1, len(buf) - len(EOT_B))
    while i > 1 and (buf[i] & 0xC0) == 0x80:
        i -= 1
    j = buf.find(EOT_B, max(0, i - len(EOT_B) + 1), i + len(EOT_B))
    return j if 0 < j < i else i


def _blocks(path: Path, block: int, cut, progress=None, base: int = 0, total: int = 0):
    """Yield (offset, bytes) blocks of a file, each ending at a cut() boundary."""
    carry = b""
    offset = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(block)
            if not data:
                if carry:
                    yield offset, carry
                return
            buf = carry + data if carry else data
            i = cut(buf)
            if i <= 0:
                if len(buf) < 8 * block:  # no boundary yet: read on, up to a limit
                    carry = buf
                    continue
                i = _cut_anywhere(buf)
            yield offset, buf[:i]
            offset += i
            carry = buf[i:]
            if progress:
                progress(base + offset, total)


NON_ASCII = bytes(range(0x80, 0x100))
CONTINUATION = bytes(range(0x80, 0xC0))


class _Scan:
    """Pass 1 over one file: character count, separators, distinct characters, UTF-8
    validity. Work per block is a few C-speed passes: ASCII characters are found by
    deleting the ones already known (bytes.translate), non-ASCII ones by decoding only
    the runs of bytes >= 0x80 (valid UTF-8 iff each such run is)."""

    def __init__(self, path: Path, progress=None, base=0, total=0):
        self.ascii: set[int] = set()       # ASCII bytes seen outside separators
        self.other: set[str] = set()
        self.nchars = self.nsep = 0
        known = NON_ASCII
        for offset, b in _blocks(path, CHAR_BLOCK, _cut_newline, progress, base, total):
            nsep = b.count(EOT_B)
            self.nsep += nsep
            new = (b.replace(EOT_B, b"") if nsep else b).translate(None, known)
            if new:
                found = set(new)
                if 0 in found:
                    raise DataError(f"{path} is not text (it contains NUL bytes)")
                self.ascii |= found
                known += bytes(found)
            self.nchars += len(b)
            if not b.isascii():
                self.nchars -= self._non_ascii(b, path, offset)

    def _non_ascii(self, b: bytes, path: Path, offset: int) -> int:
        """Add the block's non-ASCII characters; return its continuation-byte count."""
        arr = np.frombuffer(b, np.uint8)
        idx = np.flatnonzero(arr >= 0x80)
        vals = arr[idx]
        breaks = np.flatnonzero(np.diff(idx) > 1) + 1  # starts of runs after the first
        joined = np.insert(vals, breaks, ord("\n")).tobytes()
        try:
            self.other.update(joined.decode("utf-8"))
        except UnicodeDecodeError as e:
            in_vals = e.start - int(np.searchsorted(breaks + np.arange(len(breaks)), e.start,
                                                    side="right"))
            raise DataError(f"{path} is not UTF-8 text (invalid byte at offset "
                            f"{offset + int(idx[min(in_vals, len(idx) - 1)]):,})") from None
        self.other.discard("\n")
        return int(np.count_nonzero((vals & 0xC0) == 0x80))


def _vocab(scans: list[_Scan]) -> tuple[list[str], int | None]:
    """Sorted distinct characters, not counting those only inside <|endoftext|>."""
    chars: set[str] = set()
    for s in scans:
        chars |= {chr(c) for c in s.ascii} | s.other
    chars = sorted(chars)
    return chars, (len(chars) if any(s.nsep for s in scans) else None)


class _Writer:
    """Appends id arrays to a .bin file from a background thread (numpy's tofile releases
    the GIL), so disk writes overlap the next block's encoding; at most two blocks wait."""

    def __init__(self, path: Path, dtype):
        self.f = open(path, "wb")
        self.dtype = dtype
        self.n = 0
        self.pool = ThreadPoolExecutor(1)
        self.pending: deque = deque()

    def write(self, ids: np.ndarray) -> None:
        ids = ids.astype(self.dtype, copy=False)
        self.n += len(ids)
        self.pending.append(self.pool.submit(ids.tofile, self.f))
        while len(self.pending) > 2:
            self.pending.popleft().result()

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown()
            self.f.close()


def _split_at(b: bytes, chars: int) -> tuple[bytes, bytes]:
    """Cut a block after `chars` characters, moved back to the start of a separator
    that the cut would fall inside."""
    s = b.decode("utf-8")
    j = s.find(EOT_TEXT, max(0, chars - len(EOT_TEXT) + 1))
    if 0 <= j < chars:
        chars = j
    return s[:chars].encode(), s[chars:].encode()


def _build(files: dict[str, Path], tokenizer: str, val_fraction: float, out: Path,
           tokenizer_files=None, progress=None) -> dict:
    """Tokenize files into out/train.bin and out/val.bin; return meta (without source)."""
    total = 2 * sum(p.stat().st_size for p in files.values())
    base = 0
    scans = {}
    for role, path in files.items():
        scans[role] = _Scan(path, progress, base, total)
        base += path.stat().st_size
    if tokenizer == "char":
        chars, eot = _vocab(list(scans.values()))
        vocab_size = len(chars) + (eot is not None)
        encode_block = _char_encoder(chars, eot)
        tok = None
    else:
        tok = load_gpt2(tokenizer_files)
        chars, eot, vocab_size = None, tok.eot_token, tok.vocab_size
    dtype = np.uint16 if vocab_size <= 65535 else np.uint32
    writers = {"train": _Writer(out / "train.bin", dtype), "val": _Writer(out / "val.bin", dtype)}
    try:
        if tok is None:
            _char_pass(files, scans, val_fraction, encode_block, writers, progress, base, total)
        else:
            _gpt2_pass(files, scans, val_fraction, tok.encoding, writers, progress, base, total)
    finally:
        for w in writers.values():
            w.close()
    if writers["train"].n == 0 or writers["val"].n == 0:
        empty = "train" if writers["train"].n == 0 else "val"
        raise DataError(f"the {empty} split is empty: the text is too small to split")
    nbytes = sum(p.stat().st_size for p in files.values())
    ntok = writers["train"].n + writers["val"].n
    meta = {"vocab_size": vocab_size, "tokenizer": tokenizer, "dtype": np.dtype(dtype).name}
    if chars is not None:
        meta["chars"] = chars
    meta.update(eot_token=eot, train_tokens=writers["train"].n, val_tokens=writers["val"].n,
                bytes_per_token=nbytes / ntok, source_bytes=nbytes)
    return meta


def _char_encoder(chars: list[str], eot: int | None):
    """A function bytes -> (ids, characters in those bytes) for one block."""
    vocab_size = len(chars) + (eot is not None)
    if vocab_size <= 255:  # ids 0..254; 255 marks non-ASCII characters
        return _char_encoder_bytes(chars, eot)
    return _char_encoder_utf32(chars, eot)


def _char_encoder_bytes(chars: list[str], eot: int | None):
    """Fast path for small vocabularies: one bytes.translate maps ASCII bytes to their ids,
    deletes UTF-8 continuation bytes and marks lead bytes with 255; only the few marked
    positions are then decoded and looked up."""
    table = bytearray(256)
    table[0xC0:] = b"\xff" * 64
    stoi = {c: i for i, c in enumerate(chars)}
    for c, i in stoi.items():
        if ord(c) < 128:
            table[ord(c)] = i
    if eot is not None:
        table[PLACEHOLDER] = eot
    table = bytes(table)
    other = {ord(c): i for c, i in stoi.items() if ord(c) >= 128}
    cps = np.fromiter(other, np.int64, len(other))
    ids_of = np.fromiter(other.values(), np.int64, len(other))
    order = np.argsort(cps)
    cps, ids_of = cps[order], ids_of[order]

    def encode(b: bytes) -> tuple[np.ndarray, int]:
        nsep = b.count(EOT_B) if eot is not None else 0
        if nsep:
            b = b.replace(EOT_B, bytes([PLACEHOLDER]))
        ids = np.frombuffer(b.translate(table, CONTINUATION), np.uint8).astype(np.uint16)
        if not b.isascii():
            arr = np.frombuffer(b, np.uint8)
            lead = np.flatnonzero(arr >= 0xC0)
            last = len(arr) - 1
            b0 = arr[lead].astype(np.int64)
            b1 = arr[np.minimum(lead + 1, last)].astype(np.int64) & 0x3F
            b2 = arr[np.minimum(lead + 2, last)].astype(np.int64) & 0x3F
            b3 = arr[np.minimum(lead + 3, last)].astype(np.int64) & 0x3F
            cp = np.where(b0 >= 0xF0, ((b0 & 7) << 18) | (b1 << 12) | (b2 << 6) | b3,
                          np.where(b0 >= 0xE0, ((b0 & 15) << 12) | (b1 << 6) | b2,
                                   ((b0 & 31) << 6) | b1))
            ids[np.flatnonzero(ids == 255)] = ids_of[np.searchsorted(cps, cp)]
        return ids, len(ids) + (len(EOT_B) - 1) * nsep
    return encode


def _char_encoder_utf32(chars: list[str], eot: int | None):
    """Any vocabulary: decode, view as UTF-32 code points, map through a full table."""
    dtype = np.uint16 if len(chars) < 65535 else np.uint32
    lut = np.zeros(0x110000, dtype)
    for i, c in enumerate(chars):
        lut[ord(c)] = i
    if eot is not None:
        lut[PLACEHOLDER] = eot

    def encode(b: bytes) -> tuple[np.ndarray, int]:
        nsep = b.count(EOT_B) if eot is not None else 0
        if nsep:
            b = b.replace(EOT_B, bytes([PLACEHOLDER]))
        ids = lut[np.frombuffer(b.decode("utf-8").encode("utf-32-le"), np.uint32)]
        return ids, len(ids) + (len(EOT_B) - 1) * nsep
    return encode


def _targets(files, scans, val_fraction):
    """(role, path, writer name, cut char or None): text files go to train then val."""
    for role, path in files.items():
        if role == "text":
            yield path, "train", int(scans[role].nchars * (1 - val_fraction))
        else:
            yield path, role, None


def _nchars(b: bytes) -> int:
    if b.isascii():
        return len(b)
    return len(b) - int(np.count_nonzero((np.frombuffer(b, np.uint8) & 0xC0) == 0x80))


def _char_pass(files, scans, val_fraction, encode_block, writers, progress, base, total):
    for path, dest, cut in _targets(files, scans, val_fraction):
        pos = 0
        for offset, b in _blocks(path, CHAR_BLOCK, _cut_newline, progress, base, total):
            if cut is None or pos >= cut:
                ids, n = encode_block(b)
                writers[dest if cut is None else "val"].write(ids)
            else:
                ids, n = encode_block(b)
                if pos + n <= cut:
                    writers["train"].write(ids)
                else:  # the block holding the cut: encode its two sides alone
                    head, tail = _split_at(b, cut - pos)
                    writers["train"].write(encode_block(head)[0])
                    writers["val"].write(encode_block(tail)[0])
            pos += n
        base += path.stat().st_size


def _cores() -> int:
    """Cores this process may run on (taskset / cgroup cpusets), not all of the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _gpt2_pass(files, scans, val_fraction, enc, writers, progress, base, total):
    workers = _cores()
    pending: deque = deque()

    def submit(text: bytes, dest: str) -> None:
        if not text:
            return
        s = text.decode("utf-8")
        pending.append((pool.submit(enc.encode_to_numpy, s, allowed_special={EOT_TEXT},
                                    disallowed_special=()), dest))
        while len(pending) > 2 * workers:
            drain_one()

    def drain_one() -> None:
        fut, dest = pending.popleft()
        writers[dest].write(fut.result())

    with ThreadPoolExecutor(workers) as pool:
        for path, dest, cut in _targets(files, scans, val_fraction):
            pos = 0
            for offset, b in _blocks(path, GPT2_BLOCK, _cut_gpt2, progress, base, total):
                if cut is None:
                    submit(b, dest)
                    continue
                n = _nchars(b)
                if pos + n <= cut:
                    submit(b, "train")
                elif pos >= cut:
                    submit(b, "val")
                else:
                    head, tail = _split_at(b, cut - pos)
                    submit(head, "train")
                    submit(tail, "val")
                pos += n
            base += path.stat().st_size
        while pending:
            drain_one()
