"""`plan --budget`: the largest uniform horizon with which a study fits a time budget.

Every selected run's horizon is scaled by one factor s (its tokens_per_param, train_flops,
max_tokens or max_iters times s), each run is resolved at that scale (engine.model.horizon)
and timed (engine.launch.estimate.seconds: training, evals, samples), and the runs are
packed onto the units the launch would use (GPUs, or concurrent CPU runs) longest first,
as a dispatcher that starts the next run on the first free unit would. The largest s whose
packed time fits the budget is found by bisection (time grows with s). Where nanotui has
trained this shape on this machine (a run of the same id whose saved shape matches, on
this host and this kind of device), that run's measured tokens/s sets its throughput;
elsewhere the assumed FLOP/s of the estimate does, and the answer says which.

Nothing is written: the answer is the line to put in experiments.toml.
"""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import HORIZON_KEYS, ConfigError, TrainConfig
from engine.experiments import RunSpec
from engine.launch.estimate import horizon_for, seconds, vocab_for
from engine.model.arithmetic import train_flops_per_token
from engine.model.horizon import HorizonError, resolve
from engine.runs import RunDir

SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "batch_size",
              "gradient_accumulation_steps", "dtype", "compile")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BudgetError(ConfigError):
    """An unparseable budget, or one that no horizon of one step per run fits."""


def parse_budget(text: str) -> float:
    """'30m', '1h30m', '90s', '1.5h', '2d' -> seconds."""
    t = text.strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", t)
    if not t or not parts or "".join(n + u for n, u in parts) != t:
        raise BudgetError(f"--budget {text!r}: expected a duration like 30m, 1h30m, 90s or "
                          f"1.5h")
    total = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(total) or total <= 0:
        raise BudgetError(f"--budget {text!r}: must be a positive duration")
    return total


@dataclass
class BudgetResult:
    budget_s: float
    units: int
    device: str
    scale: float                   # the factor on every run's horizon
    seconds: float                 # the packed (wall-clock) time at that scale
    runs: list[dict[str, Any]]     # id, key, value (scaled), max_iters, seconds, throughput
    measured: list[str]            # run ids timed from measured throughput
    lines: list[str]               # what to put in experiments.toml

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _scaled(cfg: TrainConfig, key: str, value: float, s: float) -> TrainConfig:
    v = value * s
    if key in ("max_iters", "max_tokens"):
        v = max(1, math.floor(v))
    cleared: dict[str, Any] = {k: None for k in HORIZON_KEYS}
    return cfg.replace(**{**cleared, key: v})


def measured_flops(run: RunDir, cfg: TrainConfig, device: str) -> float | None:
    """Achieved training FLOP/s of a run of the same shape trained on this host and this
    kind of device (its last tokens/s x FLOPs per token), or None."""
    try:
        if not run.exists():
            return None
        st = run.read_status()
        saved = run.load_config()
    except (ConfigError, OSError):
        return None
    tok_s, dev = st.get("tok_s"), str(st.get("device") or "")
    if not isinstance(tok_s, (int, float)) or tok_s <= 0 or st.get("host") != socket.gethostname():
        return None
    if ("cuda" in dev) != (device == "gpu") or any(
            getattr(saved, k) != getattr(cfg, k) for k in SHAPE_KEYS):
        return None
    return float(tok_s) * train_flops_per_token(saved, vocab_for(saved)[0])


def _packed(times: list[float], units: int) -> float:
    """Longest first onto the first free unit: the makespan."""
    loads = [0.0] * units
    for t in sorted(times, reverse=True):
        i = loads.index(min(loads))
        loads[i] += t
    return max(loads)


