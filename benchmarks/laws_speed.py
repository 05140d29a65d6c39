"""How long a report's scaling-law fits take: 60 finished runs, 1,000 bootstrap resamples
per fit (the default), in one run.

    PYTHONPATH=. python benchmarks/laws_speed.py [--runs 60] [--boot 1000] [--repeats 3]

The runs are written to a temporary runs directory through engine.runs: 5 sizes × 3
horizons × 2 seeds × 2 dropouts (60 runs, 30 configurations, losses on a known L(N, D)
with noise), so the report fits L(N, D) and its held-out check (two fits, each with its
bootstrap; `--fit-points all`: every eval a point). Timed: engine.report.study.study_fits over the study (what a report spends on
its laws), median over --repeats; also one whole `write_report --no-plots` for scale.
The machine may be shared: the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.config import TrainConfig
from engine.report.course import build_study
from engine.report.laws import LawOptions
from engine.report.study import study_fits
from engine.report.summary import summarize
from engine.report.write import write_report
from engine.runs import create_run, list_runs

BASE = dict(n_head=2, n_embd=32, block_size=32, batch_size=4, eval_interval=50,
            vocab_size=65, dataset="shakespeare", tokenizer="char", device="cpu")


def make_runs(root: Path, n_runs: int) -> None:
    rng = np.random.default_rng(0)
    shapes = [(nl, it, seed, dr) for nl in (1, 2, 3, 4, 6) for it in (100, 200, 400)
              for seed in (1337, 1338) for dr in (0.0, 0.1)][:n_runs]
    for nl, it, seed, dr in shapes:
        cfg = TrainConfig(**BASE, n_layer=nl, max_iters=it, seed=seed, dropout=dr)
        N, D = 12_400 * nl + 2_000, it * cfg.tokens_per_iter
        loss = (1.0 + 30 * N ** -0.3 + 3 * D ** -0.25 + dr / 10) * math.exp(0.005 * rng.standard_normal())
        run = create_run(root, "bench", f"n_layer={nl},max_iters={it},dropout={dr},seed={seed}",
                         cfg, {"n_layer": nl, "max_iters": it, "dropout": dr})
        for i in (0, it // 2, it):
            v = loss + (0.3 if i == 0 else 0.1 if i < it else 0.0)
            run.log_metric(kind="eval", iter=i, train_loss=v, val_loss=v, t=1.7e9 + i)
        run.update_status(state="done", started_at=1.7e9, ended_at=1.7e9 + 60,
                          best_val_loss=loss, best_iter=it, iter=it)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fit-points", default="final", choices=("final", "all"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        make_runs(root, a.runs)
        runs = list_runs(root)
        study = build_study({"bench": [summarize(r, root) for r in runs]})
        opt = LawOptions(n_boot=a.boot, fit_points=a.fit_points)
        times, cpu = [], []
        for _ in range(a.repeats):
            t, c = time.perf_counter(), time.process_time()
            fits = study_fits(study, opt)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        f = fits[0].fit
        t = time.perf_counter()
        write_report(root, ["bench"], Path(tmp) / "out", plots=False, laws=opt)
        whole = time.perf_counter() - t
    print(f"runs {len(runs)}, law {f.law}, {f.n_points} points ({a.fit_points}), {a.boot} resamples per fit, "
          f"fits per report: {1 + (f.holdout_fit is not None)}")
    print(f"laws of one report: median {statistics.median(times):.2f} s over {a.repeats} "
          f"(all: {', '.join(f'{x:.2f}' for x in times)}); CPU time median "
          f"{statistics.median(cpu):.2f} s")
    print(f"whole report (--no-plots, reading included): {whole:.2f} s")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"alpha {f.params['alpha'].value:.3f} [{f.params['alpha'].ci_low:.3f}, "
          f"{f.params['alpha'].ci_high:.3f}] (truth 0.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
