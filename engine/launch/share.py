"""Fair share between users: what the policy (engine.launch.policy) lets this user put on
the GPUs now, counted from everyone's leases (engine.leases), and who goes first
when several users wait (engine.ledger, engine.launch.waits).

A run of user U may go on a unit when
  - U's live leases number fewer than max_runs_per_user,
  - the unit already holds a run of U, or U's runs hold fewer than max_gpus_per_user units,
  - the unit is not empty, or more than keep_free_gpus units of ours are empty (an empty
    unit: no lease of anyone's, no promise, no process in NVML), and
  - no other user waits for a card (a live, contending wait ticket) with fewer GPU-hours
    in the last usage_window_hours (ties: who waits longer) whose run may go on this
    unit and fits its total memory. The unit is left for them even when their run does
    not fit yet (running runs must end first): letting a small run of ours in would push
    their start back again. We leave units to one user for at most YIELD_GRACE_S in any
    YIELD_WINDOW_S, so a run that cannot start here for other reasons (memory held
    outside nanotui), or a forged ticket, does not hold everyone else back for longer.
Everything else is placement's (engine.launch.placement): memory, max_runs_per_gpu.
The checks run under the reservations lock, with everyone's leases read there, so two
dispatchers never both take a user's last share.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.files import read_regular_stat
from engine import ledger
from engine.launch.gpu import GpuSnapshot
from engine.leases import Lease, LeaseBoard, settle
from engine.launch.executor import Placement
from engine.launch.placement import (ActiveRun, PlacementError, Policy, UtilHistory, choose,
                                     find_card)
from engine.launch.policy import Caps, PolicyState, PolicyWatch, SharePolicy, user_name
from engine.launch.waits import MyTicket, Ticket, read_tickets
from engine.runs import RunDir

YIELD_GRACE_S = 300.0
YIELD_WINDOW_S = 3600.0
MAX_STATUS_BYTES = 1 << 20
SRC = "policy.toml"


@dataclass(frozen=True)
class Gate:
    """What the share allows now: the units (None: any), and why not when it blocks."""

    allowed: frozenset[str] | None
    reason: str
    contending: bool   # waiting here would be for a free card, not for our own share


def gpus_word(n: int) -> str:
    return f"{n} GPU{'s' * (n != 1)}"


def empty_units(gpus: list[GpuSnapshot], leases: list[Lease], active: list[ActiveRun],
                others: list[ActiveRun]) -> list[GpuSnapshot]:
    held = ({le.uuid for le in leases} | {a.uuid for a in active if a.uuid}
            | {a.uuid for a in others if a.uuid})
    return [g for g in gpus if g.ours and not g.problem and not g.processes
            and g.uuid not in held]


def gate(caps: Caps, uid: int, gpus: list[GpuSnapshot], leases: list[Lease],
         active: list[ActiveRun], others: list[ActiveRun]) -> Gate:
    """The share's verdict for one more GPU run of `uid` (pure: tests feed it values)."""
    mine = [le for le in leases if le.uid == uid]
    if caps.max_runs_per_user is not None and len(mine) >= caps.max_runs_per_user:
        n = caps.max_runs_per_user
        return Gate(frozenset(), f"waiting: your share is {n} GPU run{'s' * (n != 1)} "
                                 f"at once, all running (max_runs_per_user, {SRC})", False)
    units = [g for g in gpus if g.ours and not g.problem]
    my_units = {le.uuid for le in mine}
    capped = (caps.max_gpus_per_user is not None
              and len(my_units) >= caps.max_gpus_per_user)
    allowed = {g.uuid for g in units if g.uuid in my_units} if capped else {
        g.uuid for g in units}
    empty = {g.uuid for g in empty_units(gpus, leases, active, others)}
    if caps.keep_free_gpus and len(empty) - 1 < caps.keep_free_gpus:
        allowed -= empty
    if capped:
        labels = ", ".join(g.label for g in units if g.uuid in my_units) or "none here"
        why = (f"waiting: your share is {gpus_word(caps.max_gpus_per_user)} ({SRC}); "
               f"yours: GPU {labels}")
    else:
        why = (f"waiting: keep_free_gpus = {caps.keep_free_gpus} leaves "
               f"{gpus_word(len(empty))} empty for others ({SRC})")
    return Gate(frozenset(allowed), why, not capped)


