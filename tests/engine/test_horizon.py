"""Horizons in steps, tokens, tokens per parameter or FLOPs, resolved by one rule
(engine.model.horizon) and shown by `plan`; the innermost level of the experiments file
wins; schedules follow the horizon; bad input is one line, exit 2, nothing created."""

from __future__ import annotations

import json
import math

import pytest

from engine.config import TrainConfig
from engine.model.arithmetic import padded_vocab, param_count, train_flops_per_token
from tests.conftest import REPO, write_char_data
from tui.cli import main as nanotui

SHAKESPEARE_VOCAB = 65   # plan's assumed char vocabulary for shakespeare before preparing

FILE = """
[defaults]
dataset = "shakespeare"
n_layer = 2
n_head = 2
n_embd = 64
block_size = 64
batch_size = 8
max_iters = 5000        # the course file's old horizon: the sweeps below replace it
device = "cpu"

[sweep.tpp]
vary = { tokens_per_param = [5, 10, 20] }

[sweep.tokens]
fixed = { max_tokens = 1_000_000 }
vary = { n_layer = [1, 2] }

[sweep.flops]
fixed = { train_flops = 3e13, tokenizer = "gpt2", gradient_accumulation_steps = 4 }
vary = { n_embd = [64, 128] }
"""


def plan_json(tmp_path, capsys, text: str, *extra: str) -> dict:
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    rc = nanotui(["--experiments", str(path), "--runs", str(tmp_path / "runs"), "plan",
                  "--json", *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def expected(cfg: TrainConfig, vocab: int, key: str, value: float) -> int:
    """The rule, written out: max_iters = ceil(D / tokens_per_iter)."""
    tpi = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    D = {"max_tokens": value, "tokens_per_param": value * param_count(cfg, vocab, "nanogpt"),
         "train_flops": value / train_flops_per_token(cfg, vocab)}[key]
    return math.ceil(D / tpi)


def test_plan_resolves_each_horizon_key_by_the_rule(tmp_path, capsys):
    rows = {r["id"]: r for r in plan_json(tmp_path, capsys, FILE)["runs"]}
    assert list(rows) == ["tpp/tokens_per_param=5", "tpp/tokens_per_param=10",
                          "tpp/tokens_per_param=20", "tokens/n_layer=1", "tokens/n_layer=2",
                          "flops/n_embd=64", "flops/n_embd=128"]
    gpt2 = padded_vocab(50257, "gpt2")
    for rid, r in rows.items():
        sweep = rid.split("/")[0]
        key, value = {"tpp": ("tokens_per_param", float(rid.split("=")[1])),
                      "tokens": ("max_tokens", 1_000_000),
                      "flops": ("train_flops", 3e13)}[sweep]
        over = {k: (float(v) if k == "tokens_per_param" else int(v))
                for k, v in [rid.split("/")[1].split("=")]}
        shape = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "batch_size": 8,
                 **({"gradient_accumulation_steps": 4} if sweep == "flops" else {}),
                 **{k: v for k, v in over.items() if k != "tokens_per_param"}}
        cfg = TrainConfig(**shape)
        vocab = gpt2 if sweep == "flops" else SHAKESPEARE_VOCAB
        tpi = 8 * 64 * (4 if sweep == "flops" else 1)
        assert r["horizon"] == {"key": key, "value": value}
        assert r["vocab_size"] == vocab and r["vocab_source"] == "assumed"
        assert r["max_iters"] == expected(cfg, vocab, key, value), rid
        assert r["tokens"] == r["max_iters"] * tpi
        N = param_count(cfg, vocab, "nanogpt")
        assert r["params"] == N and r["param_convention"] == "nanogpt"
        assert r["tokens_per_param"] == pytest.approx(r["tokens"] / N)
        assert r["train_flops"] == pytest.approx(r["tokens"] * train_flops_per_token(cfg, vocab))
        # the schedule follows the horizon: decay ends with the run, warm-up 5% of it
        assert r["lr_decay_iters"] == r["max_iters"]
        assert r["warmup_iters"] == min(2000, int(0.05 * r["max_iters"]))
        assert r["schedule_fitted"] is True and r["warnings"] == []
    # equal compute: the wider GPT-2 model gets fewer tokens, both within a step of 3e13
    f64, f128 = rows["flops/n_embd=64"], rows["flops/n_embd=128"]
    assert f128["tokens"] < f64["tokens"]
    for r in (f64, f128):
        per_step = r["train_flops"] / r["max_iters"]
        assert 3e13 <= r["train_flops"] < 3e13 + per_step


def test_param_convention_changes_n_and_so_the_horizon(tmp_path, capsys):
    text = FILE.replace('device = "cpu"', 'device = "cpu"\nparam_convention = "non_embedding"')
    rows = {r["id"]: r for r in plan_json(tmp_path, capsys, text, "tpp")["runs"]}
    cfg = TrainConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8)
    N = param_count(cfg, SHAKESPEARE_VOCAB, "non_embedding")
    r = rows["tpp/tokens_per_param=20"]
    assert r["param_convention"] == "non_embedding"
    assert r["max_iters"] == math.ceil(20 * N / (8 * 64))


