"""Scaling laws over a study's runs: L(N) = E + A·N^-α and L(N, D) = E + A/N^α + B/D^β,
fitted with a Huber loss on log loss, bootstrap intervals, held-out predictions, and
Welch's test between configurations. Pure functions returning immutable results
(engine.report.laws.result); Markdown, PNG and --json render them.

    points.study_points(members, convention, fit_points) -> Selection (law, points, left out)
    fit.fit_law(points, law, LawOptions) -> LawFit           raises FitRefused
    welch.compare_configs(a_values, b_values) -> Comparison
"""

from engine.report.laws.fit import FitRefused, LawOptions, fit_law
from engine.report.laws.result import HoldoutRow, LawFit, LeftOut, Param, Point
from engine.report.laws.welch import Comparison, compare_configs

__all__ = ["FitRefused", "LawOptions", "fit_law", "HoldoutRow", "LawFit", "LeftOut", "Param",
           "Point", "Comparison", "compare_configs"]