def first_in_line(uid: int, usage: dict[int, float], my_since: float, unit: GpuSnapshot,
                  tickets: list[Ticket], window_h: float, now: float,
                  yielded: dict[int, float]) -> str | None:
    """The reason to leave `unit` to another waiting user, or None to take it. `yielded`:
    when we first left a unit to each user in the current YIELD_WINDOW_S (kept by the
    caller across polls)."""
    mine = usage.get(uid, 0.0)
    for t in sorted(tickets, key=lambda t: (usage.get(t.uid, 0.0), t.since)):
        if (t.uid == uid or not t.contending or t.need > unit.memory_total
                or (t.units and unit.uuid not in t.units)):
            continue
        theirs = usage.get(t.uid, 0.0)
        if (theirs, t.since) >= (mine, my_since):
            continue
        if now - yielded.get(t.uid, now) > YIELD_WINDOW_S:
            del yielded[t.uid]
        if now - yielded.setdefault(t.uid, now) > YIELD_GRACE_S:
            continue  # they have not taken it: their run needs something else
        return (f"waiting: {user_name(t.uid)} goes first, with less GPU time in the last "
                f"{window_h:g} h ({theirs / 3600:.1f} h against your {mine / 3600:.1f} h; "
                f"{SRC})")
    return None


def ended_at(lease: Lease, now: float) -> float | None:
    """When a dead lease's run ended, within [created_at, now]: its status.json's ended_at,
    else when that file was last written (a killed trainer writes no ended_at); None when
    neither can be read (a deleted or private runs directory): never guessed as "now",
    which would charge a run that ended days ago with a whole window of GPU time."""
    # the file as written, not RunDir.read_status: that marks a dead trainer's run lost
    # with ended_at = now
    path = RunDir(Path(lease.runs_root) / lease.run_id).status_path
    try:
        raw, st = read_regular_stat(path, MAX_STATUS_BYTES)
        end = json.loads(raw).get("ended_at")
        if not isinstance(end, (int, float)) or isinstance(end, bool):
            end = st.st_mtime
    except (OSError, ValueError, AttributeError):
        return None
    return min(max(float(end), lease.created_at), now)


def usage_now(directory: Path, live: list[Lease], window_s: float, now: float,
              dead: list[Lease] = ()) -> dict[int, float]:
    """GPU-seconds per uid in the window: the ledger, the runs alive now, and runs ended
    whose owners' dispatchers have not written them to their ledgers yet."""
    use = ledger.usage_seconds(directory, window_s, now)
    spans = [(le, now) for le in live] + [(le, ended_at(le, now)) for le in dead]
    for le, end in spans:
        if end is not None and end > now - window_s:
            use[le.uid] = use.get(le.uid, 0.0) + end - max(le.created_at, now - window_s)
    return use


