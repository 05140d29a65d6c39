"""The laws' section of a report (sweep or course), and the course report's quotable
"Scaling" lines: each fitted law with its intervals, its held-out prediction, the points
left out with why, or why there is no fit; one group per tokenizer + data."""

from __future__ import annotations

from engine.model.arithmetic import PARAM_CONVENTIONS
from engine.report.laws import LawFit, LawOptions
from engine.report.laws.fit import HOLDOUT_MIN_SIZES, MIN_POINTS_ND, MIN_SIZES
from engine.report.laws.points import WARMUP_SHARE
from engine.report.study import FitGroup
from engine.report.tables import fmt, md_table

_NAMES = {"E": "E (irreducible loss, nats/token)", "A": "A", "B": "B",
          "alpha": "α (size exponent)", "beta": "β (data exponent)"}
_MAX_LEFT_OUT = 12


def fit_section(groups: list[FitGroup], sweeps: list[str],
                opt: LawOptions = LawOptions()) -> str:
    scope = ("the sweep " if len(sweeps) == 1 else "the sweeps ") + ", ".join(f"`{s}`" for s in sweeps)
    text = ""
    if len(groups) > 1:
        text = (f"Losses per token compare only between runs with the same tokenizer and "
                f"data, so each such group of {scope} gets its own fit.\n\n")
    for g in groups:
        if len(groups) > 1:
            text += f"### {g.label}\n\n"
        text += _one_fit(g, scope)
    return text + method_text(opt) + "\n\n"


def method_text(opt: LawOptions) -> str:
    pts = ("one point per configuration (its mean best val loss over finished seeds, at the "
           "tokens it trained for)" if opt.fit_points == "final" else
           f"every eval of every finished seed from {WARMUP_SHARE:.0%} of its tokens on "
           "(`--fit-points all`)")
    return (f"**Method.** N = parameters, {opt.convention} convention "
            f"({PARAM_CONVENTIONS.get(opt.convention, opt.convention)}; `--params`); D = tokens "
            f"trained; L = best val loss; points: {pts}. L(N, D) = E + A/N^α + B/D^β when the "
            "points differ in tokens trained in a way size alone does not explain, else "
            "L(N) = E + A·N^(-α) over the best configuration at each size. Fitted by "
            f"minimising the Huber loss (δ = {opt.delta:g}) of log predicted − log actual "
            "loss, with E, A, B ≥ 0 and exponents in [0.01, 2.5]: for fixed exponents the law "
            "is linear in (E, A, B), so a grid over the exponents is solved exactly (no "
            "starting point) and the best cell refined by Levenberg–Marquardt. Intervals: "
            f"{opt.level:.0%} percentile bootstrap over {opt.n_boot} resamples (seed "
            f"{opt.seed}) that draw whole configurations (with their seeds and evals), each "
            "refitted the same way. A held-out check fits on all but the largest "
            f"{opt.holdout} size(s) when there are at least {HOLDOUT_MIN_SIZES} and predicts "
            "them, with a prediction interval (the bootstrap curves times a resampled log "
            "residual, scaled by √(n/(n−k)) for the k fitted parameters). At least "
            f"{MIN_SIZES} sizes are needed (L(N, D): also {MIN_POINTS_ND} points).")


def _pm(p) -> str:
    return f"{p.value:.4g}", p.interval()


def _one_fit(g: FitGroup, scope: str) -> str:
    fit = g.fit
    if fit is None:
        used = ", ".join(f"{s.id} ({fmt(s.params, 'int')}, {fmt(s.best_val, 'loss')})"
                         for s in g.points)
        return (f"{g.note} Scope: {scope}." + (f" Available: {used}." if g.points else "")
                + "\n\n")
    law = "L(N)" if fit.law == "N" else "L(N, D)"
    lines = [f"{law} fitted across {scope} on {fit.n_points} points from {fit.n_sizes} "
             f"sizes ({fit.convention} parameter count, {fit.fit_points} points): "
             + _used(fit, g) + ".", "",
             f"**{fit.formula()}**", "",
             md_table(["parameter", "value", f"{fit.level:.0%} interval (bootstrap)"],
                      [[_NAMES[k], *_pm(p)] for k, p in fit.params.items()]
                      + [["RMSE (nats/token)", f"{fit.rmse:.3g}", ""]]).rstrip()]
    for w in fit.warnings:
        lines += ["", f"**Warning:** {w}."]
    if fit.holdout:
        lines += ["", holdout_table(fit)]
        lines += [f"- {s}" for s in quotable(fit)]
    if fit.left_out:
        shown = [f"{x.id}: {x.why}" for x in fit.left_out[:_MAX_LEFT_OUT]]
        more = len(fit.left_out) - len(shown)
        lines += ["", "Left out of the fit: " + "; ".join(shown)
                  + (f"; and {more} more (runs.csv)" if more > 0 else "") + "."]
    return "\n".join(lines) + "\n\n"


