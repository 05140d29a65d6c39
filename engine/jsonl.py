"""JSON-lines files of a run (metrics.jsonl, samples.jsonl, eval.jsonl) as readers may rely on them:
an incremental tail that skips, and names, lines of the wrong shape, the record checks,
and the truncation a resume makes. engine.runs owns the layout; this is its line reader."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.files import atomic_write_bytes


CHUNK_BYTES = 8 << 20


def _json_type(x: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(x), type(x).__name__)


def truncate_jsonl_after(path: Path, iter_num: int) -> None:
    """Keep complete lines whose "iter" is <= iter_num; rewrite atomically."""
    if not path.exists():
        return
    keep: list[str] = []
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # torn last line
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and _num_or_zero(rec.get("iter")) <= iter_num:
                keep.append(raw.decode())
    atomic_write_bytes(path, "".join(keep).encode())


def _num_or_zero(x: Any) -> float:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else 0


def metric_record(rec: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A metrics.jsonl record as readers may rely on it (a numeric iter, numbers or null
    for the losses), and what is wrong with it: (rec, "") or (None, why it is skipped)."""
    if not isinstance(rec.get("iter"), (int, float)) or isinstance(rec.get("iter"), bool):
        return None, f"iter is {_json_type(rec.get('iter'))}, not a number"
    for k in ("loss", "train_loss", "val_loss", "tok_s", "tokens", "t"):
        v = rec.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return None, f"{k} is {_json_type(v)}, not a number"
    return rec, ""


def sample_record(rec: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A samples.jsonl record (text a string, metrics an object) and what is wrong with it:
    a record with scores of another shape keeps its text and loses the scores; one without
    text is skipped."""
    if not isinstance(rec.get("text"), str):
        return None, f"text is {_json_type(rec.get('text'))}, not a string"
    if not isinstance(rec.get("metrics", {}), dict):
        return {**rec, "metrics": {}}, f"metrics is {_json_type(rec['metrics'])}, not an object"
    return rec, ""


def text_eval_record(rec: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """An eval.jsonl record (`nanotui eval` of a run on a text): the numbers every table
    shows, and the text's sha256 that names its column; one without them is skipped."""
    for k in ("bits_per_byte", "loss", "tokens", "block_size"):
        v = rec.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None, f"{k} is {_json_type(v)}, not a number"
    sha = rec.get("text_sha256")
    if not isinstance(sha, str) or len(sha) != 64 or sha.strip("0123456789abcdef"):
        return None, f"text_sha256 is {_json_type(sha)}, not a sha256 (64 hex digits)"
    return rec, ""


class JsonlTail:
    """Reads a JSON-lines file incrementally: each call returns only records whose
    complete lines arrived since the last call. A partial last line waits for its
    newline; a line that does not parse, is not a JSON object, or fails `check` is skipped
    and the first such line is kept in `damage` ("metrics.jsonl: line 7: a list, not an
    object"). The cost of a call is the size of what is new, not of the file."""

    def __init__(self, path: Path,
                 check: Callable[[dict[str, Any]], tuple[dict[str, Any] | None, str]] | None = None,
                 tail_bytes: int | None = None):
        self.path = Path(path)
        self.check = check  # validates (or mends) each record: (record or None, what is wrong)
        self.offset = 0
        self.reset = False
        self.lines = 0
        self.damage = ""
        self._inode: int | None = None
        # only the last tail_bytes (from a line start): a view of a long run's latest lines
        self.tail_bytes = tail_bytes

    def read_new(self) -> list[dict[str, Any]]:
        return list(self.iter_new())

    def iter_new(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[dict[str, Any]]:
        """read_new's records, read CHUNK_BYTES at a time: a reader that keeps only what it
        shows (a downsampled curve) holds one chunk, not the whole file, in memory."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if self._inode is not None and (st.st_ino != self._inode or st.st_size < self.offset):
            self.offset = self.lines = 0  # replaced or truncated (a resume rewrote it): read again
            self.reset, self.damage = True, ""
        first = self._inode is None
        self._inode = st.st_ino
        size = st.st_size
        with open(self.path, "rb") as f:
            if first and self.tail_bytes is not None and size > self.tail_bytes:
                f.seek(size - self.tail_bytes - 1)
                f.readline()  # to the start of the next whole line
                self.offset, self.lines = f.tell(), -1
            while self.offset < size:
                f.seek(self.offset)
                data = f.read(min(chunk_bytes, size - self.offset))
                end = data.rfind(b"\n")
                if end < 0:
                    if len(data) < chunk_bytes:
                        return  # a partial last line: it waits for its newline
                    data = data + f.readline()  # one line longer than a chunk
                    end = len(data) - 1
                    if not data.endswith(b"\n"):
                        return
                self.offset += end + 1
                for raw in data[: end + 1].split(b"\n")[:-1]:
                    rec, why = self._record(raw)
                    if self.lines >= 0:
                        self.lines += 1
                    if why and not self.damage:
                        where = f"line {self.lines}" if self.lines >= 0 else "near the end"
                        self.damage = f"{self.path.name}: {where}: {why}"
                    if rec is not None:
                        yield rec

    def _record(self, raw: bytes) -> tuple[dict[str, Any] | None, str]:
        if not raw.strip():
            return None, ""
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, "not valid JSON"
        if not isinstance(rec, dict):
            return None, f"{_json_type(rec)}, not an object"
        return self.check(rec) if self.check else (rec, "")

    def take_reset(self) -> bool:
        """True once after the file was replaced or truncated (callers drop old data)."""
        r, self.reset = self.reset, False
        return r


class Thinned:
    """At most 2n items of a stream, evenly spaced: every k-th, k doubling whenever 2n are
    held, and the last item always. Linear time, bounded memory: a curve of a million
    logged steps keeps a few thousand points, which is all a figure can show."""

    def __init__(self, n: int):
        self.n, self.k, self.seen = n, 1, 0
        self.items: list[Any] = []
        self.last: Any = None

    def add(self, x: Any) -> None:
        if self.seen % self.k == 0:
            self.items.append(x)
            if len(self.items) >= 2 * self.n:
                self.items, self.k = self.items[::2], self.k * 2
        self.seen += 1
        self.last = x

    def result(self) -> list[Any]:
        if self.items and self.items[-1] is not self.last:
            return self.items + [self.last]
        return list(self.items)
