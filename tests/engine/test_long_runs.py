"""A run with a very long metrics.jsonl: views read what they show. Its status reads the
file's tail only, a report keeps every eval and a thinned train curve in bounded memory,
and smoothing is linear in the curve's length."""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np

from engine.jsonl import JsonlTail, Thinned
from engine.report.figures import smooth
from engine.report.reading import read_run
from engine.report.summary import MAX_TRAIN_POINTS, summarize
from tests.tui.conftest import build_runs

LINES = 200_000


def long_run(tmp_path):
    runs = build_runs(tmp_path / "runs")
    run = runs["depth/n_layer=1"]
    with open(run.metrics_path, "w") as f:
        for i in range(LINES):
            f.write(json.dumps({"kind": "train", "iter": i, "loss": 3.0 - i / LINES, "t": 1e9 + i,
                                "tokens": i * 128}) + "\n")
            if i % 1000 == 999:
                f.write(json.dumps({"kind": "eval", "iter": i, "val_loss": 3.1 - i / LINES,
                                    "train_loss": 3.0 - i / LINES, "t": 1e9 + i}) + "\n")
    return run


def peak_mb(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_status_of_a_long_run_reads_the_tail_only(tmp_path):
    run = long_run(tmp_path)
    reading, mb = peak_mb(lambda: read_run(run))
    assert reading.state == "done" and reading.damaged == ()
    assert mb < 40, f"{mb:.0f} MB to read one run's status"


def test_damage_near_the_end_of_a_long_file_is_still_named(tmp_path):
    run = long_run(tmp_path)
    with open(run.metrics_path, "a") as f:
        f.write("[1, 2]\n")
    assert read_run(run).damaged == ("metrics.jsonl: near the end: a list, not an object",)


def test_a_report_summary_keeps_every_eval_and_a_thinned_curve(tmp_path):
    run = long_run(tmp_path)
    s, mb = peak_mb(lambda: summarize(run, tmp_path / "runs"))
    assert len(s.evals) == LINES // 1000
    assert MAX_TRAIN_POINTS <= len(s.trains) <= 2 * MAX_TRAIN_POINTS + 1
    assert s.trains[0]["iter"] == 0 and s.trains[-1]["iter"] == LINES - 1
    assert mb < 120, f"{mb:.0f} MB to summarise one run"


def test_the_tail_reads_in_chunks_and_waits_for_a_partial_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"iter": i, "pad": "x" * 50}) + "\n" for i in range(1000))
                 + '{"iter": 10')
    t = JsonlTail(p)
    assert [r["iter"] for r in t.iter_new(chunk_bytes=100)] == list(range(1000))
    with open(p, "a") as f:
        f.write("00}\n")
    assert [r["iter"] for r in t.read_new()] == [1000]
    assert t.lines == 1001


def test_thinned_keeps_evenly_spaced_points_and_the_last():
    t = Thinned(50)
    for i in range(10_001):
        t.add(i)
    kept = t.result()
    assert 50 <= len(kept) <= 101 and kept[0] == 0 and kept[-1] == 10_000
    steps = {b - a for a, b in zip(kept[:-2], kept[1:-1])}
    assert len(steps) == 1


def test_smoothing_a_million_points_is_linear_time():
    y = np.random.default_rng(0).random(1_000_000)
    t0 = time.perf_counter()
    sm = smooth(y)
    assert time.perf_counter() - t0 < 5
    w = 80_001 // 2
    assert np.isclose(sm[500_000], y[500_000 - w:500_000 + w + 1].mean())
