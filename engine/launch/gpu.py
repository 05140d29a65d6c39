"""GPU snapshots: what every card is doing right now, as immutable values.

Sources:
  NvmlGpuSource   the real cards through NVML (engine.launch.nvml, nvidia-ml-py imported
                  as `pynvml`). Imported and initialised lazily on the first snapshot; any
                  NVML failure (no driver, no library, a card that vanished) gives [] or
                  skips the failing field. It never raises: no NVML means CPU placement.
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
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from engine.files import user_cache_dir
from engine.launch.gpu_units import (  # noqa: F401  (callers import the types from here too)
    GIB,
    GpuProcess,
    SIMULATED_TORCH,
    GpuSnapshot,
    compute_mode,
    mode_problem,
)
from engine.launch.nvml import NvmlGpuSource
from engine.launch.visible import (
    ORDER_CACHE_NAME,
    Share,
    cached_cuda_order,
    mark,
    probe_cuda_order,
    resolve_share,
)
from engine.model.cuda_compat import parse_capability, unit_problem

FAKE_ENV = "NANOTUI_FAKE_GPUS"


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
