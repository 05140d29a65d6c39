"""nanotui's CPU kernel (engine/model/csrc/: fused causal attention): built at first use, loaded
with ctypes.

Why a tiny C++ library and not torch.utils.cpp_extension: it includes no torch or Python
headers, so it builds in a few seconds with any C++ compiler (cpp_extension needs the
Python headers and ~30 s), and ctypes releases the GIL around each call. It is compiled
with -march=native for the machine it runs on (x86-64-v3 in a process emulating an
AVX2 CPU, see device.emulated_cpu_class) and cached under
``$NANOTUI_CACHE_DIR`` (default ``$XDG_CACHE_HOME/nanotui`` or ``~/.cache/nanotui``), keyed
by the source, the compiler, the CPU's flags and the OpenMP runtime, so a home directory
shared by different cluster nodes keeps one build per kind of node.

Threads: the kernel's OpenMP pragmas are linked against the OpenMP runtime torch itself
loaded (found in /proc/self/maps), so the kernel runs on torch's own thread pool. With a
second runtime, torch's idle workers spin for milliseconds after each op and take the
cores the kernel's threads need (measured: 2 threads slower than 1).

Without a compiler, or if the build fails, or with NANOTUI_CPU_KERNEL=0, `load()` returns
None and training uses the torch-op attention path (engine/cpu_kernels.py); `why_not()`
says why, and a training run's log and `nanotui bench` print it (cpu_kernels.describe).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import torch

from engine.files import regular_lock, user_cache_dir
from engine.model.device import cpu_signature, emulated_cpu_class

CSRC = Path(__file__).parent / "csrc"  # every .cpp there goes into one library
FLAGS = ["-O3", "-march=native", "-std=c++17", "-fPIC"]
# the build of an emulated CPU class (x86-64-v3: AVX2, FMA, F16C; v4: AVX-512 F/BW/DQ/VL)
EMULATED_MARCH = {"avx2": "-march=x86-64-v3", "avx512": "-march=x86-64-v4"}


def compile_flags() -> list[str]:
    """FLAGS, with -march for the emulated CPU class where one is set (device.py): that
    build has its own cache key, so it never replaces the native one."""
    emulated = emulated_cpu_class()
    if emulated is None:
        return list(FLAGS)
    return [EMULATED_MARCH[emulated] if f.startswith("-march=") else f for f in FLAGS]

_lib: ctypes.CDLL | None = None
_tried = False
_why_not = ""


def cache_dir() -> Path:
    return user_cache_dir()


def openmp_runtime() -> str | None:
    """Path of the OpenMP runtime this process has loaded (torch's), or None."""
    torch.zeros(1)  # torch's libraries, and with them its OpenMP runtime, are loaded
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        name = os.path.basename(path)
        if name.startswith(("libgomp", "libiomp5", "libomp")) and ".so" in name:
            return path
    return None


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def source_digest() -> str:
    """A hash of the kernel's sources: a tuned choice measured with another kernel is stale."""
    return hashlib.sha256(b"\0".join(p.read_bytes() for p in sorted(CSRC.iterdir())
                                      if p.suffix in (".cpp", ".h"))).hexdigest()[:16]


def build(cxx: str | None = None) -> Path:
    """Compile the kernel (or find it cached) and return the library's path. Raises
    RuntimeError with the compiler's message on failure."""
    cxx = cxx or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or ""
    if not cxx or not shutil.which(cxx):
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    omp = openmp_runtime()
    key = hashlib.sha256(b"\0".join(x.encode() for x in [
        *(p.read_text() for p in sorted(CSRC.iterdir()) if p.suffix in (".cpp", ".h")),
        " ".join(compile_flags()), _compiler_version(cxx), cpu_signature(),
        omp or "serial"])).hexdigest()[:16]
    out = cache_dir() / f"kernels-{key}.so"
    if _is_built(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # one build at a time per key: a sweep's runs starting together wait for the first
    with regular_lock(f"{out}.lock", 600):
        if _is_built(out):
            return out
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            lib = Path(tmp) / out.name
            objs = [Path(tmp) / (src.stem + ".o") for src in sorted(CSRC.glob("*.cpp"))]
            # OpenMP only at compile time; at link time the runtime torch loaded, by path
            openmp = ["-fopenmp"] if omp else []
            cmds = [[cxx, *compile_flags(), *openmp, "-c", str(CSRC / (o.stem + ".cpp")), "-o", str(o)]
                    for o in objs]
            cmds.append([cxx, "-shared", *map(str, objs), *([omp] if omp else []), "-o", str(lib)])
            for cmd in cmds:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                if r.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-2000:]}")
            os.replace(lib, out)
    return out


def _is_built(lib: Path) -> bool:
    """A library already built there: a regular file (a FIFO or a link planted in the
    cache is rebuilt over, never loaded)."""
    try:
        return stat.S_ISREG(os.lstat(lib).st_mode)
    except OSError:
        return False