def test_the_innermost_level_wins(tmp_path, capsys):
    text = FILE + """
[sweep.mixed]
fixed = { tokens_per_param = 10 }
vary = { max_iters = [7], n_layer = [1] }
"""
    rows = {r["id"]: r for r in plan_json(tmp_path, capsys, text, "mixed", "tokens")["runs"]}
    assert rows["mixed/max_iters=7"]["horizon"] == {"key": "max_iters", "value": 7}
    assert rows["mixed/max_iters=7"]["max_iters"] == 7
    assert rows["mixed/n_layer=1"]["horizon"] == {"key": "tokens_per_param", "value": 10}
    # [defaults] max_iters = 5000 is replaced by the sweep's max_tokens
    assert rows["tokens/n_layer=1"]["max_iters"] == math.ceil(1_000_000 / 512)


def test_a_max_iters_only_file_gets_a_schedule_fitted_to_its_horizon(tmp_path, capsys):
    text = FILE.split("[sweep.tpp]")[0] + "[sweep.old]\nvary = { n_layer = [1] }\n"
    (r,) = plan_json(tmp_path, capsys, text)["runs"]
    assert (r["max_iters"], r["warmup_iters"], r["lr_decay_iters"]) == (5000, 250, 5000)
    assert r["horizon"] == {"key": "max_iters", "value": 5000}
    nanotui(["--experiments", str(tmp_path / "experiments.toml"), "plan"])
    out = capsys.readouterr().out
    assert "Schedule fitted to the horizon for 1 of 1 runs" in out


