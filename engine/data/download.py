"""Downloads of the named sources into the data cache: once, resumable, size-checked.

A download streams into `<file>.part` and is renamed to `<file>` only when the byte count
matches what the server announced (Content-Length / Content-Range), so a dropped or
truncated transfer never looks complete. A later call resumes the `.part` with an HTTP
Range request. Only the stdlib is used (urllib).
"""

from __future__ import annotations

import os
import re
import socket
import urllib.error
import urllib.request
from contextlib import ExitStack
from http.client import HTTPException
from pathlib import Path
from typing import Callable


from engine.data.tokenizers import DataError, cache_root
from engine.files import regular_lock

Progress = Callable[[int, int], None]

SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/"
                   "data/tinyshakespeare/input.txt")
TINYSTORIES_PATH = "datasets/roneneldan/TinyStories/resolve/main/"

# name -> {role: file name}; roles: "text" (split by val_fraction) or "train" + "val".
SOURCES: dict[str, dict[str, str]] = {
    "tinystories": {"train": "TinyStoriesV2-GPT4-train.txt",
                    "val": "TinyStoriesV2-GPT4-valid.txt"},
    "shakespeare": {"text": "input.txt"},
}
CHUNK = 1 << 20
ATTEMPTS = 3  # a dropped connection is resumed this many times within one call


def source_urls(name: str) -> dict[str, str]:
    """role -> URL. $NANOTUI_SOURCE_URL (a base URL; the file name is appended) points
    every named source at a mirror or a test server; HF_ENDPOINT moves TinyStories."""
    files = SOURCES[name]
    base = os.environ.get("NANOTUI_SOURCE_URL")
    if base:
        return {role: f"{base.rstrip('/')}/{fn}" for role, fn in files.items()}
    if name == "tinystories":
        hf = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        return {role: f"{hf}/{TINYSTORIES_PATH}{fn}" for role, fn in files.items()}
    return {"text": SHAKESPEARE_URL}


def download_dir(name: str) -> Path:
    return cache_root() / "downloads" / name


def fetch_source(name: str, progress: Progress | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Download a named source's files (once) and return role -> local path."""
    out = {}
    urls = source_urls(name)
    for role, url in urls.items():
        dest = download_dir(name) / SOURCES[name][role]
        if not dest.exists() and log:
            log(f"downloading {dest.name}")
        try:
            out[role] = download(url, dest, progress)
        except NetworkError as e:
            missing = [u for r, u in urls.items()
                       if not (download_dir(name) / SOURCES[name][r]).exists()]
            reason = str(e).split(" (", 1)[-1].split(");", 1)[0]
            # where the files go first, then where to get them (their common folder once)
            base = os.path.commonprefix(missing).rsplit("/", 1)[0] + "/"
            names = " and ".join(u[len(base):] for u in missing)
            raise DataError(f"cannot download {name} ({reason}): put {names} in "
                            f"{download_dir(name)}/ (from {base} on a machine with network)"
                            ) from None
    return out


def download(url: str, dest: Path, progress: Progress | None = None,
             timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` unless it is already there; resume `dest.part` if present."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest.parent}: {e.strerror or e}") from None
    with ExitStack() as stack:
        try:
            stack.enter_context(regular_lock(f"{dest}.lock", float("inf")))
        except OSError as e:
            raise DataError(f"cannot lock {dest}.lock: {e.strerror or e}") from None
        if dest.is_file():  # another process finished it while we waited
            return dest
        part = Path(str(dest) + ".part")
        error = ""
        for _ in range(ATTEMPTS):
            before = part.stat().st_size if part.exists() else 0
            try:
                if _fetch_into(url, part, progress, timeout):
                    os.replace(part, dest)
                    return dest
            except _Incomplete as e:
                error = str(e)
                after = part.stat().st_size if part.exists() else 0
                if after <= before:  # no progress at all: retrying will not help
                    break
        raise DataError(f"download of {url} is incomplete ({error}); run the command "
                        f"again to resume, or put the file at {dest} by hand")


class _Incomplete(Exception):
    pass


class NetworkError(DataError):
    """The server could not be reached at all."""


def _fetch_into(url: str, part: Path, progress: Progress | None, timeout: float) -> bool:
    """Append to `part` from where it stops. True when it holds the whole file."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "nanotui"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our .part is at (or past) the end: start again
            part.unlink()
            raise _Incomplete("the partial file did not match the server's") from None
        raise DataError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, socket.timeout, OSError, HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise NetworkError(f"cannot download {url} ({reason}); with no network, download "
                           f"it elsewhere and put it at {part.with_suffix('')}") from None
    with resp:
        total = None
        if resp.status == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:  # not the range we asked for
                part.unlink()
                raise _Incomplete("the server answered with another range; starting over")
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:  # 200: the server ignores Range; start over
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        done = have
        try:
            with open(part, mode) as f:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total or 0)
        except (OSError, HTTPException, socket.timeout) as e:
            if isinstance(e, OSError) and e.errno in (28, 13, 30):  # ENOSPC EACCES EROFS
                raise DataError(f"cannot write {part}: {e.strerror}") from None
            raise _Incomplete(f"connection lost after {done:,} bytes: {type(e).__name__}") \
                from None
    if total is not None and done != total:
        raise _Incomplete(f"got {done:,} of {total:,} bytes")
    return True
