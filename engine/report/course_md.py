"""report.md of a course report over several sweeps: methods (one row per distinct model),
one results table, a section per experiment, the fit over the study, observations that
only call a difference a finding when it is larger than the seeds' spread."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from engine.report.provenance import provenance_lines
from engine.report.course import Member, Stat, Study, same_params
from engine.report.summary import MIN_WORDS
from engine.report.fit_md import fit_section, scaling_section
from engine.report.laws import LawOptions, compare_configs
from engine.report.laws.welch import FINDING_P
from engine.report.study import FitGroup
from engine.report.compute_plots import frontier_note
from engine.report.summary import DEGENERATE_REPETITION, METHODS
from engine.report.decoding import (
    common_decoding,
    describe_decoding,
    diversity,
    excerpt,
    latest_samples,
    temperature_diversity,
)
from engine.report.caveats import embedding_note, precision_of, precision_text, same_start_note
from engine.report.returns import RETURNS_METHOD, returns_to_size
from engine.report import text_evals
from engine.report.tables import fmt, md_table, shown_setting, text_eval_section

SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "dropout")


def _stat(s: Stat | None, kind: str = "loss") -> str:
    if s is None:
        return "—"
    digits = {"loss": 4, "ppl": 2}.get(kind, 3)
    return s.text(digits)


def _cell(value: Any, bold: bool) -> str:
    text = fmt(value)
    return f"**{text}**" if bold and text != "—" else text


def _flags(m: Member, common_budget: int | None) -> str:
    out = []
    if not m.finished:
        out.append(m.first.state_label)
    elif len(m.finished) < len(m.runs):
        out.append(f"{len(m.runs) - len(m.finished)} seed(s) not finished")
    if m.still_improving:
        out.append("still improving")
    if common_budget is not None and m.tokens is not None and m.tokens != common_budget:
        out.append(f"budget ≠ ({fmt(m.tokens, 'int')} tokens)")
    if m.model is not None and len(m.model.members) > 1:
        others = [f"{o.sweep}/{o.label}" for o in m.model.members if o is not m]
        out.append("shared with " + ", ".join(others))
    return "; ".join(out) or "—"


def common_budget(study: Study) -> int | None:
    budgets = study.budgets()
    return max(budgets, key=lambda b: len(budgets[b])) if budgets else None


def methods_table(study: Study) -> str:
    """One row per distinct model; the value each of its sweeps varies in bold."""
    rows = []
    for i, model in enumerate(study.models, 1):
        m = model.members[0]
        bold = model.varied_keys(study.varied)
        where = " · ".join(f"{o.sweep} {o.label}" for o in model.members)
        if len(model.members) > 1:
            where += " (shared: trained once)"
        rows.append([str(i), where, *[_cell(m.value(k), k in bold) for k in SHAPE_KEYS],
                     fmt(m.params, "int"), fmt(m.params_non_embedding, "int"),
                     fmt(m.tokens, "int"), precision_of(m.runs), str(len(m.runs))])
    return md_table(["#", "sweep · configuration", *SHAPE_KEYS, "params (nanoGPT)",
                     "params (non-emb.)", "tokens trained", "precision · attention", "seeds"],
                    rows)


def results_table(study: Study, sweep_column: bool = True) -> str:
    """One row per configuration of every sweep: its numbers as mean ± sd over seeds."""
    budget = common_budget(study)
    bpe = is_bpe(study.members())
    texts = text_evals.columns(s.text_evals for m in study.members() for s in m.runs)
    rows = []
    for m in study.members():
        rows.append([m.sweep] * sweep_column + [
            m.label, fmt(m.params, "int"), fmt(m.params_non_embedding, "int"), _stat(m.best_val),
            _stat(m.stat(lambda s: s.final_val)), _stat(m.stat(lambda s: s.gap)),
            _stat(m.stat(lambda s: s.bpc), "bpc")]
            + [_stat(m.stat(lambda s: s.perplexity), "ppl"),
               _stat(m.stat(lambda s: s.bpb), "bpc")] * bpe
            + [_stat(m.stat(lambda s, c=c: text_evals.value(s.text_evals, c, "bits_per_byte")),
                     "bpc") for c in texts]
            + [str(len(m.finished)), _flags(m, budget)])
    return md_table(["sweep"] * sweep_column + [
        "configuration", "params (nanoGPT)", "params (non-emb.)", "best val", "final val",
        "train-val gap", "bits/char"] + ["perplexity", "bits/byte"] * bpe
        + [f"bits/byte {c.label}" for c in texts] + ["seeds done", "flags"], rows)


def is_bpe(members: list[Member]) -> bool:
    return any(s.tokenizer == "gpt2" for m in members for s in m.runs)


def compact_table(study: Study) -> str:
    """The course's short results table (as Mini-GPT reports give it): one row per
    distinct model, its size, mean best val loss, perplexity and TTR over its seeds."""
    rows = []
    for model in study.models:
        m = model.members[0]
        decoding = common_decoding(m.finished)
        ttr = (m.stat(lambda s: diversity(s, decoding)[0].get("ttr"))
               if decoding is not None else None)
        rows.append([" = ".join(f"{o.sweep}/{o.label}" for o in model.members),
                     fmt(m.params, "int"), fmt(m.params_non_embedding, "int"),
                     _stat(m.best_val), _stat(m.stat(lambda s: s.perplexity), "ppl"),
                     _stat(ttr, "div")])
    return md_table(["model", "params (nanoGPT)", "params (non-emb.)", "val loss",
                     "perplexity", "TTR"], rows)


def settings_text(study: Study) -> str:
    cfgs = [s.config.to_dict() for m in study.members() for s in m.runs if s.config]
    flat = [{k: v for k, v in c.items() if k not in ("sampling", "seed")} for c in cfgs]
    keys = sorted({k for c in flat for k in c})
    same = {k: flat[0].get(k) for k in keys
            if len({json.dumps(c.get(k), default=str) for c in flat}) == 1} if flat else {}
    same = {k: shown_setting(k, v) for k, v in same.items()}
    return ", ".join(f"`{k}={json.dumps(v) if not isinstance(v, str) else v}`"
                     for k, v in same.items())


def compare_neighbours(members: list[Member], key: str | None) -> list[str]:
    """Neighbouring configurations in the order of the varied value: a change is a finding
    only when Welch's t-test over their seeds gives p < FINDING_P (compare_configs)."""
    done = [m for m in members if m.best_val is not None]
    if len(done) < 2:
        return ["Fewer than two finished configurations: nothing to compare."]
    out, noise, single = [], [], []
    for a, b in zip(done, done[1:]):
        c = compare_configs([s.best_val for s in a.finished], [s.best_val for s in b.finished])
        step = f"{a.label} → {b.label}: {c.text()}"
        (single if c.p is None else out if c.finding else noise).append(step)
    text = []
    if out:
        text.append(f"Best val loss changes that are findings (Welch's t-test, p < {FINDING_P:g}): "
                    + "; ".join(out) + ".")
    if noise:
        text.append(f"Not a finding (p ≥ {FINDING_P:g}): " + "; ".join(noise) + ".")
    if single:
        text.append("Best val loss changes with one seed on a side (no difference can be "
                    "called a finding without seeds): " + "; ".join(single) + ".")
    best = min(done, key=lambda m: m.best_val.mean)
    text.append(f"Lowest mean best val loss: **{best.label}** ({best.best_val.text()}).")
    return text


