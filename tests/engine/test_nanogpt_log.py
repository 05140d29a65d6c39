"""`nanotui import` of a nanoGPT log: a resumed run's lines replace the ones it printed
again, records stay in iteration order, and a long log is streamed (bounded memory, its
progress reported in bytes) rather than held."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from engine.interop.nanogpt_run import import_out_dirs
from tests.engine.test_nanogpt_import import nanogpt_tree
from tui.cli import main as nanotui

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(n: int, loss: float) -> str:
    return f"iter {n}: loss {loss:.4f}, time 20.00ms, mfu 10.00%\n"


def _metrics(run_dir) -> list[tuple]:
    return [(r["kind"], r["iter"], r.get("loss", r.get("val_loss")))
            for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def test_a_resumed_log_keeps_the_resumed_lines_in_iteration_order(tmp_path, capsys):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=False)
    log = ["tokens per iteration will be: 100\n", "step 0: train loss 4.0000, val loss 4.1000\n"]
    log += [_train(n, 3.0) for n in range(0, 10)]
    log += ["step 10: train loss 2.9000, val loss 2.9500\n"]     # saved a checkpoint at 10
    log += [_train(n, 2.8) for n in range(10, 15)]              # ... and crashed at 15
    log += ["step 10: train loss 2.5000, val loss 2.6000\n"]     # resumed from iter 10
    log += [_train(n, 2.0) for n in range(10, 20)]
    log += ["step 20: train loss 1.5000, val loss 1.6000\n"]
    (out / "log.txt").write_text("".join(log))
    assert nanotui(["--runs", str(tmp_path / "runs"), "import", str(out)]) == 0
    got = _metrics(tmp_path / "runs/imported/out-x")
    # the train record N is `iter N-1`'s line; an eval comes before the train record of
    # its iteration
    want = ([("eval", 0, 4.1)] + [("train", n, 3.0) for n in range(1, 10)]
            + [("eval", 10, 2.6), ("train", 10, 3.0)] + [("train", n, 2.0) for n in range(11, 20)]
            + [("eval", 20, 1.6), ("train", 20, 2.0)])
    assert got == want
    st = json.loads((tmp_path / "runs/imported/out-x/status.json").read_text())
    assert (st["best_val_loss"], st["best_iter"], st["val_loss"], st["iter"]) == (1.6, 20, 1.6, 500)
    assert "20 train + 3 eval records" in capsys.readouterr().out


def test_an_eval_comes_before_the_train_record_of_its_iteration(tmp_path):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=False)
    (out / "log.txt").write_text("step 0: train loss 4.0000, val loss 4.1000\n"
                                 + _train(0, 3.5) + _train(1, 3.4)
                                 + "step 2: train loss 3.3000, val loss 3.3500\n" + _train(2, 3.2))
    assert nanotui(["--runs", str(tmp_path / "runs"), "import", str(out)]) == 0
    assert _metrics(tmp_path / "runs/imported/out-x") == [
        ("eval", 0, 4.1), ("train", 1, 3.5), ("eval", 2, 3.35), ("train", 2, 3.4), ("train", 3, 3.2)]


def test_a_long_log_is_streamed_with_its_progress(tmp_path):
    out, _ = nanogpt_tree(tmp_path, "char", compiled=False)
    n = 100_000
    with open(out / "log.txt", "w") as f:
        f.write("tokens per iteration will be: 16,384\n")
        for it in range(n):
            if it % 1000 == 0:
                f.write(f"step {it}: train loss {3 - it / n:.4f}, val loss {3.1 - it / n:.4f}\n")
            f.write(_train(it, 3 - it / n))
    size = (out / "log.txt").stat().st_size
    seen: dict[str, list[tuple[int, int]]] = {}

    def stage(what: str):
        seen[what] = []
        return lambda done, total: seen[what].append((done, total))

    warm, _ = nanogpt_tree(tmp_path / "warm", "char", compiled=False)
    import_out_dirs([warm], tmp_path / "warm-runs")   # the modules it imports are not the log's
    tracemalloc.start()
    try:
        ((run, _),) = import_out_dirs([out], tmp_path / "runs", stage=stage)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # held in memory, these 100,000 records took 66 MiB of Python objects at the peak;
    # streamed, 4 MiB (the numbers kept for status.json are 8 bytes a step)
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert sum(1 for _ in open(run.metrics_path)) == n + n // 1000
    assert list(seen) == [f"reading {out / 'log.txt'}",
                          f"writing imported/out-x from {out / 'log.txt'}"]
    for updates in seen.values():
        assert len(updates) > 2 and updates[-1] == (size, size)
        assert [d for d, _ in updates] == sorted(d for d, _ in updates)
