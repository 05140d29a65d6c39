"""Fuzz: any experiments.toml text gives runs or one clear ConfigError, never a traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import TRAIN_KEYS, ConfigError
from engine.experiments import parse_experiments, validate_runs
from engine.runs import safe_part

KEYS = TRAIN_KEYS + ["description", "fixed", "vary", "grid", "kind", "gpus",
                     "max_runs_per_gpu", "prompts", "temperature", "n_layr", "sampling"]
TABLES = ["defaults", "sampling", "launch", "executor", "sweep", "sweep.a", "sweep.b",
          'sweep."../x"', "sweep.a.vary", "default", "sweep.a.fixed"]

scalars = st.one_of(
    st.integers(-5, 600), st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(), st.text(max_size=8), st.sampled_from(["cpu", "char", "gpt2", "../x", "a/b"]))


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else
                                      "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return str(v)


values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=6)

lines = st.one_of(
    st.builds(lambda t: f"[{t}]", st.sampled_from(TABLES)),
    st.builds(lambda k, v: f"{k} = {toml_value(v)}", st.sampled_from(KEYS), values),
    st.text(max_size=20),  # garbage
)


def check(text: str) -> None:
    try:
        exp = parse_experiments(text, "fuzz.toml")
        runs = exp.all_runs()
        validate_runs(runs)
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg.strip() or "invalid TOML" in msg
        assert msg.startswith("fuzz.toml")
        return
    for r in runs:
        assert safe_part(r.sweep) and safe_part(r.name) and r.cfg is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines, max_size=12))
def test_structured_fuzz(parts):
    check("\n".join(parts) + "\n")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_text_fuzz(text):
    check(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
       st.dictionaries(st.sampled_from(["n_layer", "n_head", "n_embd", "dropout", "block_size"]),
                       st.lists(scalars, max_size=3), max_size=3),
       st.sampled_from(["vary", "grid", "fixed"]))
def test_sweep_fuzz(fixed, axes, kind):
    check(f"[defaults]\nn_layer = 1\nn_head = 1\nn_embd = 8\n"
          f"[sweep.s]\nfixed = {toml_value(fixed)}\n{kind} = {toml_value(axes)}\n")


def test_non_finite_and_odd_values_give_clear_errors():
    for axes in ("{ dropout = [inf, nan] }", "{ learning_rate = [-inf] }",
                 "{ n_layer = [9999999999999999999] }", "{ n_layer = [[1], {a = 1}] }",
                 "{ dataset = [\"\\u0000\"] }"):
        check(f"[sweep.s]\nvary = {axes}\n")
