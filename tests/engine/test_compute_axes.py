"""Training time, training FLOPs, tokens per parameter and bits per byte: computed once
(engine.report.compute, engine.train.control.TrainClock) and read by runs.csv, the report's
loss_vs_compute.png / loss_vs_time.png and the TUI chart."""

from __future__ import annotations

import csv
import math

import pytest

from engine.config import TrainConfig
from engine.model.arithmetic import param_count, train_flops_per_token
from engine.report.compute import frontier, lower_envelope
from engine.report.write import write_report
from engine.train.control import train_seconds
from tests.engine.test_report import BASE, make_run


def test_training_time_leaves_eval_and_sampling_gaps_out():
    # the trainer's laps: 10 ms per step; the eval at iter 20 took 100 s of wall clock,
    # which `t` shows and dt_ms (the timer restarts after an eval) does not
    recs = [{"kind": "eval", "iter": 0, "val_loss": 4.0, "t": 0.0},
            {"kind": "train", "iter": 10, "loss": 3.0, "dt_ms": 10.0, "t": 1.0},
            {"kind": "train", "iter": 20, "loss": 2.9, "dt_ms": 10.0, "t": 1.1},
            {"kind": "eval", "iter": 20, "val_loss": 2.8, "t": 101.1},
            {"kind": "eval", "iter": 25, "val_loss": 2.7, "t": 102.0},   # 5 unlogged steps
            {"kind": "train", "iter": 30, "loss": 2.8, "dt_ms": 30.0, "t": 201.4}]
    assert train_seconds(recs) == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.25, 0.5])


def test_training_time_is_unknown_without_step_times():
    # a nanoGPT log read back without its `time ...ms`: no axis, not a made-up one
    recs = [{"kind": "train", "iter": 10, "loss": 3.0}, {"kind": "eval", "iter": 10, "val_loss": 3.0}]
    assert train_seconds(recs) == [None, None]


def test_runs_csv_has_train_flops_time_tokens_per_param_and_bpb(tmp_path):
    root = tmp_path / "runs"
    trains = [(i, 3.0 - i / 100, 1000.0) for i in range(10, 101, 10)]
    make_run(root, "s", "n_layer=1", [(0, 4.0, 4.1), (100, 2.0, 2.2)], trains=trains,
             status={"bytes_per_token": 1.25}, n_layer=1)
    make_run(root, "s", "n_layer=2", [(0, 4.0, 4.1), (100, 1.9, 2.1)], trains=trains, n_layer=2)
    res = write_report(root, ["s"], tmp_path / "out", plots=False)
    rows = {r["run"]: r for r in csv.DictReader(res.sweeps[0].runs_csv.open())}
    cfg = TrainConfig(**{**BASE, "n_layer": 1})
    tokens = 100 * cfg.tokens_per_iter           # the last train record's iteration
    assert float(rows["n_layer=1"]["train_flops"]) == pytest.approx(
        tokens * train_flops_per_token(cfg, 65), rel=1e-9)
    assert float(rows["n_layer=1"]["train_time_s"]) == pytest.approx(1.0)  # 100 × 10 ms
    assert float(rows["n_layer=1"]["tokens_per_param"]) == pytest.approx(
        tokens / param_count(cfg, 65, "nanogpt"), abs=1e-3)
    assert float(rows["n_layer=1"]["val_bpb"]) == pytest.approx(2.2 / math.log(2) / 1.25, abs=1e-6)
    assert rows["n_layer=2"]["val_bpb"] == ""   # the data does not say its bytes per token
    md = res.sweeps[0].report_md.read_text()
    assert "Tokens per parameter: tokens trained / parameters in nanoGPT's count" in md


def test_sweep_and_course_reports_draw_loss_vs_compute_and_time(tmp_path):
    root = tmp_path / "runs"
    for sweep, n in (("a", 1), ("a", 2), ("b", 3)):
        steps = 10 * n  # bigger models: more compute per token and slower steps
        make_run(root, sweep, f"n_layer={n}",
                 [(0, 4.0, 4.1), (50, 2.5, 2.6 - n / 10), (100, 2.0, 2.2 - n / 10)],
                 trains=[(i, 3.0, 1000.0) for i in range(steps, 101, steps)], n_layer=n)
    res = write_report(root, ["a", "b"], tmp_path / "out")
    for md_path, d in [(res.sweeps[0].report_md, res.sweeps[0].report_md.parent),
                       (res.course.report_md, res.course.dir)]:
        md = md_path.read_text()
        for name in ("loss_vs_compute.png", "loss_vs_time.png"):
            assert f"]({name})" in md
            png = (d / name).read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        assert "Compute-efficient frontier" in md
    html = res.course.report_html.read_text()
    assert html.count("data:image/png;base64") >= 2
    # the course frontier ends with the largest model, which reaches the lowest loss
    course = res.course.report_md.read_text()
    line = next(ln for ln in course.splitlines() if ln.startswith("Compute-efficient frontier"))
    assert line.rstrip(".").split("; ")[-1].startswith("b/n_layer=3")  # sweep named


def test_frontier_is_the_lowest_loss_reached_with_at_most_that_compute():
    small = [(1.0, 3.0), (2.0, 2.5), (4.0, 2.3)]
    big = [(3.0, 2.8), (6.0, 2.0), (12.0, 1.6)]
    assert frontier([("small", small), ("big", big)]) == [
        (1.0, 3.0, "small"), (2.0, 2.5, "small"), (4.0, 2.3, "small"), (6.0, 2.0, "big"),
        (12.0, 1.6, "big")]
    env = dict(lower_envelope([small, big], n=12))
    ys = [env[x] for x in sorted(env)]
    assert all(b <= a + 1e-12 for a, b in zip(ys, ys[1:]))   # never rises with compute
    assert env[4.0] == pytest.approx(2.3)   # small's end beats big's curve there (2.8 → 2.0)
    assert env[12.0] == pytest.approx(1.6)
    # between two evals a curve is read as a straight line in log-log
    inside = [x for x in env if 6.0 < x < 12.0]
    assert inside
    for x in inside:
        w = math.log(x / 6.0) / math.log(2.0)
        assert env[x] == pytest.approx(math.exp(math.log(2.0) + w * math.log(1.6 / 2.0)))
    # where no run has points (one ends at 4, the next starts at 8) it stays flat
    gap = dict(lower_envelope([[(1.0, 3.0), (4.0, 2.3)], [(8.0, 2.2), (16.0, 1.9)]], n=9))
    flat = [gap[x] for x in sorted(gap) if 4.0 <= x < 8.0]
    assert len(flat) >= 2 and flat == pytest.approx([2.3] * len(flat))
    assert lower_envelope([[(0.0, 4.0)]]) == []  # before the first step: nothing on a log axis
