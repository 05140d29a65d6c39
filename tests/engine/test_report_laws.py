"""The laws as a user meets them: report.md's fit section and held-out table, the course
report's Scaling section, report --json, the figure, and the CLI flags."""

from __future__ import annotations

import json

import pytest

from engine.config import TrainConfig
from engine.model.arithmetic import param_count
from engine.report.write import write_report
from test_report import BASE, make_run
from tui.cli import main

LAYERS = (1, 2, 3, 4, 5, 6)


def law(n_layer: int) -> float:
    N = param_count(TrainConfig(**{**BASE, "n_layer": n_layer}), 65)
    return 1.0 + 30.0 * N ** -0.3


def ladder(root, sweep="size", broken: float = 1.0, seeds=(0, 1), nan_layer=None):
    """Six sizes on one horizon, two seeds each, losses on a known L(N); the largest
    model's loss times `broken`."""
    for nl in LAYERS:
        for k, seed in enumerate(seeds):
            v = law(nl) * (1 + 0.002 * (-1) ** (nl + k)) * (broken if nl == LAYERS[-1] else 1)
            if nl == nan_layer:
                v = float("nan")
            name = f"n_layer={nl}" + (f",seed={seed}" if k else "")
            make_run(root, sweep, name, [(0, 4.0, 4.1), (50, v + 0.3, v + 0.2), (100, v - 0.05, v)],
                     n_layer=nl, seed=1337 + seed)


def test_report_has_intervals_and_a_held_out_prediction(tmp_path):
    root = tmp_path / "runs"
    ladder(root)
    res = write_report(root, ["size"], tmp_path / "out", plots=False)
    f = res.fit
    assert f.law == "N" and f.n_sizes == 6 and f.params["alpha"].ci_low < 0.3 < f.params["alpha"].ci_high
    md = res.sweeps[0].report_md.read_text()
    assert "| α (size exponent) |" in md and "90% interval (bootstrap)" in md
    assert "Held-out prediction" in md and "| size/n_layer=6 | 5 |" in md
    assert "Fitted on 5 sizes, the law predicted the 6th (size/n_layer=6)" in md
    assert "inside its 90% prediction interval" in md
    assert "nanogpt convention" in md and "1000 resamples (seed 0)" in md


def test_a_broken_largest_model_is_flagged_in_the_course_report(tmp_path, capsys):
    root = tmp_path / "runs"
    ladder(root, broken=1.05)
    make_run(root, "other", "n_layer=1", [(100, 2.9, 3.0)], n_layer=1)
    out = tmp_path / "out"
    assert main(["--runs", str(root), "report", "size", "other", "--out", str(out), "--json",
                 "--no-plots", "--bootstrap", "300"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fit = doc["fits"][0]["fit"]
    assert fit["law"] == "N" and fit["convention"] == "nanogpt" and fit["level"] == 0.9
    assert fit["n_points"] == 6 and fit["bootstrap_resamples"] == 300
    assert set(fit["parameters"]) == {"E", "A", "alpha"}
    (row,) = fit["holdout"]
    assert row["id"] == "size/n_layer=6" and row["inside"] is False
    assert row["actual"] > row["pi_high"] and 4.0 < row["error_pct"] < 6.0
    course = (out / "_course" / "size+other" / "report.md").read_text()
    scaling = course.split("## Scaling\n", 1)[1].split("\n## ", 1)[0]
    assert "L(N) over 6 sizes" in scaling and "**outside** its 90% prediction interval" in scaling


def test_params_convention_changes_N_and_is_stated(tmp_path, capsys):
    root = tmp_path / "runs"
    ladder(root)
    out = tmp_path / "out"
    assert main(["--runs", str(root), "report", "size", "--out", str(out), "--json", "--no-plots",
                 "--params", "non_embedding", "--bootstrap", "50", "--holdout", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fit"]["convention"] == "non_embedding" and doc["fit"]["holdout"] == []
    assert doc["laws"]["convention"] == "non_embedding"
    md = (out / "size" / "report.md").read_text()
    assert "non_embedding convention (every weight except the token and position embeddings" in md
    cfg = TrainConfig(**{**BASE, "n_layer": 1})
    n_ne, n_ng = param_count(cfg, 65, "non_embedding"), param_count(cfg, 65, "nanogpt")
    assert f"size/n_layer=1 ({n_ne:,}," in md and f"size/n_layer=1 ({n_ng:,}," not in md


def test_nan_losses_and_too_few_sizes_still_write_and_say_why(tmp_path):
    root = tmp_path / "runs"
    ladder(root, seeds=(0,))
    nan = float("nan")
    make_run(root, "size", "n_layer=7", [(0, nan, nan), (100, nan, nan)], n_layer=7)
    res = write_report(root, ["size"], tmp_path / "out", plots=False)
    md = res.sweeps[0].report_md.read_text()
    assert res.fit is not None and res.fit.n_points == 6
    assert "size/n_layer=7: no finite val loss" in md
    # two sizes only: no law, and the section says why
    make_run(root, "two", "a", [(100, 1.9, 2.0)], n_layer=1)
    make_run(root, "two", "b", [(100, 1.9, 2.0)], n_layer=1, dropout=0.1)
    make_run(root, "two", "c", [(100, nan, nan)], n_layer=2)
    res = write_report(root, ["two"], tmp_path / "out2", plots=False)
    md = res.sweeps[0].report_md.read_text()
    assert res.fit is None
    assert ("No fit: a law needs finished runs of at least 3 different sizes; all usable runs "
            "have the same parameter count. Left out: two/c: no finite val loss recorded; "
            "two/b: another configuration of the same size did at least as well.") in md


@pytest.mark.parametrize("flag,value,message", [
    ("--params", "kaplan", "--params must be one of nanogpt, non_embedding, total"),
    ("--fit-points", "some", "--fit-points must be final or all"),
    ("--holdout", "x", "--holdout must be a whole number"),
    ("--bootstrap", "-5", "--bootstrap must be at least 0"),
])
def test_bad_flag_values_are_one_line_and_exit_2(tmp_path, capsys, flag, value, message):
    root = tmp_path / "runs"
    root.mkdir()
    out = tmp_path / "out"
    assert main(["--runs", str(root), "report", "size", "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()
