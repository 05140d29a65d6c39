"""`nanotui bench`: option parsing, the JSON figures, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.model import cpu_kernels
from engine.train.bench import bench_config, parse_overrides, parse_value
from engine.config import ConfigError
from tui.cli import main

TINY = ["--n_layer=1", "--n_embd=32", "--n_head=2", "--block_size=32", "--batch_size=2"]


def test_values_parse_as_toml_literals():
    assert parse_value("6") == 6
    assert parse_value("1e-3") == 1e-3
    assert parse_value("true") is True and parse_value("True") is True
    assert parse_value("False") is False
    assert parse_value("cpu") == "cpu"
    assert parse_value('"cuda:1"') == "cuda:1"
    assert parse_value("cuda:1") == "cuda:1"


def test_overrides_accept_both_spellings_and_check_types():
    got = parse_overrides(["--n_layer=6", "--dtype", "bfloat16", "--learning-rate=1e-3",
                           "--compile=true", "--dropout=0"])
    assert got == {"n_layer": 6, "dtype": "bfloat16", "learning_rate": 1e-3, "compile": True,
                   "dropout": 0.0}
    with pytest.raises(ConfigError, match=r"unknown key 'n_layers' \(did you mean 'n_layer'\?\)"):
        parse_overrides(["--n_layers=6"])
    with pytest.raises(ConfigError, match="expected an integer"):
        parse_overrides(["--batch_size=1.5"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_overrides(["--n_layer"])


def test_config_defaults_to_a_char_vocabulary_and_validates():
    assert bench_config({}).vocab_size == 65
    assert bench_config({"vocab_size": 50304}).vocab_size == 50304
    with pytest.raises(ConfigError, match="not divisible"):
        bench_config({"n_embd": 250, "n_head": 8})


def test_bench_json_has_the_figures(capsys):
    assert main(["bench", *TINY, "--iters=3", "--warmup=1", "--device=cpu", "--json"]) == 0
    out = capsys.readouterr().out
    r = json.loads(out)  # one JSON object, nothing else on stdout
    assert r["iters"] == 3 and r["tokens_per_iter"] == 2 * 32
    assert 0 < r["ms_per_iter"] < 60_000
    assert r["ms_per_iter_min"] <= r["ms_per_iter"]
    assert r["tokens_per_s"] == pytest.approx(64 / (r["ms_per_iter"] / 1000))
    assert r["mfu"] is None or 0 < r["mfu"] < 1  # CPUs have no peak in the table
    assert r["achieved_flops"] > 0
    assert 10 * 2**20 < r["peak_mem_bytes"] < 64 * 2**30
    assert r["device"] == "cpu" and r["dtype"] in ("bfloat16", "float32")
    assert r["config"]["n_layer"] == 1 and r["config"]["vocab_size"] == 65
    assert r["params"] == 14_464  # 1 layer of 32 wide + the 65 x 32 tied embedding
    assert 0 < r["final_loss"] < 10
    choice = r["cpu_choice"]  # the path and precision that ran, and why
    assert choice["dtype"] == r["dtype"] and choice["how"] in ("measured", "cached")
    assert r["cpu_attention"].startswith(f"{cpu_kernels.describe(2, 32, choice['path'])}, {r['dtype']} (")


def test_bench_text_output_and_float32(capsys):
    assert main(["bench", *TINY, "--iters=2", "--warmup=0", "--dtype=float32",
                 "--device=cpu", "--dropout=0.1"]) == 0
    out = capsys.readouterr().out
    assert "dtype float32" in out
    line = next(x for x in out.splitlines() if x.startswith("CPU attention: "))
    assert ", float32 (" in line and "ms per step" in line  # measured now or cached
    last = out.strip().splitlines()[-1]
    assert "ms/iter" in last and "tokens/s" in last and "MFU" in last and "peak memory" in last


@pytest.mark.parametrize("argv,message", [
    (["--n_layers=2"], "unknown key 'n_layers' (did you mean 'n_layer'?)"),
    (["--n_embd=250", "--n_head=8"], "not divisible by n_head"),
    (["--iters=0"], "--iters must be at least 1"),
    (["oops"], "unexpected argument 'oops'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr()
    assert err.out == ""
    lines = err.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanotui: error: bench: ")
    assert message in lines[0]


def test_bad_key_in_a_real_process_has_no_traceback():
    p = subprocess.run([sys.executable, "-m", "tui", "bench", "--n_layers=2", "--iters=1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip() == ("nanotui: error: bench: unknown key 'n_layers' "
                                "(did you mean 'n_layer'?)")
