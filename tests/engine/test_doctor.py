"""`nanotui doctor`: a clear "no GPU" line and the CPU path here, the fake cards' table,
--json, and a non-zero exit only when something experiments need is missing."""

from __future__ import annotations

import json

import pytest

from engine.launch import doctor
from tui.cli import main

CARDS = {"gpus": [
    {"index": 0, "uuid": "GPU-aaaa0000-0000", "name": "NVIDIA RTX 6000 Ada Generation",
     "memory_total_gb": 48, "memory_used_gb": 1},
    {"index": 1, "uuid": "GPU-bbbb1111-1111", "name": "NVIDIA RTX PRO 6000 Blackwell",
     "memory_total_gb": 96, "memory_used_gb": 1}]}


@pytest.fixture
def no_share(monkeypatch):
    for k in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def fake_cards(tmp_path, monkeypatch, no_share):
    p = tmp_path / "cards.json"
    p.write_text(json.dumps(CARDS))
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(p))
    return p


def test_cpu_only_machine_exits_0_with_no_gpu_and_the_cpu_path(capsys, no_share):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "no GPU: no NVIDIA driver/NVML here; runs go to the CPU" in out
    cpu_path = next(ln for ln in out.splitlines() if "cpu path" in ln)
    assert "measured per shape" in cpu_path and "sdpa/float32" in cpu_path
    assert "c++" in out and "cache" in out
    assert out.rstrip().endswith("nothing missing: experiments can run here")


def test_fake_cards_table_marks_the_share(fake_cards, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb1111-1111")
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("unit"))
    rows = lines[head + 1:head + 3]
    assert rows[0].startswith("0") and "RTX 6000 Ada" in rows[0] and "not ours" in rows[0]
    assert rows[1].startswith("1") and "48.0 GiB" not in rows[1] and "96.0 GiB" in rows[1]
    assert "GPU-bbbb1111-1111" in rows[1] and "not ours" not in rows[1]
    assert "share: CUDA_VISIBLE_DEVICES='GPU-bbbb1111-1111'" in lines


def test_json_parses_and_is_documented(fake_cards, capsys):
    assert main(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [g["uuid"] for g in doc["gpus"]] == ["GPU-aaaa0000-0000", "GPU-bbbb1111-1111"]
    assert doc["missing"] == 0 and doc["cpu"]["attention"]
    assert {c["status"] for c in doc["checks"]} <= set(doctor.STATUSES)
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    help_text = capsys.readouterr().out
    assert "--json" in help_text and '"checks"' in help_text and "exit status is 1" in help_text


def test_an_unwritable_data_cache_is_missing(tmp_path, monkeypatch, capsys, no_share):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("NANOTUI_DATA_DIR", str(tmp_path / "a-file" / "cache"))
    assert main(["doctor", "--no-steps"]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "is not writable" in out and out.rstrip().endswith("1 missing")


@pytest.mark.parametrize("step, status, code", [
    ({"works": True, "compile": "on", "tokens_per_s": 123456.0, "dtype": "bfloat16"},
     "ok", 0),
    ({"works": True, "compile": "failed", "tokens_per_s": 50000.0, "dtype": "bfloat16",
      "compile_reason": "torch.compile failed, continuing without it (no Triton)"}, "WARN", 0),
    ({"works": False, "reason": "CUDA error: no kernel image is available"}, "MISSING", 1),
])
def test_each_card_reports_its_training_step(fake_cards, monkeypatch, capsys, step, status,
                                             code):
    """With CUDA stood in for (this machine has none): the step's outcome per card."""
    cuda = [{"cuda_index": 0, "uuid": "bbbb1111-1111", "name": "NVIDIA RTX PRO 6000 Blackwell",
             "capability": "12.0", "memory_total": 96 << 30, "bf16": True}]
    monkeypatch.setattr(doctor, "_cuda_devices", lambda torch: cuda)
    ran = []
    monkeypatch.setattr(doctor, "run_step", lambda uuid: ran.append(uuid) or step)
    assert main(["doctor"]) == code
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "GPU 1 " in ln)
    assert line.split()[0] == status and "sm 12.0" in line or status == "MISSING"
    assert ran == ["GPU-bbbb1111-1111"]  # only the card CUDA can see, pinned by uuid
    assert "CUDA index -> NVML unit (this environment): 0 -> 1" in out
    if status == "ok":
        assert "123,456 tokens/s, compile works" in line
    elif status == "WARN":
        assert "compile FAILS (torch.compile failed" in line
    else:
        assert "a training step fails: CUDA error" in line


def test_the_step_child_reports_in_one_json_line(tmp_path):
    """The real child process (`-m engine.launch.doctor --step`), here without CUDA."""
    r = doctor.run_step("GPU-not-here")
    assert r["works"] is False and "CUDA is not available" in r["reason"]