def _changes(a: Member, b: Member) -> bool:
    """A measurable change: a finding with seeds; with one seed any difference (the
    report says it is from one seed)."""
    c = compare_configs([s.best_val for s in a.finished], [s.best_val for s in b.finished])
    return c.finding if c.p is not None else c.diff != 0.0


def diversity_over_seeds(members: list[Member], decoding: tuple) -> tuple[str, list[str]]:
    rows, short = [], []
    for m in members:
        per = [diversity(s, decoding) for s in m.finished]
        words = [d.get("words", 0.0) * n for d, n, _ in per]
        stats = {k: Stat.of([d.get(k) for d, _, _ in per]) for k in
                 ("ttr", "mattr", "distinct_2", "repetition_4")}
        total = Stat.of(words)
        rows.append([m.label, fmt(total.mean if total else None, "words"),
                     *[_stat(stats[k], "div") for k in stats]])
        if total is not None and total.mean < MIN_WORDS:
            short.append(m.label)
    table = md_table(["configuration", "words scored per run", "TTR", "MATTR", "distinct-2",
                      "repetition-4"], rows)
    notes = []
    if short:
        notes.append(f"**Warning:** fewer than {MIN_WORDS} words scored per run for "
                     f"{', '.join(short)}: TTR of so few words mostly measures the sample's "
                     "length; do not compare it (sample more: `nanotui sample` with more "
                     "samples or `max_new_tokens`).")
    return table, notes


def _excerpts(members: list[Member], decoding: tuple) -> str:
    rows = []
    for m in members:
        chosen = [x for s in m.finished[:1] for x in latest_samples(s, decoding)]
        text = excerpt(str(chosen[0].get("text", ""))) if chosen else "(no sample)"
        rows.append([m.label, text])
    return md_table(["configuration", "excerpt (first seed, latest eval)"], rows)


