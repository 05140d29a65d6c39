"""Seeds, shared configurations across sweeps, and config drift on launch."""

from __future__ import annotations

import json

import pytest

from engine.experiments import ExperimentsError, parse_experiments
from engine.launch.queue import queue_runs_detailed
from engine.runs import RunDir, list_runs, list_shared
from tui.cli import main
from tests.conftest import write_char_data

COURSE = """
[defaults]
data_dir = "{data}"
n_layer = 6
n_head = 8
n_embd = 256
block_size = 16
batch_size = 4
max_iters = 5
[sweep.depth]
fixed = {{ n_head = 8, n_embd = 256 }}
vary = {{ n_layer = [2, 4] }}
[sweep.width]
fixed = {{ n_layer = 6, n_head = 8 }}
vary = {{ n_embd = [128, 256] }}
{seeds}
[sweep.heads]
fixed = {{ n_layer = 6, n_embd = 256 }}
vary = {{ n_head = [4, 8] }}
{seeds}
"""


@pytest.fixture
def data_dir(tmp_path):
    return write_char_data(tmp_path / "data")


def write_exp(tmp_path, data_dir, seeds: str = "", replace: dict | None = None) -> str:
    text = COURSE.format(data=data_dir, seeds=seeds)
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    p = tmp_path / "experiments.toml"
    p.write_text(text)
    return str(p)


def test_identical_configuration_is_shared_with_the_earlier_sweep(tmp_path, data_dir):
    exp = parse_experiments(open(write_exp(tmp_path, data_dir)).read())
    shared = [(r.id, r.same_as) for r in exp.all_runs() if r.same_as]
    assert shared == [("heads/n_head=8", "width/n_embd=256")]


def test_seeds_make_one_run_per_seed_the_first_keeping_the_plain_name(tmp_path, data_dir):
    exp = parse_experiments(open(write_exp(tmp_path, data_dir, seeds="seeds = 2")).read())
    width = [(r.name, r.cfg.seed, r.varied) for r in exp.sweeps["width"].runs]
    assert width == [("n_embd=128", 1337, {"n_embd": 128}),
                     ("n_embd=128,seed=1338", 1338, {"n_embd": 128}),
                     ("n_embd=256", 1337, {"n_embd": 256}),
                     ("n_embd=256,seed=1338", 1338, {"n_embd": 256})]
    assert [r.same_as for r in exp.sweeps["heads"].runs if r.same_as] == [
        "width/n_embd=256", "width/n_embd=256,seed=1338"]


