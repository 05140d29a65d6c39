"""The tokenizing passes behind engine.data.datasets.prepare: stream a text file in blocks, find
the character vocabulary, and write train.bin / val.bin with bounded memory.

Files are read in blocks cut at boundaries where tokenization does not depend on what
follows (after a newline for char; after <|endoftext|>, or after a newline between two
non-blank ASCII characters, for GPT-2's regex), so streaming gives the same ids as
tokenizing whole texts. Memory is a few blocks, whatever the file size.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine.data.tokenizers import EOT_TEXT, DataError, load_gpt2

CHAR_BLOCK = 8 << 20
GPT2_BLOCK = 1 << 20
EOT_COUNTS = np.array(sorted({(c, EOT_TEXT.encode().count(c)) for c in EOT_TEXT.encode()}))
MAX_CARRY_BLOCKS = 8  # beyond this with no boundary, cut at any character boundary
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
                if len(buf) < MAX_CARRY_BLOCKS * block:  # no boundary yet: read on, to a limit
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
            rest = b.translate(None, known)  # usually only separator characters are left
            if rest:
                counts = np.bincount(np.frombuffer(rest, np.uint8), minlength=128)
                if counts[0]:
                    raise DataError(f"{path} is not text (it contains NUL bytes)")
                counts[EOT_COUNTS[:, 0]] -= nsep * EOT_COUNTS[:, 1]
                # a character counts only if it occurs outside the separators too
                found = {int(c) for c in np.flatnonzero(counts > 0)}
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


def build(files: dict[str, Path], tokenizer: str, val_fraction: float, out: Path,
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
    """A function bytes -> (ids, characters in those bytes) for one block.

    One bytes.translate maps every ASCII byte to its id (ASCII characters sort first, so
    their ids are below 128), deletes UTF-8 continuation bytes, and marks each non-ASCII
    character's lead byte with 255 and each <|endoftext|> (replaced by NUL) with 254; only
    the marked positions are then decoded and looked up."""
    big = len(chars) + (eot is not None) > 65535
    dtype = np.uint32 if big else np.uint16
    stoi = {c: i for i, c in enumerate(chars)}
    table = bytearray(256)
    table[0xC0:] = b"\xff" * 64
    table[PLACEHOLDER] = 254
    for c, i in stoi.items():
        if ord(c) < 128:
            table[ord(c)] = i
    table = bytes(table)
    other = sorted((ord(c), i) for c, i in stoi.items() if ord(c) >= 128)
    cps = np.array([cp for cp, _ in other], np.int64)
    ids_of = np.array([i for _, i in other], dtype)

    def encode(b: bytes) -> tuple[np.ndarray, int]:
        nsep = 0
        if eot is not None:
            n = len(b)
            b = b.replace(EOT_B, bytes([PLACEHOLDER]))
            nsep = (n - len(b)) // (len(EOT_B) - 1)
        small = np.frombuffer(b.translate(table, CONTINUATION), np.uint8)
        ids = small.astype(dtype)
        if nsep:
            ids[small == 254] = eot
        if not b.isascii():
            ids[small == 255] = ids_of[np.searchsorted(cps, _lead_code_points(b))]
        return ids, len(ids) + (len(EOT_B) - 1) * nsep
    return encode


def _lead_code_points(b: bytes) -> np.ndarray:
    """Code points of the non-ASCII characters of valid UTF-8 bytes, in order."""
    arr = np.frombuffer(b, np.uint8)
    lead = np.flatnonzero(arr >= 0xC0)
    last = len(arr) - 1
    b0 = arr[lead].astype(np.int64)
    b1 = arr[np.minimum(lead + 1, last)].astype(np.int64) & 0x3F
    b2 = arr[np.minimum(lead + 2, last)].astype(np.int64) & 0x3F
    b3 = arr[np.minimum(lead + 3, last)].astype(np.int64) & 0x3F
    return np.where(b0 >= 0xF0, ((b0 & 7) << 18) | (b1 << 12) | (b2 << 6) | b3,
                    np.where(b0 >= 0xE0, ((b0 & 15) << 12) | (b1 << 6) | b2,
                             ((b0 & 31) << 6) | b1))


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
    """GPT-2 encoding threads: $NANOTUI_PREPARE_THREADS, else the cores this process may
    run on (taskset / cgroup cpusets), not all of the machine's."""
    env = os.environ.get("NANOTUI_PREPARE_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
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
