"""Real cards through NVML (nvidia-ml-py, imported as pynvml): each card, or each MIG
instance of a card in MIG mode, as a GpuSnapshot (engine.launch.gpu) with its capability,
compute mode, the driver's CUDA version and, where torch cannot use it, the cause
(engine.model.cuda_compat). Never raises: no driver, no library or a failing call reads
as no cards, and a failed nvmlInit is tried again after NVML_RETRY_S."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

from engine.launch.gpu_units import (SIMULATED_TORCH, GpuProcess, GpuSnapshot, compute_mode,
                                     mode_problem)
from engine.model.cuda_compat import (TorchCuda, parse_capability, parse_version,
                                      torch_cuda_facts, unit_problem)

NVML_RETRY_S = 30.0   # a failed nvmlInit (driver reloading, container starting) is retried


class NvmlGpuSource:
    """Real cards through NVML. Initialised on first use; never raises."""

    def __init__(self, torch_facts: TorchCuda | None = None) -> None:
        self._nvml: Any = None
        self._ok: bool | None = None  # None: not tried yet
        self._failed_at = 0.0
        self._lock = threading.Lock()
        self._facts = torch_facts     # None: read from the installed torch when needed

    def _init(self) -> bool:
        with self._lock:
            if self._ok is False and time.monotonic() - self._failed_at > NVML_RETRY_S:
                self._ok = None
            if self._ok is None:
                try:
                    import pynvml
                    pynvml.nvmlInit()
                    self._nvml = pynvml
                    self._ok = True
                except Exception:
                    self._ok, self._failed_at = False, time.monotonic()
            return self._ok

    def driver_cuda(self) -> tuple[int, int] | None:
        """The newest CUDA version the driver supports (NVML: 12040 -> (12, 4))."""
        if not self._init():
            return None
        return parse_version(_nvml_get(getattr(self._nvml, "nvmlSystemGetCudaDriverVersion",
                                               None)))

    def torch_facts(self) -> TorchCuda:
        if self._facts is None:
            self._facts = torch_cuda_facts()
        return self._facts

    def available(self) -> bool:
        return self._init()

    def driver_version(self) -> str | None:
        if not self._init():
            return None
        v = _nvml_get(self._nvml.nvmlSystemGetDriverVersion)
        return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))

    def snapshot(self) -> list[GpuSnapshot]:
        if not self._init():
            return []
        nv = self._nvml
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception:
            return []
        out: list[GpuSnapshot] = []
        for i in range(count):
            try:
                out.extend(self._units(nv, i))
            except Exception:
                continue  # a card that fails entirely is left out, the rest still show
        if not out:
            return out
        driver, facts = self.driver_cuda(), self.torch_facts()
        return [replace(u, driver_cuda=driver, problem=u.problem or mode_problem(
            u.label, u.name, u.compute_mode) or unit_problem(
            f"GPU {u.label} ({u.name})", u.capability, driver, facts)) for u in out]

    @staticmethod
    def _units(nv: Any, i: int) -> list[GpuSnapshot]:
        """Card i, or its MIG instances when MIG mode is on."""
        h = nv.nvmlDeviceGetHandleByIndex(i)
        card = _nvml_unit(nv, h, index=i, default_uuid=f"GPU-{i}")
        card = replace(card, capability=parse_capability(
            _nvml_get(getattr(nv, "nvmlDeviceGetCudaComputeCapability", None), h)),
            compute_mode=compute_mode(_nvml_get(getattr(nv, "nvmlDeviceGetComputeMode", None), h)))
        mode = _nvml_get(nv.nvmlDeviceGetMigMode, h) if hasattr(nv, "nvmlDeviceGetMigMode") else None
        if not mode or not mode[0]:  # (current, pending); 1 = enabled
            return [card]
        migs = []
        for j in range(_nvml_get(nv.nvmlDeviceGetMaxMigDeviceCount, h, default=0) or 0):
            mh = _nvml_get(nv.nvmlDeviceGetMigDeviceHandleByIndex, h, j)
            if mh is None:
                continue  # an empty slot
            try:
                unit = _nvml_unit(nv, mh, index=i, default_uuid=f"MIG-{i}-{j}")
            except Exception:
                continue
            migs.append(replace(unit, mig=j, parent_uuid=card.uuid, capability=card.capability,
                                temperature=card.temperature, power_w=card.power_w,
                                compute_mode=card.compute_mode))
        if not migs:  # CUDA sees nothing on a MIG card without instances
            return [replace(card, problem=unit_problem(
                f"GPU {i} ({card.name})", None, None, SIMULATED_TORCH, True))]
        return migs


def _nvml_get(fn: Any, *args: Any, default: Any = None) -> Any:
    try:
        return fn(*args)
    except Exception:
        return default


def _nvml_unit(nv: Any, h: Any, index: int, default_uuid: str) -> GpuSnapshot:
    """One card or MIG instance through its handle; fields NVML refuses are None."""
    def text(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    mem = nv.nvmlDeviceGetMemoryInfo(h)
    util = _nvml_get(nv.nvmlDeviceGetUtilizationRates, h)  # not supported on MIG
    power = _nvml_get(nv.nvmlDeviceGetPowerUsage, h)
    procs: dict[int, GpuProcess] = {}
    for fn_name in ("nvmlDeviceGetComputeRunningProcesses",
                    "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(nv, fn_name, None)
        for p in (_nvml_get(fn, h, default=[]) if fn else []) or []:
            used = getattr(p, "usedGpuMemory", None)
            if not isinstance(used, int) or used < 0 or used >= 2 ** 63:
                used = None  # NVML_VALUE_NOT_AVAILABLE or no permission
            procs.setdefault(int(p.pid), GpuProcess(int(p.pid), used))
    return GpuSnapshot(
        index=index, uuid=text(_nvml_get(nv.nvmlDeviceGetUUID, h, default=default_uuid)),
        name=text(_nvml_get(nv.nvmlDeviceGetName, h, default="GPU")),
        memory_used=int(mem.used), memory_total=int(mem.total),
        utilization=int(util.gpu) if util is not None else None,
        temperature=_nvml_get(nv.nvmlDeviceGetTemperature, h, 0),  # 0 = NVML_TEMPERATURE_GPU
        power_w=power / 1000.0 if power is not None else None,
        processes=tuple(procs.values()))
