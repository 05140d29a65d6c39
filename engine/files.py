"""Files that readers never see half-written: temp file + fsync + rename, with the
permissions a plain open() gives (so a group on a shared server can read results), and
the sweep of temp files killed writers leave behind; and the one way nanotui opens a file
in a shared or cache directory (regular files only, bounded reads, non-blocking locks)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable

TMP_SUFFIX = ".tmp"   # atomic_write's temporary files: .<name>.<random>.tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def user_cache_dir() -> Path:
    """This user's cache: $NANOTUI_CACHE_DIR, else $XDG_CACHE_HOME/nanotui, else
    ~/.cache/nanotui (built kernels, CPU tunings, the last good policy, CUDA's order)."""
    root = os.environ.get("NANOTUI_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nanotui"


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


def save_png(fig: Any, path: Path, dpi: int = 150) -> None:
    """A matplotlib figure written as a PNG by atomic_write: a report killed mid-write
    leaves the old figure or the new one, never a truncated file."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


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


# ---- files in shared or cache directories ------------------------------------------------------
#
# Anyone who can write a shared directory (the reservations dir is world-writable by design)
# or a cache can put a FIFO there (open() blocks until a writer comes: forever), a symlink to
# /dev/zero (read() never ends) or to a file of theirs. Every open of such a file goes
# through open_regular: O_NONBLOCK so a FIFO cannot block the open, O_NOFOLLOW so a link is
# refused, fstat so only a regular file is read, and a bound on how much is read.

_SAFE_FLAGS = os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """A path in a shared or cache directory that is not a plain file (a FIFO, a device, a
    link, a folder): refused without being read."""


class FileTooLarge(OSError):
    """A file longer than its reader's bound: refused without reading the rest."""


def open_regular(path: Path | str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """A descriptor of `path` if it is a regular file (created with `mode` where flags has
    O_CREAT), opened without blocking and without following a final symlink; raises
    NotRegularFile (an OSError) otherwise. The descriptor is left blocking again, which a
    regular file never is anyway."""
    try:
        fd = os.open(path, flags | _SAFE_FLAGS, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:  # what O_NOFOLLOW says of a symlink
            raise NotRegularFile(errno.ELOOP, "a symbolic link, not a file", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes (open_regular's checks); raises
    FileTooLarge for a longer one, without reading past the bound."""
    data, _ = read_regular_stat(path, max_bytes)
    return data


def read_regular_stat(path: Path | str, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """read_regular and the file's fstat (its owner, its mode) from the same descriptor."""
    fd = open_regular(path)
    try:
        st = os.fstat(fd)
        if st.st_size > max_bytes:
            raise FileTooLarge(errno.EFBIG, f"over {max_bytes} bytes", str(path))
        chunks, n = [], 0
        while n <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        if n > max_bytes:  # grew while we read it
            raise FileTooLarge(errno.EFBIG, f"over {max_bytes} bytes", str(path))
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_regular_json(path: Path | str, max_bytes: int) -> Any:
    """json.loads of read_regular; ValueError for bad JSON, OSError for a bad file."""
    return json.loads(read_regular(path, max_bytes))


class LockTimeout(OSError):
    """A lock file still held by another process after the wait allowed."""


@contextmanager
def regular_lock(path: Path | str, timeout_s: float, shared_dir: bool = False) -> Iterator[None]:
    """An exclusive flock on the regular file `path` (created when missing), polled until
    timeout_s (LockTimeout after). The file is opened with open_regular's checks, so a FIFO
    or a symlink planted in its place is refused (NotRegularFile) rather than blocking or
    following it. With shared_dir the file is opened read-only, created 0444: anyone may
    take the lock whoever created the file. The file is never deleted (deleting lock files
    lets two holders in)."""
    flags = (os.O_RDONLY if shared_dir else os.O_RDWR) | os.O_CREAT
    fd = open_regular(path, flags, 0o444 if shared_dir else 0o666 & ~_umask())
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(errno.EAGAIN, f"held for over {timeout_s:.0f} s by "
                                                    f"another process", str(path)) from None
                time.sleep(0.01 if timeout_s < 60 else 0.1)
        yield
    finally:
        os.close(fd)  # releases the lock
