"""report.md of one sweep: settings, results per run, with seeds the configurations over
their seeds (the course report's tables, engine.report.course_md), ranking, diversity,
excerpts, the fit, the temperature study, observations and how every number was computed
(engine.report.summary.METHODS)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from engine.report.course import Study
from engine.report.caveats import (embedding_note, precision_of, precision_text,
                                   same_start_note, throughput_caveat)
from engine.report.course_md import (compare_neighbours, diversity_over_seeds, results_table,
                                     temperature_section)
from engine.report.provenance import provenance_lines
from engine.report.compute_plots import frontier_note
from engine.report.summary import DEGENERATE_REPETITION, MIN_WORDS, METHODS, RunSummary
from engine.report.decoding import (
    common_decoding,
    describe_decoding,
    diversity,
    excerpt,
    latest_samples,
)
from engine.report.returns import RETURNS_METHOD, returns_to_size
from engine.report import text_evals
from engine.report.tables import fmt, group_value, md_table, shown_setting, text_eval_section

def _settings(summaries: list[RunSummary]) -> tuple[list[str], dict[str, Any]]:
    cfgs = [s.config.to_dict() for s in summaries if s.config]
    flat = [{k: v for k, v in c.items() if k != "sampling"} for c in cfgs]
    keys = sorted({k for c in flat for k in c})
    varied = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in flat}) > 1]
    for s in summaries:  # keys named by the sweep, even if (oddly) equal everywhere
        varied += [k for k in s.varied if k not in varied]
    fixed = {k: shown_setting(k, flat[0].get(k)) for k in keys if k not in varied} if flat else {}
    if cfgs and all(c.get("sampling") == cfgs[0].get("sampling") for c in cfgs):
        for k, v in (cfgs[0].get("sampling") or {}).items():
            fixed[f"sampling.{k}"] = v
    return varied, fixed


def _fixed_table(fixed: dict[str, Any], pairs: int = 3) -> str:
    """key/value pairs side by side, three to a row: compact in print."""
    items = [(k, json.dumps(v) if not isinstance(v, str) else (v or '""')) for k, v in fixed.items()]
    rows = []
    for i in range(0, len(items), pairs):
        chunk = items[i:i + pairs] + [("", "")] * (pairs - len(items[i:i + pairs]))
        rows.append([x for kv in chunk for x in kv])
    return md_table(["setting", "value"] * pairs, rows)


def _cfg(s: RunSummary, key: str) -> Any:
    return shown_setting(key, s.config.to_dict().get(key, "—")) if s.config else "—"


def _results_table(summaries: list[RunSummary], varied: list[str]) -> str:
    bpe = any(s.tokenizer == "gpt2" for s in summaries)
    head = ["run", "state", *varied, "params (nanoGPT)", "params (non-emb.)", "params (total)",
            "best val", "best @ iter", "final val", "final train", "train-val gap", "bits/char"]
    if bpe:
        head += ["perplexity", "bits/byte"]
    texts = text_evals.columns(s.text_evals for s in summaries)
    head += [f"bits/byte {c.label}" for c in texts]
    head += ["tok/s", "wall time"]
    rows = []
    for s in summaries:
        row = [s.run.name, s.state_label, *[fmt(_cfg(s, k)) for k in varied],
               fmt(s.params, "int"), fmt(s.params_non_embedding, "int"),
               fmt(s.params_total, "int"), fmt(s.best_val, "loss"),
               fmt(s.best_iter, "int"), fmt(s.final_val, "loss"), fmt(s.final_train, "loss"),
               fmt(s.gap, "gap"), fmt(s.bpc, "bpc")]
        if bpe:
            row += [fmt(s.perplexity, "ppl"), fmt(s.bpb, "bpc")]
        row += [fmt(text_evals.value(s.text_evals, c, "bits_per_byte"), "bpc") for c in texts]
        row += [fmt(s.tok_s, "int") + (" (loaded)" if s.busy_cores is not None and s.tok_s else ""),
                fmt(s.wall_s, "time")]
        rows.append(row)
    return md_table(head, rows)


def _ranking(summaries: list[RunSummary], varied: list[str]) -> str:
    ranked = sorted((s for s in summaries if s.best_val is not None), key=lambda s: s.best_val)
    rows = [[str(i), s.run.name, s.state_label, *[fmt(_cfg(s, k)) for k in varied],
             fmt(s.params, "int"), fmt(s.best_val, "loss")] for i, s in enumerate(ranked, 1)]
    return md_table(["rank", "run", "state", *varied, "params (nanoGPT)", "best val"], rows)


def _grouped(summaries: list[RunSummary], key: str) -> str:
    groups: dict[str, list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault(group_value(s, key), []).append(s)
    rows = []
    for g in sorted(groups, key=_sort_key):
        members = groups[g]
        with_val = [s for s in members if s.best_val is not None]
        best = min(with_val, key=lambda s: s.best_val) if with_val else None
        mean = sum(s.best_val for s in with_val) / len(with_val) if with_val else None
        rows.append([g, str(len(members)), str(sum(s.finished for s in members)),
                     fmt(best.best_val if best else None, "loss"), best.run.name if best else "—",
                     fmt(mean, "loss")])
    return md_table([key, "runs", "finished", "best val", "best run", "mean best val"], rows)


def _sort_key(v: str):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _diversity_section(summaries: list[RunSummary], decoding: tuple | None) -> tuple[str, list[str]]:
    if decoding is None:
        return "No samples were recorded (samples.jsonl is empty for every run).\n", []
    rows, degenerate, short = [], [], []
    for s in summaries:
        d, n, it = diversity(s, decoding)
        if d.get("words") is not None and d["words"] * n < MIN_WORDS:
            short.append(s.run.name)
        rows.append([s.run.name, fmt(s.params, "int"), fmt(it, "int"), str(n),
                     fmt(d.get("words"), "words"), *[fmt(d.get(k), "div") for k in
                     ("ttr", "mattr", "distinct_1", "distinct_2", "repetition_4")]])
        if d.get("repetition_4") is not None and d["repetition_4"] > DEGENERATE_REPETITION:
            degenerate.append(f"**{s.run.name}** degenerates: repetition-4 = "
                              f"{d['repetition_4']:.3f} > {DEGENERATE_REPETITION:.2f} (iter {it}).")
    text = (f"Decoding setting: **{describe_decoding(decoding)}** (the setting most runs "
            "sampled with); samples from each run's latest eval at that setting, scores "
            "averaged over those samples.\n\n")
    text += md_table(["run", "params (nanoGPT)", "iter", "samples", "words", "TTR", "MATTR",
                      "distinct-1", "distinct-2", "repetition-4"], rows)
    if short:
        text += (f"\n**Warning:** fewer than {MIN_WORDS} words scored per run for "
                 f"{', '.join(short)}: TTR of so few words mostly measures the sample's length; "
                 "do not compare it (sample more: `nanotui sample` with more samples or "
                 "`max_new_tokens`).\n")
    return text, degenerate


def _excerpts(summaries: list[RunSummary], decoding: tuple | None) -> str:
    if decoding is None:
        return "No samples to compare.\n"
    prompts: dict[str, int] = {}
    for s in summaries:
        for p in {x.get("prompt") for x in latest_samples(s, decoding)}:
            if isinstance(p, str):
                prompts[p] = prompts.get(p, 0) + 1
    if not prompts:
        return "No samples to compare.\n"
    prompt = max(prompts, key=lambda p: (prompts[p], -len(p)))
    rows = []
    for s in summaries:
        chosen = [x for x in latest_samples(s, decoding) if x.get("prompt") == prompt]
        if chosen:
            x = min(chosen, key=lambda x: (x.get("seed") is None, x.get("seed") or 0))
            rows.append([s.run.name, fmt(x.get("iter"), "int"), excerpt(str(x.get("text", "")))])
        else:
            rows.append([s.run.name, "—", "(no sample for this prompt)"])
    return (f"Prompt: `{prompt}` ({describe_decoding(decoding)}); the first 2-4 sentences of "
            "each run's sample from its latest eval.\n\n" + md_table(["run", "iter", "excerpt"], rows))


def sweep_markdown(sweep: str, summaries: list[RunSummary], study: Study, fit_text: str,
                   plots: list[Path], group_by: str | None, runs_root: Path,
                   extra: list[str] = ()) -> str:
    """`study` is build_study({sweep: summaries}): the seeds pooled into configurations.
    `extra`: sections after the fit (a tuned key's best values, the IsoFLOP analysis)."""
    varied, fixed = _settings(summaries)
    decoding = common_decoding(summaries)
    div_text, degenerate = _diversity_section(summaries, decoding)
    n_fin = sum(s.finished for s in summaries)
    out = [f"# Report: sweep `{sweep}`", "",
           f"{len(summaries)} runs ({n_fin} finished) from `{Path(runs_root).name}/`, written "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Losses are cross-entropy "
           "in nats per token; runs not marked `done` are shown with their state and left out "
           "of the fit.", "", "## Settings", "",
           "Varied: " + (", ".join(f"`{k}`" for k in varied) or "nothing (a single setting)") + ".", "",
           "Fixed (the same in every run):", "", _fixed_table(fixed),
           precision_text(study) + " Precision · attention per run: " + "; ".join(
               f"{s.run.name} {precision_of([s])}" for s in summaries) + ".", "",
           *_provenance_section(summaries, runs_root),
           "## Results", "", _results_table(summaries, varied)]
    missing = [f"bits/char of {s.run.name}: {s.bpc_note}" for s in summaries
               if s.best_val is not None and s.bpc is None]
    missing += [f"parameters of {s.run.name}: {s.params_note}" for s in summaries if s.params is None]
    if missing:
        out += ["Missing numbers (—): " + "; ".join(missing) + ".", ""]
    seeded = any(len(m.runs) > 1 for m in study.sweeps[sweep])
    if seeded:
        out += _over_seeds(study, sweep, decoding)
    out += text_eval_section([(s.run.name, s.tokenizer, s.text_evals) for s in summaries])
    if len(summaries) >= 4:
        out += ["## Ranked by best validation loss", "", _ranking(summaries, varied)]
    if group_by:
        out += [f"## Grouped by `{group_by}`", "", _grouped(summaries, group_by)]
    same = same_start_note(study.sweeps[sweep], (study.varied.get(sweep) or [None])[0])
    out += ["## Diversity", "", div_text, "## Samples side by side", "",
            _excerpts(summaries, decoding)] + ([same, ""] if same else []) + ["## Observations", ""]
    obs = [returns_to_size(study.sweeps[sweep])]
    obs += [n for n in [embedding_note(summaries)] if n]
    over = [f"**{s.run.name}** overfits from iter {s.overfit_iter}: {s.overfit_note}."
            for s in summaries if s.overfit_iter is not None]
    obs += over or ["No run overfits (no run's val loss ends more than 1% above its best while "
                    "its train loss keeps falling)."]
    obs += degenerate or ([f"No run degenerates (repetition-4 ≤ {DEGENERATE_REPETITION:.2f} "
                           "for every run)."] if decoding else [])
    obs += _budget_warnings(summaries)
    obs += throughput_caveat(summaries)
    unfinished = [f"{s.run.name}: {s.state_label}" for s in summaries if not s.finished]
    if unfinished:
        obs.append("Not finished (shown, not fitted): " + "; ".join(unfinished) + ".")
    out += [f"- {o}" for o in obs]
    out += ["", "## Loss vs size: power-law fit", ""]
    if seeded:
        out += ["With several seeds, a configuration's point is its mean best val loss over "
                "its finished seeds (the best seed would bias the fit low).", ""]
    out += [fit_text.rstrip() + "\n"]
    out += list(extra)
    out += temperature_section(study)
    if plots:
        out += ["## Figures", ""] + [f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in plots]
        if any(p.name == "loss_vs_compute.png" for p in plots):
            out += [frontier_note(summaries), ""]
    out += ["## How these numbers were computed", ""]
    out += [f"- {v}" for v in METHODS.values()]
    out += [f"- {RETURNS_METHOD}",
            "- Scaling law: see **Method** in the section above (law, parameter-count "
            "convention, Huber loss, bootstrap intervals, held-out check).",
            "- runs.csv holds every number above, one row per run, at full precision."]
    return "\n".join(out) + "\n"


def _over_seeds(study: Study, sweep: str, decoding: tuple | None) -> list[str]:
    """With `seeds = N`, each configuration's runs pooled (engine.report.course): the
    same numbers as the course report's, so a one-sweep report can judge a difference
    against the seeds' spread too."""
    members = study.sweeps[sweep]
    key = (study.varied.get(sweep) or [None])[0]
    out = ["## Over seeds", "",
           "Runs that differ only in `seed` are one configuration: mean ± sample standard "
           "deviation over its finished seeds. A change between neighbouring configurations "
           "is a finding only when Welch's t-test over their seeds gives p < 0.05 "
           "(`engine.report.laws.compare_configs`); with one seed nothing is a finding.", "",
           results_table(study, sweep_column=False)]
    out += [f"- {o}" for o in compare_neighbours(members, key)] + [""]
    if decoding is not None:
        table, _ = diversity_over_seeds(members, decoding)
        out += [f"Diversity at {describe_decoding(decoding)}, mean ± sd over seeds:", "", table]
    return out


def _provenance_section(summaries: list[RunSummary], runs_root: Path) -> list[str]:
    lines = provenance_lines({s.run.name: s.run.read_status() for s in summaries}, runs_root)
    return ["## Provenance", "", "\n\n".join(lines), ""] if lines else []


def _budget_warnings(summaries: list[RunSummary]) -> list[str]:
    """Comparisons a reader should distrust: runs trained for different budgets, and runs
    whose best val loss is their last eval (still improving: not converged)."""
    out = []
    # max_iters is resolved in every config.toml launch writes; one written by hand or
    # in code may leave it unset (the trainer resolves it), so its budget is unknown here
    budgets = {s.config.tokens_per_iter * s.config.max_iters: s for s in summaries
               if s.finished and s.config is not None and s.config.max_iters is not None}
    if len(budgets) > 1:
        per = "; ".join(f"{s.run.name}: {s.config.max_iters} iters × "
                        f"{s.config.tokens_per_iter:,} tokens" for _, s in sorted(budgets.items()))
        out.append(f"**Warning:** these runs had different training budgets ({per}); their "
                   "losses compare the budgets as much as the models.")
    still = [s.run.name for s in summaries
             if s.finished and len(s.evals) > 1 and s.best_iter == s.final_iter]
    if still:
        out.append("Still improving at their last eval (best val loss = last eval, so not "
                   f"converged; more iterations would lower it): {', '.join(still)}.")
    return out
