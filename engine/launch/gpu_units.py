"""A GPU unit as a value: a whole card or a MIG instance, with its memory, load,
processes, capability, compute mode and whether it is ours (GpuSnapshot). The sources
that make them live in engine.launch.gpu (fake cards, the share) and engine.launch.nvml
(real cards)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.model.cuda_compat import TorchCuda

GIB = 1024 ** 3
# fake cards are a simulation (only MIG without instances is a problem there), and a MIG
# card without instances is unusable whatever torch was built for
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
