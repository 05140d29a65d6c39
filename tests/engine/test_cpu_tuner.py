"""The CPU path tuner (engine/model/cpu_tuner.py): what it keys its cache on, reuse of a
measurement by later and concurrent processes, overrides, emulation of an AVX2 CPU, and
that every attention path trains to the same loss."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import TrainConfig
from engine.model import cpu_kernels, cpu_tuner, native
from engine.model import device as dev
from engine.model.gpt import GPTConfig
from engine.train.trainer import Trainer, TrainError

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=2",
        "--device=cpu", "--iters=1", "--warmup=0", "--json"]
SHAPE = GPTConfig(block_size=32, vocab_size=65, n_layer=1, n_head=2, n_embd=32)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty nanotui cache holding only the kernel already built for this machine (so
    no test waits for a compiler), as NANOTUI_CACHE_DIR for this process and children."""
    lib = native.load() and native.build()
    monkeypatch.setenv("NANOTUI_CACHE_DIR", str(tmp_path))
    if lib:
        shutil.copy(lib, tmp_path / lib.name)
    monkeypatch.delenv(cpu_tuner.OVERRIDE_ENV, raising=False)
    monkeypatch.delenv(cpu_tuner.RETUNE_ENV, raising=False)
    monkeypatch.setenv("NANOTUI_CPU_TUNE_STEPS", "1")
    return tmp_path


def tuning_files(cache: Path) -> list[Path]:
    return sorted((cache / "cpu-tuning").glob("*.json"))


def bench(*extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from tui.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "bench", *TINY, *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_cache_key_changes_with_what_the_timing_depends_on(monkeypatch):
    cands = cpu_tuner.candidates(SHAPE, "auto", None)
    base = cpu_tuner.cache_path(cpu_tuner.cache_key(SHAPE, 2, "auto", cands))
    assert base == cpu_tuner.cache_path(cpu_tuner.cache_key(SHAPE, 2, "auto", cands))
    variants = [
        cpu_tuner.cache_key(SHAPE.__class__(**{**SHAPE.__dict__, "n_head": 4}), 2, "auto", cands),
        cpu_tuner.cache_key(SHAPE.__class__(**{**SHAPE.__dict__, "block_size": 64}), 2, "auto", cands),
        cpu_tuner.cache_key(SHAPE.__class__(**{**SHAPE.__dict__, "dropout": 0.2}), 2, "auto", cands),
        cpu_tuner.cache_key(SHAPE, 4, "auto", cands),
        cpu_tuner.cache_key(SHAPE, 2, "float32", cands),
        cpu_tuner.cache_key(SHAPE, 2, "auto", cands[:1]),
    ]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        variants.append(cpu_tuner.cache_key(SHAPE, 2, "auto", cands))
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    variants.append(cpu_tuner.cache_key(SHAPE, 2, "auto", cands))
    monkeypatch.undo()
    monkeypatch.setattr(cpu_tuner.native, "source_digest", lambda: "another kernel")
    variants.append(cpu_tuner.cache_key(SHAPE, 2, "auto", cands))
    monkeypatch.undo()
    if dev.emulated_cpu_class() is None:  # the other class than this process runs as
        monkeypatch.setenv(dev.EMULATE_ENV, "avx2")
    else:
        monkeypatch.delenv(dev.EMULATE_ENV)
    variants.append(cpu_tuner.cache_key(SHAPE, 2, "auto", cands))
    paths = [cpu_tuner.cache_path(k) for k in variants]
    assert base not in paths and len(set(paths)) == len(paths)


def test_a_second_process_reuses_the_measurement(cache):
    first = bench()
    assert first.returncode == 0, first.stderr
    choice = json.loads(first.stdout)["cpu_choice"]
    assert choice["how"] == "measured" and len(choice["times_ms"]) >= 2
    assert [Path(choice["cache_file"])] == tuning_files(cache)
    entry = json.loads(tuning_files(cache)[0].read_text())
    assert entry["path"] == choice["path"] and entry["key"]["n_embd"] == 32

    second = bench()
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)["cpu_choice"]
    assert again["how"] == "cached" and again["times_ms"] == choice["times_ms"]
    assert (again["path"], again["dtype"]) == (choice["path"], choice["dtype"])
    assert json.loads(tuning_files(cache)[0].read_text()) == entry  # not measured again

    retuned = json.loads(bench(env={cpu_tuner.RETUNE_ENV: "1"}).stdout)["cpu_choice"]
    assert retuned["how"] == "measured"


