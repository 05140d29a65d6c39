"""Device and precision choice, autocast, and the peak-FLOPs table behind MFU.

`auto` device: CUDA (whatever CUDA_VISIBLE_DEVICES exposes; the launcher pins one card
that way), then Apple MPS, then CPU. `auto` precision: bf16 autocast where the hardware
does bf16 matmuls natively (CUDA Ampere+, CPUs with AVX512-BF16 or AMX: a bf16 matmul
measured 2.7x an fp32 one on a 2-core AVX512-BF16 EPYC without AMX; ~10x is reported
with AMX), fp16 + GradScaler on older CUDA cards, fp32 otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import re
from contextlib import contextmanager, nullcontext

import torch

# torch.OutOfMemoryError is torch >= 2.5; torch.cuda's has been there since 1.13
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
from engine.model.cuda_compat import CUDA_CONTEXT_BYTES  # noqa: E402,F401  (one home)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" | "cpu" | "cuda" | "cuda:N" | "mps" -> a torch.device that exists here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", 0)
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {name!r}: MPS is not available on this machine")
    return dev


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's ISA flags as /proc/cpuinfo lists them ("flags" on x86, "Features" on Arm)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# A process started with NANOTUI_EMULATE_CPU=avx2 behaves as on an AVX2 CPU without AVX-512
# (most laptops and desktops), =avx512 as on AVX-512 without bf16: no native bf16, the C++
# kernel built for x86-64-v3 / v4. The ISA limits of torch, MKL and oneDNN must be set before
# torch loads: EMULATIONS holds them (benchmarks/train_speed.py --emulate sets them and
# re-executes itself). A class above the real CPU's cannot be emulated.
EMULATE_ENV = "NANOTUI_EMULATE_CPU"
EMULATIONS: dict[str, dict] = {
    # class: the CPU flag it needs, the environment, what torch.backends.cpu reports then
    "avx2": {"needs": "avx2", "capability": "AVX2",
             "env": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                     "ONEDNN_MAX_CPU_ISA": "AVX2"}},
    "avx512": {"needs": "avx512f", "capability": "AVX512",
               "env": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
                       "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}},
}


def emulation_env(cls: str) -> dict[str, str]:
    """The environment of a process emulating CPU class `cls`; ValueError when this CPU
    lacks what the class needs (AVX-512 cannot be emulated on an AVX2 machine)."""
    if cls not in EMULATIONS:
        raise ValueError(f"unknown CPU class {cls!r}: expected {' or '.join(EMULATIONS)}")
    e = EMULATIONS[cls]
    if e["needs"] not in cpu_flags():
        have = "AVX2" if "avx2" in cpu_flags() else "this"
        raise ValueError(f"{cls.upper().replace('AVX', 'AVX-')} cannot be emulated on an "
                         f"{have} machine (no {e['needs']} in /proc/cpuinfo)")
    return {**e["env"], EMULATE_ENV: cls}


def emulated_cpu_class() -> str | None:
    """The CPU class this process emulates ("avx2", "avx512"), or None on the real CPU."""
    value = os.environ.get(EMULATE_ENV, "").strip().lower()
    return value if value in EMULATIONS else None


def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX); emulated bf16 would be slower."""
    if emulated_cpu_class() is not None:
        return False
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_class() -> str:
    """The class of CPU the code runs as, for logs and benchmark tables: "avx2 (emulated)",
    or from the real flags: "amx", "avx512-bf16", "avx512", "avx2", else the machine."""
    emulated = emulated_cpu_class()
    if emulated:
        return f"{emulated} (emulated)"
    flags = cpu_flags()
    for name, flag in (("amx", "amx_bf16"), ("avx512-bf16", "avx512_bf16"),
                       ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return name
    return platform.machine() or "cpu"


def cpu_signature() -> str:
    """What makes CPU timings comparable: the model name, its ISA flags and the emulated
    class (a cache key part for measured choices)."""
    flags = sorted(cpu_flags())
    return f"{cpu_model_name()} | {cpu_class()} | {' '.join(flags)}"


def has_native_bf16(device: torch.device) -> bool:
    """bf16 tensor cores: CUDA capability 8.0 (Ampere) and newer."""
    return tuple(torch.cuda.get_device_capability(device)) >= (8, 0)


PLACED_ENV = "NANOTUI_GPU"                   # the uuid of the real unit a run was placed on
SIMULATED_ENV = "NANOTUI_GPU_SIMULATED"      # a fake card's uuid (a simulation)
LABEL_ENV = "NANOTUI_GPU_LABEL"              # "GPU 1 (NVIDIA H100 80GB HBM3)"


def placed_gpu(env=os.environ) -> str | None:
    """The label of the real GPU unit the dispatcher placed this process on, or None."""
    if not env.get(PLACED_ENV):
        return None
    return env.get(LABEL_ENV) or f"GPU {env[PLACED_ENV]}"


def simulated_gpu(env=os.environ) -> str | None:
    """The label of the fake card this process was placed on (it trains on the CPU)."""
    if not env.get(SIMULATED_ENV):
        return None
    return env.get(LABEL_ENV) or f"GPU {env[SIMULATED_ENV]}"


def resolve_placed_device(name: str, env=os.environ) -> torch.device:
    """resolve_device for a training process: placed on a real GPU, it trains there or
    raises ValueError with the cause; it never falls back to the CPU (a shared GPU server
    would find a run on every core while its status names a card)."""
    label = placed_gpu(env)
    if label is None:
        return resolve_device(name)
    if name == "cpu":
        raise ValueError(f"device = 'cpu' but the run was placed on {label}")
    if not torch.cuda.is_available():
        from engine.model.cuda_compat import (parse_capability, parse_version,
                                              torch_cuda_facts, unit_problem)
        why = unit_problem(label, parse_capability(env.get("NANOTUI_GPU_CAPABILITY")),
                           parse_version(env.get("NANOTUI_DRIVER_CUDA")), torch_cuda_facts())
        raise ValueError(why or f"placed on {label} but torch sees no CUDA device "
                                "(torch.cuda.is_available() is False); not training on the CPU")
    dev = torch.device("cuda", 0)  # the placed unit is the only one visible
    from engine.model.cuda_compat import TorchCuda, unit_problem
    facts = TorchCuda(torch.__version__, torch.version.cuda or "?",
                      tuple(torch.cuda.get_arch_list()))
    why = unit_problem(label, tuple(torch.cuda.get_device_capability(dev)), None, facts)
    if why:  # "no kernel image" at the first kernel otherwise
        raise ValueError(why)
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" | "float32" | "bfloat16" | "float16" -> the autocast dtype (fp32: no autocast)."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        # not torch.cuda.is_bf16_supported(): it also says yes for emulated bf16 (T4,
        # V100), which runs without tensor cores and is slower than float16 + GradScaler
        if has_native_bf16(device):
            return torch.bfloat16
        return torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory mapped instead of returning it to the kernel.

    A CPU training step allocates and frees the same few hundred MB of activations every
    iteration. By default glibc serves blocks above its mmap threshold (128 KB, adapting
    up to 32 MB) with fresh mmap()s and trims the heap top, so every step page-faults its
    activations in again (zeroed by the kernel): ~19,000 page faults per step for
    6x8x128, batch 12, block 256. Raising both thresholds keeps the memory in the heap for
    reuse: peak RSS is unchanged (memory is held up to the step's peak, which every step
    reaches anyway) and the step measured 15-30% faster (see docs/performance.md). Called
    once by CPU training processes and `nanotui bench`; a no-op off glibc. Returns
    whether the settings were applied."""
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and other C libraries have no mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


@contextmanager
def no_tf32():
    """TF32 off for a while: training turns it on for mixed precision's fp32 leftovers,
    while samples are drawn in true fp32 everywhere else (`nanotui sample`)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype))


def autocast_context(device: torch.device, dtype: torch.dtype):
    """Mixed precision for forward passes: weights stay fp32, matmuls run in `dtype`."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_grad_scaler(device: torch.device, dtype: torch.dtype) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range."""
    return device.type == "cuda" and dtype == torch.float16


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_model_name()


@functools.lru_cache(maxsize=None)
def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


# Dense (no sparsity) peak FLOP/s per card: (substring of the CUDA device name,
# bf16/fp16 tensor-core peak with fp32 accumulation, plain fp32 peak). fp32 matmuls in
# PyTorch do not use TF32 by default, so the fp32 column is the non-tensor-core figure.
# A name matches as whole words ("A40" is not in "RTX A4000", "A10" not in "A100"), and
# the first match wins, so specific names come before general ones ("H100 PCIe" before
# "H100", "RTX 6000 Ada" before "A6000").
# bf16 None: the card has no bf16 tensor cores (fp16 figure only).
PEAK_FLOPS: list[tuple[str, float | None, float | None, float]] = [
    # (name substring, bf16, fp16, fp32)
    ("GH200", 989.4e12, 989.4e12, 67e12),
    ("H200 NVL", 835.5e12, 835.5e12, 60e12),
    ("H200", 989.4e12, 989.4e12, 67e12),
    ("H100 PCIe", 756e12, 756e12, 51.2e12),
    ("H100 NVL", 835e12, 835e12, 60e12),
    ("H100", 989.4e12, 989.4e12, 67e12),          # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H800 PCIe", 756e12, 756e12, 51.2e12),
    ("H800", 989.4e12, 989.4e12, 67e12),
    ("B200", 2250e12, 2250e12, 80e12),
    ("RTX PRO 6000 Blackwell Max-Q", 438.9e12, 438.9e12, 110e12),
    ("RTX PRO 6000", 503.8e12, 503.8e12, 126e12),  # Workstation / Server Edition
    ("RTX 6000 Ada", 364.2e12, 364.2e12, 91.1e12),
    ("L40S", 362.1e12, 362.1e12, 91.6e12),
    ("L40", 181e12, 181e12, 90.5e12),
    ("L4", 121e12, 121e12, 30.3e12),
    ("RTX 5090", 209.5e12, 209.5e12, 104.8e12),
    ("RTX 5080", 112.6e12, 112.6e12, 56.3e12),
    ("RTX 4090", 165.2e12, 165.2e12, 82.6e12),
    ("RTX 4080", 97.5e12, 97.5e12, 48.7e12),
    ("A100", 312e12, 312e12, 19.5e12),
    ("A800", 312e12, 312e12, 19.5e12),
    ("A6000", 154.8e12, 154.8e12, 38.7e12),        # "NVIDIA RTX A6000"
    ("A5000", 111.1e12, 111.1e12, 27.8e12),
    ("A4000", 76.7e12, 76.7e12, 19.2e12),          # "NVIDIA RTX A4000", not an A40
    ("A40", 149.7e12, 149.7e12, 37.4e12),
    ("A30", 165e12, 165e12, 10.3e12),
    ("A10G", 70e12, 70e12, 31.2e12),
    ("A10", 125e12, 125e12, 31.2e12),
    ("RTX 3090", 71e12, 71e12, 35.6e12),
    ("RTX 3080", 59.5e12, 59.5e12, 29.8e12),
    ("V100", None, 125e12, 15.7e12),
    ("T4", None, 65e12, 8.1e12),
]


def peak_flops(device_name: str, dtype: torch.dtype | str) -> float | None:
    """The card's dense peak FLOP/s for `dtype`, or None when unknown (CPUs, unlisted
    cards, bf16 on a card without bf16 tensor cores)."""
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype, torch.float32)
    share = mig_share(device_name)
    if share == 0.0:
        return None  # a MIG slice of unknown size: no honest peak
    for sub, bf16, fp16, fp32 in PEAK_FLOPS:
        if re.search(rf"(?<![\w]){re.escape(sub)}(?![\w])", device_name, re.I):
            peak = bf16 if dtype == torch.bfloat16 else fp16 if dtype == torch.float16 else fp32
            return None if peak is None else peak * share
    return None


# Compute slices (GPCs) of a whole card in MIG mode: a "2g.20gb" instance has 2 of them.
MIG_SLICES = {"A30": 4}
MIG_DEFAULT_SLICES = 7   # A100, A800, H100, H200, H800, B200


def mig_share(device_name: str) -> float:
    """The fraction of the card's compute a MIG instance named like "NVIDIA H100 80GB
    HBM3 MIG 1g.10gb" has (1/7 here); 1.0 for a whole card; 0.0 when the name says MIG
    but not its size."""
    if not re.search(r"\bMIG\b", device_name):
        return 1.0
    m = re.search(r"\b(\d+)g\.\d+gb\b", device_name, re.I)
    if not m:
        return 0.0
    slices = next((n for k, n in MIG_SLICES.items()
                   if re.search(rf"\b{k}\b", device_name)), MIG_DEFAULT_SLICES)
    return min(1.0, int(m[1]) / slices)


def mfu(flops_per_token: float, tokens_per_s: float, device_name: str,
        dtype: torch.dtype | str) -> float | None:
    """Model FLOPs utilisation in [0, 1]: achieved FLOP/s over the card's peak; None when
    the peak is unknown (callers then show achieved FLOP/s = flops_per_token * tokens_per_s)."""
    peak = peak_flops(device_name, dtype)
    if not peak:
        return None
    return flops_per_token * tokens_per_s / peak


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings measure the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def reserved_memory_bytes(device: torch.device) -> int | None:
    """What torch's caching allocator holds on a CUDA device (None elsewhere): a run says
    it in status.json, so placement knows its memory is in the card's memory_used even
    where NVML's process ids are not ours (a container's PID namespace)."""
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.memory_reserved(device))
    except Exception:  # a context that died: the run is failing anyway
        return None


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak allocated memory on CUDA; on CPU the process's peak RSS (an upper bound)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except Exception:
        return None
