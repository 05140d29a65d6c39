"""First contact with a GPU server whose torch cannot use its card: NVML answers as a real
H100 on an R550 driver (a stand-in pynvml module first on PYTHONPATH, not the fake-card
simulation) while torch is this machine's CPU-only build. Nothing may train on the CPU by
surprise: the run fails naming the cause, a device = "cpu" run trains on the CPU,
`doctor` names the mismatch and the wheel, gpu_check fails loudly. Fake cards stay a
simulation whose runs train on the CPU and say so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runs import RunDir, list_runs
from tests.conftest import REPO, tiny_experiments, write_char_data

pytestmark = [pytest.mark.e2e]

STAND_IN = REPO / "tests" / "fixtures" / "nvml_h100_r550"
FAKE_GPUS = REPO / "tests" / "fixtures" / "fake_gpus_2.json"


def h100_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NANOTUI_FAKE_GPUS", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(STAND_IN), str(REPO)])
    return env


def nanotui(tmp_path, *args, env, timeout=180):
    return subprocess.run([sys.executable, "-m", "tui", "--experiments",
                           str(tmp_path / "experiments.toml"), "--runs", str(tmp_path / "runs"),
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def exp(tmp_path):
    data = write_char_data(tmp_path / "data")
    (tmp_path / "experiments.toml").write_text(tiny_experiments(
        data, {"auto": {"vary": {"seed": [1]}},
               "oncpu": {"vary": {"seed": [2]}, "fixed": {"device": "cpu"}}},
        defaults={"max_iters": 6, "eval_interval": 6, "eval_iters": 1, "compile": False},
        sampling={"max_new_tokens": 4}))
    return tmp_path


def test_an_h100_on_r550_with_cpu_torch_never_trains_on_the_cpu_by_surprise(exp):
    env = h100_env()
    gpus = json.loads(nanotui(exp, "gpus", "--json", env=env).stdout)
    assert "NVIDIA H100" in json.dumps(gpus)  # the stand-in answers as a real card

    nanotui(exp, "launch", "auto", env=env)
    (auto,) = [r for r in list_runs(exp / "runs") if r.sweep == "auto"]
    st = auto.read_status()
    assert st["state"] == "failed"
    assert "CPU-only build and cannot use GPU 0 (NVIDIA H100 80GB HBM3)" in st["reason"]
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cu126" in st["reason"]
    assert not [m for m in auto.read_metrics() if m.get("kind") == "train"]  # nothing trained
    shown = nanotui(exp, "status", env=env).stdout
    assert "failed" in shown and "CPU-only build" in shown

    nanotui(exp, "launch", "oncpu", env=env)
    (cpu,) = [r for r in list_runs(exp / "runs") if r.sweep == "oncpu"]
    st = cpu.read_status()
    assert st["state"] == "done" and st["device"] == "cpu" and not st.get("gpu"), st


def test_a_trainer_started_on_the_card_fails_with_the_cause_instead_of_using_the_cpu(exp):
    """The trainer's own guard, for a placement made by anything else (an older
    dispatcher, a hand-written CUDA_VISIBLE_DEVICES plus NANOTUI_GPU)."""
    from engine.config import TrainConfig, dump_config
    run = RunDir(exp / "hand")
    run.path.mkdir()
    cfg = TrainConfig(data_dir=str(exp / "data"), n_layer=1, n_head=2, n_embd=16,
                      block_size=16, batch_size=4, max_iters=4, compile=False)
    (run.path / "config.toml").write_text(dump_config(cfg))
    env = {**h100_env(), "CUDA_VISIBLE_DEVICES": "GPU-8f6c2b2e-1d3a-4c5b-9e7f-0a1b2c3d4e5f",
           "NANOTUI_GPU": "GPU-8f6c2b2e-1d3a-4c5b-9e7f-0a1b2c3d4e5f",
           "NANOTUI_GPU_LABEL": "GPU 0 (NVIDIA H100 80GB HBM3)",
           "NANOTUI_GPU_CAPABILITY": "9.0", "NANOTUI_DRIVER_CUDA": "12.4"}
    p = subprocess.run([sys.executable, "-m", "engine.train", str(run.path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "CPU-only build and cannot use GPU 0 (NVIDIA H100" in err[0]
    st = run.read_status()
    assert st["state"] == "failed" and "CPU-only build" in st["reason"]
    assert not run.metrics_path.exists() or not run.read_metrics()


def test_doctor_names_the_mismatch_and_the_wheel(exp):
    p = subprocess.run([sys.executable, "-m", "tui", "doctor", "--no-steps"], env=h100_env(),
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 1, p.stdout
    assert "driver 550.54.15 (supports CUDA 12.4)" in p.stdout
    line = next(x for x in p.stdout.splitlines() if "torch build" in x)
    assert "MISSING" in line and "CPU-only build" in line and "cu126" in line
    assert "never placed on" in p.stdout


def test_gpu_check_without_rehearse_exits_non_zero_with_a_fail_line(tmp_path):
    env = {**h100_env(), "PYTHON": sys.executable}
    p = subprocess.run([str(REPO / "benchmarks" / "gpu_check.sh"), "--work", str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check: FAIL"), p.stdout
    assert "CPU-only build and cannot use GPU 0" in p.stdout


def test_fake_cards_stay_a_simulation_that_trains_on_the_cpu_and_says_so(exp):
    env = {**os.environ, "NANOTUI_FAKE_GPUS": str(FAKE_GPUS), "PYTHONPATH": str(REPO)}
    nanotui(exp, "launch", "auto", env=env)
    (run,) = [r for r in list_runs(exp / "runs") if r.sweep == "auto"]
    st = run.read_status()
    assert st["state"] == "done" and st["device"] == "cpu"
    assert st["gpu"]["simulated"] is True and st["simulated_gpu"].startswith("GPU ")
    assert "a simulated card: training on the CPU" in run.stdout_path.read_text()
    shown = nanotui(exp, "status", env=env).stdout
    assert "cpu (sim gpu" in shown
