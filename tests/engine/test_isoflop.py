"""IsoFLOP sweeps and tuned sweeps: experiments.toml -> run specs, plan's refusals, the
Approach 2 analysis, and the report's sections and --json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import SamplingConfig, TrainConfig
from engine.experiments import ExperimentsError, parse_experiments
from engine.model.horizon import resolve
from engine.report.laws.isoflop import Cell, fit_isoflop
from engine.report.write import write_report
from engine.runs import create_run
from tui.cli import main

HEAD = """
[defaults]
dataset = "shakespeare"
tokenizer = "char"
block_size = 32
batch_size = 4
n_head = 2
n_embd = 16
device = "cpu"
"""


def test_isoflop_expands_to_one_run_per_budget_and_size_with_the_budget_as_horizon():
    exp = parse_experiments(HEAD + """
[sweep.iso]
isoflop = { train_flops = [3e13, 1e14], n_layer = [2, 4, 8], min_steps = 50 }
""")
    runs = exp.sweeps["iso"].runs
    assert [r.name for r in runs] == [f"train_flops={c},n_layer={n}" for c in ("3e+13", "1e+14")
                                      for n in (2, 4, 8)]
    assert all(r.cfg.train_flops in (3e13, 1e14) and r.cfg.max_iters is None for r in runs)
    assert runs[0].meta == {"kind": "isoflop", "budget_key": "train_flops", "min_steps": 50,
                            "max_epochs": 4.0}


def test_isoflop_takes_a_list_of_shapes_and_tune_multiplies_every_configuration():
    exp = parse_experiments(HEAD + """
