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
  may be used instead for readability). A card in MIG mode lists its instances instead
  of its own memory: "mig": [{"uuid": "MIG-...", "name": "... MIG 1g.10gb",
  "memory_total_gb": 10, "memory_used_gb": 0, "processes": [...]}, ...]; each instance
  is a unit of its own; "mig_mode": true with no "mig" list is a MIG card without
  instances (never placed on). "capability": "8.9" and "compute_mode":
  "exclusive_process" (or "prohibited", "default") are optional. The file is re-read at
  every snapshot, so a test or a demo can change the cards' load while the app runs.
  Fake cards are a SIMULATION: a run placed on one trains on the CPU (and says so in
  its status); nothing is checked against torch's CUDA build.

A snapshot lists placeable UNITS: whole cards, and the MIG instances of cards in MIG mode
(the card itself is then not placeable). A unit torch cannot use (a CPU-only or too new
CUDA build for the driver, a capability missing from torch's arch list, a MIG card
without instances) carries `problem`, the one-line cause, and is never placed on. `ours` marks whether the unit is inside this
user's share (engine.launch.visible: CUDA_VISIBLE_DEVICES, Slurm's allocation).

Units: memory in bytes, utilization in %, temperature in °C, power in W. Placement
policy lives in engine.launch.placement.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from engine.files import user_cache_dir
from engine.launch.visible import (
    ORDER_CACHE_NAME,
    Share,
    cached_cuda_order,
    mark,
    probe_cuda_order,
    resolve_share,
)
from engine.model.cuda_compat import (TorchCuda, parse_capability, parse_version,
                                      torch_cuda_facts, unit_problem)

FAKE_ENV = "NANOTUI_FAKE_GPUS"
GIB = 1024 ** 3
NVML_RETRY_S = 30.0   # a failed nvmlInit (driver reloading, container starting) is retried
# fake cards are a simulation: only MIG without instances is a problem there
SIMULATED_TORCH = TorchCuda("simulated", "simulated")


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
    # A MIG instance is a placeable unit of its own: `index` is its card's, `mig` its
    # number on that card, `uuid` its MIG-... uuid, memory its own slice.
    mig: int | None = None
    parent_uuid: str | None = None
    # False: outside this user's share (CUDA_VISIBLE_DEVICES, Slurm's allocation);
    # shown, never placed on. Set by engine.launch.visible.
    ours: bool = True
    capability: tuple[int, int] | None = None   # CUDA compute capability (9, 0)
    driver_cuda: tuple[int, int] | None = None  # the newest CUDA the driver supports
    # Why torch cannot train here (engine.model.cuda_compat.unit_problem); never placed on.
    problem: str | None = None
    # A fake card (NANOTUI_FAKE_GPUS): a run placed on it trains on the CPU, and says so.
    simulated: bool = False
    # NVML compute mode (COMPUTE_MODES): "exclusive_process" lets one process hold a
    # context at a time, "prohibited" none; None: not said (a driver that does not answer)
    compute_mode: str | None = None
    # N of torch's cuda:N in this shell (engine.launch.visible.cuda_indices); None: no
    # such number (outside CUDA_VISIBLE_DEVICES, a MIG instance, CUDA's order unknown)
    cuda_index: int | None = None

    @property
    def memory_free(self) -> int:
        return max(0, self.memory_total - self.memory_used)

    @property
    def label(self) -> str:
        """How a user names the unit: "1", or "0.2" for MIG instance 2 of card 0."""
        return str(self.index) if self.mig is None else f"{self.index}.{self.mig}"

    @property
    def exclusive(self) -> bool:
        """One process at a time: a second run there would fail to create its context."""
        return self.compute_mode in ("exclusive_process", "exclusive_thread")

    @property
    def names(self) -> str:
        """"GPU 2 (cuda:0)": both numbers a user may know the unit by."""
        cuda = "" if self.cuda_index is None else f" (cuda:{self.cuda_index})"
        return f"GPU {self.label}{cuda}"

    @property
    def card_uuid(self) -> str:
        """The physical card's uuid (the unit's own for a whole card)."""
        return self.parent_uuid or self.uuid

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "uuid": self.uuid,
                "name": self.name, "mig": self.mig, "parent_uuid": self.parent_uuid,
                "ours": self.ours, "simulated": self.simulated, "problem": self.problem,
                "cuda_index": self.cuda_index, "compute_mode": self.compute_mode,
                "capability": (f"{self.capability[0]}.{self.capability[1]}"
                               if self.capability else None),
                "memory_used": self.memory_used, "memory_total": self.memory_total,
                "memory_free": self.memory_free, "utilization": self.utilization,
                "temperature": self.temperature, "power_w": self.power_w,
                "processes": [{"pid": p.pid, "used_memory": p.used_memory}
                              for p in self.processes]}


# nvmlComputeMode_t: NVML_COMPUTEMODE_DEFAULT, _EXCLUSIVE_THREAD (deprecated), _PROHIBITED,
# _EXCLUSIVE_PROCESS
COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}


def compute_mode(value: Any) -> str | None:
    """NVML's number or a fake card's name ("exclusive_process", "EXCLUSIVE_PROCESS",
    "exclusive-process") -> one of COMPUTE_MODES' names; None when unknown."""
    if isinstance(value, int) and not isinstance(value, bool):
        return COMPUTE_MODES.get(value)
    name = str(value or "").strip().lower().replace("-", "_")
    return name if name in COMPUTE_MODES.values() else None


