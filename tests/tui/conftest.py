"""Fixture run directories (written through engine.runs) and fake engine services for
the TUI tests. Everything is deterministic: fixed times, fixed losses, fixed GPU loads."""

from __future__ import annotations

import math
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine.config import TrainConfig
from engine.launch.drift import move_aside
from engine.launch.gpu import FakeGpuSource, GpuProcess, GpuSnapshot
from engine.launch.queue import PlanRow, QueueResult
from engine.runs import RunDir, create_run, find_run
from tui.app import create_app
from tui.services import Services, SweepInfo

T0 = 1_700_000_000.0
GIB = 1024 ** 3
PROMPTS = ("Once upon a time", "The little dog")


def tiny_cfg(**over: Any) -> TrainConfig:
    base = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4, max_iters=1000,
                eval_interval=100, dataset="shakespeare")
    base.update(over)
    return TrainConfig(**base)


def loss_at(i: int, scale: float) -> float:
    return 1.2 + scale * math.exp(-i / 250)


def write_history(run: RunDir, upto: int, scale: float, tokens_per_iter: int = 128) -> None:
    """Train records every 10 iters, evals and samples every 100, up to `upto`."""
    for i in range(0, upto + 1, 10):
        run.log_metric(kind="train", iter=i, loss=round(loss_at(i, scale) + 0.05, 4), lr=1e-3,
                       dt_ms=50.0, tok_s=2560.0, mfu=0.01, t=T0 + i, tokens=i * tokens_per_iter)
        if i % 100 == 0 and i:
            run.log_metric(kind="eval", iter=i, train_loss=round(loss_at(i, scale), 4),
                           val_loss=round(loss_at(i, scale) + 0.1, 4), t=T0 + i,
                           tokens=i * tokens_per_iter)
            for p in PROMPTS:
                words = f"{p} there was a model at step {i} that said hello hello".split()
                run.log_sample(iter=i, prompt=p, temperature=0.8, top_k=200, top_p=None, seed=1337,
                               text=f"{p} there was a model at step {i} that said hello hello",
                               metrics={"ttr": round(len(set(words)) / len(words), 3),
                                        "mattr": 0.8, "distinct_1": 0.7, "distinct_2": 0.9,
                                        "distinct_3": 0.95, "repetition_4": 0.0,
                                        "words": len(words)})
    (run.stdout_path).write_text("".join(f"iter {i}: loss {loss_at(i, scale):.4f}\n"
                                         for i in range(0, upto + 1, 50)))


def build_runs(root: Path, pid: int | None = None) -> dict[str, RunDir]:
    """Two sweeps with every state: done, running (this test process, or `pid`: alive,
    so not 'lost'), queued, failed, stopped."""
    me = pid or os.getpid()
    started = psutil.Process(me).create_time()
    host = socket.gethostname()
    runs: dict[str, RunDir] = {}

    def make(sweep: str, name: str, cfg: TrainConfig, varied: dict, upto: int, scale: float,
             **status: Any) -> None:
        run = create_run(root, sweep, name, cfg, varied)
        if upto:
            write_history(run, upto, scale)
        last = {"iter": upto, "train_loss": round(loss_at(upto, scale) + 0.05, 4)} if upto else {}
        if upto >= 100:
            ev = upto - upto % 100
            last.update(val_loss=round(loss_at(ev, scale) + 0.1, 4),
                        best_val_loss=round(loss_at(ev, scale) + 0.1, 4), best_iter=ev)
        run.update_status(created_at=T0, **last, **status)
        runs[run.id] = run

    common = dict(host=host, device="cpu", tok_s=2560.0)
    make("depth", "n_layer=1", tiny_cfg(n_layer=1), {"n_layer": 1}, 1000, 3.0, state="done",
         params=13_000, started_at=T0, ended_at=T0 + 1000, exit_code=0, **common)
    make("depth", "n_layer=2", tiny_cfg(n_layer=2), {"n_layer": 2}, 430, 2.8, state="running",
         params=25_600, pid=me, pid_create_time=started, started_at=T0, eta_s=754.0,
         **{**common, "device": "cuda:0"}, gpu={"index": 0, "uuid": "GPU-aaaa", "name": "RTX 6000 Ada"})
    make("depth", "n_layer=4", tiny_cfg(n_layer=4), {"n_layer": 4}, 0, 2.5, state="queued")
    make("width", "n_embd=32", tiny_cfg(n_embd=32), {"n_embd": 32}, 250, 3.1, state="failed",
         reason="CUDA out of memory", params=25_600, exit_code=1, **common)
    make("width", "n_embd=64", tiny_cfg(n_embd=64, n_head=2), {"n_embd": 64}, 600, 2.6,
         state="stopped", params=101_000, exit_code=0, **common)
    return runs


