"""The fair-share policy's cost per placement: SharedPlacer.place (lock, reservations,
leases, policy, a reservation and a lease written, then abandoned) with 0 and 100 live
leases, with and without a policy.toml. Run from the repository root:

    PYTHONPATH=. python benchmarks/share_place.py [--leases 0 100] [--n 50]

`--leases 0` runs on a checkout without leases too (only the reservation is written
there): the baseline for the "0 leases, policy no" line."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leases", type=int, nargs="+", default=[0, 100])
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    os.environ["NANOTUI_CACHE_DIR"] = tempfile.mkdtemp()
    from engine.launch.gpu import GIB, GpuSnapshot
    from engine.launch.placement import Policy
    from engine.launch.reservations import Board, SharedPlacer
    from engine.runs import process_start_time
    cards = [GpuSnapshot(i, f"GPU-{i}", "NVIDIA L40S", 0, 48 * GIB, 0) for i in range(8)]
    me = (os.getpid(), process_start_time(os.getpid()))
    for n_leases in args.leases:
        d = Path(tempfile.mkdtemp())
        os.chmod(d, 0o1777)
        if n_leases:
            from engine.leases import LeaseBoard
            board = LeaseBoard(d)
        for i in range(n_leases):  # live leases: this process holds them all
            board.started(board.add(f"GPU-{i % 8}", d / "runs", f"s/{i}", time.time()), *me)
        for policy in (False, True):
            if policy:
                (d / "policy.toml").write_text("max_gpus_per_user = 8\nmax_runs_per_user = 1000\n")
            placer = SharedPlacer(d / "runs", Board(d), log=lambda m: None)
            t = time.perf_counter()
            for _ in range(args.n):
                _, ticket = placer.place("r", GIB, cards, [], Policy(max_runs_per_gpu=99),
                                         "auto", time.time())
                placer.abandon(ticket)
            ms = (time.perf_counter() - t) / args.n * 1000
            print(f"{n_leases:4d} leases, policy {'yes' if policy else 'no '}: "
                  f"{ms:5.1f} ms per place()")


if __name__ == "__main__":
    main()
