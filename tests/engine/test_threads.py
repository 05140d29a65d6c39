"""CPU threads that follow the free cores (engine/train/threads.py): the rule, following a
changing load, the registry of our CPU runs, overrides, and what a real run writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.config import ConfigError, TrainConfig, config_from_dict
from engine.runs import create_run
from engine.train import threads

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _threads_env(tmp_path, monkeypatch):
    monkeypatch.setenv(threads.REGISTRY_ENV, str(tmp_path / "cpu-runs"))
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_the_rule_gives_busy_cores_away_and_shares_the_rest_between_our_runs():
    assert threads.auto_threads(2, 0.1, 1)[0] == 2
    assert threads.auto_threads(2, 1.0, 1) == (1, "2 cores, other processes keep 1.0 busy")
    assert threads.auto_threads(2, 0.6, 1)[0] == 1        # half a core used by others: theirs
    assert threads.auto_threads(2, 2.0, 1)[0] == 1        # never fewer than one
    assert threads.auto_threads(8, 0.0, 3) == (2, "8 cores, other processes keep 0.0 busy, "
                                                  "3 nanotui CPU runs share them")
    assert threads.auto_threads(8, 0.0, 1, ceiling=3)[0] == 3
    assert threads.auto_threads(4, None, 2) == (2, "4 cores, other load unknown, "
                                                   "2 nanotui CPU runs share them")


def test_a_load_at_the_edge_keeps_the_count_it_has():
    # 0.4 of a core: not enough to give a core up, too much to take one back
    assert threads.auto_threads(2, 0.4, 1, current=2)[0] == 2
    assert threads.auto_threads(2, 0.4, 1, current=1)[0] == 1
    assert threads.auto_threads(2, 0.2, 1, current=1)[0] == 2


class FakeMachine:
    """threads.sample as a clock and CPU-time counters this test drives."""

    def __init__(self, cores: int):
        self.at, self.busy, self.own, self.cores = 0.0, 0.0, 0.0, cores

    def run(self, seconds: float, others: float, ours: float) -> None:
        self.at += seconds
        self.busy += (others + ours) * seconds
        self.own += ours * seconds

    def sample(self) -> threads.Sample:
        return threads.Sample(self.at, self.busy, self.own)


def test_a_run_gives_a_core_up_when_another_process_takes_it_and_takes_it_back(monkeypatch):
    m = FakeMachine(2)
    monkeypatch.setattr(threads, "sample", m.sample)
    monkeypatch.setattr(threads, "now", lambda: m.at)
    monkeypatch.setattr(threads, "affinity_cores", lambda: [0, 1])
    monkeypatch.setattr(threads, "SAMPLE_S", 0.0)
    gov = threads.Governor()
    m.run(0.3, others=0.0, ours=0.0)
    assert gov.start().startswith("2 threads (2 cores, other processes keep 0.0 busy")
    assert torch.get_num_threads() == 2
    m.run(2.0, others=1.0, ours=1.0)
    assert gov.check() is None            # two seconds: not yet a change of load
    m.run(4.0, others=1.0, ours=1.0)
    assert gov.check() == "1 thread (2 cores, other processes keep 1.0 busy)"
    assert torch.get_num_threads() == 1
    assert gov.status() == {"cpu_threads": 1,
                            "cpu_threads_why": "2 cores, other processes keep 1.0 busy"}
    m.run(6.0, others=0.0, ours=1.0)
    assert gov.check() == "2 threads (2 cores, other processes keep 0.0 busy)"
    assert torch.get_num_threads() == 2


def test_the_dispatchers_share_holds_at_start_and_the_users_omp_num_threads_always(monkeypatch):
    """Runs the dispatcher starts together may not have registered yet when one chooses:
    the share it was given holds at start; alone later, the run takes the cores back.
    OMP_NUM_THREADS is the user's word and holds throughout."""
    m = FakeMachine(2)
    monkeypatch.setattr(threads, "sample", m.sample)
    monkeypatch.setattr(threads, "now", lambda: m.at)
    monkeypatch.setattr(threads, "affinity_cores", lambda: [0, 1])
    monkeypatch.setattr(threads, "SAMPLE_S", 0.0)
    monkeypatch.setenv(threads.SHARE_ENV, "1")
    gov = threads.Governor()
    m.run(0.3, others=0.0, ours=0.0)
    assert gov.start() == ("1 thread (2 cores, other processes keep 0.0 busy, "
                           "at most 1 by OMP_NUM_THREADS or the dispatcher's share)")
    m.run(6.0, others=0.0, ours=1.0)
    assert gov.check() == "2 threads (2 cores, other processes keep 0.0 busy)"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    m.run(6.0, others=0.0, ours=2.0)
    assert gov.check().startswith("1 thread (") and gov.threads == 1