def fake_gpus() -> list[GpuSnapshot]:
    return [
        GpuSnapshot(0, "GPU-aaaa", "NVIDIA RTX 6000 Ada Generation", memory_used=18 * GIB,
                    memory_total=48 * GIB, utilization=41, temperature=63, power_w=210.0,
                    processes=(GpuProcess(os.getpid(), 2 * GIB), GpuProcess(999_999, 16 * GIB))),
        GpuSnapshot(1, "GPU-bbbb", "NVIDIA RTX PRO 6000 Blackwell", memory_used=94 * GIB,
                    memory_total=96 * GIB, utilization=88, temperature=71, power_w=450.0,
                    processes=(GpuProcess(888_888, 94 * GIB),)),
    ]


def _state(run: RunDir) -> str | None:
    """What the real plan (engine.launch.queue.plan_runs) says of an existing run."""
    return run.read_status().get("state") if run.exists() else None


@dataclass
class FakeLauncher:
    """Records what the UI asked for; queue/stop/resume change the run dirs like the
    real launcher would (so the next poll shows the effect)."""

    root: Path
    calls: list = field(default_factory=list)
    drifted: dict = field(default_factory=dict)   # run id -> ["key: old → new", ...]
    extend_targets: dict = field(default_factory=dict)  # run id -> the file's max_iters
    shared: dict = field(default_factory=dict)   # run id -> the id of the run it is
    sweep_runs: dict = field(default_factory=lambda: {
        "depth": ["n_layer=1", "n_layer=2", "n_layer=4"], "width": ["n_embd=32", "n_embd=64"],
        "quick": ["n_layer=1", "n_layer=2"]})

    def sweeps(self) -> list[SweepInfo]:
        return [SweepInfo(s, f"{s} sweep", tuple(f"{s}/{n}" for n in names))
                for s, names in self.sweep_runs.items()]

    def plan(self, selection: list[str]) -> list[PlanRow]:
        self.calls.append(("plan", list(selection)))
        rows = []
        for ref in selection:
            names = self.sweep_runs.get(ref, [])
            for i, n in enumerate(names):
                rows.append(PlanRow(f"{ref}/{n}", ref, n, {n.split("=")[0]: n.split("=")[1]},
                                    params=10_000 * (i + 1), params_total=12_000 * (i + 1),
                                    est_mem_bytes=(i + 1) * GIB, est_seconds=60.0 * (i + 1),
                                    drift=list(self.drifted.get(f"{ref}/{n}", [])),
                                    same_as=self.shared.get(f"{ref}/{n}"),
                                    state=_state(RunDir(self.root / ref / n))))
        return rows

    def queue(self, selection: list[str], gpu: str = "auto", fresh: bool = False,
              log=None) -> QueueResult:
        """New runs are created queued; an existing run listed in `drifted` (run id ->
        changes) is reported as drift, or with fresh=True moved aside and created anew."""
        self.calls.append(("queue-fresh" if fresh else "queue", list(selection)))
        res = QueueResult()
        for ref in selection:
            sweep, _, one = ref.partition("/")
            for n in ([one] if one else self.sweep_runs[sweep]):
                run = RunDir(self.root / sweep / n)
                if run.exists() and f"{sweep}/{n}" in self.drifted:
                    if not fresh:
                        res.drift.append((run, self.drifted[f"{sweep}/{n}"]))
                        continue
                    res.fresh.append((run, move_aside(run, self.root)))
                elif run.exists():
                    res.waiting.append(run)
                    continue
                res.queued.append(create_run(self.root, sweep, n, tiny_cfg(), {}))
        return res

    def start_dispatcher(self, gpu: str) -> None:
        self.calls.append(("dispatch", gpu))

    def stop(self, run: RunDir) -> None:
        self.calls.append(("stop", run.id))
        run.update_status(state="stopped", reason="stopped by user", pid=None)

    def resume(self, run: RunDir) -> None:
        self.calls.append(("resume", run.id))
        run.update_status(state="queued", reason=None)

    def extend_target(self, run: RunDir) -> tuple[int, int | None]:
        return run.load_config().max_iters, self.extend_targets.get(run.id)

    def extend(self, run: RunDir, max_iters: int) -> str:
        self.calls.append(("extend", run.id, max_iters))
        run.update_status(state="queued", reason=None, max_iters=max_iters)
        return f"extended to {max_iters}"