def test_raising_seeds_later_keeps_the_trained_runs_and_adds_the_others(tmp_path, data_dir,
                                                                       capsys):
    exp, root = write_exp(tmp_path, data_dir), tmp_path / "runs"
    queue_runs_detailed(exp, root, ["width"], prepare=False)
    for run in list_runs(root):
        run.update_status(state="done")
    write_exp(tmp_path, data_dir, seeds="seeds = 3")
    assert main(["--experiments", exp, "--runs", str(root), "plan", "width", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert rows["width/n_embd=128"]["drift"] == []  # the same run: seed 1337, same name
    assert [rows[f"width/n_embd=128{s}"]["state"] for s in ("", ",seed=1338")] == ["done", None]
    assert main(["--experiments", exp, "--runs", str(root), "plan", "width"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("width/n_embd=128 "))
    assert line.endswith("exists (done): not queued again")
    assert "\n6 runs: 4 new, 2 already exist (not queued again); the new ones take" in out
    res = queue_runs_detailed(exp, root, ["width"], prepare=False)
    assert [r.id for r in res.done] == ["width/n_embd=128", "width/n_embd=256"]
    assert sorted(r.id for r in res.queued) == [
        "width/n_embd=128,seed=1338", "width/n_embd=128,seed=1339",
        "width/n_embd=256,seed=1338", "width/n_embd=256,seed=1339"]
    assert res.drift == [] and res.fresh == []
    assert RunDir(root / "width" / "n_embd=128,seed=1339").load_config().seed == 1339


@pytest.mark.parametrize("bad", ["0", "2.5", '"3"', "100"])
def test_bad_seeds_is_one_line_naming_the_line(tmp_path, data_dir, bad):
    with pytest.raises(ExperimentsError, match=r"experiments.toml:\d+: \[sweep.width\] seeds"):
        parse_experiments(open(write_exp(tmp_path, data_dir, seeds=f"seeds = {bad}")).read(),
                          tmp_path / "experiments.toml")


def test_a_shared_run_is_created_once_and_linked_from_the_other_sweep(tmp_path, data_dir):
    exp, root = write_exp(tmp_path, data_dir), tmp_path / "runs"
    res = queue_runs_detailed(exp, root, ["heads"], prepare=False)
    # the heads sweep alone still queues the shared model under its owner, width
    assert sorted(r.id for r in res.queued) == ["heads/n_head=4", "width/n_embd=256"]
    assert [(a.id, b.id) for a, b in res.shared] == [("heads/n_head=8", "width/n_embd=256")]
    assert [r.id for r in list_runs(root)] == ["heads/n_head=4", "width/n_embd=256"]
    link = RunDir(root / "heads" / "n_head=8")
    assert link.path.is_symlink() and link.read_status()["state"] == "queued"
    again = queue_runs_detailed(exp, root, None, prepare=False)
    assert "width/n_embd=256" not in [r.id for r in again.queued]  # never twice
    assert [(a.id, b.id) for a, b in list_shared(root)] == [("heads/n_head=8", "width/n_embd=256")]


def test_changed_config_of_a_stopped_run_is_reported_and_kept(tmp_path, data_dir, capsys):
    exp, root = write_exp(tmp_path, data_dir), tmp_path / "runs"
    queue_runs_detailed(exp, root, ["depth"], prepare=False)
    run = RunDir(root / "depth" / "n_layer=2")
    run.update_status(state="stopped")
    write_exp(tmp_path, data_dir, replace={"max_iters = 5": "max_iters = 50"})
    args = ["--experiments", exp, "--runs", str(root), "launch", "depth/n_layer=2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "depth/n_layer=2: saved config differs from" in out
    assert "max_iters: 5 → 50" in out and "--fresh depth/n_layer=2" in out
    assert run.load_config().max_iters == 5  # kept


def test_fresh_starts_over_and_keeps_the_old_directory(tmp_path, data_dir):
    exp, root = write_exp(tmp_path, data_dir), tmp_path / "runs"
    queue_runs_detailed(exp, root, ["depth"], prepare=False)
    run = RunDir(root / "depth" / "n_layer=2")
    run.log_metric(kind="eval", iter=5, train_loss=2.0, val_loss=2.1)
    run.update_status(state="stopped", iter=5)
    write_exp(tmp_path, data_dir, replace={"max_iters = 5": "max_iters = 50"})
    res = queue_runs_detailed(exp, root, ["depth/n_layer=2"], prepare=False, fresh=True)
    assert [r.id for r in res.queued] == ["depth/n_layer=2"]
    (new, moved), = res.fresh
    assert new.load_config().max_iters == 50 and new.read_status()["state"] == "queued"
    assert new.read_metrics() == []
    assert moved.is_dir() and moved.parent == root / ".replaced" / "depth"
    assert RunDir(moved).load_config().max_iters == 5 and RunDir(moved).read_metrics()
    assert [r.id for r in list_runs(root)] == ["depth/n_layer=2", "depth/n_layer=4"]


def test_plan_shows_the_shared_run_once(tmp_path, data_dir, capsys):
    exp = write_exp(tmp_path, data_dir)
    assert main(["--experiments", exp, "plan", "width", "heads"]) == 0
    out = capsys.readouterr().out
    assert "heads/n_head=8" in out and "= width/n_embd=256 (the same model: trained once" in out
    assert "\n3 runs (+ 1 shared, trained once), about" in out  # width's two, heads/n_head=4
    assert main(["--experiments", exp, "plan", "heads", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert rows["heads/n_head=8"]["same_as"] == "width/n_embd=256"
    assert rows["heads/n_head=4"]["same_as"] is None


def test_resume_says_the_saved_config_differs_and_keeps_it(tmp_path, data_dir, capsys,
                                                            monkeypatch):
    import engine.launch.dispatcher as dispatcher
    monkeypatch.setattr(dispatcher, "ensure_dispatcher", lambda *a, **k: 4321)
    exp, root = write_exp(tmp_path, data_dir), tmp_path / "runs"
    queue_runs_detailed(exp, root, ["depth"], prepare=False)
    run = RunDir(root / "depth" / "n_layer=2")
    run.update_status(state="stopped")
    write_exp(tmp_path, data_dir, replace={"max_iters = 5": "max_iters = 50"})
    assert main(["--experiments", exp, "--runs", str(root), "resume", "depth/n_layer=2"]) == 0
    out = capsys.readouterr().out
    assert "depth/n_layer=2: saved config differs from" in out and "max_iters: 5 → 50" in out
    assert "resuming keeps the saved config" in out and run.load_config().max_iters == 5
    assert run.read_status()["state"] == "queued"
