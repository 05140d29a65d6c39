"""Where the next run goes: pure functions over GPU snapshots and the runs already out.

A run may go on a unit (a card, or a MIG instance with its own memory) when
  - the unit is ours (engine.launch.visible: inside an inherited CUDA_VISIBLE_DEVICES
    or Slurm's allocation; no unit of ours = the CPU),
  - it is allowed (`[launch] gpus = [...]`, by index, "0.1" label or uuid; empty = all),
  - fewer than `max_runs_per_gpu` of our runs are on it, or, with "auto" (packing,
    opt-in), none is, or all of ours there are training (past start-up and compile)
    and the unit stayed below `pack_util_below` % at each of the last `pack_polls` polls
    taken `pack_settle_s` or more after the last of them began training, and
  - its free memory, minus memory PROMISED to runs launched on it that have not
    allocated yet (ours, and any other dispatcher's on the machine:
    engine.launch.reservations), fits the run's estimated need.
Among those, the least-loaded wins: utilization + memory in use (counting promises),
plus a penalty per run of ours already there (they may not show in utilization yet).
A run that fits on no allowed card even when it is idle cannot be placed (an error);
one that fits but not now waits (None).

"Not allocated yet": a launched run's pid does not appear among the card's processes,
it has not reported memory of its own (status.json gpu_mem_bytes: in a container NVML
lists host pids, never ours), and it was launched less than `promise_ttl_s` ago (after
that its memory shows in memory_used, or NVML cannot list processes here and we stop
double counting).

Units torch cannot use (`problem`: its CUDA build, the driver, the card's capability, MIG
without instances) are never placed on; when every unit of ours has one, a run fails with
the cause instead of training on the CPU of a GPU server by surprise.

Without cards (or with `--gpu cpu`, or a config with device = "cpu"), runs go to the CPU,
at most `max_cpu_runs` at a time (default 1: a 2-core box is not helped by two runs
fighting for the cores) and never more than the cores, each with at most its share of
them as threads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from engine.launch.executor import Placement
from engine.launch.gpu import GpuSnapshot
from engine.runs import RunError
from engine.train.threads import SHARE_ENV, affinity_cores


class PlacementError(RunError):
    """The run can never be placed as asked (no such card, too big for every card)."""


@dataclass(frozen=True)
class ActiveRun:
    """One of our runs holding (or about to hold) a device."""

    run_id: str
    uuid: str | None           # None: on the CPU
    est_mem_bytes: int = 0
    started_at: float = 0.0
    pid: int | None = None
    warm_at: float | None = None  # when it was first seen training (past compile); None: not yet
    holder: str = ""  # another dispatcher's reservation: whose run, as a waiting reason says it
    # what the run says it holds on its unit (status.json gpu_mem_bytes): it has
    # allocated, its memory is in memory_used, even where NVML lists other pids than ours
    reported_bytes: int = 0


@dataclass(frozen=True)
class Policy:
    max_runs_per_gpu: int | str = 1          # or "auto": packing, see fits_now
    max_cpu_runs: int = 1
    gpus: tuple[int | str, ...] = ()
    promise_ttl_s: float = 600.0
    pack_util_below: int = 60                # %, every recent poll of the card
    pack_polls: int = 5                      # recent polls needed (0.5 s apart by default)
    pack_settle_s: float = 5.0               # after our runs there started training
    pack_max_runs: int = 8


class UtilHistory:
    """Utilization of each unit at the dispatcher's recent polls (for packing)."""

    def __init__(self, keep: int = 120) -> None:
        self.keep = keep
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def add(self, gpus: list[GpuSnapshot], now: float) -> None:
        for g in gpus:
            if g.utilization is not None:
                self._samples.setdefault(g.uuid, deque(maxlen=self.keep)).append(
                    (now, g.utilization))

    def since(self, uuid: str, t: float) -> list[int]:
        return [u for at, u in self._samples.get(uuid, ()) if at >= t]


def parse_request(request: str | int | None) -> str:
    """Normalise a `--gpu` value: "auto", "cpu", a card's NVML index ("2", as `nanotui
    gpus` and nvidia-smi number it), torch's "cuda:0" in this shell, a label or a uuid."""
    r = "auto" if request in (None, "") else str(request).strip()
    return r.lower() if r.lower() in ("auto", "cpu") or r.lower().startswith("cuda:") else r


def find_card(gpus: list[GpuSnapshot], ref: str | int) -> GpuSnapshot | None:
    """The unit a user named: its uuid, its label ("0.1" for a MIG instance), its card's
    NVML index (the first of its MIG instances that is ours), or "cuda:N", torch's
    number for it under this shell's CUDA_VISIBLE_DEVICES."""
    ref = str(ref).strip()
    if ref.lower().startswith("cuda:"):
        n = ref[5:]
        return next((g for g in gpus if n.isdigit() and g.cuda_index == int(n)), None)
    for g in sorted(gpus, key=lambda g: not g.ours):
        if ref in (g.uuid, g.label) or (ref.isdigit() and int(ref) == g.index):
            return g
    return None


