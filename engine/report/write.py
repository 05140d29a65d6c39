"""Report material for sweeps: report.md, runs.csv and PNG plots, one folder per sweep.

    write_report(runs_root, ["depth"], out_dir) -> ReportResult
    out_dir/<sweep>/report.md, runs.csv, loss_vs_iters.png, loss_vs_tokens.png,
                    val_loss_vs_params.png, diversity_vs_params.png

The power-law fit of loss against size runs across every finished run of the sweeps in
one call (the "study"), so each sweep's report shows the same fit. Numbers come from
engine.report.summary, the fit from engine.report.fit, the figures from engine.report.plots;
this module checks the request, lays out the Markdown and CSV and writes the files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.config import TRAIN_KEYS, did_you_mean
from engine.report.summary import (DEGENERATE_REPETITION, METHODS, RunSummary, common_decoding,
                                describe_decoding, diversity, excerpt, latest_samples, summarize)
from engine.report.fit import MIN_POINTS, FitRefused, PowerLawFit, fit_power_law
from engine.report.tables import (CSV_COLUMNS, csv_row, diminishing_returns, fmt, md_table,
                                  group_value)
from engine.runs import RunError, atomic_write_bytes, list_runs

DIMINISHING_PCT = 2.0  # below this % val-loss gain per doubling of parameters: diminishing


class ReportError(RunError):
    """A report request that cannot be served; one clear line (the CLI prints RunErrors)."""


@dataclass
class SweepReport:
    sweep: str
    dir: Path
    report_md: Path
    runs_csv: Path
    plots: list[Path]
    n_runs: int
    n_finished: int

    def to_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "dir": str(self.dir), "report_md": str(self.report_md),
                "runs_csv": str(self.runs_csv), "plots": [str(p) for p in self.plots],
                "n_runs": self.n_runs, "n_finished": self.n_finished}


@dataclass
class ReportResult:
    out_dir: Path
    sweeps: list[SweepReport]
    fits: list[FitGroup] = field(default_factory=list)  # one per tokenizer + data

    @property
    def fit(self) -> PowerLawFit | None:
        """The fit of the largest group (the only one in a single-tokenizer study)."""
        return self.fits[0].fit if self.fits else None

    @property
    def fit_note(self) -> str:
        return self.fits[0].note if self.fits else "No fit: no finished runs."

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "sweeps": [s.to_dict() for s in self.sweeps],
                "fit": self.fit.to_dict() if self.fit else None, "fit_note": self.fit_note,
                "fits": [g.to_dict() for g in self.fits]}


# ---- checking the request ----------------------------------------------------------------

def _check_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".nanotui-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ReportError(f"cannot write the report to {out_dir}: {e.strerror or e}") from None


def _select(runs_root: Path, sweeps: list[str]) -> dict[str, list]:
    if not sweeps:
        raise ReportError("name at least one sweep to report on")
    by_sweep: dict[str, list] = {}
    for r in list_runs(runs_root):
        by_sweep.setdefault(r.sweep, []).append(r)
    out: dict[str, list] = {}
    for name in dict.fromkeys(sweeps):
        if name not in by_sweep:
            known = ", ".join(sorted(by_sweep)) or "none"
            raise ReportError(f"unknown sweep {name!r} under {runs_root}"
                              f"{did_you_mean(name, sorted(by_sweep))} (sweeps with runs: {known})")
        out[name] = by_sweep[name]
    return out


# ---- the study-wide fit -----------------------------------------------------------------

@dataclass
class FitGroup:
    """One power-law fit: runs whose losses are in the same unit (same tokenizer and data)."""
    label: str                    # e.g. "char · val.txt"
    fit: PowerLawFit | None
    note: str                     # why there is no fit ("" when there is one)
    points: list[RunSummary]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "fit": self.fit.to_dict() if self.fit else None,
                "note": self.note, "points": [s.id for s in self.points]}


def data_label(s: RunSummary) -> str:
    """Loss per token only compares between runs with one tokenizer on one text."""
    if s.config is None:
        return "?"
    src = s.config.data_dir or s.config.dataset
    return f"{s.config.tokenizer} · {Path(src).name or src}"


def fit_points(study: list[RunSummary]) -> list[RunSummary]:
    """The best finished run at each parameter count: the frontier a scaling law describes.
    Runs that lose to a same-size run (more dropout, fewer iterations) would only add scatter."""
    best: dict[int, RunSummary] = {}
    for s in study:
        if s.finished and s.params:
            if s.params not in best or s.best_val < best[s.params].best_val:
                best[s.params] = s
    return [best[k] for k in sorted(best)]


def study_fits(study: list[RunSummary]) -> list[FitGroup]:
    """One fit per (tokenizer, data) group, the group with the most finished runs first."""
    groups: dict[str, list[RunSummary]] = {}
    for s in study:
        groups.setdefault(data_label(s), []).append(s)
    out = []
    for label, members in groups.items():
        pts = fit_points(members)
        try:
            fit, note = fit_power_law([s.params for s in pts], [s.best_val for s in pts]), ""
        except FitRefused as e:
            fit, note = None, f"No fit: {e}."
        out.append(FitGroup(label, fit, note, pts))
    return sorted(out, key=lambda g: (-len(g.points), g.label))


# ---- Markdown -----------------------------------------------------------------------------

def _settings(summaries: list[RunSummary]) -> tuple[list[str], dict[str, Any]]:
    cfgs = [s.config.to_dict() for s in summaries if s.config]
    flat = [{k: v for k, v in c.items() if k != "sampling"} for c in cfgs]
    keys = sorted({k for c in flat for k in c})
    varied = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in flat}) > 1]
    for s in summaries:  # keys named by the sweep, even if (oddly) equal everywhere
        varied += [k for k in s.varied if k not in varied]
    fixed = {k: flat[0].get(k) for k in keys if k not in varied} if flat else {}
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
    return s.config.to_dict().get(key, "—") if s.config else "—"


def _results_table(summaries: list[RunSummary], varied: list[str]) -> str:
    bpe = any(s.tokenizer == "gpt2" for s in summaries)
    head = ["run", "state", *varied, "params (nanoGPT)", "params (total)", "best val",
            "best @ iter", "final val", "final train", "train-val gap", "bits/char"]
    if bpe:
        head.append("perplexity")
    head += ["tok/s", "wall time"]
    rows = []
    for s in summaries:
        row = [s.run.name, s.state_label, *[fmt(_cfg(s, k)) for k in varied],
               fmt(s.params, "int"), fmt(s.params_total, "int"), fmt(s.best_val, "loss"),
               fmt(s.best_iter, "int"), fmt(s.final_val, "loss"), fmt(s.final_train, "loss"),
               fmt(s.gap, "gap"), fmt(s.bpc, "bpc")]
        if bpe:
            row.append(fmt(s.perplexity, "ppl"))
        row += [fmt(s.tok_s, "int"), fmt(s.wall_s, "time")]
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
    rows, degenerate = [], []
    for s in summaries:
        d, n, it = diversity(s, decoding)
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


def _fit_section(groups: list[FitGroup], sweeps: list[str]) -> str:
    scope = ("the sweep " if len(sweeps) == 1 else "the sweeps ") + ", ".join(f"`{s}`" for s in sweeps)
    text = ""
    if len(groups) > 1:
        text = (f"Losses per token compare only between runs with the same tokenizer and "
                f"data, so each such group of {scope} gets its own fit.\n\n")
    for g in groups:
        if len(groups) > 1:
            text += f"### {g.label}\n\n"
        text += _one_fit(g, scope)
    return text


def _one_fit(g: FitGroup, scope: str) -> str:
    fit, pts = g.fit, g.points
    used = ", ".join(f"{s.id} ({fmt(s.params, 'int')}, {fmt(s.best_val, 'loss')})" for s in pts)
    if fit is None:
        return (f"{g.note} The fit of L(N) = E + A·N^(-α) uses the best finished run at each "
                f"parameter count across {scope}; at least {MIN_POINTS} are needed."
                + (f" Available: {used}." if pts else "") + "\n\n")

    def pm(v: float, se: float | None) -> str:
        return f"{v:.4g} ± {se:.2g}" if se is not None else f"{v:.4g}"
    lines = [f"Fitted across {scope} on {fit.n_points} points (the best finished "
             f"run at each parameter count): {used}.", "",
             f"**{fit.formula()}**", "",
             md_table(["parameter", "value ± standard error"],
                      [["α (exponent)", pm(fit.alpha, fit.se_alpha)],
                       ["E (irreducible loss, nats/token)", pm(fit.E, fit.se_E)],
                       ["A", pm(fit.A, fit.se_A)],
                       ["RMSE (nats/token)", f"{fit.rmse:.4g}" if not fit.exact else
                        "0 (3 points, 3 parameters: the curve passes through them)"],
                       ["R²", fmt(fit.r2, "div")]]).rstrip()]
    if fit.warning:
        lines += ["", f"**Warning:** {fit.warning}."]
    if fit.se_alpha is None:
        lines += ["", "Standard errors need at least 4 points (3 parameters are fitted)."]
    if fit.n_points < 5:
        lines += ["", f"With only {fit.n_points} points the exponent is poorly constrained; "
                      "treat α as indicative."]
    return "\n".join(lines) + "\n\n"


def sweep_markdown(sweep: str, summaries: list[RunSummary], fit_text: str, plots: list[Path],
                   group_by: str | None, runs_root: Path) -> str:
    varied, fixed = _settings(summaries)
    decoding = common_decoding(summaries)
    div_text, degenerate = _diversity_section(summaries, decoding)
    n_fin = sum(s.finished for s in summaries)
    out = [f"# Report: sweep `{sweep}`", "",
           f"{len(summaries)} runs ({n_fin} finished) from `{runs_root}`, written "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Losses are cross-entropy "
           "in nats per token; runs not marked `done` are shown with their state and left out "
           "of the fit.", "", "## Settings", "",
           "Varied: " + (", ".join(f"`{k}`" for k in varied) or "nothing (a single setting)") + ".", "",
           "Fixed (the same in every run):", "", _fixed_table(fixed),
           "## Results", "", _results_table(summaries, varied)]
    missing = [f"bits/char of {s.run.name}: {s.bpc_note}" for s in summaries
               if s.best_val is not None and s.bpc is None]
    missing += [f"parameters of {s.run.name}: {s.params_note}" for s in summaries if s.params is None]
    if missing:
        out += ["Missing numbers (—): " + "; ".join(missing) + ".", ""]
    if len(summaries) >= 4:
        out += ["## Ranked by best validation loss", "", _ranking(summaries, varied)]
    if group_by:
        out += [f"## Grouped by `{group_by}`", "", _grouped(summaries, group_by)]
    out += ["## Diversity", "", div_text, "## Samples side by side", "",
            _excerpts(summaries, decoding), "## Observations", ""]
    obs = [diminishing_returns(summaries, DIMINISHING_PCT)]
    over = [f"**{s.run.name}** overfits from iter {s.overfit_iter}: {s.overfit_note}."
            for s in summaries if s.overfit_iter is not None]
    obs += over or ["No run overfits (no run's val loss ends more than 1% above its best while "
                    "its train loss keeps falling)."]
    obs += degenerate or ([f"No run degenerates (repetition-4 ≤ {DEGENERATE_REPETITION:.2f} "
                           "for every run)."] if decoding else [])
    unfinished = [f"{s.run.name}: {s.state_label}" for s in summaries if not s.finished]
    if unfinished:
        obs.append("Not finished (shown, not fitted): " + "; ".join(unfinished) + ".")
    out += [f"- {o}" for o in obs]
    out += ["", "## Loss vs size: power-law fit", "", fit_text.rstrip() + "\n"]
    if plots:
        out += ["## Figures", ""] + [f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in plots]
    out += ["## How these numbers were computed", ""]
    out += [f"- {v}" for v in METHODS.values()]
    out += [f"- Diminishing returns: for successive parameter counts N1 < N2 (the best finished "
            f"run at each), gain per doubling = (L1 − L2) / L1 / log2(N2 / N1) × 100%, with L "
            f"the best val loss; below {DIMINISHING_PCT:g}% per doubling counts as diminishing.",
            "- Power-law fit: least squares of L(N) = E + A·N^(-α) over the best finished run "
            "at each parameter count (N = nanoGPT count, L = best val loss), with E ≥ 0, "
            "separately for each tokenizer + data (losses per token of different tokenizers "
            "are in different units). For "
            "fixed α the model is linear in (E, A), so α is found by a search over "
            "[0.001, 3] (log grid, then golden section); standard errors are from the "
            "Jacobian at the optimum, s²(JᵀJ)⁻¹ with s² = SSE/(n−3). RMSE = sqrt(SSE/n).",
            "- runs.csv holds every number above, one row per run, at full precision."]
    return "\n".join(out) + "\n"


# ---- writing -------------------------------------------------------------------------------

def write_report(runs_root: Path, sweeps: list[str], out_dir: Path, group_by: str | None = None,
                 progress: Callable[[str], None] | None = None, plots: bool = True) -> ReportResult:
    """Write report.md, runs.csv and (unless plots=False) the PNGs for each sweep under
    out_dir/<sweep>/.
    Raises ReportError (one line) for an unknown sweep, a sweep without finished runs,
    an unknown --group-by key or an unwritable out_dir; nothing is written then."""
    say = progress or (lambda _msg: None)
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    if group_by is not None and group_by not in TRAIN_KEYS:
        raise ReportError(f"unknown --group-by key {group_by!r}{did_you_mean(group_by, TRAIN_KEYS)}")
    selected = _select(runs_root, sweeps)
    per_sweep: dict[str, list[RunSummary]] = {}
    for name, runs in selected.items():
        say(f"reading {name}")
        summaries = [summarize(r, runs_root) for r in runs]
        if not any(s.finished for s in summaries):
            states: dict[str, int] = {}
            for s in summaries:
                states[s.state] = states.get(s.state, 0) + 1
            counts = ", ".join(f"{n} {st}" for st, n in sorted(states.items()))
            raise ReportError(f"sweep {name!r} has no finished runs yet ({counts}); "
                              "nothing to report")
        per_sweep[name] = sorted(summaries, key=lambda s: (s.params is None, s.params or 0, s.run.name))
    _check_out_dir(out_dir)

    study = [s for ss in per_sweep.values() for s in ss]
    fits = study_fits(study)
    fit_text = _fit_section(fits, list(per_sweep))
    fitted = {s.id for g in fits if g.fit is not None for s in g.points}
    from engine.report import plots as rp
    reports = []
    for name, summaries in per_sweep.items():
        d = out_dir / name
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ReportError(f"cannot write the report to {d}: {e.strerror or e}") from None
        say(f"plotting {name}")
        decoding = common_decoding(summaries)
        figures = [p for p in (
            rp.loss_curves(summaries, "iter", f"Loss per run · sweep {name}",
                           d / "loss_vs_iters.png", group_by),
            rp.loss_curves(summaries, "tokens", f"Loss per run · sweep {name}",
                           d / "loss_vs_tokens.png", group_by),
            rp.loss_vs_params(study, fits, name, d / "val_loss_vs_params.png",
                              group_by=group_by),
            rp.diversity_vs_params(summaries, decoding,
                                   describe_decoding(decoding) if decoding else "",
                                   d / "diversity_vs_params.png"),
        ) if p is not None] if plots else []
        md = sweep_markdown(name, summaries, fit_text, figures, group_by, runs_root)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for s in summaries:
            w.writerow(csv_row(s, decoding, group_by, s.id in fitted))
        try:
            atomic_write_bytes(d / "report.md", md.encode())
            atomic_write_bytes(d / "runs.csv", buf.getvalue().encode())
        except OSError as e:
            raise ReportError(f"cannot write the report to {d}: {e.strerror or e}") from None
        reports.append(SweepReport(name, d, d / "report.md", d / "runs.csv", figures,
                                   len(summaries), sum(s.finished for s in summaries)))
    return ReportResult(out_dir, reports, fits)

