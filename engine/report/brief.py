"""brief.md / brief.html: the hand-in form of a report, 2-4 A4 pages when printed.

The full report (report.md, report.html) keeps every table a reader may want; a course
asks for a short report. The brief keeps what such a report is made of: the methods (one
row per model, the shared settings, the conventions), one results table (mean ± sd over
seeds), what each experiment shows (the same sentences as the full report, under the
same finding rule), three figures, and the temperature table. It shows no local paths.
"""

from __future__ import annotations

import time
from pathlib import Path

from engine.model.arithmetic import PARAM_CONVENTIONS
from engine.report.course import Study, same_params
from engine.report.caveats import precision_text
from engine.report.course_md import (compare_neighbours, methods_table, results_table,
                                     settings_text, temperature_section)
from engine.report.returns import returns_to_size

N_FIGURES = 3


def brief_figures(study: Study, figures: dict[str, list[Path]], cross: list[Path]) -> list[Path]:
    """Three figures: each experiment's loss and diversity against its varied key or size,
    then the fit (over the study, else the sweep's), then training curves, in that order."""
    every = [p for ps in figures.values() for p in ps]
    # a sweep's own folder names it vs_<x>.png, the course folder <sweep>_vs_<x>.png
    versus = [p for p in every if p.stem.startswith(("vs_", *(f"{n}_vs_" for n in figures)))]
    fits = cross + [p for p in every if p.stem == "val_loss_vs_params"]
    curves = [p for p in every if "training" in p.stem]
    return list(dict.fromkeys([*versus, *fits, *curves]))[:N_FIGURES]


def brief_markdown(study: Study, figures: list[Path], runs_root: Path) -> str:
    sweeps = list(study.sweeps)
    n_runs = len({s.run.path.resolve() for m in study.members() for s in m.runs})
    seeds = max((len(m.runs) for m in study.members()), default=1)
    out = [f"# Report: sweeps {', '.join(f'`{s}`' for s in sweeps)}", "",
           f"{len(study.models)} distinct models, {n_runs} training runs ({seeds} seed"
           f"{'s' * (seeds > 1)} per configuration) from `{Path(runs_root).name}/`, "
           f"{time.strftime('%Y-%m-%d', time.gmtime())}. Losses are cross-entropy in nats "
           "per token; a number over seeds is mean ± sample standard deviation.", "",
           "## Methods", "", methods_table(study),
           "Shared by every run: " + settings_text(study) + ".", "",
           f"Parameter counts: “params (nanoGPT)”, the N of every fit, is "
           f"{PARAM_CONVENTIONS['nanogpt']}; “params (non-emb.)” is "
           f"{PARAM_CONVENTIONS['non_embedding']}. " + precision_text(study), "",
           "## Results", "", results_table(study),
           "A change between neighbouring configurations is a finding only when it exceeds "
           "the sum of their standard deviations.", ""]
    for name, members in study.sweeps.items():
        key = (study.varied.get(name) or [None])[0]
        lines = compare_neighbours(members, key)
        if not (same_params(members) and key):
            lines.append(returns_to_size(members))
        out += [f"- **{name}**: " + " ".join(lines)]
    out += [""]
    if figures:
        out += ["## Figures", ""] + [f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in figures]
    out += temperature_section(study)
    return "\n".join(out) + "\n"
