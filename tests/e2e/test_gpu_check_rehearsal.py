"""The GPU acceptance check rehearsed on the CPU (`benchmarks/gpu_check.py --rehearse`):
every phase runs against a fake card with toy models, as real processes, so the script
that a short GPU slot runs once has run end to end before. Its first real-GPU attempt
would have lost the nanoGPT phase: train.py reads configurator.py from its working
directory. With $NANOTUI_NANOGPT naming a nanoGPT checkout, that phase is rehearsed too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_every_phase_of_the_gpu_check_runs_on_the_cpu_with_a_fake_card(tmp_path, shared_data):
    cmd = [sys.executable, "-P", str(REPO / "benchmarks" / "gpu_check.py"), "--rehearse",
           "--text", str(shared_data / "shakespeare" / "input.txt"), "--work", str(tmp_path),
           "--minutes", "0.05", "--sweep-iters", "60", "--budget-min", "30"]  # a loaded CPU
    nanogpt = os.environ.get("NANOTUI_NANOGPT")
    if nanogpt and (Path(nanogpt) / "train.py").is_file():
        cmd += ["--nanogpt", nanogpt]
    env = {k: v for k, v in os.environ.items() if k != "NANOTUI_FAKE_GPUS"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr

    assert "REHEARSAL on the CPU" in out and "nothing above is a GPU figure" in out
    assert "skipped" not in out and "left out" not in out
    assert "nothing missing: experiments can run here" in out  # doctor, with the fake card
    baby = re.search(r"nanotui :\s+([\d,]+) tokens/s .* iter (\d+) .*\(stopped", out)
    eager = re.search(r"eager   :\s+([\d,]+) tokens/s .* iter (\d+) ", out)
    assert baby and eager, out
    assert int(baby[1].replace(",", "")) > 0 and int(baby[2]) > 0
    assert "compile : " in out  # the verdict from the pair
    placed = re.findall(r"CUDA_VISIBLE_DEVICES=.*-> (\S+) \((cpu[^)]*)\) (OK|WRONG)", out)
    assert placed == [("GPU-00000000-rehearsal-0000-000000000000", "cpu, simulated card", "OK"),
                      ("CPU", "cpu", "OK")], out
    assert re.search(r"\d+ steps: pageable host->device copies n/a on the CPU, host syncs \d+", out)
    assert out.count("peak n/a on the CPU") == 2, out
    assert re.search(r"30 steps: scaler off, .* loss [\d.]+ -> [\d.]+", out), out
    assert "gpu_check: phase budgets (s): doctor 60, prepare 15, baby " in out
    assert out.rstrip().splitlines()[-1] == "gpu_check: PASS"
    assert out.count("4/4 done") == 2, out
    assert len(re.findall(r"^  utilization", out, re.M)) == 2, out  # the sampler reported
    if "--nanogpt" in cmd:
        ref = re.search(r"nanoGPT :\s+([\d,]+) tokens/s", out)
        assert ref and int(ref[1].replace(",", "")) > 0, out


def test_a_failure_makes_the_check_fail_loudly(tmp_path, shared_data):
    """An injected failure: the only card is in MIG mode without instances, so the baby
    run cannot be placed. The check must end with FAIL and exit 1, not print figures."""
    cards = tmp_path / "cards.json"
    cards.write_text('{"gpus": [{"index": 0, "uuid": "GPU-broken", "name": "NVIDIA A100 '
                     '(fake)", "memory_total_gb": 40, "mig_mode": true}]}')
    cmd = [sys.executable, "-P", str(REPO / "benchmarks" / "gpu_check.py"), "--rehearse",
           "--text", str(shared_data / "shakespeare" / "input.txt"), "--work", str(tmp_path),
           "--minutes", "0.05", "--skip", "doctor,eager,nanogpt,placement,profile,memory,fp16,"
           "serial,packed"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NANOTUI_FAKE_GPUS": str(cards)})
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stdout.rstrip().splitlines()
    assert lines[-1] == "gpu_check: FAIL (1 failed check)", p.stdout
    assert any("FAIL: baby run ended failed" in x and "no MIG instance" in x for x in lines)