def experiment_section(name: str, members: list[Member], key: str | None,
                       figures: list[Path]) -> list[str]:
    summaries = [s for m in members for s in m.finished]
    decoding = common_decoding(summaries)
    out = [f"## Experiment: `{name}`" + (f" (varies `{key}`)" if key else ""), ""]
    rows = [[m.label, fmt(m.params, "int"), fmt(m.params_non_embedding, "int"), _stat(m.best_val),
             _stat(m.stat(lambda s: s.final_train)), _stat(m.stat(lambda s: s.gap)),
             str(len(m.finished))] for m in members]
    out += [md_table(["configuration", "params (nanoGPT)", "params (non-emb.)", "best val",
                      "final train", "train-val gap", "seeds done"], rows)]
    out += [f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in figures]
    obs = compare_neighbours(members, key)
    if same_params(members) and key:
        obs.append(f"`{key}` does not change the parameter count, so the figures plot "
                   f"against `{key}`, not parameters.")
        obs += [n for n in [same_start_note(members, key)] if n]
    elif len([m for m in members if m.best_val is not None]) > 1:
        obs.append(returns_to_size(members))
    over = [f"{m.label} (from iter {s.overfit_iter}, seed {s.config.seed})"
            for m in members for s in m.finished if s.overfit_iter is not None and s.config]
    obs.append("Overfitting (val rising more than 1% above its best while train falls): "
               + ", ".join(over) + "." if over else
               "No run overfits (no val loss ends more than 1% above its best while train "
               "loss keeps falling).")
    still = [m.label for m in members if m.still_improving]
    if still:
        obs.append("Still improving at their last eval (best val = last eval, not converged): "
                   + ", ".join(still) + ".")
    if decoding is not None:
        table, notes = diversity_over_seeds(members, decoding)
        loops = [m.label for m in members
                 if (r := m.stat(lambda s: diversity(s, decoding)[0].get("repetition_4")))
                 and r.mean > DEGENERATE_REPETITION]
        notes.insert(0, f"Degenerate (repetition-4 above {DEGENERATE_REPETITION:.2f}): "
                     + ", ".join(loops) + "." if loops else
                     f"No configuration degenerates (repetition-4 ≤ {DEGENERATE_REPETITION:.2f}).")
        out += [f"Diversity at {describe_decoding(decoding)}, each run's latest eval "
                "(mean ± sd over seeds):", "", table]
        obs += notes
        out += ["Samples side by side:", "", _excerpts(members, decoding)]
    out += ["Observations:", ""] + [f"- {o}" for o in obs] + [""]
    return out


def temperature_section(study: Study) -> list[str]:
    """The temperature study (`nanotui sample SWEEP --temperature ...`), when one was run:
    per configuration and temperature, TTR / repetition-4 (mean over seeds) and words."""
    per: dict[str, dict[float, list[tuple[dict, int]]]] = {}
    for model in study.models:  # a shared model once: its sweeps read the same samples
        name = " = ".join(f"{o.sweep}/{o.label}" for o in model.members)
        runs = {s.run.path.resolve(): s for o in model.members for s in o.finished}
        for s in runs.values():
            for t, (d, n) in temperature_diversity(s).items():
                per.setdefault(name, {}).setdefault(t, []).append((d, n))
    if not per:
        return []
    temps = sorted({t for by_t in per.values() for t in by_t})
    rows, short = [], set()
    for name, by_t in per.items():
        cells = []
        for t in temps:
            got = by_t.get(t, [])
            ttr, rep4 = (Stat.of([d.get(k) for d, _ in got]) for k in ("ttr", "repetition_4"))
            words = Stat.of([d.get("words") for d, _ in got])
            if words is not None and words.mean < MIN_WORDS:
                short.add(name)
            cells.append("—" if ttr is None else
                         f"{ttr.mean:.3f} / {rep4.mean:.3f} ({words.mean:.0f} w)")
        rows.append([name, *cells])
    out = ["## Temperature study", "",
           "Samples of each run's latest checkpoint at each temperature (same prompts, seeds "
           "and top-k as its evals), from `nanotui sample SWEEP --temperature ...`. Cells: "
           "TTR / repetition-4, mean over seeds, and the words scored per run (w); a row "
           "shows how one model's diversity moves with temperature.", "",
           md_table(["configuration", *[f"T = {t:g}" for t in temps]], rows)]
    if short:
        out += [f"**Warning:** fewer than {MIN_WORDS} words per run at some temperature for "
                f"{', '.join(sorted(short))}: those TTRs are not comparable.", ""]
    return out


