"""`nanotui verify --rerun` trains with the recorded CPU thread count: a run trained with 2
threads is reproduced bit for bit by a verifier whose environment says 1 thread and whose
process has one core; a count that changed mid-run, or is unknown, is refused in one line;
on another CPU model the band is stated with its value. Real tiny training throughout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.engine.test_handin import TEXT, _rewrite

from engine.config import TrainConfig
from engine.data.datasets import prepare
from engine.handin.rerun import BAND_NATS
from engine.runs import create_run
from tui.cli import main

# n_embd = 32 (not the hand-in tests' 16): at this size 1 and 2 threads round the loss at
# iter 6 differently on this machine's CPU, so a rerun with the wrong count is caught
MODEL = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, max_iters=6,
             lr_decay_iters=6, warmup_iters=2, eval_interval=3, eval_iters=2, log_interval=1,
             device="cpu", dtype="float32", cpu_attention="torch")


@pytest.fixture(scope="module")
def two_threads(tmp_path_factory):
    """One finished run trained with cpu_threads = auto that resolved to 2 threads (the
    environment's fixed count stands in for an idle 2-core machine), and its bundle."""
    root = tmp_path_factory.mktemp("rerun-threads")
    (root / "story.txt").write_text(TEXT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NANOTUI_DATA_DIR", str(root / "cache"))
        data = prepare(str(root / "story.txt"), "char")
    cfg = TrainConfig(data_dir=str(data), **MODEL)
    cfg.sampling.max_new_tokens = 8
    run = create_run(root / "runs", "s", "r", cfg)
    env = dict(os.environ, PYTHONPATH=str(REPO), NANOTUI_DATA_DIR=str(root / "cache"),
               NANOTUI_CPU_THREADS="2")
    with open(run.stdout_path, "wb") as log:
        subprocess.run([sys.executable, "-m", "engine.train", str(run.path)], env=env, check=True,
                       stdout=log, stderr=subprocess.STDOUT, timeout=600)
    assert run.read_status()["cpu_threads"] == 2
    (root / "experiments.toml").write_text("# the tiny test sweep\n")
    bundle = root / "ta.tar.gz"
    assert _cli(root, "bundle", "s", "-o", str(bundle)) == 0
    return root, data, bundle


def _cli(root: Path, *argv: str) -> int:
    return main(["--experiments", str(root / "experiments.toml"), "--runs", str(root / "runs"), *argv])


@pytest.mark.skipif(not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs taskset and 2 cores to restrict the verifier to one")
def test_rerun_uses_the_recorded_thread_count_whatever_the_verifier_has(two_threads):
    root, data, bundle = two_threads
    env = dict(os.environ, PYTHONPATH=str(REPO), NANOTUI_CPU_THREADS="1")  # the verifier's own
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "tui",
                          "--experiments", str(root / "experiments.toml"), "--runs", str(root / "runs"),
                          "verify", str(bundle), "--rerun", "s/r", "--data", str(data)],
                         env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 CPU threads as recorded on 1 core (slower, the same bits)" in out.stderr
    assert "compared 9 recorded losses exactly (same CPU model), 2 CPU threads as recorded" in out.stdout


def _edit(bundle: Path, dst: Path, stdout=None, status=None) -> Path:
    def edit(files):
        base = "ta/runs/s/r/"
        if stdout is not None:
            files[base + "stdout.log"] = stdout(files[base + "stdout.log"].decode()).encode()
        if status is not None:
            st = json.loads(files[base + "status.json"])
            status(st)
            files[base + "status.json"] = json.dumps(st).encode()
    _rewrite(bundle, dst, edit, rehash=True)
    return dst


def _changed_after_iter_3(log: str) -> str:
    lines = log.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("iter 3:"))
    lines.insert(at + 1, "CPU threads: 1 thread (2 cores, other processes keep 1.0 busy)")
    return "\n".join(lines) + "\n"


def test_a_count_changed_mid_run_is_refused_in_one_line(two_threads, tmp_path, capsys):
    root, data, bundle = two_threads
    b = _edit(bundle, tmp_path / "changed.tar.gz", stdout=_changed_after_iter_3)
    capsys.readouterr()
    assert _cli(root, "verify", str(b), "--rerun", "s/r", "--data", str(data)) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["s/r: cannot rerun: the recorded run changed its CPU threads from 2 to 1 after "
                   "iter 3 (cpu_threads = auto follows the load), so 6 iters cannot be reproduced "
                   "bit for bit; --iters 2 compares the part before"]


def test_an_unknown_count_is_refused_in_one_line(two_threads, tmp_path, capsys):
    root, data, bundle = two_threads
    b = _edit(bundle, tmp_path / "unknown.tar.gz",
              stdout=lambda log: "".join(x for x in log.splitlines(True)
                                         if not x.startswith("CPU threads:")),
              status=lambda st: st.update(cpu_threads_why="2 cores, other load unknown"))
    capsys.readouterr()
    assert _cli(root, "verify", str(b), "--rerun", "s/r", "--data", str(data)) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "its CPU thread count is not recorded" in out[0]


def test_on_another_cpu_model_the_band_is_stated_with_its_value(two_threads, tmp_path, capsys,
                                                                monkeypatch):
    root, data, bundle = two_threads
    monkeypatch.chdir(data.parent)   # --data relative to where the TA is
    b = _edit(bundle, tmp_path / "elsewhere.tar.gz", stdout=_changed_after_iter_3,
              status=lambda st: st.update(device_name="AMD EPYC 9654 96-Core Processor"))
    capsys.readouterr()
    assert _cli(root, "verify", str(b), "--rerun", "s/r", "--iters", "2", "--data", data.name) == 0
    out = capsys.readouterr().out
    assert f"compared 3 recorded losses within {BAND_NATS} nats (another CPU model)" in out
    assert "0.02 nats" in out
