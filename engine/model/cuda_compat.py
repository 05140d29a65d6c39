"""Can this torch use that card? The driver's CUDA version, the card's compute
capability and MIG mode against what the installed torch wheel was built for.

NVML lists every card the driver knows; torch can only use those its build has kernels
for and whose driver is new enough for its CUDA runtime. A unit it cannot use must never
be placed on (the run would silently train on the CPU, or die with "no kernel image"),
so the dispatcher (engine.launch.gpu / placement), the trainer (engine.train.process)
and `nanotui doctor` all ask `unit_problem` here and say the same one-line cause, with
the wheel that would work (`wheel_advice`; docs/gpu.md has the table).

Compatibility rules (CUDA's):
  - driver: a driver supporting CUDA X.y runs any toolkit X.z (minor-version
    compatibility, CUDA >= 11), never X+1; torch's CUDA major must be <= the driver's.
  - capability M.m: runs SASS built for sm_M{k} with k <= m (same major), or PTX built
    for compute_XY with XY <= Mm (JIT-compiled at first use). sm_90a/sm_100a-style
    arch-specific builds run only on exactly that capability.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CUDA_CONTEXT_BYTES = 600 * 1024 ** 2   # the CUDA context + allocator slack of any process

# What `make install TORCH_INDEX=...` installs; docs/gpu.md explains each row.
PYPI_DEFAULT = "the default PyPI wheel (CUDA 13.0: driver >= 580, sm_75 and newer)"
INDEX_URL = "https://download.pytorch.org/whl/{tag}"
# torch 2.12-2.14 publish CUDA 12.6 and 13.0 builds only (pytorch's RELEASE.md matrix);
# the last CUDA 12.8 build, the only CUDA-12 one with Blackwell kernels, is torch 2.11.
CU126 = "cu126"   # CUDA 12.6: any R525+ driver; sm_50 to sm_90 (Volta included, no Blackwell)
CU128 = "cu128"   # CUDA 12.8: R570+ driver; Blackwell; torch <= 2.11 only


@dataclass(frozen=True)
class TorchCuda:
    """What the installed torch was built for."""

    torch_version: str
    cuda: str | None               # torch.version.cuda; None: a CPU-only build
    archs: tuple[str, ...] = ()    # "sm_80", "compute_90", ... as torch was compiled


def torch_cuda_facts() -> TorchCuda:
    """The installed torch's build, read without initialising CUDA (which fails exactly
    on the machines this is asked on: torch.cuda.get_arch_list() says [] there)."""
    import torch
    flags = ""
    get = getattr(torch._C, "_cuda_getArchFlags", None)
    if get is not None:
        try:
            flags = get() or ""
        except Exception:
            flags = ""
    archs = tuple(flags.split()) if flags else tuple(torch.cuda.get_arch_list())
    return TorchCuda(torch.__version__, torch.version.cuda, archs)


def parse_version(v: str | int | None) -> tuple[int, int] | None:
    """"12.4" / 12040 (NVML's integer) / "13.0" -> (12, 4); None when unknown."""
    if v is None or v == "":
        return None
    if isinstance(v, int):
        return (v // 1000, (v % 1000) // 10)
    m = re.match(r"^(\d+)\.(\d+)", str(v).strip())
    return (int(m[1]), int(m[2])) if m else None


def parse_capability(c: str | tuple | None) -> tuple[int, int] | None:
    if c is None or c == "":
        return None
    if isinstance(c, (tuple, list)):
        return (int(c[0]), int(c[1]))
    return parse_version(str(c))


def arch_supported(capability: tuple[int, int], archs: tuple[str, ...]) -> bool:
    major, minor = capability
    cc = major * 10 + minor
    for a in archs:
        m = re.match(r"^(sm|compute)_(\d+)(\d)([a-z]?)$", a)
        if not m:
            continue
        a_major, a_minor, specific = int(m[2]), int(m[3]), m[4]
        if specific:
            if (a_major, a_minor) == (major, minor):
                return True
        elif m[1] == "sm":
            if a_major == major and a_minor <= minor:
                return True
        elif a_major * 10 + a_minor <= cc:  # PTX: JIT for any newer card
            return True
    return False


def _fmt(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def wheel_advice(driver_cuda: tuple[int, int] | None,
                 capability: tuple[int, int] | None) -> str:
    """Which torch wheel works with this driver and card, as the command that installs it."""
    def index(tag: str) -> str:
        return f"the {tag} wheel (make install TORCH_INDEX={INDEX_URL.format(tag=tag)})"
    if driver_cuda is not None and driver_cuda < (12, 0):
        return ("a driver of R525 or newer (this one supports CUDA only up to "
                f"{_fmt(driver_cuda)}; current torch wheels need CUDA 12 or 13)")
    if capability is not None and capability < (7, 5):
        return index(CU126) + " (the newest CUDA build with Volta/Pascal kernels)"
    if driver_cuda is None or driver_cuda >= (13, 0):
        return PYPI_DEFAULT
    if capability is not None and capability >= (10, 0):
        return ("a driver of R580 or newer for the default PyPI wheel (Blackwell needs "
                "CUDA >= 12.8 and torch 2.12+ has no CUDA 12.8 build), or torch 2.11 "
                f"from {INDEX_URL.format(tag=CU128)} "
                f"(make install TORCH=torch==2.11.0 TORCH_INDEX={INDEX_URL.format(tag=CU128)})")
    return index(CU126)


def unit_problem(name: str, capability: tuple[int, int] | None,
                 driver_cuda: tuple[int, int] | None, facts: TorchCuda,
                 mig_without_instances: bool = False) -> str | None:
    """Why torch cannot train on this unit (one line naming the cause and the fix), or
    None when it can as far as the build, the driver and the card tell."""
    if mig_without_instances:
        return (f"{name} is in MIG mode with no MIG instance: CUDA sees nothing there "
                f"(create instances with `nvidia-smi mig -cgi ... -C`, or turn MIG off "
                f"with `nvidia-smi -mig 0`)")
    advice = wheel_advice(driver_cuda, capability)
    if facts.cuda is None:
        return (f"torch {facts.torch_version} is a CPU-only build and cannot use {name}: "
                f"install {advice}")
    built = parse_version(facts.cuda)
    if built is not None and driver_cuda is not None and built[0] > driver_cuda[0]:
        return (f"torch {facts.torch_version} is built for CUDA {facts.cuda}, the driver "
                f"supports CUDA {_fmt(driver_cuda)}: install {advice}, or a newer driver")
    if capability is not None and facts.archs and not arch_supported(capability, facts.archs):
        return (f"{name} has compute capability {_fmt(capability)}, which is not in "
                f"torch {facts.torch_version}'s arch list ({' '.join(facts.archs)}): "
                f"install {advice}")
    return None