def named_card(gpus: list[GpuSnapshot], ref: str | int, what: str) -> GpuSnapshot:
    """find_card, or PlacementError with one line saying which numbers are ours, so that
    "--gpu 0" typed from torch's numbering under CUDA_VISIBLE_DEVICES=2,3 (where torch's
    cuda:0 is GPU 2) is refused instead of meaning another user's card 0."""
    card = find_card(gpus, ref)
    ours = ", ".join(g.names for g in gpus if g.ours) or "none: use cpu"
    if card is None:
        kind = ("torch's numbering in this shell" if str(ref).lower().startswith("cuda:")
                else "NVML's numbering, as in `nanotui gpus` and nvidia-smi")
        raise PlacementError(f"{what} {ref}: no such GPU in {kind}; ours: {ours}")
    if not card.ours:
        raise PlacementError(f"{what} {ref}: GPU {card.label} is not ours (outside "
                             f"CUDA_VISIBLE_DEVICES or the Slurm allocation); ours: {ours} "
                             f"(write cuda:N for torch's numbering)")
    return card


def allowed_cards(gpus: list[GpuSnapshot], policy: Policy) -> list[GpuSnapshot]:
    """Ours, usable, and named by `[launch] gpus` (all when empty). An entry naming a
    unit outside our share, or none, is refused (PlacementError), not skipped: a list
    written with another numbering in mind would otherwise place runs elsewhere."""
    for ref in policy.gpus:
        named_card(gpus, ref, "[launch] gpus =")
    return [g for g in gpus if g.ours and not g.problem and (not policy.gpus or any(
        find_card([g], ref) is not None for ref in policy.gpus))]


def reported_gpu_bytes(status: dict) -> int:
    """What a run's status.json says its process holds on its unit (the trainer's
    gpu_mem_bytes, engine.train.process), counted only when written by the process the
    status names (a resumed run's old figure is not its new process's)."""
    pid = status.get("pid")
    held = status.get("gpu_mem_bytes")
    if pid is None or status.get("gpu_mem_pid") != pid or not isinstance(held, int):
        return 0
    return max(0, held)


def others_bytes(card: GpuSnapshot, ours: list[tuple[int | None, int]]) -> int:
    """Memory on `card` held by processes that are not our runs, for the GPU panel and
    `nanotui gpus`. `ours`: (pid, reported_gpu_bytes) of our running runs on the card.
    NVML's processes count less those with our runs' pids; in a container NVML lists host
    pids, never ours, so each of our runs it does not list by pid takes out the listed
    process most likely to be it (the smallest holding at least what the run reported:
    NVML adds the CUDA context to torch's figure), or, with none such, what it reported."""
    mine = {pid for pid, _ in ours if pid is not None}
    listed = {p.pid for p in card.processes}
    foreign = sorted(p.used_memory or 0 for p in card.processes if p.pid not in mine)
    left = 0
    for held in sorted((h for pid, h in ours if pid not in listed and h > 0), reverse=True):
        i = next((i for i, used in enumerate(foreign) if used >= held), None)
        if i is None:
            left += held
        else:
            foreign.pop(i)
    return max(0, sum(foreign) - left)


def promised_bytes(card: GpuSnapshot, active: list[ActiveRun], now: float, ttl: float) -> int:
    pids = {p.pid for p in card.processes}
    return sum(a.est_mem_bytes for a in active
               if a.uuid == card.uuid and a.pid not in pids and not a.reported_bytes
               and now - a.started_at < ttl)


def load_score(card: GpuSnapshot, active: list[ActiveRun], others: list[ActiveRun],
               now: float, ttl: float) -> float:
    ours = sum(1 for a in active if a.uuid == card.uuid)
    promised = promised_bytes(card, [*active, *others], now, ttl)
    mem = (card.memory_used + promised) / max(card.memory_total, 1)
    return (card.utilization or 0) / 100.0 + mem + 0.5 * ours


def gpu_env(card: GpuSnapshot) -> dict[str, str]:
    """The child's environment on `card`. PCI bus order makes CUDA's numbering match
    NVML's; the uuid pins the card anyway. The NANOTUI_GPU* variables tell the trainer it
    was placed on a card (engine.model.device.placed_gpu): on a real one it must train
    there or fail, on a simulated one it trains on the CPU and says so."""
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": card.uuid,
           "NANOTUI_GPU_LABEL": f"GPU {card.label} ({card.name})"}
    if card.simulated:
        return env | {"NANOTUI_GPU_SIMULATED": card.uuid}
    env["NANOTUI_GPU"] = card.uuid
    if card.capability:
        env["NANOTUI_GPU_CAPABILITY"] = "%d.%d" % card.capability
    if card.driver_cuda:
        env["NANOTUI_DRIVER_CUDA"] = "%d.%d" % card.driver_cuda
    return env


