"""What produced a sweep's numbers, as report.md states it: the versions, device and host
its runs recorded in status.json (`provenance`, written by engine.train.provenance when a
run's process starts), once for the whole sweep, with the runs that differ named, since
a torch upgrade or another GPU halfway through a sweep changes what its numbers compare.
"""

from __future__ import annotations

import shlex
from collections import Counter
from pathlib import Path
from typing import Any

# what must agree for runs to compare; host and command are reported, never flagged
COMPARED = (("nanotui", "nanotui"), ("git_commit", "git commit"), ("python", "Python"),
            ("torch", "torch"), ("cuda", "CUDA"), ("device_name", "device"))
SHOWN = COMPARED + (("host", "host"),)


def _value(p: dict[str, Any], key: str) -> str:
    v = p.get(key)
    return "none" if v is None else str(v)


def shown_command(command: str, runs_root: Path | None) -> str:
    """A run's command as a hand-in shows it: no local paths (the interpreter by its name,
    the run directory below the runs directory's name)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return "(not shown: unparsable)"
    roots = []
    if runs_root is not None:
        roots = [str(Path(runs_root)), str(Path(runs_root).resolve())]
    out = []
    for i, w in enumerate(words):
        if i == 0:
            w = Path(w).name or w
        else:
            for r in sorted(roots, key=len, reverse=True):
                if w == r or w.startswith(r.rstrip("/") + "/"):
                    w = Path(runs_root).name + w[len(r.rstrip("/")):]
                    break
            else:
                if w.startswith("/"):
                    w = Path(w).name
        out.append(w)
    return shlex.join(out)


def _precision_differs(statuses: dict[str, dict[str, Any]]) -> list[str]:
    """The precision each run trained in (status.json dtype): one per sweep, or flagged."""
    dtypes = {name: st["dtype"] for name, st in statuses.items() if isinstance(st.get("dtype"), str)}
    counts = Counter(dtypes.values())
    if len(counts) < 2:
        return []
    usual = counts.most_common(1)[0][0]
    return ["**Warning:** runs differ in precision: `" + usual + "` for most, but "
            + "; ".join(f"{n}: `{d}`" for n, d in sorted(dtypes.items()) if d != usual) + "."]


def provenance_lines(statuses: dict[str, dict[str, Any]], runs_root: Path | None = None) -> list[str]:
    """Markdown lines for a sweep whose runs (name -> status.json dict) are given: the
    provenance they share, then one warning per field where runs differ (naming the runs
    off the most common value), then the runs that recorded none (imported or older).
    Commands are shown without local paths (shown_command)."""
    recorded = {name: st["provenance"] for name, st in statuses.items()
                if isinstance(st.get("provenance"), dict)}
    imported = [name for name, st in statuses.items() if isinstance(st.get("imported"), dict)]
    missing = [name for name in statuses if name not in recorded and name not in imported]
    lines: list[str] = []
    if recorded:
        common, differ = [], []
        for key, label in SHOWN:
            counts = Counter(_value(p, key) for p in recorded.values())
            usual = counts.most_common(1)[0][0]
            if len(counts) == 1:
                common.append(f"{label} `{usual}`")
            elif (key, label) in COMPARED:
                others = sorted(name for name, p in recorded.items() if _value(p, key) != usual)
                differ.append(f"**Warning:** runs differ in {label}: `{usual}` for most, but "
                              + "; ".join(f"{n}: `{_value(recorded[n], key)}`" for n in others)
                              + ".")
            else:
                common.append(f"{label} varies ({', '.join(f'`{v}`' for v in sorted(counts))})")
        lines.append(f"Recorded by {len(recorded)} of {len(statuses)} runs: "
                     + ", ".join(common) + ".")
        lines += differ
        commands = {name: p.get("command") for name, p in recorded.items() if p.get("command")}
        if commands:
            name, cmd = min(commands.items())
            lines.append(f"Command (of {name}; every run's is in its status.json): "
                         f"`{shown_command(cmd, runs_root)}`.")
    lines += _precision_differs(statuses)
    if imported:
        lines.append("Imported from nanoGPT (versions not recorded): "
                     + "; ".join(f"{n} from `{Path(str(statuses[n]['imported'].get('source', '?'))).name}`"
                                 for n in imported) + ".")
    if missing:
        lines.append("No provenance recorded (trained before nanotui recorded it): "
                     + ", ".join(missing) + ".")
    return lines
