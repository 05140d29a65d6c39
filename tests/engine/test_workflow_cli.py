"""Small workflow promises of the command line: `status` orders runs as a reader counts,
`plan --device cpu` counts no CUDA context."""

from __future__ import annotations

import json

from engine.config import TrainConfig
from engine.runs import create_run
from tests.conftest import tiny_experiments, write_char_data
from tui.cli import main


def test_status_sorts_numbers_as_numbers(tmp_path, capsys):
    root = tmp_path / "runs"
    for n in (12, 2, 4):
        create_run(root, "depth", f"n_layer={n}", TrainConfig(n_layer=n, n_head=2, n_embd=8))
    assert main(["--runs", str(root), "status"]) == 0
    out = capsys.readouterr().out
    assert [ln.split()[0] for ln in out.splitlines() if ln.startswith("depth/")] == ["depth/n_layer=2", "depth/n_layer=4", "depth/n_layer=12"]
    assert main(["--runs", str(root), "status", "--json"]) == 0
    ids = [r["id"] for r in json.loads(capsys.readouterr().out)["runs"]]
    assert ids == ["depth/n_layer=2", "depth/n_layer=4", "depth/n_layer=12"]


def test_plan_on_the_cpu_counts_no_cuda_context(tmp_path, capsys):
    exp = tmp_path / "experiments.toml"
    exp.write_text(tiny_experiments(write_char_data(tmp_path / "data"),
                                    {"t": {"vary": {"n_layer": [1]}}}))
    mem = {}
    for device in ("cpu", "gpu"):
        assert main(["--experiments", str(exp), "plan", "--json", "--device", device]) == 0
        mem[device] = json.loads(capsys.readouterr().out)["runs"][0]["est_mem_bytes"]
    assert mem["cpu"] < 50 * 2 ** 20                   # a tiny model: a few MiB, not 600
    assert mem["gpu"] - mem["cpu"] == 600 * 2 ** 20    # the CUDA context, on a card only