def test_an_explicit_schedule_that_does_not_fit_is_warned_or_refused(tmp_path, capsys):
    text = FILE.split("[sweep.tpp]")[0] + """
[sweep.warm]
fixed = { max_iters = 60 }
vary = { warmup_iters = [100, 600], lr_decay_iters = [600000] }
"""
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    assert nanotui(["--experiments", str(path), "plan"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("warm/warmup_iters=100 "))
    assert lines[i + 1].startswith("  warning: warmup_iters = 100 is not shorter than the "
                                   "run's 60 steps")
    assert "ERROR warm/warmup_iters=600: warmup_iters = 600 is at least 10x the run's 60 " \
           "steps" in out
    j = next(n for n, line in enumerate(lines) if line.startswith("warm/lr_decay_iters=600000 "))
    assert lines[j + 1].startswith("  warning: lr_decay_iters = 600000 ends far from the "
                                   "run's 60 steps")


def test_launch_warns_about_an_explicit_warmup_longer_than_the_run(tmp_path):
    from engine.launch.queue import queue_runs_detailed
    data = write_char_data(tmp_path / "data")
    path = tmp_path / "experiments.toml"
    path.write_text(f'[defaults]\ndata_dir = "{data}"\nn_layer = 1\nn_head = 1\nn_embd = 16\n'
                    f'block_size = 16\nbatch_size = 4\ndevice = "cpu"\n'
                    f'[sweep.w]\nfixed = {{ max_iters = 60 }}\nvary = {{ warmup_iters = [100] }}\n')
    res = queue_runs_detailed(path, tmp_path / "runs")
    (run_id, warning), = res.warnings
    assert run_id == "w/warmup_iters=100" and "not shorter than the run's 60 steps" in warning


# (extra [defaults] lines, sweep table, what the one line says, the key whose line it names)
BAD = [
    ("max_iters = 10\nmax_tokens = 5000\n", "[sweep.s]\nvary = { n_layer = [1] }\n",
     "[defaults]: max_tokens: a second horizon key at this level beside max_iters",
     "max_tokens"),
    ("", "[sweep.s]\nfixed = { max_iters = 10, tokens_per_param = 5 }\nvary = { n_layer = [1] }\n",
     "[sweep.s] fixed: tokens_per_param: a second horizon key", "tokens_per_param"),
    ("", "[sweep.s]\ngrid = { max_iters = [10], train_flops = [1e12] }\n",
     "[sweep.s] grid: train_flops: a second horizon key", "train_flops"),
    ("", "[sweep.s]\nvary = { tokens_per_param = [0] }\n",
     "tokens_per_param = 0.0: must be a positive finite number", None),
    ("", "[sweep.s]\nvary = { train_flops = [nan] }\n", "must be a positive finite number", None),
    ("", "[sweep.s]\nvary = { train_flops = [inf] }\n", "must be a positive finite number", None),
    ("", "[sweep.s]\nvary = { max_tokens = [-5] }\n", "max_tokens = -5: must be at least 1", None),
    ("", "[sweep.s]\nvary = { max_tokens = [30] }\n",
     "max_tokens = 30 is 30 tokens, less than one optimizer step (64 tokens", None),
    ("", "[sweep.s]\nvary = { train_flops = [1e30] }\n", "more than 1,000,000,000 steps", None),
    ("", "[sweep.s]\nvary = { warmup_frac = [1.0] }\n", "warmup_frac = 1.0: must be in [0, 1)",
     None),
    ("", "[sweep.s]\nvary = { param_convention = [\"embedding\"] }\n",
     "param_convention = 'embedding': must be one of nanogpt, non_embedding, total", None),
]


@pytest.mark.parametrize("defaults,sweep,said,key", BAD)
def test_bad_horizons_are_one_line_exit_2_nothing_created(tmp_path, capsys, defaults, sweep,
                                                          said, key):
    data = write_char_data(tmp_path / "data")
    path = tmp_path / "experiments.toml"
    text = (f'[defaults]\ndata_dir = "{data}"\nn_layer = 1\nn_head = 1\nn_embd = 16\n'
            f'block_size = 16\nbatch_size = 4\ndevice = "cpu"\n{defaults}{sweep}')
    path.write_text(text)
    runs = tmp_path / "runs"
    args = ["--experiments", str(path), "--runs", str(runs)]
    for cmd in (["launch", "--detach"], ["plan"]):
        rc = nanotui([*args, *cmd])
        out = capsys.readouterr()
        err = out.err.strip() if rc == 2 else out.out
        assert said in err and "Traceback" not in err, (cmd, err)
        if rc == 2:
            assert "\n" not in err
        if key is not None:   # structural: the file and the line of the second key
            line = next(n for n, t in enumerate(text.splitlines(), 1) if f"{key} =" in t)
            assert f"experiments.toml:{line}: " in err and rc == 2
        else:                 # a run that cannot train: launch refuses, plan shows it
            assert rc == (2 if cmd[0] == "launch" else 1)
        assert not runs.exists()


@pytest.mark.parametrize("budget,said", [("abc", "expected a duration like 30m"),
                                         ("30x", "expected a duration"),
                                         ("0m", "must be a positive duration"),
                                         ("1s", "no horizon of at least one step per run fits")])
def test_bad_budgets_are_one_line_exit_2(tmp_path, capsys, budget, said):
    path = tmp_path / "experiments.toml"
    path.write_text(FILE)
    runs = tmp_path / "runs"
    rc = nanotui(["--experiments", str(path), "--runs", str(runs), "plan", "--budget", budget])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and said in err and "\n" not in err
    assert not runs.exists()


def test_budget_finds_the_largest_uniform_horizon_that_fits(tmp_path, capsys):
    doc = plan_json(tmp_path, capsys, FILE, "tpp", "--budget", "2h", "--device", "cpu")
    assert doc["lines"] == [f"[sweep.tpp] vary: tokens_per_param = [{_3(5 * doc['scale'])}, "
                            f"{_3(10 * doc['scale'])}, {_3(20 * doc['scale'])}]"]
    assert doc["seconds"] <= 7200 and doc["units"] == 1 and doc["device"] == "cpu"
    assert all(r["throughput"] == "assumed" for r in doc["runs"])
    # the runs are sequential on one CPU unit: their times add up to the packed time,
    # and the printed value, planned as it is, fits the budget
    assert sum(r["seconds"] for r in doc["runs"]) == pytest.approx(doc["seconds"])
    text = FILE.replace("vary = { tokens_per_param = [5, 10, 20] }",
                        f"vary = {{ tokens_per_param = [{_3(5 * doc['scale'])}, "
                        f"{_3(10 * doc['scale'])}, {_3(20 * doc['scale'])}] }}")
    rows = plan_json(tmp_path, capsys, text, "tpp", "--device", "cpu")["runs"]
    assert sum(r["est_seconds"] for r in rows) <= 7200
    # the largest that fits, not just one that fits: the budget is all but used
    assert doc["seconds"] > 0.95 * 7200


def _3(x: float) -> str:
    e = math.floor(math.log10(x)) - 2
    return f"{math.floor(x / 10 ** e) * 10 ** e:g}"


def test_course_file_and_template_are_identical():
    assert (REPO / "experiments.toml").read_text() == \
        (REPO / "tui" / "templates" / "experiments.toml").read_text()
