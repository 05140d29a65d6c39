"""`resume --extend`: a finished run trained on to a higher max_iters, on a real tiny run."""

from __future__ import annotations

import pytest

from engine.config import TrainConfig
from engine.errors import UserError
from engine.launch.queue import queue_runs_detailed
from engine.runs import RunDir
from engine.train import process as T
from engine.train.extension import lr_at, plan_extension
from tests.conftest import SHORT_CPU_RUN, tiny_experiments, write_char_data
from tui.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

def _exp(tmp_path, max_iters: int, decay: int = 20) -> str:
    data = tmp_path / "data"
    if not (data / "meta.json").exists():
        write_char_data(data)
    p = tmp_path / "experiments.toml"
    p.write_text(tiny_experiments(
        data, {"t": {"vary": {"n_layer": [1]}}},
        defaults={**SHORT_CPU_RUN, "max_iters": max_iters, "lr_decay_iters": decay,
                  "warmup_iters": 2, "cpu_attention": "torch"},
        sampling={"prompts": ["the cat"], "max_new_tokens": 8, "num_samples": 1}))
    return str(p)


@pytest.fixture
def no_dispatcher(monkeypatch):
    import engine.launch.dispatcher as dispatcher
    monkeypatch.setattr(dispatcher, "ensure_dispatcher", lambda *a, **k: 4321)


def _done_run(tmp_path, decay: int = 20) -> tuple[str, RunDir]:
    exp = _exp(tmp_path, 20, decay)
    queue_runs_detailed(exp, tmp_path / "runs", ["t"], prepare=False)
    run = RunDir(tmp_path / "runs" / "t" / "n_layer=1")
    assert T.main([str(run.path)]) == 0 and run.read_status()["state"] == "done"
    return exp, run


def _cli(exp, tmp_path, *args) -> int:
    return main(["--experiments", exp, "--runs", str(tmp_path / "runs"), "resume", *args])


def test_extend_continues_a_done_run_with_no_gap_or_repeat_and_no_warm_restart(
        tmp_path, capsys, no_dispatcher):
    exp, run = _done_run(tmp_path)
    before = run.read_metrics()
    _exp(tmp_path, 40)  # the student raises max_iters in the experiments file
    assert _cli(exp, tmp_path, "--extend", run.id) == 0
    out = capsys.readouterr().out
    assert "t/n_layer=1: queued, extended 20 → 40, at lr 0.0003" in out
    assert run.read_status()["state"] == "queued" and run.load_config().max_iters == 40

    assert T.main([str(run.path), "--resume"]) == 0
    st = run.read_status()
    assert st["state"] == "done" and st["iter"] == 40
    metrics = run.read_metrics()
    assert metrics[:len(before)] == before                      # the first 20 iters untouched
    train = [m for m in metrics if m["kind"] == "train"]
    assert [m["iter"] for m in train] == list(range(1, 41))     # no gap, no repeat
    assert [m["iter"] for m in metrics if m["kind"] == "eval"] == [0, 10, 20, 30, 40]
    # the cosine had decayed to min_lr at 20: the tail goes on at min_lr, never back up
    # (no warm restart)
    lrs = [m["lr"] for m in train]
    assert all(a >= b for a, b in zip(lrs[19:], lrs[20:])) and lrs[-1] == pytest.approx(3e-4)
    assert max(lrs[20:]) <= lrs[19] == pytest.approx(3e-4)
    assert "extended 20 → 40, at lr 0.0003" in capsys.readouterr().out


def test_extend_of_an_unfinished_decay_re_decays_to_min_lr(tmp_path, capsys, no_dispatcher):
    exp, run = _done_run(tmp_path, decay=100)  # lr still high at iter 20
    assert _cli(exp, tmp_path, "--extend", "--max-iters", "30", run.id) == 0
    assert T.main([str(run.path), "--resume"]) == 0
    lrs = [m["lr"] for m in run.read_metrics() if m["kind"] == "train"]
    assert len(lrs) == 30
    assert all(a >= b for a, b in zip(lrs[19:], lrs[20:]))   # never rises
    assert lrs[19] > 2e-3 and lrs[-1] == pytest.approx(3e-4)  # ends at min_lr


def test_resume_of_a_done_run_points_to_extend(tmp_path, capsys, no_dispatcher):
    exp, run = _done_run(tmp_path)
    assert _cli(exp, tmp_path, run.id) == 2
    assert f"cannot resume {run.id}: it is done (`nanotui resume --extend {run.id}`" in \
        capsys.readouterr().err
    # extending to the horizon it already has is refused with the remedy, nothing queued
    assert _cli(exp, tmp_path, "--extend", run.id) == 2
    assert "max_iters 20 is not beyond the run's 20: raise max_iters" in capsys.readouterr().err
    assert run.read_status()["state"] == "done" and run.load_config().max_iters == 20


def test_a_second_extension_continues_from_the_first():
    cfg = TrainConfig(max_iters=100, lr_decay_iters=200, warmup_iters=0, learning_rate=1e-3,
                      min_lr=1e-4)
    first = plan_extension(cfg, [], 200)
    assert first.lr_from == pytest.approx(lr_at(100, cfg, []))
    second = plan_extension(cfg.replace(max_iters=200), [first], 300)
    assert second.lr_from == pytest.approx(1e-4) == second.lr_to
    assert lr_at(150, cfg, [first, second]) == first.lr(150)
    assert lr_at(250, cfg, [first, second]) == pytest.approx(1e-4)
    with pytest.raises(UserError, match="not beyond"):
        plan_extension(cfg, [], 100)


def test_resume_wait_of_a_run_that_fails_again_exits_1_naming_state_and_reason(tmp_path, capsys):
    exp = _exp(tmp_path, 20)
    queue_runs_detailed(exp, tmp_path / "runs", ["t"], prepare=False)
    run = RunDir(tmp_path / "runs" / "t" / "n_layer=1")
    (tmp_path / "data" / "train.bin").unlink()  # the data went away: every try fails
    assert T.main([str(run.path)]) != 0 and run.read_status()["state"] == "failed"
    capsys.readouterr()
    assert _cli(exp, tmp_path, "--gpu", "cpu", "--wait", run.id) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(f"{run.id}: ended failed"))
    reason = run.read_status()["reason"]
    assert reason and reason.splitlines()[0] in line
