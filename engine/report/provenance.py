"""What produced a sweep's numbers, as report.md states it: the versions, device and host
its runs recorded in status.json (`provenance`, written by engine.train.provenance when a
run's process starts), once for the whole sweep, with the runs that differ named, since
a torch upgrade or another GPU halfway through a sweep changes what its numbers compare.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# what must agree for runs to compare; host and command are reported, never flagged
COMPARED = (("nanotui", "nanotui"), ("git_commit", "git commit"), ("python", "Python"),
            ("torch", "torch"), ("cuda", "CUDA"), ("device_name", "device"))
SHOWN = COMPARED + (("host", "host"),)


def _value(p: dict[str, Any], key: str) -> str:
    v = p.get(key)
    return "none" if v is None else str(v)


def provenance_lines(statuses: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines for a sweep whose runs (name -> status.json dict) are given: the
    provenance they share, then one warning per field where runs differ (naming the runs
    off the most common value), then the runs that recorded none (imported or older)."""
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
            lines.append(f"Command (of {name}; every run's is in its status.json): `{cmd}`.")
    if imported:
        lines.append("Imported from nanoGPT (versions not recorded): "
                     + "; ".join(f"{n} from `{statuses[n]['imported'].get('source', '?')}`"
                                 for n in imported) + ".")
    if missing:
        lines.append("No provenance recorded (trained before nanotui recorded it): "
                     + ", ".join(missing) + ".")
    return lines