def test_a_burst_shorter_than_the_window_changes_nothing(monkeypatch):
    m = FakeMachine(2)
    monkeypatch.setattr(threads, "sample", m.sample)
    monkeypatch.setattr(threads, "now", lambda: m.at)
    monkeypatch.setattr(threads, "affinity_cores", lambda: [0, 1])
    monkeypatch.setattr(threads, "SAMPLE_S", 0.0)
    gov = threads.Governor()
    gov.start()
    m.run(1.0, others=1.0, ours=1.0)      # a one-second burst ...
    m.run(5.0, others=0.0, ours=2.0)      # ... in a quiet window
    assert gov.check() is None and gov.threads == 2


def test_the_count_is_shared_with_our_other_cpu_runs_on_the_machine(tmp_path):
    assert threads.our_cpu_runs() == 1
    code = ("import sys, time\nfrom engine.train import threads\nthreads.register()\n"
            "print('registered', flush=True)\nsys.stdin.readline()\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "registered"
        mine = threads.register()
        assert threads.our_cpu_runs() == 2
        n, why = threads.auto_threads(2, 0.0, threads.our_cpu_runs())
        assert n == 1 and "2 nanotui CPU runs share them" in why
        threads.unregister(mine)
        assert threads.our_cpu_runs() == 1   # the child
    finally:
        child.communicate("\n", timeout=180)  # a loaded box takes its time to exit
    assert threads.our_cpu_runs() == 1       # none left: the caller counts itself
    assert not list(Path(os.environ[threads.REGISTRY_ENV]).iterdir())


def test_a_dead_run_left_in_the_registry_is_not_counted():
    d = threads._registry()
    import socket
    (d / f"{socket.gethostname()}-{2 ** 22 + 12345}").write_text("1.0\n")
    (d / f"{socket.gethostname()}-{os.getpid()}").write_text("1.0\n")  # a recycled pid
    assert threads.our_cpu_runs() == 1


def test_explicit_settings_fix_the_count_and_the_environment_wins(monkeypatch):
    gov = threads.Governor(3)
    assert gov.start() == "3 threads (fixed by cpu_threads = 3 in the config)"
    assert torch.get_num_threads() == 3 and gov.check() is None
    monkeypatch.setenv(threads.ENV, "1")
    assert threads.Governor(3).start() == "1 thread (fixed by NANOTUI_CPU_THREADS=1)"
    monkeypatch.setenv(threads.ENV, "auto")
    assert threads.Governor(3).fixed is None
    monkeypatch.setenv(threads.ENV, "lots")
    with pytest.raises(ValueError, match="NANOTUI_CPU_THREADS='lots': expected auto or a whole"):
        threads.Governor()


def test_cpu_threads_is_a_config_key():
    assert config_from_dict({"cpu_threads": 2}).cpu_threads == 2
    assert TrainConfig().cpu_threads == "auto"
    for bad in (0, "two", -1):
        with pytest.raises(ConfigError, match="cpu_threads"):
            config_from_dict({"cpu_threads": bad}, "x.toml")


def make_run(tmp_path, **over):
    from tests.e2e.test_train_process import make_data
    make_data(tmp_path / "data")
    kw = dict(data_dir=str(tmp_path / "data"), n_layer=1, n_head=2, n_embd=32, block_size=32,
              batch_size=4, max_iters=6, eval_interval=3, eval_iters=1, log_interval=1,
              warmup_iters=1, lr_decay_iters=6, device="cpu", dtype="float32",
              cpu_attention="torch")
    kw.update(over)
    cfg = TrainConfig(**kw)
    cfg.sampling.max_new_tokens = 4
    return create_run(tmp_path / "runs", "t", "r", cfg)


def train(run, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.train", str(run.path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_a_run_beside_a_busy_core_trains_with_one_thread_and_says_why(tmp_path):
    """A real spinner holds a core: the run takes the other one alone, and says so in its
    log and status.json (what the TUI shows beside tok/s)."""
    if len(threads.affinity_cores()) < 2:
        pytest.skip("needs two cores")
    run = make_run(tmp_path)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        r = train(run)
    finally:
        spinner.kill()
        spinner.wait()
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("CPU threads:"))
    assert line.startswith("CPU threads: 1 thread (") and "other processes keep" in line, line
    status = json.loads((run.path / "status.json").read_text())
    assert status["cpu_threads"] == 1 and "other processes keep" in status["cpu_threads_why"]
    assert not list(Path(os.environ[threads.REGISTRY_ENV]).iterdir())  # unregistered at the end


def test_a_fixed_count_is_logged_and_a_bad_one_is_a_one_line_error(tmp_path):
    run = make_run(tmp_path, cpu_threads=2)
    r = train(run)
    assert r.returncode == 0, r.stderr
    assert "CPU threads: 2 threads (fixed by cpu_threads = 2 in the config)" in r.stdout
    assert json.loads((run.path / "status.json").read_text())["cpu_threads"] == 2
    bad = train(run, NANOTUI_CPU_THREADS="0")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "engine.train: error: NANOTUI_CPU_THREADS='0': expected auto or a whole number of "
        "threads (1 or more)"]
