"""GPU snapshots: what every card is doing right now, as immutable values.

Sources:
  NvmlGpuSource   the real cards through NVML (nvidia-ml-py, imported as `pynvml`).
                  Imported and initialised lazily on the first snapshot; any NVML failure
                  (no driver, no library, a card that vanished) gives [] or skips the
                  failing field. It never raises: no NVML means CPU placement.
  FakeGpuSource   a described set of cards, for tests and demos. `NANOTUI_FAKE_GPUS=FILE`
                  makes `default_gpu_source()` return one read from FILE.json:

      {"gpus": [
        {"index": 0, "uuid": "GPU-fake-0", "name": "NVIDIA RTX 6000 Ada Generation",
         "memory_total": 51539607552, "memory_used": 1073741824,
         "utilization": 5, "temperature": 40, "power_w": 60.0,
         "processes": [{"pid": 1234, "used_memory": 1073741824}]},
        ...]}

  (a top-level list is accepted too; memory in bytes; "memory_total_gb"/"memory_used_gb"
  may be used instead for readability). The file is re-read at every snapshot, so a
  test or a demo can change the cards' load while the app runs.

Units: memory in bytes, utilization in %, temperature in °C, power in W. Placement
policy lives in engine.launch.placement.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

FAKE_ENV = "NANOTUI_FAKE_GPUS"
GIB = 1024 ** 3


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int | None = None  # bytes; None when the driver does not say


@dataclass(frozen=True)
class GpuSnapshot:
    index: int
    uuid: str
    name: str
    memory_used: int
    memory_total: int
    utilization: int | None = None      # % of time a kernel ran over the last sample period
    temperature: int | None = None      # °C
    power_w: float | None = None        # W
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)

    @property
    def memory_free(self) -> int:
        return max(0, self.memory_total - self.memory_used)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "uuid": self.uuid, "name": self.name,
                "memory_used": self.memory_used, "memory_total": self.memory_total,
                "memory_free": self.memory_free, "utilization": self.utilization,
                "temperature": self.temperature, "power_w": self.power_w,
                "processes": [{"pid": p.pid, "used_memory": p.used_memory}
                              for p in self.processes]}


class GpuSource(Protocol):
    def snapshot(self) -> list[GpuSnapshot]:
        """The cards now, in index order; [] when there are none. Never raises."""
        ...


# ---- fake cards -------------------------------------------------------------------------

def _bytes(d: dict[str, Any], key: str) -> int:
    if key in d:
        return int(d[key])
    if f"{key}_gb" in d:
        return int(float(d[f"{key}_gb"]) * GIB)
    return 0


def gpus_from_json(obj: Any) -> list[GpuSnapshot]:
    """Cards from the fake-GPU JSON document (see the module docstring)."""
    items = obj.get("gpus", []) if isinstance(obj, dict) else obj
    out = []
    for i, d in enumerate(items or []):
        procs = tuple(GpuProcess(int(p["pid"]), p.get("used_memory"))
                      for p in d.get("processes", []))
        out.append(GpuSnapshot(
            index=int(d.get("index", i)), uuid=str(d.get("uuid", f"GPU-fake-{i}")),
            name=str(d.get("name", "Fake GPU")),
            memory_used=_bytes(d, "memory_used"), memory_total=_bytes(d, "memory_total"),
            utilization=d.get("utilization"), temperature=d.get("temperature"),
            power_w=d.get("power_w"), processes=procs))
    return sorted(out, key=lambda g: g.index)


class FakeGpuSource:
    """Fixed cards (`FakeGpuSource([GpuSnapshot(...)])`) or cards read from a JSON file at
    every snapshot (`FakeGpuSource.from_file(path)`). A bad or missing file gives []."""

    def __init__(self, gpus: list[GpuSnapshot] | None = None, path: str | Path | None = None):
        self._gpus = list(gpus or [])
        self.path = Path(path) if path else None

    @classmethod
    def from_file(cls, path: str | Path) -> "FakeGpuSource":
        return cls(path=path)

    def set(self, gpus: list[GpuSnapshot]) -> None:
        """Replace the cards (tests simulate load changes with this)."""
        self._gpus = list(gpus)

    def snapshot(self) -> list[GpuSnapshot]:
        if self.path is None:
            return list(self._gpus)
        try:
            return gpus_from_json(json.loads(self.path.read_text()))
        except Exception:
            return []


# ---- NVML ---------------------------------------------------------------------------------

class NvmlGpuSource:
    """Real cards through NVML. Initialised on first use; never raises."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._ok: bool | None = None  # None: not tried yet
        self._lock = threading.Lock()

    def _init(self) -> bool:
        with self._lock:
            if self._ok is None:
                try:
                    import pynvml
                    pynvml.nvmlInit()
                    self._nvml = pynvml
                    self._ok = True
                except Exception:
                    self._ok = False
            return self._ok

    def available(self) -> bool:
        return self._init()

    def snapshot(self) -> list[GpuSnapshot]:
        if not self._init():
            return []
        nv = self._nvml
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception:
            return []
        out = []
        for i in range(count):
            try:
                out.append(self._card(nv, i))
            except Exception:
                continue  # a card that fails entirely is left out, the rest still show
        return out

    @staticmethod
    def _card(nv: Any, i: int) -> GpuSnapshot:
        h = nv.nvmlDeviceGetHandleByIndex(i)

        def get(fn, *args, default=None):
            try:
                return fn(h, *args)
            except Exception:
                return default

        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        mem = nv.nvmlDeviceGetMemoryInfo(h)
        util = get(nv.nvmlDeviceGetUtilizationRates)
        power = get(nv.nvmlDeviceGetPowerUsage)
        procs: dict[int, GpuProcess] = {}
        for fn_name in ("nvmlDeviceGetComputeRunningProcesses",
                        "nvmlDeviceGetGraphicsRunningProcesses"):
            fn = getattr(nv, fn_name, None)
            for p in (get(fn, default=[]) if fn else []) or []:
                used = getattr(p, "usedGpuMemory", None)
                if not isinstance(used, int) or used < 0 or used >= 2 ** 63:
                    used = None  # NVML_VALUE_NOT_AVAILABLE or no permission
                procs.setdefault(int(p.pid), GpuProcess(int(p.pid), used))
        return GpuSnapshot(
            index=i, uuid=text(get(nv.nvmlDeviceGetUUID, default=f"GPU-{i}")),
            name=text(get(nv.nvmlDeviceGetName, default="GPU")),
            memory_used=int(mem.used), memory_total=int(mem.total),
            utilization=int(util.gpu) if util is not None else None,
            temperature=get(nv.nvmlDeviceGetTemperature, 0),  # 0 = NVML_TEMPERATURE_GPU
            power_w=power / 1000.0 if power is not None else None,
            processes=tuple(procs.values()))


def default_gpu_source() -> GpuSource:
    """Fake cards from $NANOTUI_FAKE_GPUS when set, else NVML."""
    fake = os.environ.get(FAKE_ENV)
    if fake:
        return FakeGpuSource.from_file(fake)
    return NvmlGpuSource()