class FakeSampler:
    """Generates a fixed text; `gate` (when set) holds the worker until released, so a test
    can check the UI stays responsive while a sample is being made."""

    def __init__(self) -> None:
        self.calls: list = []
        self.seeds: list = []
        self.gate: threading.Event | None = None

    def temperature_study(self, run, temperatures):
        self.calls.append(("study", run.id, list(temperatures)))
        run.log_temperature_sample(iter=1, temperature=temperatures[0], text="a story")
        return [{"temperature": t} for t in temperatures]

    def generate(self, run, prompt, temperature, top_k, max_new_tokens=200, seed=1337):
        self.calls.append((run.id, prompt, temperature, top_k, max_new_tokens))
        self.seeds.append(seed)
        if self.gate is not None:
            self.gate.wait(10)
        return {"iter": 430, "prompt": prompt, "temperature": temperature, "top_k": top_k,
                "seed": seed, "text": f"{prompt} a freshly generated story", "metrics": {
                    "ttr": 1.0, "mattr": 1.0, "distinct_1": 1.0, "distinct_2": 1.0,
                    "distinct_3": 1.0, "repetition_4": 0.0, "words": 7}}


class FakeReporter:
    def __init__(self) -> None:
        self.calls: list = []

    def write_course(self, sweeps, out_dir):
        self.calls.append(("course", list(sweeps), Path(out_dir)))
        d = Path(out_dir) / "_course" / "+".join(sweeps)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("report.md", "report.html"):
            (d / name).write_text("# course\n")
        return [d / "report.md", d / "report.html"]

    def write(self, sweeps, out_dir):
        self.calls.append((list(sweeps), Path(out_dir)))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(out_dir) / sweeps[0] / "report.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# report\n")
        return path


@dataclass
class World:
    root: Path
    runs: dict
    launcher: FakeLauncher
    sampler: FakeSampler
    reporter: FakeReporter
    gpus: FakeGpuSource

    def app(self, **kw):
        services = Services(self.root, self.root.parent / "experiments.toml", self.gpus,
                            self.launcher, self.sampler, self.reporter)
        kw.setdefault("poll_interval", 0)   # tests poll explicitly: deterministic
        kw.setdefault("gpu_interval", 0)
        return create_app(services=services, **kw)

    def run(self, ref: str) -> RunDir:
        return find_run(self.root, ref)


@pytest.fixture
def world(tmp_path: Path) -> World:
    root = tmp_path / "runs"
    runs = build_runs(root)
    return World(root, runs, FakeLauncher(root), FakeSampler(), FakeReporter(),
                 FakeGpuSource(fake_gpus()))


async def settle(pilot) -> None:
    """Poll the run directories now and let the UI process the result."""
    app = pilot.app
    await pilot.pause()
    app.request_poll()
    await app.workers.wait_for_complete()
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


def toasts(app) -> list[str]:
    """The notifications on screen, as the user reads them (run_test(notifications=True))."""
    from textual.widgets._toast import Toast  # textual exports no public name for it
    return [str(t.render()) for t in app.screen.query(Toast)]


def asynctest(fn):
    """Run an async test body with asyncio.run (no pytest-asyncio needed)."""
    import asyncio
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper
