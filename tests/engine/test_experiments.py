"""experiments.toml: expansion, names, validation errors with file:line:key, plan numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from engine.config import ConfigError
from engine.experiments import ExperimentsError, load_experiments, parse_experiments
from engine.launch.estimate import estimate
from engine.model.arithmetic import param_counts
from engine.model.gpt import GPT, GPTConfig
from tui.cli import main

REPO = Path(__file__).resolve().parents[2]
# the course file as shipped (`nanotui init`), not the working copy a student edits
DEFAULT = REPO / "tui" / "templates" / "experiments.toml"

# The engine issue's numbers: block_size 256, bias False.
DEPTH_65 = [1_590_784, 3_164_672, 6_312_448, 9_460_224]
WIDTH_65 = [1_189_632, 2_669_184, 4_738_560, 10_646_784]
HEADS_65 = [4_738_560] * 4
DEPTH_GPT2 = [14_451_968, 16_025_856, 19_173_632, 22_321_408]
WIDTH_GPT2 = [7_620_224, 12_315_072]


def parse(text: str):
    return parse_experiments(text, "exp.toml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        exp = parse(text)
        from engine.experiments import validate_runs
        validate_runs(exp.all_runs())
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_default_file_has_the_assignment_sweeps():
    exp = load_experiments(DEFAULT)
    ids = [r.id for r in exp.select(["depth", "width", "heads"])]
    assert ids == ["depth/n_layer=2", "depth/n_layer=4", "depth/n_layer=8", "depth/n_layer=12",
                   "width/n_embd=128", "width/n_embd=192", "width/n_embd=256", "width/n_embd=384",
                   "heads/n_head=4", "heads/n_head=8", "heads/n_head=16", "heads/n_head=32"]
    for r in exp.all_runs():
        assert r.error is None
        c = r.cfg
        assert (c.block_size, c.dropout, c.learning_rate, c.beta2, c.min_lr) == (
            (64, 0.0, 1e-3, 0.99, 1e-4) if r.sweep == "quick" else (256, 0.0, 1e-3, 0.99, 1e-4))
        if r.sweep != "quick":
            # equal tokens per parameter; the schedule left to follow the horizon
            assert (c.dataset, c.tokenizer, c.batch_size, c.tokens_per_param, c.max_iters,
                    c.lr_decay_iters, c.warmup_iters, c.eval_interval, c.eval_iters) == (
                "tinystories", "char", 64, 20, None, None, None, 250, 200)
        else:
            assert (c.max_iters, c.tokens_per_param) == (4000, None)  # innermost level wins
    d = {r.name: r.cfg for r in exp.sweeps["depth"].runs}
    assert (d["n_layer=8"].n_head, d["n_layer=8"].n_embd, d["n_layer=8"].n_layer) == (8, 256, 8)
    h = {r.name: r.cfg for r in exp.sweeps["heads"].runs}
    assert (h["n_head=32"].n_layer, h["n_head=32"].n_embd) == (6, 256)


def _plan_json(path: Path, capsys, *sel: str) -> dict:
    rc = main(["--experiments", str(path), "plan", *sel, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def test_plan_lists_the_issue_parameter_counts_for_vocab_65(tmp_path, capsys):
    # the default file with shakespeare's char vocabulary (65, nanoGPT's)
    text = DEFAULT.read_text().replace('dataset = "tinystories"', 'dataset = "shakespeare"', 1)
    (tmp_path / "experiments.toml").write_text(text)
    doc = _plan_json(tmp_path / "experiments.toml", capsys, "depth", "width", "heads")
    runs = doc["runs"]
    assert len(runs) == 12
    assert [r["params"] for r in runs] == DEPTH_65 + WIDTH_65 + HEADS_65
    assert all(r["vocab_size"] == 65 and r["error"] is None for r in runs)
    assert not (tmp_path / "runs").exists()  # plan creates nothing


def test_plan_on_the_default_file_and_gpt2(tmp_path, capsys):
    doc = _plan_json(DEFAULT, capsys, "depth", "width", "heads")
    assert len(doc["runs"]) == 12
    # tinystories char: the documented default vocabulary until prepared
    v = doc["runs"][0]["vocab_size"]
    assert [r["params"] - (v - 65) * (256 if r["sweep"] != "width" else int(r["name"][7:]))
            for r in doc["runs"]] == DEPTH_65 + WIDTH_65 + HEADS_65
    text = DEFAULT.read_text().replace('tokenizer = "char"', 'tokenizer = "gpt2"', 1)
    (tmp_path / "experiments.toml").write_text(text)
    runs = _plan_json(tmp_path / "experiments.toml", capsys, "depth", "width")["runs"]
    assert [r["params"] for r in runs][:6] == DEPTH_GPT2 + WIDTH_GPT2


def test_plan_uses_the_prepared_vocabulary(tmp_path, capsys):
    d = tmp_path / "prep"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"vocab_size": 30}))
    (tmp_path / "e.toml").write_text(
        f'[defaults]\ndata_dir = "{d}"\nblock_size = 32\n'
        '[sweep.s]\nfixed = { n_head = 2 }\nvary = { n_embd = [32] }\n')
    r = _plan_json(tmp_path / "e.toml", capsys)["runs"][0]
    assert (r["vocab_size"], r["vocab_source"]) == (30, "prepared")


@pytest.mark.parametrize("L,H,C,V,T,bias", [(2, 8, 256, 65, 256, False), (3, 4, 128, 50304, 64, True),
                                            (1, 2, 32, 83, 16, False)])
def test_analytic_counts_equal_the_model(L, H, C, V, T, bias):
    cfg = load_experiments(DEFAULT).all_runs()[0].cfg.replace(
        n_layer=L, n_head=H, n_embd=C, vocab_size=V, block_size=T, bias=bias)
    with torch.device("meta"):
        m = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=H, n_embd=C, bias=bias))
    assert param_counts(cfg, V) == (m.get_num_params(), m.get_num_params(False))
    e = estimate(cfg)
    assert e.flops_per_token == m.flops_per_token()
    assert e.mem_bytes > 16 * e.params_total


def test_vary_is_one_at_a_time_and_grid_is_cartesian():
    exp = parse('[defaults]\nn_layer = 2\nn_head = 2\nn_embd = 32\n'
                '[sweep.a]\nfixed = { n_layer = 3 }\nvary = { dropout = [0.0, 0.1], n_embd = [64] }\n'
                '[sweep.g]\ngrid = { n_head = [4, 8], n_embd = [128, 256] }\n')
    a = exp.sweeps["a"].runs
    assert [r.name for r in a] == ["dropout=0", "dropout=0.1", "n_embd=64"]
    assert a[2].cfg.dropout == 0.0 and a[2].cfg.n_embd == 64 and a[2].cfg.n_layer == 3
    assert a[1].cfg.n_embd == 32
    g = exp.sweeps["g"].runs
    assert [r.name for r in g] == ["n_head=4,n_embd=128", "n_head=4,n_embd=256",
                                   "n_head=8,n_embd=128", "n_head=8,n_embd=256"]
    assert g[3].varied == {"n_head": 8, "n_embd": 256} and g[3].cfg.n_layer == 2


def test_selection_by_sweep_and_run_id_and_unknown():
    exp = load_experiments(DEFAULT)
    assert [r.id for r in exp.select(["depth/n_layer=8", "quick"])] == [
        "depth/n_layer=8", "quick/n_layer=1", "quick/n_layer=2"]
    with pytest.raises(ExperimentsError, match="did you mean 'depth'"):
        exp.select(["dept"])


def line_of(msg: str) -> int:
    m = re.match(r"exp\.toml:(\d+): ", msg)
    assert m, msg
    return int(m.group(1))


def test_unknown_key_names_file_line_key_and_suggests():
    msg = error_of('[defaults]\nn_layer = 2\n\n[sweep.d]\nfixed = { n_head = 8 }\n'
                   'vary = { n_layr = [2, 4] }\n')
    assert line_of(msg) == 6 and "n_layr" in msg and "did you mean 'n_layer'" in msg
    msg = error_of('[defaults]\nn_layer = 2\nlearning_rte = 1e-3\n[sweep.d]\nvary = { n_layer = [1] }\n')
    assert line_of(msg) == 3 and "learning_rte" in msg and "learning_rate" in msg
    msg = error_of('[sweep.d]\nvary = { n_layer = [1] }\nfixd = { n_head = 1 }\n')
    assert line_of(msg) == 3 and "'fixd'" in msg and "did you mean 'fixed'" in msg
    msg = error_of('[sweeps.d]\nvary = { n_layer = [1] }\n')
    assert "sweeps" in msg and "did you mean 'sweep'" in msg


def test_wrong_types():
    msg = error_of('[sweep.d]\nfixed = { n_head = "eight" }\nvary = { n_layer = [1] }\n')
    assert line_of(msg) == 2 and "n_head" in msg and "expected an integer" in msg
    msg = error_of('[sweep.d]\nvary = { n_layer = 4 }\n')
    assert line_of(msg) == 2 and "expected a non-empty list" in msg
    msg = error_of('[defaults]\ndropout = "lots"\n[sweep.d]\nvary = { n_layer = [1] }\n')
    assert line_of(msg) == 2 and "dropout" in msg
    msg = error_of('[launch]\nmax_runs_per_gpu = 0\n')
    assert line_of(msg) == 2 and "max_runs_per_gpu" in msg
    msg = error_of('[executor]\nkind = "k8s"\n')
    assert line_of(msg) == 2 and "executor.kind" in msg


def test_n_embd_not_divisible_by_n_head_names_the_run():
    msg = error_of('[defaults]\nn_head = 8\n[sweep.w]\ndescription = "x"\n'
                   'vary = { n_embd = [128, 100] }\n')
    assert line_of(msg) == 5 and "w/n_embd=100" in msg and "not divisible" in msg
    exp = parse('[defaults]\nn_head = 8\n[sweep.w]\nvary = { n_embd = [128, 100] }\n')
    assert [r.error is None for r in exp.all_runs()] == [True, False]


def test_unsafe_names_are_rejected():
    msg = error_of('[sweep."../evil"]\nvary = { n_layer = [1] }\n')
    assert line_of(msg) == 1 and "../evil" in msg
    msg = error_of('[sweep.".hidden"]\nvary = { n_layer = [1] }\n')
    assert ".hidden" in msg
    msg = error_of('[sweep.d]\nvary = { dataset = ["../../etc/passwd"] }\n')
    assert line_of(msg) == 2 and "cannot be a directory name" in msg


def test_empty_and_ambiguous_sweeps():
    msg = error_of('[sweep.empty]\n')
    assert line_of(msg) == 1 and "has no runs" in msg
    msg = error_of('[sweep.e]\nvary = {}\n')
    assert line_of(msg) == 2 and "non-empty" in msg
    msg = error_of('[sweep.e]\nvary = { n_layer = [] }\n')
    assert "non-empty list" in msg
    msg = error_of('[sweep.e]\nvary = { n_layer = [1] }\ngrid = { n_head = [1] }\n')
    assert "both vary and grid" in msg
    msg = error_of('[sweep.e]\nvary = { n_layer = [2, 2] }\n')
    assert "twice" in msg


def test_invalid_toml_and_missing_file(tmp_path):
    msg = error_of('[sweep.d\nvary = 1\n')
    assert msg.startswith("exp.toml: invalid TOML")
    with pytest.raises(ExperimentsError, match="no such experiments file"):
        load_experiments(tmp_path / "nope.toml")


def test_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "e.toml").write_text('[sweep.d]\nvary = { n_layr = [1] }\n')
    assert main(["--experiments", str(tmp_path / "e.toml"), "plan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nanotui: error: ") and ":2:" in err


def test_launch_options_and_executor_pass_through():
    exp = parse('[launch]\nmax_runs_per_gpu = 2\nmax_cpu_runs = 3\ngpus = [1, "GPU-x"]\n'
                '[executor]\nkind = "slurm"\npartition = "gpu"\n')
    assert exp.launch.max_runs_per_gpu == 2 and exp.launch.gpus == (1, "GPU-x")
    assert exp.executor == {"kind": "slurm", "partition": "gpu"}
    assert "only kind" in error_of('[executor]\nkind = "local"\npartition = "x"\n')