def fit_budget(specs: list[RunSpec], budget_s: float, units: int, device: str,
               runs_root: str | Path | None = None) -> BudgetResult:
    """The largest scale on every run's horizon that fits `budget_s` on `units`."""
    runs = []
    for s in specs:
        if s.cfg is None or s.error or s.same_as:
            continue
        h = horizon_for(s.cfg)
        vocab = h.vocab_size
        rate = measured_flops(RunDir(Path(runs_root) / s.id), h.config, device) \
            if runs_root is not None else None
        runs.append((s, h, vocab, rate))
    if not runs:
        raise BudgetError("--budget: no valid runs selected")

    def timed(scale: float) -> list[tuple[float, Any]] | None:
        out = []
        for s, h, vocab, rate in runs:
            try:
                r = resolve(_scaled(s.cfg, h.key, h.value, scale), vocab)
            except HorizonError:
                return None   # below one step (or above the limit) at this scale
            fpt = train_flops_per_token(r.config, vocab)
            out.append((seconds(r.config, fpt, r.params, device, rate), r))
        return out

    def fits(scale: float) -> bool:
        t = timed(scale)
        return t is not None and _packed([x for x, _ in t], units) <= budget_s

    lo, hi = 1e-12, 1.0
    while timed(lo) is None and lo < 1e12:
        lo *= 2
    shortest = timed(lo)
    if shortest is None or not fits(lo):
        least = "" if shortest is None else (
            f" (at one step per run they take {_packed([t for t, _ in shortest], units):,.0f}s,"
            f" most of it evals and samples)")
        raise BudgetError(f"--budget {budget_s:,.0f}s: no horizon of at least one step per run "
                          f"fits on {units} {device.upper()} unit(s){least}; select fewer runs, "
                          f"lower eval_iters or give more time")
    while fits(hi) and hi < 1e12:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        if hi / lo < 1 + 1e-4:
            break
    final = timed(lo)
    assert final is not None
    rows = [{"id": s.id, "key": h.key, "value": r.value, "max_iters": r.max_iters,
             "tokens": r.tokens, "tokens_per_param": r.tokens_per_param, "seconds": t,
             "throughput": "measured" if rate else "assumed"}
            for (s, h, _, rate), (t, r) in zip(runs, final)]
    return BudgetResult(budget_s, units, device, lo, _packed([t for t, _ in final], units),
                        rows, [s.id for s, _, _, rate in runs if rate],
                        _lines(runs, lo))


def _lines(runs: list, scale: float) -> list[str]:
    """The experiments.toml line(s): one key and value when every run shares them (put it
    in [defaults] or each sweep's fixed), else one per sweep (a value for its fixed, or
    the list of its vary), else the factor."""
    def value(key: str, v: float) -> str:
        x = v * scale
        if key in ("max_iters", "max_tokens"):
            return f"{max(1, math.floor(x)):_}"
        return f"{_round_down(x):g}"
    pairs = {(h.key, h.value) for _, h, _, _ in runs}
    if len(pairs) == 1:
        key, v = pairs.pop()
        return [f"{key} = {value(key, v)}"]
    by_sweep: dict[str, list] = {}
    for s, h, _, _ in runs:
        by_sweep.setdefault(s.sweep, []).append((h.key, h.value))
    if any(len({k for k, _ in p}) > 1 for p in by_sweep.values()):
        return [f"every horizon x {_round_down(scale):g} (a sweep's runs set different "
                f"horizon keys: scale each value written in the file)"]
    out = []
    for name, p in by_sweep.items():
        key = p[0][0]
        vals = list(dict.fromkeys(v for _, v in p))
        out.append(f"[sweep.{name}] fixed: {key} = {value(key, vals[0])}" if len(vals) == 1
                   else f"[sweep.{name}] vary: {key} = "
                        f"[{', '.join(value(key, v) for v in vals)}]")
    return out


def _round_down(x: float, digits: int = 3) -> float:
    """x to `digits` significant digits, never up (the rounded horizon still fits)."""
    if x <= 0:
        return x
    e = math.floor(math.log10(x)) - digits + 1
    return math.floor(x / 10 ** e) * 10 ** e if e < 0 else float(math.floor(x / 10 ** e) * 10 ** e)