[sweep.iso]
isoflop = { train_flops = [1e12], shapes = [{ n_layer = 1, n_embd = 8 }, { n_layer = 2, n_embd = 16 }] }
tune = { learning_rate = [1e-3, 3e-4] }
""")
    names = [r.name for r in exp.sweeps["iso"].runs]
    assert names == ["train_flops=1e+12,n_layer=1,n_embd=8,learning_rate=0.0003",
                     "train_flops=1e+12,n_layer=1,n_embd=8,learning_rate=0.001",
                     "train_flops=1e+12,n_layer=2,n_embd=16,learning_rate=0.0003",
                     "train_flops=1e+12,n_layer=2,n_embd=16,learning_rate=0.001"]
    assert exp.sweeps["iso"].runs[3].cfg.learning_rate == 1e-3
    assert exp.sweeps["iso"].runs[0].meta["tune"] == ["learning_rate"]


@pytest.mark.parametrize("sweep, message", [
    ('vary = { n_layer = [1, 2] }\ntune = { dataset = ["a", "b"] }', "tune.dataset: only a numeric"),
    ('vary = { n_layer = [1, 2] }\ntune = { learning_rate = [1e-3] }', "at least 2 values"),
    ('isoflop = { train_flops = [1e12] }', "budgets but no sizes"),
    ('isoflop = { n_layer = [1, 2] }', "isoflop needs train_flops"),
    ('isoflop = { train_flops = [1e12], n_layer = [1], max_iters = [5] }', "max_iters in a size"),
    ('grid = { n_layer = [1] }\nisoflop = { train_flops = [1e12], n_layer = [1] }', "both grid and isoflop"),
])
def test_bad_isoflop_and_tune_tables_are_one_line_errors(sweep, message):
    with pytest.raises(ExperimentsError, match=message) as e:
        parse_experiments(HEAD + "[sweep.s]\n" + sweep + "\n")
    assert "\n" not in str(e.value) and "experiments.toml:" in str(e.value)


def _write(tmp_path, body: str):
    p = tmp_path / "experiments.toml"
    p.write_text(HEAD + body)
    return p


def test_plan_refuses_cells_with_too_few_steps_in_one_line_exit_2(tmp_path, capsys):
    p = _write(tmp_path, "[sweep.iso]\nisoflop = { train_flops = [1e8, 1e9], "
                         "n_layer = [1, 4], min_steps = 30 }\n")
    assert main(["plan", "--experiments", str(p), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "iso/train_flops=1e+08,n_layer=1 gets" in err and "fewer than min_steps = 30" in err
    assert "(and 1 more cell that cannot run)" in err
    assert main(["launch", "--experiments", str(p), "--runs", str(tmp_path / "runs"),
                 "--gpu", "cpu", "--detach"]) == 2
    assert not (tmp_path / "runs" / "iso").exists()


def test_plan_refuses_cells_that_repeat_the_data_more_than_max_epochs(tmp_path, capsys):
    data = tmp_path / "tiny"
    data.mkdir()
    (data / "train.bin").write_bytes(np.zeros(2000, dtype=np.uint16).tobytes())
    (data / "val.bin").write_bytes(np.zeros(500, dtype=np.uint16).tobytes())
    (data / "meta.json").write_text(json.dumps({"vocab_size": 65, "dtype": "uint16"}))
    p = _write(tmp_path, f'[sweep.iso]\nfixed = {{ data_dir = "{data}" }}\n'
                         "isoflop = { train_flops = [1e9], n_layer = [1, 2], max_epochs = 2 }\n")
    assert main(["plan", "--experiments", str(p), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "epochs of the 2,000-token training split, more than max_epochs = 2" in err


def chinchilla(N, D):
    return 1.7 + 400.0 / N ** 0.34 + 410.0 / D ** 0.28


def test_approach_2_recovers_the_exponent_of_a_known_law_and_flags_an_edge():
    rng = np.random.default_rng(1)
    cells = [Cell(f"{C:g}/{N:g}", C, N, C / (6 * N),
                  chinchilla(N, C / (6 * N)) + rng.normal(0, 0.002))
             for C in (1e15, 1e16, 1e17, 1e18) for N in np.geomspace(1e6, 1e9, 9)]
    r = fit_isoflop(cells)
    truth = 0.28 / (0.34 + 0.28)   # N_opt ∝ C^(β/(α+β)) for this law
    assert r.a.ci_low < truth < r.a.ci_high and abs(r.a.value + r.b.value - 1) < 1e-9
    assert not r.warnings
    edge = fit_isoflop([c for c in cells if c.N >= 2e6])   # the 1e15 optimum (4e6) at the edge
    assert any("1e+15: the minimum is at the smallest size" in w and "add a smaller size" in w
               for w in edge.warnings)
    off = fit_isoflop([c for c in cells if c.N >= 2e7])    # ... and beyond it
    assert off.budgets[0].N_opt is None and "lies beyond the smallest size" in off.budgets[0].note
    assert any("add a smaller size" in w for w in off.warnings)
    few = fit_isoflop([c for c in cells if c.C == 1e15][:2])
    assert few.a is None and "a parabola needs at least 3" in few.note


# ---- the report over fabricated runs ------------------------------------------------------

def _run(root, sweep, name, loss, meta, **cfg):
    c = TrainConfig(**{"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32,
                       "batch_size": 4, "eval_interval": 50, "vocab_size": 65,
                       "dataset": "shakespeare", "tokenizer": "char", "device": "cpu", **cfg},
                    sampling=SamplingConfig())
    h = resolve(c, 65)
    run = create_run(root, sweep, name, h.config, {k: v for k, v in cfg.items() if k != "max_iters"},
                     horizon=h.record(), meta=meta)
    last = h.max_iters
    run.log_metric(kind="eval", iter=0, train_loss=4.2, val_loss=4.2, t=1.0)
    run.log_metric(kind="eval", iter=last, train_loss=loss - 0.01, val_loss=loss, t=2.0)
    run.update_status(state="done", started_at=0.0, ended_at=10.0, best_val_loss=loss,
                      best_iter=last, val_loss=loss, iter=last)
    return h


def test_report_shows_n_opt_per_budget_the_frontier_and_approach_3(tmp_path, capsys):
    root = tmp_path / "runs"
    meta = {"kind": "isoflop", "budget_key": "train_flops", "min_steps": 1, "max_epochs": 4.0}
    for C in (3e10, 1e11, 3e11, 1e12):
        for e in (8, 16, 32, 64, 128):
            probe = resolve(TrainConfig(n_layer=1, n_head=2, n_embd=e, block_size=32,
                                        batch_size=4, train_flops=C, vocab_size=65), 65)
            _run(root, "iso", f"train_flops={C:g},n_embd={e}",
                 chinchilla(probe.params, probe.tokens), meta, n_embd=e, train_flops=C)
    assert main(["report", "iso", "--runs", str(root), "--out", str(tmp_path / "out"),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    iso = doc["isoflop"]["iso"]
    assert [b["C"] for b in iso["budgets"]] == [3e10, 1e11, 3e11, 1e12]
    a = iso["parameters"]["a"]
    assert a["ci_low"] <= a["value"] <= a["ci_high"] and 0.2 < a["value"] < 0.8
    assert iso["level"] == 0.9 and iso["approach3"]["law"] == "N,D"
    md = (tmp_path / "out" / "iso" / "report.md").read_text()
    assert "## IsoFLOP: the compute-optimal size (Approach 2)" in md
    assert "N_opt ∝ C^a, a = " in md and "against Chinchilla's ≈ 20" in md
    assert (tmp_path / "out" / "iso" / "isoflop_frontier.png").stat().st_size > 10_000
    assert "![isoflop curves](isoflop_curves.png)" in md


def test_a_tuned_sweep_keeps_each_configurations_best_rate_and_warns_at_the_edge(tmp_path,
                                                                               capsys):
    root = tmp_path / "runs"
    meta = {"tune": ["learning_rate"]}
    # the small model is best at the middle rate; the large one at the grid's lowest
    losses = {(8, 1e-3): 2.9, (8, 3e-3): 2.6, (8, 1e-2): 2.8,
              (32, 1e-3): 2.2, (32, 3e-3): 2.3, (32, 1e-2): 2.5}
    for (e, lr), loss in losses.items():
        _run(root, "lr", f"n_embd={e},learning_rate={lr:g}", loss, meta, n_embd=e,
             learning_rate=lr, max_iters=50)
    assert main(["report", "lr", "--runs", str(root), "--out", str(tmp_path / "out"),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    t = doc["tuning"]["lr"]
    assert [c["best"] for c in t["configs"]] == [3e-3, 1e-3]
    assert t["warnings"] == ["n_embd=32: the best learning_rate = 0.001 is at the low edge of "
                             "its grid; add learning_rate = 0.000333 to know it is the best"]
    md = (tmp_path / "out" / "lr" / "report.md").read_text()
    assert "## Tuned `learning_rate`: the best value per configuration" in md
    assert "| n_embd=8 | 1,312 | 2.9000 | **2.6000** | 2.8000 | 0.003 |" in md
    # every table uses the best rate: the worse rates' runs are not in the results
    results = md.split("## Results")[1].split("##")[0]
    assert "learning_rate=0.01" not in results and "n_embd=8,learning_rate=0.003" in results


def test_tune_over_a_key_that_is_not_a_number_is_one_line_exit_2(tmp_path, capsys):
    p = _write(tmp_path, '[sweep.s]\nvary = { n_layer = [1, 2] }\ntune = { tokenizer = ["char", "gpt2"] }\n')
    assert main(["plan", "--experiments", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tune.tokenizer: only a numeric hyper-parameter" in err


def test_tuned_isoflop_uses_each_cells_best_rate_and_too_few_sizes_say_why(tmp_path, capsys):
    root = tmp_path / "runs"
    meta = {"kind": "isoflop", "budget_key": "train_flops", "min_steps": 1, "max_epochs": 4.0,
            "tune": ["learning_rate"]}
    for C in (3e10, 1e11):
        for e in (8, 16):
            for lr, worse in ((1e-3, 0.3), (1e-2, 0.0)):
                _run(root, "iso", f"train_flops={C:g},n_embd={e},learning_rate={lr:g}",
                     3.0 - e / 100 + worse, meta, n_embd=e, train_flops=C, learning_rate=lr)
    assert main(["report", "iso", "--runs", str(root), "--out", str(tmp_path / "out"),
                 "--json"]) == 0
    iso = json.loads(capsys.readouterr().out)["isoflop"]["iso"]
    cells = [c for b in iso["budgets"] for c in b["cells"]]
    assert len(cells) == 4 and all(c.endswith("learning_rate=0.01") for c in cells)
    assert iso["parameters"]["a"] is None
    md = (tmp_path / "out" / "iso" / "report.md").read_text()
    assert "No frontier: 0 budget(s) with a minimum" in md
    assert "no minimum: 2 finished sizes; a parabola needs at least 3" in md