def cpu_run_limit(max_cpu_runs: int) -> int:
    """CPU runs at a time: max_cpu_runs, but never more than the cores this process may use
    (more runs than cores would time-slice every thread of every run)."""
    return max(1, min(max_cpu_runs, len(affinity_cores())))


def cpu_env(max_cpu_runs: int) -> dict[str, str]:
    """Hide the cards and share the cores between the concurrent CPU runs: each run starts
    with at most its share; from then on it follows the cores other processes leave free
    and the number of our CPU runs alive (engine/train/threads.py)."""
    share = max(1, len(affinity_cores()) // cpu_run_limit(max_cpu_runs))
    return {"CUDA_VISIBLE_DEVICES": "", SHARE_ENV: str(share)}


def _cpu(active: list[ActiveRun], policy: Policy, need: int) -> Placement | None:
    if sum(1 for a in active if a.uuid is None) >= cpu_run_limit(policy.max_cpu_runs):
        return None
    return Placement("cpu", None, cpu_env(policy.max_cpu_runs), need)


def _gpu(card: GpuSnapshot, need: int) -> Placement:
    info = {"index": card.index, "uuid": card.uuid, "name": card.name}
    if card.simulated:
        info["simulated"] = True
    if card.mig is not None:
        info |= {"mig": card.mig, "parent_uuid": card.parent_uuid}
    return Placement("gpu", info, gpu_env(card), need)


def may_pack(card: GpuSnapshot, ours: list[ActiveRun], policy: Policy, now: float,
             history: UtilHistory | None) -> bool:
    """"auto": one more run on a unit already running ours, when every one of them is
    training (a run still starting or compiling loads the card little, so the card would
    look idle) and the unit stayed below pack_util_below at each of the last pack_polls
    polls, all taken pack_settle_s or more after the last of them began training."""
    if len(ours) >= policy.pack_max_runs or history is None:
        return False
    if any(a.warm_at is None for a in ours):
        return False
    samples = history.since(card.uuid, max(a.warm_at for a in ours) + policy.pack_settle_s)
    return (len(samples) >= policy.pack_polls
            and max(samples[-policy.pack_polls:]) < policy.pack_util_below)


def held_exclusively(card: GpuSnapshot, active: list[ActiveRun],
                     others: list[ActiveRun] = ()) -> bool:
    """An exclusive-process unit some process holds, or a run of ours or a reservation is
    about to: a second context there fails, whatever its memory says."""
    return card.exclusive and (bool(card.processes)
                               or any(a.uuid == card.uuid for a in [*active, *others]))


def fits_now(card: GpuSnapshot, need: int, active: list[ActiveRun], policy: Policy,
             now: float, others: list[ActiveRun] = (), history: UtilHistory | None = None
             ) -> bool:
    if held_exclusively(card, active, others):
        return False
    ours = [a for a in active if a.uuid == card.uuid]
    room = card.memory_free - promised_bytes(card, [*active, *others], now,
                                             policy.promise_ttl_s)
    if room < need:
        return False
    if policy.max_runs_per_gpu == "auto":
        return not ours or may_pack(card, ours, policy, now, history)
    return len(ours) < policy.max_runs_per_gpu


def choose(need: int, gpus: list[GpuSnapshot], active: list[ActiveRun], policy: Policy,
           request: str = "auto", now: float = 0.0, others: list[ActiveRun] = (),
           history: UtilHistory | None = None) -> Placement | None:
    """The placement for a run needing `need` bytes; None: wait and ask again later.
    `others`: promises of other dispatchers on this machine (engine.launch.reservations),
    counted as memory, not as our runs. Raises PlacementError when waiting cannot help."""
    request = parse_request(request)
    if request == "cpu":
        return _cpu(active, policy, need)
    if request != "auto":
        card = named_card(gpus, request, "--gpu")
        if card.problem:
            raise PlacementError(card.problem)
        if need > card.memory_total:
            raise PlacementError(f"needs about {need / 2**30:.1f} GiB, more than GPU "
                                 f"{card.label} has ({card.memory_total / 2**30:.1f} GiB)")
        fits = fits_now(card, need, active, policy, now, others, history)
        return _gpu(card, need) if fits else None
    ours = [g for g in gpus if g.ours]
    if not ours:
        return _cpu(active, policy, need)
    if all(g.problem for g in ours):
        # cards are here but torch cannot use any: training on the CPU of a GPU server
        # by surprise is worse than failing with the cause
        raise PlacementError(f"{ours[0].problem}; `--gpu cpu` trains on the CPU instead")
    ours = [g for g in ours if not g.problem]
    allowed = allowed_cards(gpus, policy)
    if not allowed:
        raise PlacementError(f"none of the allowed GPUs {list(policy.gpus)} is ours here "
                             f"(ours: {', '.join(g.label for g in ours)})")
    if all(need > g.memory_total for g in allowed):
        raise PlacementError(f"needs about {need / 2**30:.1f} GiB, more than any allowed "
                             f"GPU has; use a smaller batch_size or model, or --gpu cpu")
    ok = [g for g in allowed if fits_now(g, need, active, policy, now, others, history)]
    if not ok:
        return None
    best = min(ok, key=lambda g: (load_score(g, active, others, now, policy.promise_ttl_s),
                                  g.index, g.mig or 0))
    return _gpu(best, need)


def why_waiting(need: int, gpus: list[GpuSnapshot], active: list[ActiveRun], policy: Policy,
                request: str = "auto", now: float = 0.0, others: list[ActiveRun] = ()) -> str:
    """Why choose() said wait, as the user reads it in `status` and the TUI:
    "waiting: needs 9.1 GiB, GPU 1 has 6.3 GiB free"."""
    request = parse_request(request)
    gib = 2 ** 30
    if request == "cpu" or not any(g.ours for g in gpus):
        return (f"waiting: the CPU runs {policy.max_cpu_runs} of ours already "
                f"(max_cpu_runs = {policy.max_cpu_runs})")
    cards = ([c for c in [find_card(gpus, request)] if c] if request != "auto" else
             allowed_cards(gpus, policy))
    if not cards:
        return "waiting: no allowed GPU"
    if all(held_exclusively(g, active, others) for g in cards):
        return ("waiting: " + (f"GPU {cards[0].label} is" if len(cards) == 1 else
                               "every allowed GPU is") +
                " in exclusive-process mode and held by a process")
    cards = [g for g in cards if not held_exclusively(g, active, others)]
    room = {g.uuid: g.memory_free - promised_bytes(g, [*active, *others], now,
                                                   policy.promise_ttl_s) for g in cards}
    best = max(cards, key=lambda g: room[g.uuid])
    if room[best.uuid] < need:
        return (f"waiting: needs {need / gib:.1f} GiB, GPU {best.label} has "
                f"{max(0, room[best.uuid]) / gib:.1f} GiB free"
                + promised_to_others(best, others, now, policy.promise_ttl_s))
    n = sum(1 for a in active if a.uuid == best.uuid)
    return (f"waiting: GPU {best.label} runs {n} of ours (max_runs_per_gpu = "
            f"{policy.max_runs_per_gpu!r})" if len(cards) == 1 else
            f"waiting: every allowed GPU runs its share of ours (max_runs_per_gpu = "
            f"{policy.max_runs_per_gpu!r})")


def promised_to_others(card: GpuSnapshot, others: list[ActiveRun], now: float,
                       ttl: float) -> str:
    """"; 46.0 GiB of it promised to uid 1234's run (reservation, 8 min old)": the share
    of `card` other dispatchers reserved, which nvidia-smi does not show yet, so a user
    sees who holds the card instead of free memory that never comes."""
    held = [a for a in others if a.uuid == card.uuid and a.est_mem_bytes
            and promised_bytes(card, [a], now, ttl)]
    if not held:
        return ""
    total = sum(a.est_mem_bytes for a in held)
    big = max(held, key=lambda a: a.est_mem_bytes)
    age = max(0, int((now - big.started_at) // 60))
    more = f" and {len(held) - 1} more" if len(held) > 1 else ""
    return (f"; {total / 2 ** 30:.1f} GiB of it promised to {big.holder or 'another run'}"
            f"{more} (reservation, {age} min old)")


def describe_policy(policy: Policy) -> str:
    """One line a user reads before launching (`nanotui plan`)."""
    if policy.max_runs_per_gpu == "auto":
        per = (f"packing (max_runs_per_gpu = \"auto\"): another run joins a card running "
               f"ours while its memory estimate fits and, once those runs are training, "
               f"the card stays under {policy.pack_util_below}% utilization at each of "
               f"the last {policy.pack_polls} polls (at most {policy.pack_max_runs} runs)")
    else:
        n = policy.max_runs_per_gpu
        per = f"at most {n} run{'s' if n != 1 else ''} of ours per card (max_runs_per_gpu)"
    cards = (f"; cards {', '.join(map(str, policy.gpus))} only" if policy.gpus else "")
    cpu = cpu_run_limit(policy.max_cpu_runs)
    capped = f" (max_cpu_runs = {policy.max_cpu_runs}, capped at the cores)" if cpu < policy.max_cpu_runs else ""
    return f"{per}{cards}; CPU: at most {cpu} at a time{capped}"
