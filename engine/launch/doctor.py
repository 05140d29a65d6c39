"""`nanotui doctor`: what nanotui sees on this machine and what will work, in one report.

It is what a user runs first on a new machine and what a bug report should include:
  python/torch   versions, torch's CUDA build, Triton
  nvml           driver and NVML (or the fake cards of NANOTUI_FAKE_GPUS)
  gpus           each unit (card or MIG instance): index, uuid, name, memory, whether it is
                 ours (engine.launch.visible); on CUDA also compute capability, bf16, and a
                 tiny compiled training step run on it in a child process, exactly as a
                 run would be placed (CUDA_VISIBLE_DEVICES=<uuid>): works or why not, and
                 its tokens/s
  mapping        NVML index <-> CUDA index <-> uuid under the current environment (CUDA's
                 default order can differ from NVML's on a mixed box)
  cpu            model, class (AVX2 / AVX-512 / native bf16) and the CPU training path
                 (attention kernel, precision) a CPU run would take
  compiler       the C++ compiler the CPU kernel is built with
  data           the data cache, prepared datasets, GPT-2 tokenizer files found locally
  slurm          sbatch/squeue, an enclosing job, submitit

Each check is ok / warn / info / missing; only "missing" (something experiments need:
torch, a writable data cache, a GPU of ours that cannot train at all, NVML cards torch
cannot use) makes the exit status non-zero.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.launch.child import child_env, module_command
from engine.launch.gpu import FAKE_ENV, default_gpu_source, nested_pid_namespace
from engine.launch.nvml import NvmlGpuSource
from engine.launch.policy import policy_check
from engine.launch.reservations import reservations_dir

STATUSES = ("ok", "info", "warn", "missing")
STEP_TIMEOUT_S = 240
# a tiny model whose compiled step takes seconds on any card (compile dominates)
STEP_CFG = dict(n_layer=2, n_head=4, n_embd=128, block_size=128, batch_size=16,
                vocab_size=65, compile=True, device="cuda", dtype="auto", dropout=0.0)


@dataclass(frozen=True)
class Check:
    section: str
    name: str
    status: str            # one of STATUSES
    detail: str


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:
        return None


def _python_torch(checks: list[Check]) -> Any:
    checks.append(Check("python", "python", "ok", f"{platform.python_version()} "
                        f"({sys.executable})"))
    try:
        import torch
    except Exception as e:
        checks.append(Check("python", "torch", "missing", f"cannot import torch: {e}"))
        return None
    cuda = torch.version.cuda
    checks.append(Check("python", "torch", "ok", f"{torch.__version__}"
                        + (f", built for CUDA {cuda}" if cuda else ", CPU-only build")))
    triton = _version("triton")
    checks.append(Check("python", "triton", "ok" if triton else "info",
                        triton or "not installed (torch.compile on GPUs needs it)"))
    return torch


def _nvml(checks: list[Check], units: list) -> None:
    fake = os.environ.get(FAKE_ENV)
    if fake:
        checks.append(Check("nvml", "cards", "info", f"fake cards from {FAKE_ENV}={fake}"))
        return
    nv = NvmlGpuSource()
    if not nv.available():
        checks.append(Check("nvml", "driver", "info",
                            "no GPU: no NVIDIA driver/NVML here; runs go to the CPU"))
        return
    cuda = nv.driver_cuda()
    checks.append(Check("nvml", "driver", "ok",
                        f"driver {nv.driver_version() or '?'} (supports CUDA "
                        f"{'%d.%d' % cuda if cuda else '?'}), {len(units)} units"))
    _build_check(checks, nv.torch_facts(), cuda, units)


def _build_check(checks: list[Check], facts: Any, driver_cuda: tuple[int, int] | None,
                 units: list) -> None:
    """torch's CUDA build against the driver and the cards: the wheel that would work."""
    from engine.model.cuda_compat import arch_supported, parse_version, wheel_advice
    caps = sorted({u.capability for u in units if u.capability})
    advice = wheel_advice(driver_cuda, caps[0] if caps else None)
    built = parse_version(facts.cuda)
    drv = "%d.%d" % driver_cuda if driver_cuda else "?"
    if built is None:
        checks.append(Check("gpus", "torch build", "missing",
                            f"torch {facts.torch_version} is a CPU-only build; the driver "
                            f"supports CUDA {drv}: install {advice}"))
        return
    if driver_cuda and built[0] > driver_cuda[0]:
        checks.append(Check("gpus", "torch build", "missing",
                            f"torch {facts.torch_version} is built for CUDA {facts.cuda}, the "
                            f"driver supports CUDA {drv}: install {advice}, or a newer driver"))
        return
    bad = [c for c in caps if facts.archs and not arch_supported(c, facts.archs)]
    if bad:
        checks.append(Check("gpus", "torch build", "missing",
                            f"compute capability {', '.join('%d.%d' % c for c in bad)} is not "
                            f"in torch's arch list ({' '.join(facts.archs)}): install {advice}"))
        return
    checks.append(Check("gpus", "torch build", "ok",
                        f"CUDA {facts.cuda} (driver supports {drv}); arch list "
                        f"{' '.join(facts.archs) or '?'} covers every card"))


