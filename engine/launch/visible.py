"""Which GPU units are OURS: the share of the machine this process was given.

NVML lists every card in the box; CUDA only lets a process use what its environment
allows. nanotui places runs only on units inside that share, and shows the others
marked "not ours":

  CUDA_VISIBLE_DEVICES set   (by the user, an admin's login script, or Slurm inside a
                             job/`srun --pty`): CUDA's own reading of it. Entries are
                             card indices, `GPU-<uuid>` (a unique prefix is enough, as
                             for CUDA) or `MIG-<uuid>`; parsing stops at the first entry
                             that names nothing, as CUDA's does (so "" or "-1" hide every
                             card: runs go to the CPU). An entry naming a card in MIG
                             mode gives all of its instances.
  else SLURM_STEP_GPUS / SLURM_JOB_GPUS
                             Slurm's allocation, as physical (NVML) indices.
  else                       every unit.

Indices in CUDA_VISIBLE_DEVICES count in CUDA's order, which is NVML's (PCI bus) order
only under CUDA_DEVICE_ORDER=PCI_BUS_ID; CUDA's default, FASTEST_FIRST, can put the
second card of a mixed box (an Ada and a Blackwell) first. Where that can matter (index
entries, no PCI_BUS_ID, cards of different models) the real CUDA order is asked once
from torch in a child process; when it cannot be asked, NVML order is used and `note`
says so (`nanotui doctor` prints it).

Children always get the chosen unit by uuid (engine.launch.placement.gpu_env), which
names the same unit in any order and any share.

A user names a card two ways: by its NVML index, as `nanotui gpus`, nvidia-smi and
gpustat number it ("2"), or as torch in this shell numbers it ("cuda:0": the first
device CUDA shows under this CUDA_VISIBLE_DEVICES, in its order). `cuda_indices` maps the
second onto units. A MIG instance is cuda:0 when CUDA_VISIBLE_DEVICES names it first;
otherwise it has no cuda:N here (CUDA enumerates MIG devices one per process), and is
named by its label or uuid.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from engine.files import atomic_write_bytes, read_regular, user_cache_dir
from engine.launch.child import child_env

_RANGE = re.compile(r"^(\d+)-(\d+)$")


class Unit(Protocol):
    """What a share is decided on: engine.launch.gpu.GpuSnapshot (that module imports
    this one, so the shape is described here rather than imported)."""

    index: int
    uuid: str
    name: str
    mig: int | None
    problem: str | None

    @property
    def card_uuid(self) -> str: ...


@dataclass(frozen=True)
class Share:
    """The units this process may use; `allowed` None means all of them."""

    source: str                       # "all" | "CUDA_VISIBLE_DEVICES" | "SLURM_STEP_GPUS" | ...
    spec: str = ""
    allowed: frozenset[str] | None = None   # unit uuids
    note: str | None = None
    # unit uuid -> its number in torch's cuda:N in this shell (cuda_indices)
    cuda: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        if self.allowed is None:
            return "every card (no CUDA_VISIBLE_DEVICES, no Slurm allocation)"
        return f"{self.source}={self.spec!r}"


def _cards(units: list[Unit]) -> list[str]:
    """Physical card uuids in NVML index order."""
    seen: dict[int, str] = {}
    for u in units:
        seen.setdefault(u.index, u.card_uuid)
    return [seen[i] for i in sorted(seen)]


def _units_of(card_uuid: str, units: list[Unit]) -> set[str]:
    return {u.uuid for u in units if u.card_uuid == card_uuid}


def parse_cuda_visible(spec: str, units: list[Unit],
                       cuda_order: list[str] | None = None) -> frozenset[str]:
    """The unit uuids CUDA would expose for CUDA_VISIBLE_DEVICES=spec; `cuda_order` lists
    card uuids in CUDA's enumeration order (default: NVML order)."""
    order = cuda_order or _cards(units)
    allowed: set[str] = set()
    for found in _entries(spec, units, order):
        allowed |= found
    return frozenset(allowed)


