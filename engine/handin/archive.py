"""Reading a hand-in bundle safely: every member is checked before anything is extracted.

A bundle comes from a student: it may hold paths outside its root (`../x`, `/etc/x`),
symlinks, hard links, device files or FIFOs, or be a tar bomb (a few KB that claims
gigabytes or millions of members). Those are refused, in one line, while walking the
headers; file contents are then read into memory from the archive (bounded by the same
limits). Nothing is ever extracted to disk: verify and rerun work from memory.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine.handin.bundle import MANIFEST, BundleError

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 2 * 1024**3      # sum of the members' sizes
MAX_FILE_BYTES = 1024**3           # one member
MAX_RATIO = 200                    # uncompressed / compressed; text compresses ~5-10x


@dataclass(frozen=True)
class Bundle:
    path: Path
    root: str
    files: dict[str, bytes]          # relative path (without the root) -> contents
    manifest: dict


def _check_member(m: tarfile.TarInfo, root: str | None) -> str:
    """The member's root folder; BundleError when the member is unsafe."""
    name = m.name
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name or "\0" in name or not p.parts:
        raise BundleError(f"refused: member {name!r} points outside the archive root")
    if m.issym() or m.islnk():
        raise BundleError(f"refused: member {name!r} is a link")
    if not (m.isreg() or m.isdir()):
        raise BundleError(f"refused: member {name!r} is a device file, FIFO or other special file")
    if root is not None and p.parts[0] != root:
        raise BundleError(f"refused: member {name!r} is outside the archive root {root}/")
    if m.isreg() and m.size > MAX_FILE_BYTES:
        raise BundleError(f"refused: member {name!r} claims {m.size:,} bytes (limit {MAX_FILE_BYTES:,})")
    return p.parts[0]


def scan(path: Path) -> list[tarfile.TarInfo]:
    """Every member's header, checked; BundleError (one line) on the first unsafe one."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle (or not a regular file)")
    packed = path.stat().st_size
    members: list[tarfile.TarInfo] = []
    total, root = 0, None
    try:
        with tarfile.open(path, mode="r:gz") as tf:
            while (m := tf.next()) is not None:
                root = _check_member(m, root)
                members.append(m)
                total += m.size if m.isreg() else 0
                if len(members) > MAX_MEMBERS:
                    raise BundleError(f"refused: more than {MAX_MEMBERS:,} members (a tar bomb?)")
                if total > MAX_TOTAL_BYTES or total > MAX_RATIO * max(packed, 1) + 2**20:
                    raise BundleError(f"refused: members claim {total:,} bytes from a "
                                      f"{packed:,}-byte archive (a tar bomb?)")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise BundleError(f"{path}: not a readable .tar.gz ({e})") from None
    if not members:
        raise BundleError(f"{path}: an empty archive")
    return members


def open_bundle(path: Path) -> Bundle:
    """The bundle's files in memory, after scan() accepted every header."""
    members = scan(path)
    root = PurePosixPath(members[0].name).parts[0]
    files: dict[str, bytes] = {}
    with tarfile.open(path, mode="r:gz") as tf:
        for m in tf:
            if not m.isreg():
                continue
            rel = PurePosixPath(m.name).relative_to(root).as_posix()
            f = tf.extractfile(m)
            data = f.read(MAX_FILE_BYTES + 1) if f is not None else b""
            if rel in files:
                raise BundleError(f"refused: {rel} appears twice in the archive")
            files[rel] = data
    if MANIFEST not in files:
        raise BundleError(f"{path}: no {MANIFEST} at {root}/{MANIFEST}")
    try:
        manifest = json.loads(files[MANIFEST])
        assert isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)
    except (ValueError, AssertionError):
        raise BundleError(f"{path}: {MANIFEST} is not a bundle manifest") from None
    return Bundle(Path(path), root, files, manifest)


def manifest_problems(b: Bundle) -> list[str]:
    """Files missing from the archive, extra in it, or altered (sha256 or size differ)."""
    listed = b.manifest["files"]
    have = {k for k in b.files if k != MANIFEST}
    out = [f"{k}: missing (listed in {MANIFEST}, not in the archive)" for k in sorted(set(listed) - have)]
    out += [f"{k}: extra file (not in {MANIFEST})" for k in sorted(have - set(listed))]
    for k in sorted(have & set(listed)):
        want = listed[k] if isinstance(listed[k], dict) else {}
        if hashlib.sha256(b.files[k]).hexdigest() != want.get("sha256"):
            out.append(f"{k}: altered (sha256 differs from {MANIFEST})")
    return out

