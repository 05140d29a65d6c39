"""One reading of a run: what every view (dashboard, compare, `nanotui status`, report)
shows of it, so that they agree.

    state      status.json merged with its executor's view (a Slurm job still PENDING is
               "queued", whatever the launcher wrote; a dead local process is "failed/lost")
    losses     the latest train and val loss and the best val loss (with its iteration), as
               the training process recorded them in status.json
    tok_s      the training process's figure: tokens per step / the median seconds per step
               over its recent steps, warm-up and evals left out (engine.train.process)
    eta_s      only while running
    params     the trained model's count (nanoGPT's convention), from status.json
    stalled_s  a running run whose process has written nothing for far longer than its own
               step and eval times (engine.report.liveness) is "stalled": seconds silent
    damaged    what is wrong with the run's files, "file: why" each (RunDir.damage): a
               config.toml gone, a line of metrics/samples of the wrong shape (skipped)

The reading costs one status.json read and no subprocess: the Slurm view is the one the
dispatcher's last refresh recorded (engine.launch.slurm.state.merge_status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.launch.placement import others_bytes, reported_gpu_bytes
from engine.launch.slurm.state import describe, merge_status
from engine.report.liveness import stall
from engine.runs import RunDir


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
        return None
    return float(x)


def _int(x: Any) -> int | None:
    n = _num(x)
    return int(n) if n is not None else None


@dataclass(frozen=True)
class RunReading:
    run: RunDir
    state: str
    reason: str = ""
    device: str = ""
    iter: int | None = None
    max_iters: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    best_iter: int | None = None
    params: int | None = None
    params_total: int | None = None
    tok_s: float | None = None
    cpu_threads: int | None = None  # a running CPU run's threads now (engine/train/threads.py)
    eta_s: float | None = None
    gpu_index: int | None = None
    gpu_uuid: str = ""
    pid: int | None = None
    gpu_mem_bytes: int = 0    # what a running run's trainer says it holds on its GPU
    host: str = ""
    job: str = ""             # the scheduler's job: "slurm 123_1 PENDING"; "" for a local run
    damaged: tuple[str, ...] = ()
    stalled_s: float | None = None
    imported_from: str = ""   # the nanoGPT out_dir of a run brought in by `nanotui import`

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def sweep(self) -> str:
        return self.run.sweep

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def finished(self) -> bool:
        """Done, with a val loss: the runs that compare screens and fits may use."""
        return self.state == "done" and self.best_val_loss is not None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "run"}
        return {"id": self.id, "sweep": self.sweep, "name": self.name, **d}


def read_run(run: RunDir, status: dict[str, Any] | None = None,
             damage: tuple[str, ...] | None = None) -> RunReading:
    """The run as every view shows it; `status` is a status.json already read, `damage`
    what RunDir.damage found (computed here, reading metrics and samples, when None)."""
    st = merge_status(run.read_status() if status is None else status)
    return reading_from_status(run, st, run.damage() if damage is None else damage)


def reading_from_status(run: RunDir, st: dict[str, Any],
                        damage: tuple[str, ...] = ()) -> RunReading:
    """A reading of an already merged status dict."""
    gpu = st.get("gpu") if isinstance(st.get("gpu"), dict) else {}
    state = str(st.get("state") or "queued")
    device = str(st.get("device") or "")
    if not device and _int(gpu.get("index")) is not None:
        device = f"cuda:{_int(gpu.get('index'))}"
    if gpu.get("simulated") and _int(gpu.get("index")) is not None:
        # a fake card (NANOTUI_FAKE_GPUS): placed there, trained on the CPU
        device = f"cpu (sim gpu{_int(gpu.get('index'))})"
    running = state == "running"
    reason = str(st.get("reason") or "")
    stalled = stall(run, st) if running else None
    if stalled is not None:
        state, reason = "stalled", stalled[1]
    return RunReading(
        run=run, state=state, reason=reason, device=device,
        iter=_int(st.get("iter")), max_iters=_int(st.get("max_iters")),
        train_loss=_num(st.get("train_loss")), val_loss=_num(st.get("val_loss")),
        best_val_loss=_num(st.get("best_val_loss")), best_iter=_int(st.get("best_iter")),
        params=_int(st.get("params")), params_total=_int(st.get("params_total")),
        tok_s=_num(st.get("tok_s")),
        cpu_threads=_int(st.get("cpu_threads")) if running else None,
        eta_s=_num(st.get("eta_s")) if running and stalled is None else None,
        gpu_index=_int(gpu.get("index")), gpu_uuid=str(gpu.get("uuid") or ""),
        pid=_int(st.get("pid")) if running else None, host=str(st.get("host") or ""),
        gpu_mem_bytes=reported_gpu_bytes(st) if running else 0,
        job=describe(st), damaged=tuple(damage), stalled_s=stalled[0] if stalled else None,
        imported_from=str(st["imported"].get("source") or "?")
        if isinstance(st.get("imported"), dict) else "")


def runs_on_gpu(g: Any, views: list[RunReading]) -> list[RunReading]:
    """Our running runs on unit `g` (a GpuSnapshot): by the unit they were placed on, or
    by pid among its processes."""
    pids = {p.pid for p in g.processes}
    return [v for v in views if v.state == "running" and (
        (v.gpu_uuid and v.gpu_uuid == g.uuid) or
        (not v.gpu_uuid and v.gpu_index == g.index and v.device.startswith("cuda")) or
        (v.pid is not None and v.pid in pids))]


def others_on_gpu(g: Any, views: list[RunReading]) -> int:
    """Memory on unit `g` held by processes that are not our runs (other users, other
    jobs): engine.launch.placement.others_bytes with what our runs there reported."""
    return others_bytes(g, [(v.pid, v.gpu_mem_bytes) for v in runs_on_gpu(g, views)])
