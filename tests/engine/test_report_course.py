"""The course report over the three assignment sweeps, on fixture runs with known numbers:
12 configurations (heads n_head=8 is width n_embd=256, shared), two seeds each."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from engine.config import SamplingConfig, TrainConfig
from engine.report.write import write_report
from engine.runs import RunDir, create_run, link_shared
from tui.cli import main

BASE = dict(block_size=32, batch_size=4, max_iters=300, eval_interval=100, vocab_size=65,
            dataset="shakespeare", tokenizer="char", device="cpu")
T0 = 1_700_000_000.0
STORY = (" there was a little cat named Tom. Tom liked warm milk and long naps! He lived "
         "in a red house by the sea. One day he met a kind dog.")
SWEEPS = {"depth": ("n_layer", [2, 4, 8, 12], dict(n_head=8, n_embd=256)),
          "width": ("n_embd", [128, 192, 256, 384], dict(n_layer=6, n_head=8)),
          "heads": ("n_head", [4, 8, 16, 32], dict(n_layer=6, n_embd=256))}
SEEDS = (1337, 1338)


def final_val(key: str, value: int, seed: int) -> float:
    """Val loss falls with size; the seed moves it by ±0.002. The heads sweep sits around
    its n_head=8 (width's n_embd=256, 2.25): within 0.004 except n_head=32 (clearly worse)."""
    noise = 0.002 if seed == SEEDS[0] else -0.002
    if key == "n_head":
        return 2.25 + (0.05 if value == 32 else 0.0005 * (value - 8)) + noise
    return 2.4 - 0.15 * math.log2(value / (2 if key == "n_layer" else 128)) + noise


def make_run(root: Path, sweep: str, name: str, val: float, still_improving: bool,
             max_iters: int, varied: dict, **cfg) -> RunDir:
    c = TrainConfig(**{**BASE, "max_iters": max_iters, **cfg},
                    sampling=SamplingConfig(temperature=0.8, top_k=200))
    run = create_run(root, sweep, name, c, varied)
    for it in range(0, max_iters + 1, 10):  # per-step train loss, falling to the end
        run.log_metric(kind="train", iter=it, loss=val + 2.0 * math.exp(-it / 60) + 0.05,
                       lr=1e-3, dt_ms=10.0, tok_s=1000.0, mfu=0.0, t=T0 + it)
    iters = list(range(50, max_iters + 1, 50))
    vals = [val + 0.3 * (len(iters) - 1 - i) for i in range(len(iters))]
    if not still_improving:  # best at the second-to-last eval, a little worse at the end
        vals[-2], vals[-1] = val, val + 0.001
    for it, v in zip(iters, vals):
        run.log_metric(kind="eval", iter=it, train_loss=v - 0.05, val_loss=v, t=T0 + it)
    completion = STORY * (2 if cfg.get("seed") == SEEDS[0] else 3)
    run.log_sample(iter=max_iters, prompt="Once upon a time", temperature=0.8, top_k=200,
                   top_p=None, seed=1, text="Once upon a time" + completion,
                   completion=completion, metrics={})
    best = min(zip(iters, vals), key=lambda p: p[1])
    run.update_status(state="done", started_at=T0, ended_at=T0 + 100, best_val_loss=best[1],
                      best_iter=best[0], val_loss=vals[-1], train_loss=vals[-1] - 0.05,
                      iter=max_iters, tok_s=1000.0)
    return run


def course_runs(root: Path) -> None:
    for sweep, (key, values, fixed) in SWEEPS.items():
        for value in values:
            for seed in SEEDS:
                # the names experiments.toml gives (engine.experiments): plain first seed
                name = f"{key}={value}" + (f",seed={seed}" if seed != SEEDS[0] else "")
                if sweep == "heads" and value == 8:  # == width/n_embd=256: shared
                    owner = RunDir(root / "width" / name.replace("n_head=8", "n_embd=256"))
                    link_shared(root, sweep, name, owner)
                    continue
                make_run(root, sweep, name, final_val(key, value, seed),
                         still_improving=(sweep, value) == ("width", 384),
                         max_iters=150 if (sweep, value) == ("depth", 12) else 300,
                         varied={key: value},
                         **{**fixed, key: value, "seed": seed})


def section(md: str, heading: str) -> str:
    return md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def rows(part: str) -> list[list[str]]:
    lines = [ln for ln in part.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[2:]]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("course")
    course_runs(tmp / "runs")
    res = write_report(tmp / "runs", ["depth", "width", "heads"], tmp / "out")
    return tmp, res, res.course.report_md.read_text()


def test_methods_table_has_one_row_per_distinct_model(course):
    _, res, md = course
    methods = rows(section(md, "Methods"))
    assert len(methods) == 11 and res.course.n_models == 11
    shared = [r for r in methods if "shared" in r[1]]
    assert [r[1] for r in shared] == ["width n_embd=256 · heads n_head=8 (shared: trained once)"]
    # the value each sweep varies is bold: both n_embd (width) and n_head (heads) here
    head = [c.strip() for c in section(md, "Methods").split("\n|", 1)[1].split("|")[:9]]
    assert shared[0][head.index("n_embd")] == "**256**"
    assert shared[0][head.index("n_head")] == "**8**"
    depth2 = next(r for r in methods if r[1] == "depth n_layer=2")
    assert depth2[head.index("n_layer")] == "**2**" and depth2[head.index("n_embd")] == "256"
    assert depth2[-1] == "2"  # seeds


def test_shared_model_appears_in_both_sweeps_and_results_show_mean_and_spread(course):
    _, _, md = course
    results = rows(section(md, "Results"))
    assert len(results) == 12
    by = {(r[0], r[1]): r for r in results}
    assert "shared with heads/n_head=8" in by[("width", "n_embd=256")][-1]
    assert "shared with width/n_embd=256" in by[("heads", "n_head=8")][-1]
    assert by[("width", "n_embd=256")][3] == by[("heads", "n_head=8")][3]
    # two seeds, ±0.002 around the value: sd = 0.002·√2
    mean = final_val("n_embd", 256, SEEDS[0]) - 0.002
    assert by[("width", "n_embd=256")][3] == f"{mean:.4f} ± {0.004 / math.sqrt(2):.4f}"
    assert [r[1] for r in results if r[0] == "heads"] == [
        "n_head=4", "n_head=8", "n_head=16", "n_head=32"]


def test_budget_mismatch_and_still_improving_are_flagged(course):
    _, _, md = course
    by = {(r[0], r[1]): r for r in rows(section(md, "Results"))}
    assert "budget ≠ (19,200 tokens)" in by[("depth", "n_layer=12")][-1]
    assert "still improving" in by[("width", "n_embd=384")][-1]
    assert "still improving" not in by[("width", "n_embd=128")][-1]
    assert "**Warning:** configurations were trained for different budgets" in md
    assert "Still improving at their last eval" in section(md, "Experiment: `width`")


def test_heads_section_plots_against_n_head_and_calls_small_differences_noise(course):
    tmp, res, md = course
    heads = section(md, "Experiment: `heads`")
    assert "(heads_vs_n_head.png)" in heads and "plot against `n_head`, not parameters" in heads
    assert "(depth_vs_params.png)" in section(md, "Experiment: `depth`")
    assert (res.course.dir / "heads_vs_n_head.png").stat().st_size > 10_000
    # the heads sweep's own report too: against n_head, no one-x plots against parameters
    heads_own = next(s for s in res.sweeps if s.sweep == "heads")
    assert sorted(p.name for p in heads_own.plots) == [
        "loss_vs_tokens.png", "training_curves.png", "vs_n_head.png"]
    # n_head 4 -> 8 -> 16 move the mean by 0.002-0.004 with sd 0.0028 each: not findings
    assert "Not a finding (p ≥ 0.05): n_head=4 → n_head=8" in heads
    assert re.search(r"findings \(Welch's t-test, p < 0.05\): n_head=16 → n_head=32: \+0\.04\d+ "
                     r"\(95% interval \+0\.0\d+ to \+0\.0\d+, p = 0\.00\d", heads)


def test_course_report_is_its_own_folder_and_html_embeds_every_figure(course):
    tmp, res, md = course
    d = res.course.dir
    assert d == tmp / "out" / "_course" / "depth+width+heads"
    assert {s.dir for s in res.sweeps} == {tmp / "out" / n for n in SWEEPS}
    page = res.course.report_html.read_text()
    pngs = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", md)
    assert len(pngs) == 7 and all((d / p).is_file() for p in pngs)
    assert page.count("data:image/png;base64,") == len(pngs) and ".png\"" not in page
    assert "@media print" in page and "<table>" in page
    runs = list(csv.DictReader(res.course.runs_csv.open()))
    assert len(runs) == 24 and sum(r["sweep"] == "heads" for r in runs) == 8
    fitted = {(r["sweep"], r["run"].split(",")[0]) for r in runs if r["in_fit"] == "1"}
    # one per parameter count: the best model of each size; at 4.7M that is heads
    # n_head=4 (2.248), not n_embd=256 = n_head=8 (2.250): 4 depth + 3 width + 1 heads
    assert ("heads", "n_head=4") in fitted and ("width", "n_embd=256") not in fitted
    assert ("heads", "n_head=8") not in fitted and len(fitted) == 8


def test_one_sweep_and_many_sweep_calls_write_the_same_sweep_report(tmp_path):
    course_runs(tmp_path / "runs")
    one = write_report(tmp_path / "runs", ["depth"], tmp_path / "a", plots=False)
    many = write_report(tmp_path / "runs", ["depth", "width", "heads"], tmp_path / "b",
                        plots=False)
    strip = lambda t: re.sub(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC", "", t)  # noqa: E731
    assert one.course is None and many.course is not None
    assert strip(one.sweeps[0].report_md.read_text()) == strip(many.sweeps[0].report_md.read_text())
    assert many.course.report_md not in [s.report_md for s in many.sweeps]


def test_report_command_names_the_course_report(tmp_path, capsys):
    course_runs(tmp_path / "runs")
    assert main(["--runs", str(tmp_path / "runs"), "report", "depth", "heads", "--no-plots",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    where = tmp_path / "out" / "_course" / "depth+heads" / "report.md"
    assert f"course report: 8 distinct models -> {where}" in out
    assert "report.html" in out


def test_course_report_states_each_sweeps_provenance_and_flags_a_changed_torch(tmp_path):
    root = tmp_path / "runs"
    course_runs(root)
    prov = {"nanotui": "0.1.0", "git_commit": "abc123", "python": "3.11.7", "torch": "2.13.0",
            "cuda": None, "device_name": "Intel Xeon", "host": "node1", "command": "python -P"}
    for run_dir in sorted((root / "depth").iterdir()):
        torch_v = "2.14.1" if run_dir.name == "n_layer=12,seed=1338" else "2.13.0"
        RunDir(run_dir).update_status(provenance={**prov, "torch": torch_v})
    md = write_report(root, ["depth", "width", "heads"], tmp_path / "out",
                      plots=False).course.report_md.read_text()
    part = section(md, "Provenance")
    depth = part.split("### depth", 1)[1].split("###", 1)[0]
    assert "torch `2.13.0`" not in depth and "device `Intel Xeon`" in depth
    assert "runs differ in torch" in depth and "n_layer=12 (seed 2): `2.14.1`" in depth
    assert "No provenance recorded" in part.split("### width", 1)[1]


def test_a_sweep_report_warns_when_too_few_words_were_scored(course):
    _, res, _ = course
    depth = next(r for r in res.sweeps if r.sweep == "depth").report_md.read_text()
    diversity = section(depth, "Diversity")
    assert "**Warning:** fewer than 200 words scored per run for" in diversity
    assert "n_layer=2," in diversity.split("**Warning:**", 1)[1]  # the first seed's run


def test_a_sweeps_own_report_pools_seeds_like_the_course_report(course):
    _, res, _ = course
    reports = {r.sweep: r for r in res.sweeps}
    depth = reports["depth"].report_md.read_text()
    over = section(depth, "Over seeds")
    assert "| n_layer=2 | 1,590,784 | 2.4000 ± 0.0028 |" in over  # 2.402 and 2.398
    assert "| n_layer=2,seed=1338 |" not in over                 # per run: in Results
    assert "| n_layer=2,seed=1338 | done |" in section(depth, "Results")
    # the fit's points are the means over seeds, not the best seed (biased low)
    assert "depth/n_layer=2 (1,590,784, 2.4000)" in section(depth, "Loss vs size")
    with open(reports["depth"].runs_csv) as f:
        in_fit = {r["run"]: r["in_fit"] for r in csv.DictReader(f)}
    assert in_fit["n_layer=2"] == in_fit["n_layer=2,seed=1338"] == "1"
    heads = section(reports["heads"].report_md.read_text(), "Over seeds")
    assert "Not a finding (p ≥ 0.05): n_head=4 → n_head=8" in heads
    assert "n_head=16 → n_head=32: +0.0460" in heads.split("Within")[0]