def study_observations(study: Study) -> list[str]:
    out = []
    budgets = study.budgets()
    if len(budgets) > 1:
        per = "; ".join(f"{fmt(b, 'int')} tokens: " + ", ".join(f"{m.sweep}/{m.label}" for m in ms)
                        for b, ms in sorted(budgets.items()))
        out.append(f"**Warning:** configurations were trained for different budgets ({per}); "
                   "comparing them compares the budgets as much as the models.")
    shared = [m for m in study.models if len(m.members) > 1]
    for m in shared:
        out.append("Shared: " + " and ".join(f"{o.sweep}/{o.label}" for o in m.members)
                   + " are the same model, trained once and shown in each sweep.")
    note = embedding_note([s for m in study.members() for s in m.runs])
    if note:
        out.append(note)
    one_seed = all(len(m.runs) == 1 for m in study.members())
    if one_seed:
        out.append("Every configuration has one seed: differences between runs have no "
                   "measured spread (`seeds = 3` in a sweep measures it).")
    return out


def _seed_label(m: Member, s) -> str:
    """A run as the configuration and the seed it was trained with (its config's seed)."""
    if len(m.runs) == 1:
        return m.label
    return f"{m.label} (seed {s.config.seed if s.config else '?'})"


def _provenance_section(study: Study, runs_root: Path) -> list[str]:
    """What produced the numbers, per sweep (engine.report.provenance), so a reader sees
    a torch upgrade or a change of card between sweeps."""
    out = []
    for name, members in study.sweeps.items():
        lines = provenance_lines({_seed_label(m, s): s.run.read_status()
                                  for m in members for s in m.runs}, runs_root)
        if lines:
            out += [f"### {name}", "", "\n\n".join(lines), ""]
    return ["## Provenance", "", *out] if out else []


def course_markdown(study: Study, fits: list[FitGroup], figures: dict[str, list[Path]],
                    cross: list[Path], runs_root: Path,
                    laws: LawOptions = LawOptions()) -> str:
    sweeps = list(study.sweeps)
    n_runs = len({s.run.path.resolve() for m in study.members() for s in m.runs})
    out = [f"# Course report: sweeps {', '.join(f'`{s}`' for s in sweeps)}", "",
           f"{len(study.models)} distinct models, {n_runs} training runs, from `{Path(runs_root).name}/`, "
           f"written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Losses are "
           "cross-entropy in nats per token; with several seeds a number is the mean ± the "
           "sample standard deviation over the seeds.", ""]
    out += ["## Methods", "", "Every model configuration (one row per distinct model; the "
            "value its sweep varies in **bold**):", "", methods_table(study),
            "Settings shared by every run: " + settings_text(study) + ".", "",
            precision_text(study), "",
            "## Results", "", results_table(study)]
    if is_bpe(study.members()):
        out += ["Compact table (GPT-2 BPE runs; val loss = mean best val loss, perplexity = "
                "exp of it per seed, TTR at each model's common decoding setting; mean ± sd "
                "over seeds):", "", compact_table(study)]
    once = {s.run.path.resolve(): s for m in study.members() for s in m.runs}
    out += text_eval_section([(s.id, s.tokenizer, s.text_evals) for s in once.values()])
    for name, members in study.sweeps.items():
        keys = study.varied.get(name) or [None]
        out += experiment_section(name, members, keys[0], figures.get(name, []))
    out += ["## Loss vs size across the study", "",
            "The fit uses one point per distinct model (its mean best val loss over seeds), "
            "the best at each parameter count.", "", fit_section(fits, sweeps, laws).rstrip(), ""]
    out += ["## Scaling", "", *scaling_section(fits), ""]
    out += [f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in cross]
    if any(p.name == "loss_vs_compute.png" for p in cross):
        every = {s.run.path.resolve(): s for m in study.members() for s in m.runs}
        out += [frontier_note(list(every.values())), ""]
    out += temperature_section(study)
    obs = study_observations(study)
    if obs:
        out += ["## Observations across the sweeps", ""] + [f"- {o}" for o in obs] + [""]
    out += ["## How these numbers were computed", ""] + [f"- {v}" for v in METHODS.values()]
    out += ["- Seeds: runs of a sweep that differ only in `seed` are one configuration; "
            "mean ± sample standard deviation (n − 1) over its finished seeds. A change "
            "between neighbouring configurations is a finding only when Welch's t-test over "
            f"their seeds gives p < {FINDING_P:g} (two-sided; the interval is the 95% "
            "interval of the difference of the means); with one seed nothing is a finding.",
            f"- {RETURNS_METHOD}",
            f"- Diversity words: words scored per run (samples × words per sample); below "
            f"{MIN_WORDS} the report warns that TTR is not comparable.",
            "- Tokens trained: the last eval's iteration × batch_size × block_size × "
            "gradient_accumulation_steps.", ""]
    out += _provenance_section(study, runs_root)
    return "\n".join(out) + "\n"
