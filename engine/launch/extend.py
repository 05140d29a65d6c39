"""`resume --extend`: queue a finished run again to train on from its checkpoint to a
higher max_iters, with the schedule of engine.train.extension recorded in its config."""

from __future__ import annotations

import time
from pathlib import Path

from engine.experiments import load_experiments
from engine.launch.placement import parse_request
from engine.launch.queue import queue_lock
from engine.runs import FINAL_STATES, RunDir, RunError
from engine.train.extension import (Extension, extension_record, extensions_from_table,
                                    plan_extension)


def extend_run(run: RunDir, max_iters: int, gpu: str | None = None) -> Extension:
    """Raise a done (or stopped, failed) run's max_iters to `max_iters` and queue it to
    continue from its checkpoint; returns the extension (its schedule). The saved config
    is kept otherwise. `gpu` as `--gpu` (None: keep the run's request)."""
    runs_root = run.path.resolve().parent.parent
    with queue_lock(runs_root):
        st = run.read_status()
        state = st.get("state")
        if state not in FINAL_STATES:
            raise RunError(f"cannot extend {run.id}: it is {state} (extend a finished run)")
        if not run.ckpt_path.is_file():
            raise RunError(f"cannot extend {run.id}: it has no checkpoint ({run.ckpt_path.name}) "
                           f"to continue from")
        cfg = run.load_config()
        ext = plan_extension(cfg, extensions_from_table(run.run_table()), max_iters)
        run.record_extension(cfg.replace(max_iters=max_iters), extension_record(ext))
        extra = {} if gpu is None else {"gpu_request": parse_request(gpu)}
        run.update_status(state="queued", resume=True, reason=None, exit_code=None,
                          ended_at=None, queued_at=time.time(), max_iters=max_iters,
                          extended=extension_record(ext), **extra)
        return ext


def target_max_iters(experiments_path: str | Path | None, run: RunDir) -> int | None:
    """The max_iters the experiments file gives `run` now (None: no file, or it does not
    name the run): the horizon `resume --extend` trains it on to."""
    if not experiments_path or not Path(experiments_path).exists():
        return None
    spec = {s.id: s for s in load_experiments(experiments_path).all_runs()}.get(run.id)
    return spec.cfg.max_iters if spec is not None and spec.cfg is not None else None
