"""The GPU panel: per unit (card or MIG instance) load with a short history, our runs on
it, other users' memory; units outside our share (CUDA_VISIBLE_DEVICES, Slurm) are
marked "not ours"."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.widgets import Static

from engine.report.reading import RunReading, others_on_gpu, runs_on_gpu
from tui.widgets.format import fmt_bytes, sparkline

HISTORY = 30  # samples kept per card (one per GPU poll)


class GpuHistory:
    """Utilization and memory history per card uuid (the app keeps one for its lifetime)."""

    def __init__(self, length: int = HISTORY) -> None:
        self.length = length
        self.util: dict[str, deque] = {}
        self.mem: dict[str, deque] = {}

    def add(self, gpus: list[Any]) -> None:
        for g in gpus:
            self.util.setdefault(g.uuid, deque(maxlen=self.length)).append(g.utilization or 0)
            frac = 100.0 * g.memory_used / g.memory_total if g.memory_total else 0.0
            self.mem.setdefault(g.uuid, deque(maxlen=self.length)).append(frac)


def render_gpus(gpus: list[Any], views: list[RunReading], history: GpuHistory,
                width: int = 60, share: str | None = None) -> Text:
    out = Text()
    if share:  # the fair-share policy: our share and use, who else is on the cards
        out.append(share + "\n", style="cyan")
    if not gpus:
        out.append("CPU only", style="bold")
        out.append(" (no GPU found through NVML)\n", style="dim")
    for g in gpus:
        ours = runs_on_gpu(g, views)
        util = g.utilization
        out.append(f"{g.label} ", style="bold" if g.ours else "dim")
        out.append(f"{g.name.removeprefix('NVIDIA ')[:32]}", style="bold" if g.ours else "dim")
        out.append("" if g.ours else "  not ours", style="yellow")
        out.append("\n")
        load = f"  util {'?' if util is None else f'{util:3d}'}% "
        mem = f"  mem {fmt_bytes(g.memory_used)}/{fmt_bytes(g.memory_total)} "
        temp = "" if g.temperature is None else f"  {g.temperature}°C"
        power = "" if g.power_w is None else f" {g.power_w:.0f}W"
        # the two sparklines take what the numbers leave, so the line never wraps ("72W"
        # alone on the next line)
        spark_w = max(0, min(8, (width - len(load + mem + temp + power)) // 2))
        out.append(load)
        if spark_w:
            out.append(sparkline(history.util.get(g.uuid, ()), spark_w, top=100), style="green")
        out.append(mem)
        if spark_w:
            out.append(sparkline(history.mem.get(g.uuid, ()), spark_w, top=100), style="magenta")
        out.append(f"{temp}{power}\n")
        other = others_on_gpu(g, views)
        names = ", ".join(v.id for v in ours) or "none of ours"
        out.append("  runs: ", style="dim")
        out.append(names)
        if other:
            out.append(f"  others: {fmt_bytes(other)}", style="yellow")
        out.append("\n")
    on_cpu = [v for v in views if v.state == "running" and (v.device == "cpu" or not v.device)]
    elsewhere = [v for v in views if v.state == "running" and v not in on_cpu and
                 not any(v in runs_on_gpu(g, views) for g in gpus)]
    if on_cpu or not gpus:
        out.append("cpu: ", style="dim")
        out.append(", ".join(v.id for v in on_cpu) or "no runs", style="" if on_cpu else "dim")
        out.append("\n")
    for v in elsewhere:  # e.g. a Slurm node: what the run recorded in status.json
        where = f"{v.host} " if v.host else ""
        out.append(f"{v.id}: {where}{v.device}\n", style="dim")
    out.rstrip()
    return out


class GpuPanel(Static):
    _last: tuple | None = None

    def show(self, gpus: list[Any], views: list[RunReading], history: GpuHistory,
             share: str | None = None) -> None:
        text = render_gpus(gpus, views, history, self.content_size.width or 60, share)
        key = (text.plain, tuple(text.spans))
        if key != self._last:  # an unchanged update would still repaint
            self._last = key
            self.update(text)
