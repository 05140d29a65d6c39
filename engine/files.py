"""Files that readers never see half-written: temp file + fsync + rename, with the
permissions a plain open() gives (so a group on a shared server can read results), and
the sweep of temp files killed writers leave behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

TMP_SUFFIX = ".tmp"   # atomic_write's temporary files: .<name>.<random>.tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call write(f) on a temporary file beside `path`, fsync, then rename over it: a
    reader (or a crash) sees the old file or the new one, never half of one. The file
    gets the permissions a plain open() would (0666 less the umask: 0644 usually), not
    mkstemp's 0600, so a group on a shared server can read results."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=json_default) + "\n").encode())


def json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def remove_stale_temp_files(directory: Path) -> int:
    """Delete atomic_write temp files left by killed writers (a killed checkpoint write
    leaves a whole checkpoint's worth); call it only where no writer can be running, e.g.
    when a run's process starts. Returns how many were removed."""
    n = 0
    for tmp in Path(directory).glob(f".*{TMP_SUFFIX}"):
        try:
            tmp.unlink()
            n += 1
        except OSError:
            pass
    return n
