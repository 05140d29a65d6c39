"""Sweep kinds beyond vary and grid: IsoFLOP budgets and a tuned hyper-parameter.

    isoflop = { train_flops = [3e13, 1e14], n_layer = [2, 3, 4] }
        one run per (budget, size): every size key's values combined (as grid does), or
        `shapes = [{ n_layer = 2, n_embd = 64 }, ...]` for a list of shapes; each cell's
        horizon is its budget (engine.model.horizon resolves train_flops to steps).
        Two checks a launch makes before anything starts (engine.launch.preflight):
          min_steps  = 20   a cell with fewer optimizer steps is refused (its loss says
                            more about the warm-up than about the size)
          max_epochs = 4.0  a cell that would see the training split more often is refused
                            (Muennighoff et al. 2023: up to about 4 epochs of repeated data
                            are worth nearly as much as fresh data; beyond, they are not)
    tune = { learning_rate = [3e-4, 1e-3, 3e-3] }
        beside vary, grid or isoflop: every configuration at each value (names end with
        `,learning_rate=0.001`); the report keeps each configuration's best value
        (engine.report.tuning). Only numeric keys can be tuned.

A run spec of these kinds carries `meta` for its config.toml's [run] table: kind
("isoflop"), the tuned keys, and the isoflop checks, so the report and the launch read
the sweep's intent from the run directory itself.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from engine.config import _TRAIN_TYPES, HORIZON_KEYS
from engine.experiments_options import ExperimentsError

BUDGET_KEY = "train_flops"
ISOFLOP_OPTIONS = {"min_steps": 20, "max_epochs": 4.0}
MIN_BUDGETS = 1


def budget_name(v: float) -> str:
    """3e13 -> '3e+13': a FLOP budget reads as a power of ten, not 14 digits."""
    return f"{float(v):g}"


def isoflop_cells(spec: Any, label: str, loc: Callable[[str], str],
                  check: Callable[[dict[str, Any]], dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The cells of `isoflop = {...}` (budget first, then the size keys) and its options.
    `check` type-checks a {key: value} of TrainConfig keys; `loc(key)` is `file:line`."""
    if not isinstance(spec, dict) or BUDGET_KEY not in spec:
        raise ExperimentsError(f"{loc('isoflop')}: {label} isoflop needs {BUDGET_KEY} = "
                               f"[budgets] and size keys, e.g. isoflop = {{ train_flops = "
                               f"[1e13, 3e13], n_layer = [2, 3, 4] }}")
    options = dict(ISOFLOP_OPTIONS)
    for key, default in ISOFLOP_OPTIONS.items():
        if key in spec:
            v = spec[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (
                    key == "min_steps" and not isinstance(v, int)):
                raise ExperimentsError(f"{loc(key)}: {label} isoflop.{key} = {v!r}: expected "
                                       f"a positive {'whole ' if key == 'min_steps' else ''}"
                                       f"number (default {default})")
            options[key] = type(default)(v)
    budgets = spec[BUDGET_KEY]
    if not isinstance(budgets, list) or not budgets:
        raise ExperimentsError(f"{loc(BUDGET_KEY)}: {label} isoflop.{BUDGET_KEY} = {budgets!r}: "
                               f"expected a non-empty list of FLOP budgets, e.g. [1e13, 3e13]")
    budgets = [check({BUDGET_KEY: b})[BUDGET_KEY] for b in budgets]
    if len(set(budgets)) != len(budgets):
        raise ExperimentsError(f"{loc(BUDGET_KEY)}: {label} isoflop.{BUDGET_KEY} lists a "
                               f"budget twice: {spec[BUDGET_KEY]!r}")
    sizes = {k: v for k, v in spec.items() if k != BUDGET_KEY and k not in ISOFLOP_OPTIONS}
    if "shapes" in sizes:
        if len(sizes) > 1:
            raise ExperimentsError(f"{loc('shapes')}: {label} isoflop: give shapes = [...] or "
                                   f"size keys, not both")
        shapes = sizes["shapes"]
        if (not isinstance(shapes, list) or not shapes
                or not all(isinstance(s, dict) and s for s in shapes)):
            raise ExperimentsError(f"{loc('shapes')}: {label} isoflop.shapes must be a list of "
                                   f"tables, e.g. [{{ n_layer = 2, n_embd = 64 }}, ...]")
        shapes = [check(dict(s)) for s in shapes]
    else:
        if not sizes:
            raise ExperimentsError(f"{loc('isoflop')}: {label} isoflop has budgets but no "
                                   f"sizes: add size keys (n_layer = [2, 3, 4]) or shapes")
        for k, vs in sizes.items():
            if not isinstance(vs, list) or not vs:
                raise ExperimentsError(f"{loc(k)}: {label} isoflop.{k} = {vs!r}: expected a "
                                       f"non-empty list of values")
        shapes = [check(dict(zip(sizes, vals))) for vals in itertools.product(*sizes.values())]
    for s in shapes:
        horizon = [k for k in s if k in HORIZON_KEYS]
        if horizon:
            raise ExperimentsError(f"{loc(horizon[0])}: {label} isoflop: {horizon[0]} in a size; "
                                   f"the budget ({BUDGET_KEY}) sets every cell's length")
    if len({tuple(sorted(s.items())) for s in shapes}) != len(shapes):
        raise ExperimentsError(f"{loc('isoflop')}: {label} isoflop lists a size twice")
    return [{BUDGET_KEY: b, **s} for b in budgets for s in shapes], options


def tune_axes(spec: Any, label: str, loc: Callable[[str], str],
              check: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, list[Any]]:
    """`tune = { key = [values] }`: numeric keys only, each value checked."""
    if not isinstance(spec, dict) or not spec:
        raise ExperimentsError(f"{loc('tune')}: {label} tune must be a table of lists, e.g. "
                               f"tune = {{ learning_rate = [3e-4, 1e-3, 3e-3] }}")
    out: dict[str, list[Any]] = {}
    for key, values in spec.items():
        typ = _TRAIN_TYPES.get(key)
        numeric = typ in (int, float) or typ in (int | None, float | None)
        if typ is not None and (not numeric or key in HORIZON_KEYS):
            raise ExperimentsError(f"{loc(key)}: {label} tune.{key}: only a numeric "
                                   f"hyper-parameter can be tuned (best by final val loss); "
                                   f"{key} is " + ("a horizon key (use isoflop or vary)"
                                                   if key in HORIZON_KEYS else
                                                   "not a number (use vary or grid)"))
        if not isinstance(values, list) or len(values) < 2:
            raise ExperimentsError(f"{loc(key)}: {label} tune.{key} = {values!r}: expected a "
                                   f"list of at least 2 values to choose from")
        vals = [check({key: v})[key] for v in values]
        if len(set(vals)) != len(vals):
            raise ExperimentsError(f"{loc(key)}: {label} tune.{key} lists a value twice")
        out[key] = sorted(vals)
    return out


def with_tuning(combos: list[dict[str, Any]], tune: dict[str, list[Any]]
                ) -> list[dict[str, Any]]:
    """Every configuration at every tuned value (a tuned key overrides the configuration's)."""
    if not tune:
        return combos
    return [{**{k: v for k, v in c.items() if k not in tune}, **dict(zip(tune, vals))}
            for c in combos for vals in itertools.product(*tune.values())]