class ShareKeeper:
    """A dispatcher's side of the fair share: the policy it goes by, its leases, its wait
    ticket. SharedPlacer calls it under the reservations lock."""

    def __init__(self, directory: Path, log: Callable[[str], None] = print,
                 watch: PolicyWatch | None = None):
        self.directory = Path(directory)
        self.watch = watch or PolicyWatch(self.directory)
        self.leases = LeaseBoard(self.directory)
        self.ticket = MyTicket(self.directory)
        self.log = log
        self._said: str | None = None
        self._yielded: dict[int, float] = {}
        self._need: int | None = None  # this tick: a run waits for a free card only
        self._units: tuple[str, ...] = ()
        self.dead: list[Lease] = []      # other users' ended runs not in their ledgers yet

    def state(self, now: float | None = None) -> PolicyState:
        """The policy state now; each change is said once in the dispatcher's log."""
        st = self.watch.current()
        line = st.line()
        if line is None and st.policy is not None:
            line = (f"policy: {self.watch.path} in force; yours: "
                    f"{st.policy.describe(os.getuid(), now or time.time())}")
        if line != self._said:
            if line:
                self.log(line)
            elif self._said:
                self.log("policy: none in force (no fair-share limits)")
            self._said = line
        return st

    def live(self, now: float) -> list[Lease]:
        """Everyone's live leases; our dead ones (trainers that could not settle their own:
        SIGKILL) are written to our ledger and removed."""
        live, dead = self.leases.read(now)
        self.dead = [le for le in dead if le.uid != os.getuid()]
        for le in dead:
            if le.uid != os.getuid():
                continue  # its owner's dispatcher writes it to their ledger
            try:
                settle(le, ended_at(le, now))
            except OSError as e:
                self.log(f"usage ledger not written: {e}")
        return live

    def check(self, policy: SharePolicy, gpus: list[GpuSnapshot], active: list[ActiveRun],
              others: list[ActiveRun], leases: list[Lease], now: float) -> Gate:
        return gate(policy.caps_for(os.getuid(), now), os.getuid(), gpus, leases, active,
                    others)

    def yield_reason(self, policy: SharePolicy, unit: GpuSnapshot, leases: list[Lease],
                     now: float) -> str | None:
        tickets = read_tickets(self.directory, now)
        if not any(t.uid != os.getuid() and t.contending for t in tickets):
            return None
        window = policy.usage_window_hours * 3600
        usage = usage_now(self.directory, leases, window, now, self.dead)
        since = (self.ticket._doc or {}).get("since", now)
        return first_in_line(os.getuid(), usage, since, unit, tickets,
                             policy.usage_window_hours, now, self._yielded)

    def apply(self, placement: Placement | None, need: int, gpus: list[GpuSnapshot],
              active: list[ActiveRun], others: list[ActiveRun], policy: Policy,
              request: str, now: float, history: UtilHistory | None
              ) -> tuple[Placement | None, str | None]:
        """`placement` (placement.choose's) as the fair-share policy allows it, and the
        waiting reason when the policy is why it waits (None: placement's own reason).
        Called under the reservations lock."""
        leases = self.live(now)  # also reaps our ended runs into the usage ledger
        state = self.state(now)
        if state.blocked:  # a typo never lifts the caps: nothing goes on a GPU
            return None, (f"waiting: {state.problem} (no earlier good policy known: GPUs "
                          f"wait until it is fixed)")
        if state.policy is None:
            return placement, None
        verdict = self.check(state.policy, gpus, active, others, leases, now)
        outside = False  # the placement's unit was outside our share
        if placement is not None and placement.gpu is not None \
                and placement.gpu["uuid"] not in verdict.allowed:
            # the best unit is outside our share: the best one inside it, if any fits
            inside = [g for g in gpus if g.uuid in verdict.allowed]
            placement, outside = None, True
            if inside and request == "auto":
                try:
                    placement = choose(need, inside, active, policy, request, now,
                                       others=others, history=history)
                except PlacementError:
                    placement = None
        # the cards our run may go on (for the others' fair order)
        units = ([c.uuid for c in [find_card(gpus, request)] if c] if request != "auto" else
                 [g.uuid for g in gpus if g.ours and not g.problem and (not policy.gpus or any(
                     find_card([g], ref) is not None for ref in policy.gpus))])
        if placement is None:
            if verdict.contending:
                self.contend(need, units)
            if outside or not verdict.contending or not verdict.allowed:
                return None, verdict.reason
            return None, None
        if placement.gpu is None:
            return placement, None
        unit = next(g for g in gpus if g.uuid == placement.gpu["uuid"])
        why = self.yield_reason(state.policy, unit, leases, now)
        if why:
            self.contend(need, units)
            return None, why
        return placement, None

    def contend(self, need: int, units: list[str]) -> None:
        """A run of ours waits for a free card only (not for our own share)."""
        if self._need is None or need < self._need:
            self._need, self._units = need, tuple(units)

    def after_tick(self, queued: int, running: int, now: float) -> None:
        self.ticket.update(queued, running, self._need is not None, self._need or 0, now,
                           self._units)
        self._need, self._units = None, ()

    def close(self) -> None:
        self.ticket.remove()
