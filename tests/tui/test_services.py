"""RunStore: what the dashboard knows of the disk, read incrementally."""

from __future__ import annotations

import json

from engine.runs import create_run
from tests.tui.conftest import tiny_cfg
from tui.store import RunStore, latest_samples


def test_status_is_reread_only_when_the_file_changes(world):
    store = RunStore(world.root)
    views = {v.id: v for v in store.poll().views}
    assert views["depth/n_layer=2"].state == "running"
    assert views["width/n_embd=32"].reason == "CUDA out of memory"
    run = world.runs["depth/n_layer=1"]
    reads = []
    original = type(run).read_status
    try:
        type(run).read_status = lambda self: reads.append(self.id) or original(self)
        store.poll()
        assert reads == []  # nothing changed on disk: nothing re-read
        run.update_status(iter=999)
        views = {v.id: v for v in store.poll().views}
        assert reads == ["depth/n_layer=1"] and views["depth/n_layer=1"].iter == 999
    finally:
        type(run).read_status = original


def test_a_dead_running_process_shows_as_failed_lost(world):
    run = world.runs["depth/n_layer=2"]
    run.update_status(pid=2 ** 22 - 1, pid_create_time=1.0)  # no such process
    views = {v.id: v for v in RunStore(world.root).poll().views}
    assert views["depth/n_layer=2"].state == "failed"
    assert views["depth/n_layer=2"].reason == "lost"


def test_only_watched_runs_are_tailed_and_only_new_bytes_read(world):
    store = RunStore(world.root)
    store.poll()
    assert store.series("depth/n_layer=1").train_iter == []  # not watched: untouched
    store.watch({"depth/n_layer=1"})
    res = store.poll()
    assert res.metrics_changed == {"depth/n_layer=1"}
    assert res.samples_changed == {"depth/n_layer=1"}
    series = store.series("depth/n_layer=1")
    n = len(series.train_iter)
    assert series.train_iter[-1] == 1000 and series.eval_iter[-1] == 1000
    assert series.train_tokens[-1] == 1000 * 128
    assert store.poll().metrics_changed == frozenset()
    run = world.runs["depth/n_layer=1"]
    with open(run.metrics_path, "a") as f:
        f.write(json.dumps({"kind": "train", "iter": 1010, "loss": 1.0}) + "\n")
        f.write('{"kind": "train", "iter": 1020, "lo')  # a torn line waits for its newline
    assert store.poll().metrics_changed == {"depth/n_layer=1"}
    assert len(series.train_iter) == n + 1


def test_a_rewritten_metrics_file_starts_a_fresh_series(world):
    store = RunStore(world.root)
    store.watch({"width/n_embd=64"})
    store.poll()
    old = store.series("width/n_embd=64")
    run = world.runs["width/n_embd=64"]
    run.prepare_for_resume(300)  # what a resume does: keep records up to the checkpoint
    store.poll()
    new = store.series("width/n_embd=64")
    assert new is not old and new.train_iter[-1] == 300


def test_log_tail_is_incremental_and_follows_the_selected_run(world):
    store = RunStore(world.root)
    store.show_log("depth/n_layer=2")
    first = store.poll()
    assert first.log_reset and "iter 400" in first.log_text
    assert store.poll().log_text == ""
    with open(world.runs["depth/n_layer=2"].stdout_path, "a") as f:
        f.write("step 440 done\npartial")
    res = store.poll()
    assert res.log_text == "step 440 done\n" and not res.log_reset


def test_new_and_removed_runs_appear_and_disappear(world):
    store = RunStore(world.root)
    assert len(store.poll().views) == 5
    create_run(world.root, "depth", "n_layer=8", tiny_cfg(n_layer=8), {"n_layer": 8})
    ids = [v.id for v in store.poll().views]
    assert "depth/n_layer=8" in ids and len(ids) == 6


def test_latest_samples_per_prompt():
    samples = [{"iter": 100, "prompt": "a", "text": "x"}, {"iter": 200, "prompt": "a", "text": "y"},
               {"iter": 100, "prompt": "b", "text": "z"}]
    assert {p: s["iter"] for p, s in latest_samples(samples).items()} == {"a": 200, "b": 100}
    assert latest_samples(samples, iteration=150)["a"]["text"] == "x"