def _used(fit: LawFit, g: FitGroup) -> str:
    """The points as id (N, loss[, D]); with every eval as a point, the configurations."""
    if fit.fit_points != "final":
        return ", ".join(s.id for s in g.points)
    return ", ".join(f"{p.id} ({fmt(p.N, 'int')}, {fmt(p.loss, 'loss')}"
                     + (f", D {fmt(p.D, 'int')}" if fit.law == "N,D" else "") + ")"
                     for p in fit.points)


def holdout_table(fit: LawFit) -> str:
    nd = fit.law == "N,D"
    rows = [[h.id, str(h.fitted_sizes), fmt(h.N, "int"), *([fmt(h.D, "int")] if nd else []),
             f"{h.predicted:.4f}", f"{h.pi_low:.4f} – {h.pi_high:.4f}", f"{h.actual:.4f}",
             f"{h.error:+.4f}", f"{h.error_pct:+.1f}%", "yes" if h.inside else "**no**",
             "yes" if h.still_improving else "no"] for h in fit.holdout]
    head = ["held out", "sizes fitted", "N", *(["D"] if nd else []), "predicted",
            f"{fit.level:.0%} prediction interval", "actual", "error (nats)", "error",
            "inside", "still improving"]
    return "Held-out prediction (the law fitted on the smaller sizes only):\n\n" + md_table(head, rows)


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def quotable(fit: LawFit) -> list[str]:
    """One sentence per held-out run a student can quote."""
    out = []
    sizes = sorted({p.N for p in fit.points})
    for h in fit.holdout:
        verdict = ("inside" if h.inside else "**outside**")
        nth = sizes.index(h.N) + 1 if h.N in sizes else h.fitted_sizes + 1
        s = (f"Fitted on {h.fitted_sizes} sizes, the law predicted the {_ordinal(nth)}"
             + f" ({h.id}) at {h.predicted:.4f} nats/token; it reached {h.actual:.4f}, "
             f"{abs(h.error):.3f} nats ({abs(h.error_pct):.1f} %) "
             f"{'above' if h.error > 0 else 'below'} the prediction, {verdict} its "
             f"{fit.level:.0%} prediction interval ({h.pi_low:.4f} – {h.pi_high:.4f}).")
        if h.still_improving:
            s += " That run was still improving at its last eval, so its loss is an upper bound."
        out.append(s)
    return out


def scaling_section(groups: list[FitGroup]) -> list[str]:
    """The course report's "Scaling" lines: each law with its exponent's interval and its
    held-out check, in sentences that can be quoted as they stand."""
    out = []
    for g in groups:
        f = g.fit
        pre = f"[{g.label}] " if len(groups) > 1 else ""
        if f is None:
            out.append(f"- {pre}{g.note}")
            continue
        a = f.params["alpha"]
        s = (f"- {pre}{'L(N)' if f.law == 'N' else 'L(N, D)'} over {f.n_sizes} sizes "
             f"({f.n_points} points, {f.convention} parameter count): α = {a.value:.3g} "
             f"({f.level:.0%} interval {a.interval('.3g')})")
        if "beta" in f.params:
            b = f.params["beta"]
            s += f", β = {b.value:.3g} ({b.interval('.3g')})"
        E = f.params["E"]
        out.append(s + f", E = {E.value:.3g} nats/token ({E.interval('.3g')}).")
        out += [f"- {pre}{q}" for q in quotable(f)]
        if not f.holdout:
            out.append(f"- {pre}No held-out prediction: it needs at least {HOLDOUT_MIN_SIZES} "
                       f"sizes; this law has {f.n_sizes}.")
        out += [f"- {pre}Warning: {w}." for w in f.warnings]
    return out