def _entries(spec: str, units: list[Unit], order: list[str]) -> list[set[str]]:
    """The unit uuids each CUDA_VISIBLE_DEVICES entry names, in the entries' order, up
    to the first that names nothing (CUDA ignores it and every one after it)."""
    out: list[set[str]] = []
    for token in (t.strip() for t in spec.split(",")):
        found: set[str] = set()
        if token.isdigit():
            if int(token) < len(order):
                found = _units_of(order[int(token)], units)
        elif token.startswith("MIG-"):
            found = {u.uuid for u in units if u.uuid == token}
        elif token.startswith("GPU-"):
            cards = {u.card_uuid for u in units if u.card_uuid.startswith(token)}
            if len(cards) == 1:  # an ambiguous prefix names nothing, as in CUDA
                found = _units_of(cards.pop(), units)
        if not found:
            break
        out.append(found)
    return out


def cuda_indices(env: Mapping[str, str], units: list[Unit],
                 cuda_order: list[str] | None = None) -> dict[str, int]:
    """Unit uuid -> N of torch's cuda:N in a process with this environment: CUDA numbers
    the cards CUDA_VISIBLE_DEVICES names in the order it names them (not sorted), else
    every card in `cuda_order` (NVML order when None). Counting stops at the first card in
    MIG mode: what CUDA numbers after it depends on the CUDA version; a MIG instance
    CUDA_VISIBLE_DEVICES names first is cuda:0."""
    order = cuda_order or _cards(units)
    by_uuid = {u.uuid: u for u in units}
    spec = env.get("CUDA_VISIBLE_DEVICES")
    groups = (_entries(spec, units, order) if spec is not None
              else [_units_of(c, units) for c in order])
    out: dict[str, int] = {}
    first = by_uuid[next(iter(groups[0]))] if groups and len(groups[0]) == 1 else None
    if spec is not None and first is not None and first.mig is not None:
        return {first.uuid: 0}  # CUDA_VISIBLE_DEVICES=MIG-...: that instance is cuda:0
    for group in groups:
        if len(group) != 1:
            break  # a MIG card's instances
        u = by_uuid[next(iter(group))]
        if u.mig is not None or "in MIG mode" in (u.problem or ""):
            break
        if u.uuid not in out:
            out[u.uuid] = len(out)
    return out


def parse_slurm_gpus(spec: str, units: list[Unit]) -> frozenset[str]:
    """Slurm's "0,2" / "0-1,3": physical card indices."""
    idx: set[int] = set()
    for token in (t.strip() for t in spec.split(",")):
        if token.isdigit():
            idx.add(int(token))
        elif m := _RANGE.match(token):
            idx.update(range(int(m[1]), int(m[2]) + 1))
    return frozenset(u.uuid for u in units if u.index in idx)


def needs_cuda_order(spec: str | None, env: Mapping[str, str], units: list[Unit]) -> bool:
    """Whether index entries (or, without CUDA_VISIBLE_DEVICES, cuda:N) could mean other
    cards in CUDA's order than in NVML's."""
    if env.get("CUDA_DEVICE_ORDER", "").upper() == "PCI_BUS_ID":
        return False
    if spec is not None and not any(t.strip().isdigit() for t in spec.split(",")):
        return False
    models = {u.name.split(" MIG ")[0] for u in units}
    return len(models) > 1


def share_from_env(env: Mapping[str, str], units: list[Unit],
                   cuda_order: list[str] | None = None) -> Share:
    """Pure: the share an environment gives, over these units."""
    if "CUDA_VISIBLE_DEVICES" in env:
        spec = env["CUDA_VISIBLE_DEVICES"]
        return Share("CUDA_VISIBLE_DEVICES", spec, parse_cuda_visible(spec, units, cuda_order))
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if env.get(key):
            return Share(key, env[key], parse_slurm_gpus(env[key], units))
    return Share("all")