def load() -> ctypes.CDLL | None:
    """The kernel library, built on first call; None (see why_not()) when unavailable."""
    global _lib, _tried, _why_not
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("NANOTUI_CPU_KERNEL", "1") == "0":
        _why_not = "disabled by NANOTUI_CPU_KERNEL=0"
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError, subprocess.SubprocessError, TimeoutError) as e:
        _why_not = str(e) or type(e).__name__  # training logs it (cpu_kernels.describe)
        return None
    if not lib.attn_parallel() and torch.get_num_threads() > 1:
        _why_not = "no OpenMP runtime found in this process: the kernel would run on one thread"
        return None
    P, I, F, U64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_uint64
    lib.attn_forward.argtypes = [P, P, P, I, I, I, I, I, I, F, U64]
    lib.attn_backward.argtypes = [P, P, P, P, P, I, I, I, I, I, I, F, U64]
    lib.attn_dropout_mask.argtypes = [P, I, I, F, U64]
    lib.attn_supports.argtypes = [I]
    lib.attn_dpbf16.argtypes = [I]
    _lib = lib
    return _lib


def bf16_dot_products(on: bool | None = None) -> bool:
    """Whether bf16 inputs use the CPU's bf16 dot-product instructions (AVX512-BF16) rather
    than fp32 FMAs; `on` switches it (for A/B benchmarks and tests). False where the CPU or
    compiler has none."""
    lib = load()
    if lib is None:
        return False
    return bool(lib.attn_dpbf16(-1 if on is None else int(on)))


def why_not() -> str:
    """Why load() returned None ('' if it did not)."""
    return _why_not


def supports_head_size(head_size: int) -> bool:
    """Whether the kernel is loaded and handles this head size (8, 16, 32, 64, 128)."""
    lib = load()
    return lib is not None and bool(lib.attn_supports(head_size))


def supports(qkv: torch.Tensor, n_head: int) -> bool:
    """Whether the kernel handles this input (CPU, fp32/bf16, a supported head size)."""
    return (qkv.device.type == "cpu" and qkv.dtype in (torch.float32, torch.bfloat16)
            and supports_head_size(qkv.size(-1) // 3 // n_head))


def _shape(qkv: torch.Tensor, n_head: int) -> tuple[int, int, int, int, int]:
    """(B, T, C, head size, 1 if bf16 else 0) of a (B, T, 3C) input."""
    B, T, C3 = qkv.shape
    return B, T, C3 // 3, C3 // 3 // n_head, int(qkv.dtype == torch.bfloat16)


def _check(rc: int, head_size: int) -> None:
    if rc != 0:
        raise ValueError(f"attention kernel: unsupported head size {head_size}")


def attention_forward(qkv: torch.Tensor, n_head: int, dropout: float = 0.0,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, lse): causal attention output (B, T, C) in qkv's dtype and the rows' log2-sum-exp
    (B * n_head, T) fp32, which the backward needs. With dropout > 0 the keep mask is a
    hash of `seed`; the backward must be given the same seed."""
    qkv = qkv.contiguous()
    B, T, C, hs, bf16 = _shape(qkv, n_head)
    y = qkv.new_empty(B, T, C)
    lse = torch.empty(B * n_head, T, dtype=torch.float32)
    _check(load().attn_forward(qkv.data_ptr(), y.data_ptr(), lse.data_ptr(), B, T, n_head, hs,
                               bf16, torch.get_num_threads(), dropout, seed), hs)
    return y, lse


def attention_backward(qkv: torch.Tensor, y: torch.Tensor, dy: torch.Tensor,
                       lse: torch.Tensor, n_head: int, dropout: float = 0.0,
                       seed: int = 0) -> torch.Tensor:
    """d loss / d qkv, (B, T, 3C) in qkv's dtype."""
    qkv, y = qkv.contiguous(), y.contiguous()
    dy = dy.to(qkv.dtype).contiguous()
    B, T, C, hs, bf16 = _shape(qkv, n_head)
    dqkv = torch.empty_like(qkv)
    _check(load().attn_backward(qkv.data_ptr(), y.data_ptr(), dy.data_ptr(), lse.data_ptr(),
                                dqkv.data_ptr(), B, T, n_head, hs, bf16,
                                torch.get_num_threads(), dropout, seed), hs)
    return dqkv


def dropout_keep_mask(pairs: int, T: int, dropout: float, seed: int) -> torch.Tensor:
    """The kernel's attention-dropout keep mask, (pairs, T, T) bool (pairs = B * n_head):
    for tests that compare with a reference applying the same mask."""
    out = torch.empty(pairs, T, T, dtype=torch.uint8)
    load().attn_dropout_mask(out.data_ptr(), pairs, T, dropout, seed)
    return out.bool()