def _cuda_devices(torch: Any) -> list[dict[str, Any]]:
    """CUDA's view under the current environment: index, uuid, name, capability, memory."""
    if torch is None or not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        uuid = str(getattr(p, "uuid", "") or "")
        out.append({"cuda_index": i, "uuid": uuid, "name": p.name,
                    "capability": f"{p.major}.{p.minor}", "memory_total": int(p.total_memory),
                    "bf16": (p.major, p.minor) >= (8, 0)})
    return out


def _bare(uuid: str) -> str:
    return uuid.removeprefix("GPU-").removeprefix("MIG-")


def _match(unit_uuid: str, cuda: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The CUDA device that is this unit (torch prints uuids without GPU-/MIG-)."""
    for c in cuda:
        if c["uuid"] and _bare(unit_uuid) == _bare(c["uuid"]):
            return c
    return None


def run_step(unit_uuid: str) -> dict[str, Any]:
    """The tiny compiled training step on one unit, in a child pinned to it."""
    env = child_env({**os.environ, "CUDA_VISIBLE_DEVICES": unit_uuid,
                     "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    try:
        p = subprocess.run(module_command("engine.launch.doctor", "--step"), env=env,
                           capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"works": False, "reason": f"no result within {STEP_TIMEOUT_S} s"}
    lines = p.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"works": False, "reason": f"exit {p.returncode}: {tail[:200]}"}


def _step_main() -> int:
    """In the child: one bench of STEP_CFG; prints one JSON line."""
    from engine.errors import one_line
    from engine.train.bench import bench_config, run_bench
    said: list[str] = []
    try:
        r = run_bench(bench_config(STEP_CFG), iters=5, warmup=3, log=said.append)
    except Exception as e:
        print(json.dumps({"works": False, "reason": one_line(e)}))
        return 0
    why = next((s for s in said if "compile failed" in s), None)
    print(json.dumps({"works": True, "compile": r["compile"], "compile_reason": why,
                      "tokens_per_s": r["tokens_per_s"], "dtype": r["dtype"],
                      "device_name": r["device_name"]}))
    return 0


def _gpus(checks: list[Check], torch: Any, units: list, steps: bool) -> tuple[list, list]:
    cuda = _cuda_devices(torch)
    fake = bool(os.environ.get(FAKE_ENV))
    rows = []
    for u in units:
        row = u.to_dict()
        c = _match(u.uuid, cuda)
        row["cuda"] = c
        if c and u.ours and steps:
            row["step"] = run_step(u.uuid)
        rows.append(row)
        _unit_check(checks, u, c, row.get("step"), fake)
    if units and not cuda and not fake and not any(u.problem for u in units):
        checks.append(Check("gpus", "cuda", "missing",
                            f"NVML sees {len(units)} units but torch has no CUDA device "
                            f"(CPU-only torch build? driver too old for torch's CUDA?)"))
    if not units:
        checks.append(Check("gpus", "gpus", "info", "no GPU: runs train on the CPU"))
    elif nested_pid_namespace():
        checks.append(Check("gpus", "pids", "info",
                            "a container's PID namespace: NVML lists host pids, not ours; "
                            "our runs' memory is known from what each reports "
                            "(status.json gpu_mem_bytes), not counted twice"))
    mapping = [{"cuda_index": c["cuda_index"], "uuid": c["uuid"],
                "nvml": next((u.label for u in units if _match(u.uuid, [c])), None)}
               for c in cuda]
    return rows, mapping


def _unit_check(checks: list[Check], u: Any, c: dict | None, step: dict | None,
                fake: bool) -> None:
    name = f"GPU {u.label}"
    if not u.ours:
        checks.append(Check("gpus", name, "info", f"{u.name}: not ours (outside the share)"))
        return
    if u.problem:
        checks.append(Check("gpus", name, "missing", f"never placed on: {u.problem}"))
        return
    if u.exclusive:
        checks.append(Check("gpus", name, "info", f"{u.name}: compute mode "
                            f"{u.compute_mode.upper()}: one process at a time; runs go there "
                            f"only while no process holds it"))
    if c is None:
        checks.append(Check("gpus", name, "info", f"{u.name}: " + (
            "a fake card (no CUDA facts)" if fake else
            # CUDA enumerates one MIG instance per process: the others are fine, each
            # run is pinned to its own by uuid
            "a MIG instance (a process sees one; runs are pinned to theirs by uuid)"
            if u.mig is not None else "not visible to CUDA here")))
        return
    if step is None:
        checks.append(Check("gpus", name, "ok", f"{u.name}, sm {c['capability']}, "
                            f"bf16 {'yes' if c['bf16'] else 'no'} (step not run)"))
        return
    if not step.get("works"):
        checks.append(Check("gpus", name, "missing", f"{u.name}: a training step fails: "
                            f"{step.get('reason')}"))
        return
    compiled = step.get("compile") == "on"
    detail = (f"{u.name}, sm {c['capability']}, {step.get('dtype')}, "
              f"{step['tokens_per_s']:,.0f} tokens/s, compile "
              + ("works" if compiled else f"FAILS ({step.get('compile_reason') or 'eager used'})"))
    checks.append(Check("gpus", name, "ok" if compiled else "warn", detail))


def _cpu(checks: list[Check], torch: Any) -> dict[str, Any]:
    if torch is None:
        return {}
    from engine.model import cpu_kernels
    from engine.model import device as dev
    flags = dev.cpu_flags()
    info = {"model": dev.cpu_model_name(), "class": dev.cpu_class(),
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "native_bf16": dev.cpu_has_bf16(), "threads": torch.get_num_threads(),
            "dtype": dev.dtype_name(dev.resolve_dtype("auto", torch.device("cpu"))),
            "attention": cpu_kernels.describe(6, 384)}
    feats = ", ".join(k for k in ("avx2", "avx512", "native_bf16") if info[k]) or "none"
    checks.append(Check("cpu", "cpu", "ok", f"{info['model']} | class {info['class']} | "
                        f"{feats} | {info['threads']} threads"))
    from engine.model import cpu_tuner
    from engine.model.gpt import GPTConfig
    cands = cpu_tuner.candidates(GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256),
                                 "auto", None)
    info["candidates"] = [cpu_tuner.label(p, d) for p, d in cands]
    checks.append(Check("cpu", "cpu path", "ok", "measured per shape at a run's first start "
                        "and cached (NANOTUI_CPU_KERNEL or cpu_attention overrides); "
                        f"candidates for a baby GPT 6/6/384: {', '.join(info['candidates'])}"))
    return info


def _compiler(checks: list[Check]) -> None:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx or not shutil.which(cxx):
        checks.append(Check("compiler", "c++", "warn", "no C++ compiler: CPU attention "
                            "uses the slower torch path (install g++ or set CXX)"))
        return
    try:
        v = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30,
                           check=False).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        v = "?"
    checks.append(Check("compiler", "c++", "ok", f"{shutil.which(cxx)}: {v}"))


def _data(checks: list[Check]) -> None:
    from engine.data.tokenizers import cache_root, tokenizer_cache_dir
    root = cache_root()
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), root)
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        checks.append(Check("data", "cache", "missing", f"{root} is not writable: set "
                            f"NANOTUI_DATA_DIR"))
    else:
        found = sorted(str(p.parent.relative_to(root)) for p in root.glob("*/meta.json")) + \
            sorted(str(p.parent.relative_to(root)) for p in root.glob("*/*/meta.json"))
        checks.append(Check("data", "cache", "ok", f"{root}: "
                            + (f"datasets {', '.join(found)}" if found else "no dataset prepared yet")))
    local = []
    if os.environ.get("NANOTUI_TOKENIZER_FILE"):
        local.append(f"NANOTUI_TOKENIZER_FILE={os.environ['NANOTUI_TOKENIZER_FILE']}")
    tok = tokenizer_cache_dir()
    if tok.is_dir() and any(tok.iterdir()):
        local.append(str(tok))
    tk = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path(tempfile.gettempdir()) / "data-gym-cache")
    if tk.is_dir() and any(tk.iterdir()):
        local.append(f"tiktoken cache {tk}")
    checks.append(Check("data", "gpt2 tokenizer", "ok" if local else "info",
                        "; ".join(local) if local else "no local GPT-2 BPE files: downloaded "
                        "on first use (offline: nanotui prepare --tokenizer-file)"))


def _slurm(checks: list[Check]) -> None:
    tools = [t for t in ("sbatch", "squeue", "scancel") if shutil.which(t)]
    job = os.environ.get("SLURM_JOB_ID")
    sub = importlib.util.find_spec("submitit") is not None
    if not tools and not job:
        checks.append(Check("slurm", "slurm", "info", "no Slurm here (local executor)"))
        return
    detail = f"tools: {', '.join(tools) or 'none'}; submitit {'yes' if sub else 'no'}"
    if job:
        detail += f"; inside job {job} (GPUs {os.environ.get('SLURM_JOB_GPUS', '?')})"
    checks.append(Check("slurm", "slurm", "ok" if sub and tools else "warn", detail))


def diagnose(steps: bool = True) -> dict[str, Any]:
    """The whole report as one JSON-ready document."""
    checks: list[Check] = []
    torch = _python_torch(checks)
    source = default_gpu_source()
    units = source.snapshot()
    _nvml(checks, units)
    share = source.share
    if share.note:
        checks.append(Check("gpus", "share", "warn", share.note))
    policy = policy_check(reservations_dir())  # the fair share between users
    if policy:
        checks.append(Check("gpus", "policy", *policy))
    rows, mapping = _gpus(checks, torch, units, steps)
    cpu = _cpu(checks, torch)
    _compiler(checks)
    _data(checks)
    _slurm(checks)
    return {"checks": [asdict(c) for c in checks], "gpus": rows, "mapping": mapping,
            "share": {"source": share.source, "spec": share.spec, "note": share.note,
                      "description": share.describe()},
            "cpu": cpu, "missing": sum(c.status == "missing" for c in checks)}


if __name__ == "__main__" and sys.argv[1:] == ["--step"]:
    sys.exit(_step_main())