def mode_problem(label: str, name: str, mode: str | None) -> str | None:
    """Why a unit in a compute mode that admits no process is never placed on."""
    if mode != "prohibited":
        return None
    return (f"GPU {label} ({name}) is in compute mode PROHIBITED: no process may use it "
            f"(an admin's `nvidia-smi -i {label.split('.')[0]} -c DEFAULT` opens it)")


def nested_pid_namespace(status_text: str | None = None) -> bool:
    """Whether this process lives in a PID namespace below the host's (a container):
    /proc/self/status's NSpid lists one pid per namespace level. NVML then reports host
    pids, which never match ours; placement recognises our runs' memory from what they
    report instead (engine.launch.placement.reported_gpu_bytes)."""
    if status_text is None:
        try:
            with open("/proc/self/status") as f:
                status_text = f.read()
        except OSError:
            return False
    for line in status_text.splitlines():
        if line.startswith("NSpid:"):
            return len(line.split()[1:]) > 1
    return False


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


def _procs(d: dict[str, Any]) -> tuple[GpuProcess, ...]:
    return tuple(GpuProcess(int(p["pid"]), p.get("used_memory"))
                 for p in d.get("processes", []))


def gpus_from_json(obj: Any) -> list[GpuSnapshot]:
    """Units from the fake-GPU JSON document (see the module docstring): a card, or its
    MIG instances when it has a "mig" list."""
    items = obj.get("gpus", []) if isinstance(obj, dict) else obj
    out = []
    for i, d in enumerate(items or []):
        index, uuid = int(d.get("index", i)), str(d.get("uuid", f"GPU-fake-{i}"))
        name = str(d.get("name", "Fake GPU"))
        common = dict(index=index, temperature=d.get("temperature"), power_w=d.get("power_w"),
                      simulated=True, capability=parse_capability(d.get("capability")),
                      compute_mode=compute_mode(d.get("compute_mode", "default")))
        if d.get("mig_mode") and not d.get("mig"):
            out.append(GpuSnapshot(
                **common, uuid=uuid, name=name, memory_used=_bytes(d, "memory_used"),
                memory_total=_bytes(d, "memory_total"),
                problem=unit_problem(f"GPU {index} ({name})", None, None, SIMULATED_TORCH,
                                     mig_without_instances=True)))
            continue
        if d.get("mig"):
            for j, m in enumerate(d["mig"]):
                out.append(GpuSnapshot(
                    **common, uuid=str(m.get("uuid", f"MIG-fake-{i}-{j}")),
                    name=str(m.get("name", f"{name} MIG")), mig=int(m.get("mig", j)),
                    parent_uuid=uuid, memory_used=_bytes(m, "memory_used"),
                    memory_total=_bytes(m, "memory_total"),
                    utilization=m.get("utilization"), processes=_procs(m)))
            continue
        out.append(GpuSnapshot(
            **common, uuid=uuid, name=name,
            memory_used=_bytes(d, "memory_used"), memory_total=_bytes(d, "memory_total"),
            utilization=d.get("utilization"), processes=_procs(d)))
    out = [replace(g, problem=g.problem or mode_problem(g.label, g.name, g.compute_mode))
           for g in out]
    return sorted(out, key=lambda g: (g.index, -1 if g.mig is None else g.mig))


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
            return [g if g.simulated else replace(g, simulated=True) for g in self._gpus]
        try:
            return gpus_from_json(json.loads(self.path.read_text()))
        except Exception:
            return []


# ---- NVML ---------------------------------------------------------------------------------

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


class VisibleGpuSource:
    """A source whose units are marked with this process's share (engine.launch.visible);
    `share` is the one the last snapshot was marked with."""

    def __init__(self, inner: GpuSource, probe_cuda: bool = False,
                 env: Mapping[str, str] | None = None, order_cache: Path | None = None):
        self.inner = inner
        self.probe_cuda = probe_cuda   # real cards: CUDA's order can be asked from torch
        self.order_cache = order_cache  # where the answer is kept per boot (real cards)
        self.env = env
        self.share = Share("all")
        self._order: list[str] | None = None
        self._probed = False

    def _cuda_order(self, units: list[GpuSnapshot]) -> list[str] | None:
        if not self._probed:
            env = self._environ()
            self._order = (cached_cuda_order(env, units, probe_cuda_order, self.order_cache)
                           if self.order_cache else probe_cuda_order(env))
            self._probed = True
        return self._order

    def _environ(self) -> Mapping[str, str]:
        return os.environ if self.env is None else self.env

    def snapshot(self) -> list[GpuSnapshot]:
        units = self.inner.snapshot()
        self.share = resolve_share(self._environ(), units,
                                   (lambda: self._cuda_order(units)) if self.probe_cuda else None)
        return mark(units, self.share)


def default_gpu_source() -> VisibleGpuSource:
    """Fake cards from $NANOTUI_FAKE_GPUS when set, else NVML; either way marked with
    this process's share of them."""
    fake = os.environ.get(FAKE_ENV)
    if fake:
        return VisibleGpuSource(FakeGpuSource.from_file(fake))
    return VisibleGpuSource(NvmlGpuSource(), probe_cuda=True,
                            order_cache=user_cache_dir() / ORDER_CACHE_NAME)