def mark(units: list[Unit], share: Share) -> list[Unit]:
    """The units with `ours` and `cuda_index` set from the share."""
    cuda = dict(share.cuda)
    return [replace(u, ours=share.allowed is None or u.uuid in share.allowed,
                    cuda_index=cuda.get(u.uuid)) for u in units]


_PROBE = ("import json, torch\n"
          "n = torch.cuda.device_count()\n"
          "print(json.dumps(['GPU-' + str(torch.cuda.get_device_properties(i).uuid)"
          " for i in range(n)]))\n")


def probe_cuda_order(env: Mapping[str, str]) -> list[str] | None:
    """Card uuids in CUDA's default order, asked from torch with every card visible."""
    child = {k: v for k, v in child_env(env).items() if k != "CUDA_VISIBLE_DEVICES"}
    try:  # `del sys.path[0]`: the '' that -c adds, so the working directory is not read
        p = subprocess.run([sys.executable, "-c", "import sys; del sys.path[0]\n" + _PROBE],
                           env=child, timeout=60,
                           capture_output=True, text=True, check=False)
        order = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    return order if isinstance(order, list) and order else None


ORDER_CACHE_NAME = "cuda-order.json"


def _boot_id() -> str:
    """This boot's id: CUDA's order can only change with the driver or the cards, and
    both change only across a reboot (or a driver reload, which the driver's CUDA
    version in the key catches when it is an upgrade)."""
    try:
        return read_regular("/proc/sys/kernel/random/boot_id", 64).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def cached_cuda_order(env: Mapping[str, str], units: list[Unit],
                      probe: Callable[[Mapping[str, str]], list[str] | None] | None = None,
                      cache: Path | None = None) -> list[str] | None:
    """probe_cuda_order, remembered per boot, cards and driver in the user's cache: the
    probe imports torch and starts CUDA in a child (seconds), which `nanotui gpus`, the
    TUI and every dispatcher on a box of mixed cards would otherwise pay each time."""
    probe = probe or probe_cuda_order
    boot = _boot_id()
    if not boot:
        return probe(env)
    cards = sorted(_cards(units))
    drivers = sorted({str(getattr(u, "driver_cuda", None)) for u in units})
    key = hashlib.sha256(json.dumps([boot, cards, drivers]).encode()).hexdigest()
    path = cache or user_cache_dir() / ORDER_CACHE_NAME
    try:
        doc = json.loads(read_regular(path, 64 * 1024))
        if doc.get("key") == key and sorted(doc.get("order", [])) == cards:
            return list(doc["order"])
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    order = probe(env)
    if order and sorted(order) == cards:  # only a full answer is worth keeping
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps({"key": key, "order": order}).encode())
        except OSError:
            pass  # a read-only home: probe again next time
    return order


ORDER_NOTE = ("CUDA_VISIBLE_DEVICES has card indices, the cards differ and "
              "CUDA_DEVICE_ORDER is not PCI_BUS_ID: read in NVML order, which CUDA may "
              "not share; prefer GPU-<uuid> entries")


def resolve_share(env: Mapping[str, str], units: list[Unit],
                  cuda_order: Callable[[], list[str] | None] | None = None) -> Share:
    """share_from_env, asking `cuda_order` (e.g. probe_cuda_order) for CUDA's order only
    where index entries, or torch's cuda:N, could mean other cards than in NVML's; `note`
    when index entries cannot be read in CUDA's order, and no cuda:N where it is unknown."""
    spec = env.get("CUDA_VISIBLE_DEVICES")
    order, note, known = None, None, True
    if units and needs_cuda_order(spec, env, units):
        order = cuda_order() if cuda_order else None
        if order and not set(order) <= set(_cards(units)):
            order = None  # e.g. CUDA listed MIG instances: not an order of these cards
        known = bool(order) or cuda_order is None  # None: fake cards, NVML order is theirs
        if spec is not None:
            note = None if order else ORDER_NOTE
    # cuda:N is only offered where CUDA's numbering is known
    cuda = tuple(cuda_indices(env, units, order).items()) if known else ()
    return replace(share_from_env(env, units, order), note=note, cuda=cuda)
