"""`nanotui bundle SWEEP... -o NAME.tar.gz`: the hand-in a TA can verify and re-run.

Layout of the archive, everything under one root folder NAME/:

    MANIFEST.json                 format, nanotui version, sweeps, one entry per run (its
                                  data folder), and {path: {sha256, size}} of every other file
    experiments.toml              the experiments file the runs came from (when there is one)
    runs/<sweep>/<run>/           config.toml, metrics.jsonl, samples.jsonl, status.json,
                                  stdout.log, eval.jsonl (when evaluated), best.pt (only
                                  with --with-checkpoints best)
    data/<sha16>-<tokenizer>/meta.json   the prepared data's meta.json (source_sha256 in it)
    reports/...                   the reports of the sweeps, written afresh (no plots)

Each file is read once into memory, hashed and added from those bytes, so a file that
changes while bundling cannot disagree with its manifest entry. Only finished runs
(done, failed, stopped) are bundled: a running run's files still move.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

from engine.errors import UserError
from engine.report.meta import find_meta
from engine.report.write import write_report
from engine.runs import (BEST, CONFIG, EVALS, FINAL_STATES, METRICS, SAMPLES, STATUS, STDOUT,
                         RunDir, list_runs, list_shared)
from engine.version import nanotui_version

BUNDLE_FORMAT = 1
MANIFEST = "MANIFEST.json"
RUN_FILES = (CONFIG, METRICS, SAMPLES, STATUS, STDOUT)   # required in every bundled run
OPTIONAL_RUN_FILES = (EVALS,)
CHECKPOINT_CHOICES = ("none", "best")


class BundleError(UserError):
    """A bundle that cannot be written or read: one line."""


def bundle_root(out: Path) -> str:
    name = out.name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise BundleError(f"{out}: the bundle's name must end in .tar.gz")


def _sweep_runs(runs_root: Path, sweeps: list[str]) -> list[RunDir]:
    runs = list_runs(runs_root)
    out: list[RunDir] = []
    for sweep in sweeps:
        mine = [r for r in runs if r.sweep == sweep]
        mine += [owner for link, owner in list_shared(runs_root) if link.sweep == sweep]
        if not mine:
            raise BundleError(f"no sweep {sweep!r} under {runs_root}")
        out += [r for r in mine if r not in out]
    return out


def write_bundle(runs_root: Path, sweeps: list[str], out: Path, experiments: Path | None = None,
                 checkpoints: str = "none",
                 progress: Callable[[str], None] | None = None) -> dict:
    """Write the bundle to `out` (atomically: nothing is left behind on an error) and
    return its manifest."""
    say = progress or (lambda _m: None)
    out = Path(out)
    root = bundle_root(out)
    if checkpoints not in CHECKPOINT_CHOICES:
        raise BundleError(f"--with-checkpoints must be one of {', '.join(CHECKPOINT_CHOICES)}")
    if out.exists():
        raise BundleError(f"{out} exists; remove it or choose another name")
    if not out.parent.is_dir():
        raise BundleError(f"{out.parent}: no such directory")
    runs = _sweep_runs(Path(runs_root), sweeps)
    files: dict[str, bytes] = {}
    entries = []
    for r in runs:
        st = r.read_status()
        if st.get("state") not in FINAL_STATES:
            raise BundleError(f"{r.id} is {st.get('state') or 'queued'}; bundle once it finished")
        base = f"runs/{r.id}"
        for name in RUN_FILES + OPTIONAL_RUN_FILES:
            p = r.path / name
            if p.is_file():
                files[f"{base}/{name}"] = p.read_bytes()
            elif name in RUN_FILES:
                raise BundleError(f"{r.id}: {name} is missing; cannot bundle this run")
        if checkpoints == "best":
            if not r.best_path.is_file():
                raise BundleError(f"{r.id}: no {BEST} to bundle")
            files[f"{base}/{BEST}"] = r.best_path.read_bytes()
        meta, where = find_meta(_config_or_none(r), st, Path(runs_root))
        if meta is None:
            raise BundleError(f"{r.id}: the prepared data's meta.json: {where}")
        sha = str(meta.get("source_sha256") or "")
        if not sha:
            raise BundleError(f"{r.id}: {where} has no source_sha256 (data prepared by "
                              "another tool); run `nanotui prepare` for it")
        data = f"data/{sha[:16]}-{meta.get('tokenizer')}/meta.json"
        files[data] = json.dumps(meta, indent=1).encode() + b"\n"
        entries.append({"id": r.id, "data": data, "state": st.get("state")})
    if experiments is not None and Path(experiments).is_file():
        files["experiments.toml"] = Path(experiments).read_bytes()
    say("writing the reports")
    with tempfile.TemporaryDirectory(prefix="nanotui-bundle-") as tmp:
        write_report(Path(runs_root), sweeps, Path(tmp) / "reports", plots=False)
        for p in sorted((Path(tmp) / "reports").rglob("*")):
            if p.is_file():
                files[f"reports/{p.relative_to(Path(tmp) / 'reports').as_posix()}"] = p.read_bytes()
    manifest = {
        "format": BUNDLE_FORMAT, "nanotui": nanotui_version(), "created": time.time(),
        "sweeps": list(sweeps), "runs": entries, "checkpoints": checkpoints,
        "files": {k: {"sha256": hashlib.sha256(v).hexdigest(), "size": len(v)}
                  for k, v in sorted(files.items())},
    }
    files[MANIFEST] = json.dumps(manifest, indent=1).encode() + b"\n"
    say(f"writing {out} ({len(files)} files)")
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tf:
            _add_dir(tf, root)
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(f"{root}/{name}")
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tf.addfile(info, io.BytesIO(data))
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return manifest


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
    tf.addfile(info)


def _config_or_none(r: RunDir):
    try:
        return r.load_config()
    except Exception:  # a damaged config: find_meta still searches by status.json
        return None
