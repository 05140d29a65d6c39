"""Files that readers never see half-written: temp file + fsync + rename, with the
permissions a plain open() gives (so a group on a shared server can read results), and
the sweep of temp files killed writers leave behind."""

from __future__ import annotations

import errno
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
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_no_space(e):
            raise NoSpace(path) from e
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


# ---- a full disk ------------------------------------------------------------------------------

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_no_space(e: BaseException | None) -> bool:
    """Whether `e` (or what caused it) is a full disk or quota. torch.save reports it as a
    RuntimeError ("PytorchStreamWriter failed writing file ... file write failed"), numpy's
    tofile as an OSError without errno ("2271100 requested and 1562624 written")."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return True
        if isinstance(e, OSError) and e.errno is None and " requested and " in str(e) \
                and str(e).endswith(" written"):
            return True
        if isinstance(e, RuntimeError) and ("file write failed" in str(e)
                                            or "No space left" in str(e)):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (the "device" a user frees)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while p != p.parent and not os.path.ismount(p):
        p = p.parent
    return p


class NoSpace(OSError):
    """A write that failed because the disk (or the quota) is full, in one line:
    "no space left on /scratch while writing ckpt.pt"."""

    def __init__(self, path: Path):
        path = Path(path)
        super().__init__(errno.ENOSPC, f"no space left on {mount_point(path)} while writing "
                                       f"{path.name}", str(path))
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def reserve_space(directory: Path, nbytes: int = 256 * 1024) -> Path | None:
    """Set aside nbytes in `directory` (a temp file the start-up sweep also removes), so
    that a process that runs out of space can free it and still record why. None when
    even that does not fit."""
    path = Path(directory) / f".space-reserve{TMP_SUFFIX}"
    try:
        with open(path, "wb") as f:
            f.write(b"\0" * nbytes)
            f.flush()
            os.fsync(f.fileno())
        return path
    except OSError:
        release_space(path)
        return None


def release_space(path: Path | None) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass
