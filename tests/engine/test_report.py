"""Reports on fixture run directories with known numbers (written through engine.runs)."""

from __future__ import annotations

import csv
import json
import math
import statistics
import os
import re
from pathlib import Path

import pytest

from engine.config import SamplingConfig, TrainConfig
from engine.report.write import ReportError, write_report
from engine.runs import create_run

BASE = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, max_iters=100,
            eval_interval=50, vocab_size=65, dataset="shakespeare", tokenizer="char",
            device="cpu")
T0 = 1_700_000_000.0


def make_run(root: Path, sweep: str, name: str, evals: list[tuple[int, float, float]],
             state: str = "done", samples: list[dict] | None = None,
             status: dict | None = None, trains: list[tuple[int, float, float]] | None = None,
             wall: float = 125.0, **cfg):
    """A run directory. evals: (iter, train_loss, val_loss); trains: (iter, loss, tok_s)."""
    c = TrainConfig(**{**BASE, **cfg}, sampling=SamplingConfig(temperature=0.8, top_k=200))
    run = create_run(root, sweep, name, c, dict(cfg))
    for it, loss, tok_s in trains or []:
        run.log_metric(kind="train", iter=it, loss=loss, lr=1e-3, dt_ms=10.0, tok_s=tok_s,
                       mfu=0.0, t=T0 + it)
    for it, tr, va in evals:
        run.log_metric(kind="eval", iter=it, train_loss=tr, val_loss=va, t=T0 + it)
    for s in samples or []:
        run.log_sample(**s)
    # what the training process records in status.json beside its metrics
    fields: dict = {"state": state, "started_at": T0}
    speeds = [s for _, _, s in (trains or [])[1:]]
    if speeds:
        fields["tok_s"] = statistics.median(speeds)
    if evals:
        best = min(evals, key=lambda e: e[2])
        fields.update(best_val_loss=best[2], best_iter=best[0], train_loss=evals[-1][1],
                      val_loss=evals[-1][2], iter=evals[-1][0])
    if state in ("done", "failed", "stopped"):
        fields["ended_at"] = T0 + wall
    if state == "running":
        # A run on a Slurm node is taken at its word (no local pid to check): stays running.
        fields.update(pid=None, executor={"kind": "slurm", "job_id": "1"})
    fields.update(status or {})
    run.update_status(**fields)
    return run


def sample(it: int, completion: str, prompt: str = "Once upon a time", temperature: float = 0.8,
           top_k: int | None = 200, seed: int = 1) -> dict:
    """A samples.jsonl record as the trainer writes it (its per-sample metrics are
    placeholders: the report rescores the completions with engine.sample.metrics)."""
    return dict(iter=it, prompt=prompt, temperature=temperature, top_k=top_k, top_p=None,
                seed=seed, text=prompt + completion, completion=completion,
                metrics={"ttr": 0.0, "repetition_4": 0.0})


STORY = (" there was a cat named Tom. Tom liked milk! He lived in a red house. One day he "
         "met a dog. The dog was kind.")
LOOP = " a b c a b c a b c a b c"  # 12 words, 3 unique; 9 4-grams, 3 unique

# (name, n_layer, best val, final train, tok/s samples, completion)
DEPTH = [("n_layer=1", 1, 1.9125, 1.8625, 1000.0, STORY),
         ("n_layer=2", 2, 1.7250, 1.6500, 2000.0, STORY),
         ("n_layer=4", 4, 1.6375, 1.5125, 3000.0, LOOP)]


def depth_sweep(root: Path) -> None:
    for name, nl, val, train, tok_s, text in DEPTH:
        make_run(root, "depth", name, [(0, 4.0, 4.1), (50, 2.25, 2.5), (100, train, val)],
                 trains=[(10, 3.0, 10.0), (20, 2.9, tok_s), (30, 2.8, tok_s + 2),
                         (40, 2.7, tok_s - 2)],
                 samples=[sample(50, " early text."), sample(100, text),
                          sample(100, text, top_k=None)],  # another decoding: ignored
                 n_layer=nl)
    # overfits: val best at iter 100 (1.80), then rises to 1.90 while train keeps falling
    make_run(root, "depth", "n_layer=3", [(0, 4.0, 4.1), (100, 1.85, 1.80), (200, 1.50, 1.90)],
             samples=[sample(200, STORY)], n_layer=3)
    make_run(root, "depth", "n_layer=8", [(0, 4.0, 4.1), (50, 2.0, 2.3)], state="failed",
             status={"reason": "oom"}, n_layer=8)
    make_run(root, "depth", "n_layer=6", [(0, 4.0, 4.1), (50, 2.0, 2.2)], state="running",
             n_layer=6)


def table_rows(md: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after `## heading`."""
    part = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in part.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


def header(md: str, heading: str) -> list[str]:
    part = md.split(f"## {heading}\n", 1)[1]
    line = next(ln for ln in part.splitlines() if ln.startswith("|"))
    return [c.strip() for c in line.strip("|").split(" | ")]


@pytest.fixture(scope="module")
def depth_report(tmp_path_factory):
    # One report shared by the read-only checks below (a report takes seconds).
    tmp_path = tmp_path_factory.mktemp("depth")
    root = tmp_path / "runs"
    depth_sweep(root)
    res = write_report(root, ["depth"], tmp_path / "out")
    md = res.sweeps[0].report_md.read_text()
    rows = list(csv.DictReader(res.sweeps[0].runs_csv.open()))
    return res, md, rows


def test_results_table_holds_the_fixture_numbers(depth_report):
    res, md, _ = depth_report
    assert "## Over seeds" not in md  # one seed per configuration: the runs are the rows
    head = header(md, "Results")
    rows = {r[0]: dict(zip(head, r)) for r in table_rows(md, "Results")}
    # sizes: nanoGPT count for n_layer=1, n_embd=32, vocab 65 = 14,464 (checked by hand:
    # wte 65*32 + per layer 12*32^2 + 2 LN*32 ... + ln_f 32); total adds wpe 32*32
    assert rows["n_layer=1"]["params (nanoGPT)"] == "14,464"
    assert rows["n_layer=1"]["params (total)"] == "15,488"
    for name, nl, val, train, tok_s, _ in DEPTH:
        r = rows[name]
        assert r["state"] == "done"
        assert r["n_layer"] == str(nl)
        assert r["best val"] == f"{val:.4f}"
        assert r["final val"] == f"{val:.4f}"
        assert r["best @ iter"] == "100"
        assert r["final train"] == f"{train:.4f}"
        assert r["train-val gap"] == f"{val - train:+.4f}"
        assert r["bits/char"] == f"{val / math.log(2):.3f}"
        assert r["tok/s"] == f"{tok_s:,.0f}"  # median of the train records, first skipped
        assert r["wall time"] == "2m 05s"
    assert "perplexity" not in head  # char runs only


def test_unfinished_runs_are_marked_and_left_out_of_the_fit(depth_report):
    res, md, rows = depth_report
    states = {r[0]: r[1] for r in table_rows(md, "Results")}
    assert states["n_layer=8"] == "failed (oom)"
    assert states["n_layer=6"] == "running"
    by_run = {r["run"]: r for r in rows}
    assert by_run["n_layer=8"]["in_fit"] == "0" and by_run["n_layer=6"]["in_fit"] == "0"
    assert by_run["n_layer=8"]["best_val_loss"] == "2.3"
    assert res.fit is not None and res.fit.n_points == 4  # the 4 finished sizes
    assert "Not finished (shown, not fitted): n_layer=6: running; n_layer=8: failed (oom)" in md


def test_csv_holds_every_number_one_row_per_run(depth_report):
    _, _, rows = depth_report
    assert len(rows) == 6
    by_run = {r["run"]: r for r in rows}
    for name, nl, val, train, tok_s, text in DEPTH:
        r = by_run[name]
        assert float(r["best_val_loss"]) == val
        assert float(r["final_val_loss"]) == val
        assert float(r["final_train_loss"]) == train
        assert float(r["train_val_gap"]) == round(val - train, 6)
        assert float(r["bits_per_char"]) == round(val / math.log(2), 6)
        assert float(r["tok_s"]) == tok_s
        assert float(r["wall_s"]) == 125.0
        if text == LOOP:  # by hand: 3 unique of 12 words; 1 - 3/9 repeated 4-grams
            assert (float(r["ttr"]), float(r["repetition_4"])) == (0.25, round(1 - 3 / 9, 6))
            assert float(r["words"]) == 12
        else:  # 19 unique of 25 words, no repeated 4-gram
            assert (float(r["ttr"]), float(r["repetition_4"])) == (0.76, 0.0)
            assert float(r["words"]) == 25
        assert r["diversity_iter"] == "100"
        assert json.loads(r["varied"]) == {"n_layer": nl}
    assert by_run["n_layer=1"]["params"] == "14464"
    assert by_run["n_layer=1"]["params_total"] == "15488"


def test_diversity_excerpts_and_observations(depth_report):
    _, md, _ = depth_report
    assert "Decoding setting: **temperature 0.8, top_k 200**" in md
    div = {r[0]: r for r in table_rows(md, "Diversity")}
    assert header(md, "Diversity")[2:] == ["iter", "samples", "words", "TTR", "MATTR",
                                           "distinct-1", "distinct-2", "repetition-4"]
    assert div["n_layer=4"][2:] == ["100", "1", "12", "0.250", "0.250", "0.250",
                                    f"{3 / 11:.3f}", "0.667"]
    assert div["n_layer=1"][5] == "0.760" and div["n_layer=1"][9] == "0.000"
    ex = {r[0]: r[2] for r in table_rows(md, "Samples side by side")}
    # 2-4 sentences: the cut stops at the fourth sentence
    assert ex["n_layer=1"] == ("Once upon a time there was a cat named Tom. Tom liked milk! "
                               "He lived in a red house. One day he met a dog.")
    assert ex["n_layer=3"].startswith("Once upon a time there was a cat")
    obs = md.split("## Observations\n", 1)[1].split("\n## ", 1)[0]
    assert "**n_layer=3** overfits from iter 100" in obs
    assert "rose from 1.8000 (iter 100) to 1.9000 (iter 200)" in obs
    assert "**n_layer=4** degenerates: repetition-4 = 0.667 > 0.30" in obs
    # sizes 14,464 / 26,816 / 39,168 / 51,520 params (n_layer 1-4), best val 1.9125 /
    # 1.725 / 1.80 / 1.6375: gain per doubling = (L1 - L2) / L1 / log2(N2 / N1)
    g12 = (1.9125 - 1.725) / 1.9125 / math.log2(26816 / 14464) * 100
    g23 = (1.725 - 1.80) / 1.725 / math.log2(39168 / 26816) * 100
    assert f"n_layer=1 → n_layer=2: {g12:+.1f}%; n_layer=2 → n_layer=3: {g23:+.1f}%" in obs
    assert (f"Returns diminish beyond n_layer=2 (26,816 params): going to n_layer=3 (39,168 "
            f"params) makes the best val loss worse ({g23:.1f}% per doubling)") in obs


def test_plots_are_written_as_png(depth_report):
    res, md, _ = depth_report
    names = sorted(p.name for p in res.sweeps[0].plots)
    assert names == ["diversity_vs_params.png", "loss_vs_tokens.png",
                     "training_curves.png", "val_loss_vs_params.png", "vs_params.png"]
    for p in res.sweeps[0].plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({p.name})" in md
    assert "## How these numbers were computed" in md


def test_fit_refused_with_fewer_than_three_sizes(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "two", "a", [(100, 1.9, 2.0)], n_layer=1)
    make_run(root, "two", "b", [(100, 1.7, 1.8)], n_layer=2)
    make_run(root, "two", "c", [(100, 1.2, 1.5)], state="failed", n_layer=4)
    res = write_report(root, ["two"], tmp_path / "out", plots=False)
    assert res.fit is None
    md = res.sweeps[0].report_md.read_text()
    fit = md.split("## Loss vs size: power-law fit\n", 1)[1]
    assert "No fit: a law needs finished runs of at least 3 different sizes; there are 2" in fit


def test_gpt2_runs_get_perplexity_and_bpc_from_meta(tmp_path):
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"vocab_size": 50257, "tokenizer": "gpt2",
                                                "bytes_per_token": 4.0}))
    root = tmp_path / "runs"
    make_run(root, "bpe", "small", [(100, 3.0, 3.25)], tokenizer="gpt2", vocab_size=None,
             data_dir=str(data), n_embd=32)
    make_run(root, "bpe", "nometa", [(100, 3.0, 3.5)], tokenizer="gpt2", vocab_size=50257,
             n_embd=64)
    # a named dataset prepared into the data cache (conftest isolates NANOTUI_DATA_DIR)
    cached = Path(os.environ["NANOTUI_DATA_DIR"]) / "prepared" / "tinystories-gpt2-0123abcd"
    cached.mkdir(parents=True)
    (cached / "meta.json").write_text(json.dumps({"vocab_size": 50257, "tokenizer": "gpt2",
                                                  "bytes_per_token": 4.25, "val_fraction": None}))
    make_run(root, "bpe", "cached", [(100, 3.0, 3.4)], tokenizer="gpt2", vocab_size=None,
             dataset="tinystories", n_embd=48)
    res = write_report(root, ["bpe"], tmp_path / "out", plots=False)
    md = res.sweeps[0].report_md.read_text()
    head = header(md, "Results")
    rows = {r[0]: dict(zip(head, r)) for r in table_rows(md, "Results")}
    assert rows["small"]["perplexity"] == f"{math.exp(3.25):.2f}"
    assert rows["small"]["bits/char"] == f"{3.25 / math.log(2) / 4.0:.3f}"
    assert rows["nometa"]["bits/char"] == "—"  # no meta.json: shown as missing
    assert "Missing numbers (—): bits/char of nometa: no meta.json found" in md
    assert rows["cached"]["bits/char"] == f"{3.4 / math.log(2) / 4.25:.3f}"
    # counted with the vocabulary training uses: GPT-2's 50257 padded to 50304
    assert rows["cached"]["params (nanoGPT)"] == f"{50304 * 48 + 12 * 48 * 48 + 3 * 48:,}"
    assert rows["small"]["params (nanoGPT)"] == f"{50304 * 32 + 12 * 32 * 32 + 3 * 32:,}"
    csvrow = {r["run"]: r for r in csv.DictReader(res.sweeps[0].runs_csv.open())}
    assert float(csvrow["small"]["perplexity"]) == round(math.exp(3.25), 6)


def test_status_params_win_over_counting(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "s", "a", [(100, 1.9, 2.0)], status={"params": 1234, "params_total": 5678})
    res = write_report(root, ["s"], tmp_path / "out", plots=False)
    row = next(csv.DictReader(res.sweeps[0].runs_csv.open()))
    assert (row["params"], row["params_total"]) == ("1234", "5678")


def test_grid_group_by_and_ranking(tmp_path):
    root = tmp_path / "runs"
    vals = {}
    for i, (nh, ne, bs, mi, dr) in enumerate(
            (nh, ne, bs, mi, dr) for nh in (2, 4) for ne in (32, 64) for bs in (4, 8)
            for mi in (100, 200) for dr in (0.0, 0.2)):
        v = 2.0 - 0.1 * (ne == 64) - 0.05 * (mi == 200) + 0.03 * dr + 0.001 * i
        vals[i] = v
        make_run(root, "grid", f"r{i:02d}", [(mi, v - 0.1, v)], n_head=nh, n_embd=ne,
                 batch_size=bs, max_iters=mi, dropout=dr)
    res = write_report(root, ["grid"], tmp_path / "out", group_by="n_embd", plots=False)
    md = res.sweeps[0].report_md.read_text()
    assert len(table_rows(md, "Results")) == 32
    assert header(md, "Results")[2:7] == ["batch_size", "dropout", "max_iters", "n_embd", "n_head"]
    groups = {r[0]: r for r in table_rows(md, "Grouped by `n_embd`")}
    best64 = min(v for i, v in vals.items() if (i // 8) % 2 == 1)
    assert groups["64"][1] == "16" and groups["64"][3] == f"{best64:.4f}"
    ranked = table_rows(md, "Ranked by best validation loss")
    assert ranked[0][4 + 5] == f"{min(vals.values()):.4f}"
    # two model sizes only (n_head does not change the count): fit refused, said so
    assert "No fit" in md


def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path):
    root = tmp_path / "runs"
    depth_sweep(root)
    make_run(root, "pending", "a", [], state="queued")
    make_run(root, "pending", "b", [(50, 2.0, 2.1)], state="failed")
    out = tmp_path / "out"
    with pytest.raises(ReportError, match=r"unknown sweep 'dept' .*did you mean 'depth'"):
        write_report(root, ["dept"], out)
    with pytest.raises(ReportError, match=r"sweep 'pending' has no finished runs yet \(1 failed, 1 queued\)"):
        write_report(root, ["pending"], out)
    with pytest.raises(ReportError, match=r"unknown --group-by key 'n_emb'.*n_embd"):
        write_report(root, ["depth"], out, group_by="n_emb")
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReportError, match=r"cannot write the report to .*file/out"):
        write_report(root, ["depth"], blocker / "out")
    assert blocker.read_text() == "x"


def test_report_is_deterministic_apart_from_the_date(tmp_path):
    root = tmp_path / "runs"
    depth_sweep(root)
    a = write_report(root, ["depth"], tmp_path / "a", plots=False).sweeps[0]
    b = write_report(root, ["depth"], tmp_path / "b", plots=False).sweeps[0]
    strip = lambda t: re.sub(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC", "", t)  # noqa: E731
    assert strip(a.report_md.read_text()) == strip(b.report_md.read_text())
    assert a.runs_csv.read_text() == b.runs_csv.read_text()


def test_the_study_fit_is_in_the_course_report_and_each_sweep_fits_its_own_runs(tmp_path):
    # so a one-sweep and a many-sweep call never write different fits into one report.md
    root = tmp_path / "runs"
    depth_sweep(root)
    make_run(root, "width", "n_embd=48", [(100, 1.6, 1.65)], n_embd=48)
    make_run(root, "width", "n_embd=64", [(100, 1.5, 1.55)], n_embd=64)
    res = write_report(root, ["depth", "width"], tmp_path / "out", plots=False)
    assert [s.sweep for s in res.sweeps] == ["depth", "width"]
    assert res.fit is not None and res.fit.n_points == 6  # 4 depth sizes + 2 width sizes
    fits = [s.report_md.read_text().split("## Loss vs size: power-law fit\n", 1)[1]
            .split("\n## ", 1)[0] for s in res.sweeps]
    assert "across the sweep `depth` on 4 points" in fits[0]
    assert fits[1].startswith("\nNo fit:")  # two sizes
    course = res.course.report_md.read_text()
    assert "across the sweeps `depth`, `width` on 6 points" in course
    assert f"α (size exponent) | {res.fit.alpha:.4g}" in course


def test_each_tokenizer_gets_its_own_fit(tmp_path):
    # nats per token of a BPE run and of a char run are different units: never one fit
    root = tmp_path / "runs"
    depth_sweep(root)
    for ne, val in ((32, 6.5), (48, 6.0), (64, 5.7)):
        make_run(root, "bpe", f"n_embd={ne}", [(100, val - 0.1, val)], tokenizer="gpt2",
                 vocab_size=50257, n_embd=ne)
    res = write_report(root, ["depth", "bpe"], tmp_path / "out", plots=False)
    labels = [g.label for g in res.fits]
    assert labels == ["char · shakespeare", "gpt2 · shakespeare"]
    assert [g.fit.n_points for g in res.fits] == [4, 3]
    assert all(s.tokenizer == "gpt2" for s in res.fits[1].points)
    md = res.course.report_md.read_text()
    assert "### char · shakespeare" in md and "### gpt2 · shakespeare" in md
    assert json.loads(json.dumps(res.to_dict()))["fits"][1]["points"] == [
        "bpe/n_embd=32", "bpe/n_embd=48", "bpe/n_embd=64"]


def test_same_size_runs_sort_by_number_and_csv_has_the_model_shape(tmp_path):
    root = tmp_path / "runs"
    for nh in (16, 4, 32, 8):  # the heads sweep: one parameter count for all four
        make_run(root, "heads", f"n_head={nh}", [(100, 2.0, 2.1 + nh / 1000)], n_head=nh,
                 n_embd=32)
    res = write_report(root, ["heads"], tmp_path / "out", plots=False)
    rows = list(csv.DictReader(res.sweeps[0].runs_csv.open()))
    assert [r["run"] for r in rows] == ["n_head=4", "n_head=8", "n_head=16", "n_head=32"]
    assert [r["n_head"] for r in rows] == ["4", "8", "16", "32"]
    assert {r["n_embd"] for r in rows} == {"32"} and rows[0]["n_layer"] and rows[0]["max_iters"]
    md = res.sweeps[0].report_md.read_text()
    assert [r[0] for r in table_rows(md, "Results")] == [r["run"] for r in rows]


def test_different_budgets_and_unconverged_runs_are_called_out(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "b", "short", [(50, 2.4, 2.5), (150, 2.2, 2.3)], max_iters=150)
    make_run(root, "b", "long", [(100, 2.1, 2.2), (300, 2.2, 2.25)], max_iters=300)
    md = write_report(root, ["b"], tmp_path / "out", plots=False).sweeps[0].report_md.read_text()
    assert "different training budgets (short: 150 iters" in md and "long: 300 iters" in md
    assert "Still improving at their last eval" in md and ": short." in md