def test_runs_starting_together_measure_once(cache):
    code = ("import json, torch\n"
            "from engine.model import cpu_tuner\n"
            "from engine.model.gpt import GPTConfig\n"
            "cfg = GPTConfig(block_size=64, vocab_size=65, n_layer=2, n_head=4, n_embd=64)\n"
            "print(json.dumps(cpu_tuner.choose(cfg, 4).to_json()))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NANOTUI_CPU_TUNE_STEPS": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    choices = [json.loads(out) for out, _ in outs]
    assert sorted(c["how"] for c in choices) == ["cached", "cached", "measured"]
    assert len({json.dumps(c["times_ms"], sort_keys=True) for c in choices}) == 1
    assert len({(c["path"], c["dtype"]) for c in choices}) == 1
    assert len(tuning_files(cache)) == 1


def test_runs_of_different_shapes_starting_together_measure_in_turn(cache):
    """Two keys, two measurements, never at the same time: each would time the other."""
    code = ("import json, sys\n"
            "from engine.model import cpu_tuner\n"
            "from engine.model.gpt import GPTConfig\n"
            "cfg = GPTConfig(block_size=64, vocab_size=65, n_layer=2, n_head=4,"
            " n_embd=int(sys.argv[1]))\n"
            "print(json.dumps(cpu_tuner.choose(cfg, 4).to_json()))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NANOTUI_CPU_TUNE_STEPS": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], cwd=ROOT, env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for n in (32, 64)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert [json.loads(out)["how"] for out, _ in outs] == ["measured", "measured"]
    spans = sorted(json.loads(f.read_text())["measured_s"] for f in tuning_files(cache))
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans


def test_a_measurement_on_a_busy_machine_says_so(cache):
    """A real process spinning a core makes the measurement say so (the tuner reads the
    CPU use of the moment, not the load average, which lags a minute behind)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        line = cpu_tuner.choose(SHAPE, 2).describe(SHAPE.n_head, SHAPE.n_embd)
    finally:
        spinner.kill()
        spinner.wait()
    assert re.search(r"measured while other work kept (0\.[5-9]|[1-9]\.\d) cores busy", line), line
    assert "the next start on a quiet machine measures again" in line


def test_a_busy_measurement_is_reused_only_while_the_machine_stays_busy(cache, monkeypatch):
    """Measured under load, the answer is reused by starts that are under load too; the
    first quiet start measures again (what the CPU really does) and that answer is cached
    as quiet. The machine's load is set here: this test box is shared and never quiet."""
    load = {"cores": 1.5}
    monkeypatch.setattr(cpu_tuner, "busy_cores", lambda: load["cores"])
    busy = cpu_tuner.choose(SHAPE, 2)
    assert busy.how == "measured" and "1.5 cores busy" in busy.describe(SHAPE.n_head, SHAPE.n_embd)
    assert cpu_tuner.choose(SHAPE, 2).how == "cached"
    load["cores"] = 0.1
    quiet = cpu_tuner.choose(SHAPE, 2)
    assert quiet.how == "measured" and "busy" not in quiet.describe(SHAPE.n_head, SHAPE.n_embd)
    assert json.loads(tuning_files(cache)[0].read_text())["busy_cores"] == 0.1
    load["cores"] = 1.5
    assert cpu_tuner.choose(SHAPE, 2).how == "cached"  # a quiet answer holds under load


def test_overrides_fix_the_path_and_are_logged(cache):
    r = bench("--dtype=float32", env={cpu_tuner.OVERRIDE_ENV: "torch"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["cpu_choice"]["how"] == "override" and out["cpu_choice"]["path"] == "torch"
    assert out["cpu_attention"] == "torch ops, float32 (override: NANOTUI_CPU_KERNEL=torch)"
    assert tuning_files(cache) == []  # nothing was measured

    # the config key; the environment wins over it
    text = bench("--dtype=float32", "--cpu_attention=sdpa").stdout
    assert json.loads(text)["cpu_attention"] == (
        'torch scaled_dot_product_attention, float32 (override: cpu_attention = "sdpa" in the config)')
    out = json.loads(bench("--dtype=float32", "--cpu_attention=sdpa",
                           env={cpu_tuner.OVERRIDE_ENV: "fused"}).stdout)
    assert out["cpu_choice"]["path"] == "fused"

    # a fixed path with the precision left open: only the precision is measured
    choice = cpu_tuner.choose(SHAPE, 2, "auto", "sdpa")
    assert {k.split("/")[0] for k in choice.times_ms} <= {"sdpa"}


def test_bad_override_values_are_one_line_errors(cache):
    r = bench(env={cpu_tuner.OVERRIDE_ENV: "fastest"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "nanotui: error: NANOTUI_CPU_KERNEL='fastest': expected auto, fused, torch, sdpa or 0"]
    r = bench("--cpu_attention=flash")
    assert r.returncode == 2
    assert "cpu_attention = 'flash': must be one of auto, fused, torch, sdpa" in r.stderr


def test_an_emulated_avx2_cpu_has_no_bf16_and_its_own_kernel_build(cache, monkeypatch):
    monkeypatch.setenv(dev.EMULATE_ENV, "avx2")
    assert not dev.cpu_has_bf16() and dev.cpu_class() == "avx2 (emulated)"
    assert "-march=x86-64-v3" in native.compile_flags()
    assert {d for _, d in cpu_tuner.candidates(SHAPE, "auto", None)} == {torch.float32}
    monkeypatch.delenv(dev.EMULATE_ENV)
    assert "-march=native" in native.compile_flags()


def test_a_class_the_cpu_lacks_cannot_be_emulated(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))
    with pytest.raises(ValueError, match="AVX-512 cannot be emulated on an AVX2 machine"):
        dev.emulation_env("avx512")
    assert dev.emulation_env("avx2")["ATEN_CPU_CAPABILITY"] == "avx2"


def test_without_the_kernel_the_log_says_why_fused_was_not_measured(cache):
    r = bench("--dtype=float32", env={cpu_tuner.OVERRIDE_ENV: "0"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["cpu_choice"]["times_ms"]) == {"torch/float32", "sdpa/float32"}
    assert "not a candidate: fused kernel unavailable: disabled by NANOTUI_CPU_KERNEL=0" in out["cpu_attention"]


def test_a_candidate_that_fails_is_left_out_and_named(cache, monkeypatch):
    def broken(*args):
        raise RuntimeError("no kernel for this ISA")
    monkeypatch.setattr(cpu_kernels.CausalAttention, "apply", broken)
    choice = cpu_tuner.choose(SHAPE, 2, "float32")
    assert choice.path != "torch" and "torch/float32" not in choice.times_ms
    assert "torch/float32 failed: RuntimeError: no kernel for this ISA" in choice.describe(2, 32)
    cached = cpu_tuner.choose(SHAPE, 2, "float32")
    assert cached.how == "cached" and cached.failed == choice.failed


def _losses(cfg: TrainConfig, steps: int = 6) -> tuple[list[float], Trainer]:
    data = (np.arange(1 << 14) * 7 % cfg.vocab_size).astype(np.uint16)  # learnable
    t = Trainer(cfg, data, data, cfg.vocab_size, log=lambda s: None)
    return [t.train_step().item() for _ in range(steps)], t


@pytest.mark.usefixtures("one_torch_thread")
def test_every_path_and_the_tuned_run_train_to_the_same_loss(cache):
    cfg = TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4,
                      vocab_size=65, device="cpu", dtype="float32", learning_rate=1e-2,
                      warmup_iters=0, max_iters=10)
    by_path = {}
    for path in cpu_kernels.PATHS:
        by_path[path], t = _losses(cfg.replace(cpu_attention=path))
        assert t.cpu_choice.path == path and t.model.transformer.h[0].attn.cpu_attention == path
    ref = by_path["sdpa"]  # nanoGPT's attention
    assert ref[-1] < ref[0] - 0.3  # it learns
    for path, losses in by_path.items():
        assert losses == pytest.approx(ref, abs=1e-4), path
    tuned, t = _losses(cfg)  # cpu_attention "auto": measured, then the same function
    assert t.cpu_choice.how == "measured"
    assert tuned == by_path[t.cpu_choice.path]  # tuning left the run's RNG state alone
    if dev.cpu_has_bf16():
        bf16, t = _losses(cfg.replace(dtype="bfloat16"))
        assert bf16 == pytest.approx(ref, abs=1e-2)


def test_an_unknown_override_fails_the_trainer_with_one_line(cache, monkeypatch):
    monkeypatch.setenv(cpu_tuner.OVERRIDE_ENV, "fastest")
    cfg = TrainConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=2,
                      vocab_size=65, device="cpu")
    with pytest.raises(TrainError, match="NANOTUI_CPU_KERNEL='fastest'"):
        _losses(cfg, 1)
