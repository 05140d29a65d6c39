"""A run's latest sample per prompt with its diversity scores."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from engine.text import safe_text
from textual.widgets import Static

from tui.store import latest_samples
from tui.widgets.format import fmt_score

SCORES = (("TTR", "ttr"), ("MATTR", "mattr"), ("d1", "distinct_1"), ("d2", "distinct_2"),
          ("d3", "distinct_3"), ("rep4", "repetition_4"))


def scores_line(metrics: dict[str, Any] | None) -> str:
    m = metrics or {}
    return " ".join(f"{label} {fmt_score(m.get(key))}" for label, key in SCORES)


def render_sample(s: dict[str, Any], with_prompt: bool = True) -> Text:
    out = Text()
    out.append(f"iter {s.get('iter', '?')}", style="bold")
    t = s.get("temperature")
    k = s.get("top_k")
    if t is not None:
        out.append(f" · T {t:g}", style="dim")
    if k is not None:
        out.append(f" · top-k {k}", style="dim")
    out.append("\n")
    out.append(scores_line(s.get("metrics")) + "\n", style="cyan")
    prompt, text = safe_text(str(s.get("prompt", ""))), safe_text(str(s.get("text", "")))
    if with_prompt:
        out.append(prompt, style="bold underline")
    out.append(text.removeprefix(prompt) if with_prompt else text)
    out.append("\n")
    return out


class SamplesView(Static):
    def show(self, run_id: str | None, samples: list[dict[str, Any]]) -> None:
        if run_id is None:
            self.update(Text("select a run to see its samples", style="dim"))
            return
        latest = latest_samples(samples)
        if not latest:
            self.update(Text(f"{run_id}: no samples yet (they are drawn at every eval)", style="dim"))
            return
        out = Text()
        for s in latest.values():
            out.append_text(render_sample(s))
            out.append("\n")
        out.rstrip()
        self.update(out)
