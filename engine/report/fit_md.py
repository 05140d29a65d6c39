"""The power-law fit's section of a report (sweep or course): the fitted curve with its
standard errors, or why there is no fit; one group per tokenizer + data."""

from __future__ import annotations

from engine.report.fit import MIN_POINTS
from engine.report.study import FitGroup
from engine.report.tables import fmt, md_table


def fit_section(groups: list[FitGroup], sweeps: list[str]) -> str:
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
    if fit.se_alpha is None and fit.n_points < 4:
        lines += ["", "Standard errors need at least 4 points (3 parameters are fitted)."]
    elif fit.se_alpha is None:
        lines += ["", "Standard errors could not be computed: at the optimum the points do "
                      "not constrain all three parameters (singular Jacobian)."]
    if fit.n_points < 5:
        lines += ["", f"With only {fit.n_points} points the exponent is poorly constrained; "
                      "treat α as indicative."]
    return "\n".join(lines) + "\n\n"
