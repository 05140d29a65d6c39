"""engine.launch.gpu: fake cards from JSON, NVML absent -> [], snapshots immutable."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from engine.launch.gpu import GIB, FakeGpuSource, default_gpu_source, gpus_from_json
from engine.launch.nvml import NvmlGpuSource
from tui.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fake_gpus_2.json"


def test_fake_file(monkeypatch):
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(FIXTURE))
    gpus = default_gpu_source().snapshot()
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].memory_total == 48 * GIB and gpus[1].name.endswith("Blackwell")
    assert gpus[0].memory_free == gpus[0].memory_total - gpus[0].memory_used
    with pytest.raises(dataclasses.FrozenInstanceError):
        gpus[0].utilization = 3


def test_fake_file_is_reread_and_bad_files_give_nothing(tmp_path):
    f = tmp_path / "g.json"
    src = FakeGpuSource.from_file(f)
    assert src.snapshot() == []  # missing
    f.write_text("{not json")
    assert src.snapshot() == []
    f.write_text(json.dumps([{"uuid": "GPU-a", "memory_total": 100, "memory_used": 40,
                              "processes": [{"pid": 5, "used_memory": 40}]}]))
    (g,) = src.snapshot()
    assert (g.index, g.uuid, g.memory_free, g.processes[0].pid) == (0, "GPU-a", 60, 5)


def test_nvml_missing_means_no_gpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    src = NvmlGpuSource()
    assert src.snapshot() == [] and src.available() is False


def test_nvml_failing_calls_never_raise(monkeypatch):
    class Boom:
        def __getattr__(self, name):
            def f(*a):
                if name in ("nvmlInit", "nvmlDeviceGetCount"):
                    return 2 if name == "nvmlDeviceGetCount" else None
                if name == "nvmlDeviceGetHandleByIndex":
                    return a[0]
                if name == "nvmlDeviceGetMemoryInfo":
                    return type("M", (), {"used": 1, "total": 10})()
                raise RuntimeError(name)
            return f
    monkeypatch.setitem(sys.modules, "pynvml", Boom())
    gpus = NvmlGpuSource().snapshot()
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].utilization is None and gpus[0].processes == ()


def test_gpus_command(monkeypatch, capsys):
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(FIXTURE))
    assert main(["gpus", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [g["uuid"] for g in doc["gpus"]] == [g.uuid for g in gpus_from_json(
        json.loads(FIXTURE.read_text()))]
    assert main(["gpus"]) == 0
    assert "RTX 6000 Ada" in capsys.readouterr().out
    monkeypatch.delenv("NANOTUI_FAKE_GPUS")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert main(["gpus"]) == 0
    assert "no GPUs" in capsys.readouterr().out


def test_nvml_mig_instances_are_listed_as_units(monkeypatch):
    """A card in MIG mode gives its instances (own uuid and memory), not itself."""
    import sys
    import types

    from engine.launch.nvml import NvmlGpuSource

    class Mem:
        def __init__(self, used, total):
            self.used, self.total = used, total

    handles = {"card0": ("GPU-plain", Mem(1, 48)), "card1": ("GPU-migcard", Mem(0, 40)),
               "mig0": ("MIG-a", Mem(2, 10)), "mig2": ("MIG-b", Mem(0, 20))}

    def missing(*a):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    def mig_handle(h, j):
        if f"mig{j}" not in handles:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")  # an empty slot
        return f"mig{j}"

    nv = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: f"card{i}",
        nvmlDeviceGetMemoryInfo=lambda h: handles[h][1],
        nvmlDeviceGetUUID=lambda h: handles[h][0], nvmlDeviceGetName=lambda h: f"name {h}",
        nvmlDeviceGetUtilizationRates=missing, nvmlDeviceGetPowerUsage=missing,
        nvmlDeviceGetTemperature=lambda h, kind: 40,
        nvmlDeviceGetMigMode=lambda h: (1, 1) if h == "card1" else (0, 0),
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 3,
        nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
        nvmlSystemGetDriverVersion=lambda: b"570.1")
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    src = NvmlGpuSource()
    units = src.snapshot()
    assert [(u.label, u.uuid, u.memory_total) for u in units] == [
        ("0", "GPU-plain", 48), ("1.0", "MIG-a", 10), ("1.2", "MIG-b", 20)]
    assert units[1].parent_uuid == "GPU-migcard" and units[1].temperature == 40
    assert src.driver_version() == "570.1"
