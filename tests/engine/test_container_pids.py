"""In a container NVML lists host pids, never ours: a run of ours that has allocated its
memory does not show among its card's processes, so its promise would be counted on top
of the memory it holds for the 600 s of a reservation. The trainer reports what torch
holds on its card (status.json gpu_mem_bytes, with its pid); placement and the
machine-wide reservations stop counting the promise of a run that reported."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from engine.launch.dispatcher import Dispatcher
from engine.launch.estimate import estimate
from engine.launch.gpu import FakeGpuSource, GpuProcess, GpuSnapshot, nested_pid_namespace
from engine.launch.placement import reported_gpu_bytes
from engine.launch.queue import queue_runs
from engine.launch.reservations import Board
from engine.model import device as dev
from tests.engine.test_launch import FakeExecutor, data_dir, exp  # noqa: F401 (fixtures)

HOST_PID = 3_999_999   # the trainer as the host's NVML numbers it


def card(used: int, total: int, pids=()) -> GpuSnapshot:
    return GpuSnapshot(0, "GPU-0", "NVIDIA H100 80GB HBM3", used, total, 10,
                       processes=tuple(GpuProcess(p, used) for p in pids))


@pytest.mark.parametrize("reports, second_starts", [(True, True), (False, False)])
def test_a_run_that_reported_its_memory_is_not_counted_twice(tmp_path, exp, reports,
                                                             second_starts):
    root = tmp_path / "runs"
    first, = queue_runs(exp(per_gpu=2), root, ["a/n_layer=1"])
    need = estimate(first.load_config(), "gpu").mem_bytes
    total = int(2.5 * need)
    source = FakeGpuSource([card(0, total)])
    d = Dispatcher(root, exp(per_gpu=2), executor=FakeExecutor(), gpu_source=source,
                   log=lambda m: None)
    assert d.try_lock() and len(d.tick()) == 1
    # it allocated: the card's memory rose, listed under a pid that is not ours
    source.set([card(need, total, pids=[HOST_PID])])
    if reports:
        first.update_status(gpu_mem_bytes=int(0.9 * need), gpu_mem_pid=os.getpid())
    board = Board()
    with board.locked():
        held = board.read()
    assert len(held) == (0 if reports else 1)  # other dispatchers stop counting it too
    second, = queue_runs(exp(per_gpu=2), root, ["a/n_layer=2"])
    started = d.tick()
    d.unlock()
    assert [r.id for r in started] == (["a/n_layer=2"] if second_starts else [])
    if not second_starts:  # 1.5 x need free, less the 1 x need promise still counted
        assert second.read_status()["reason"].startswith("waiting: needs")


def test_a_report_counts_only_for_the_process_that_wrote_it():
    me = os.getpid()
    assert reported_gpu_bytes({"pid": me, "gpu_mem_bytes": 5, "gpu_mem_pid": me}) == 5
    # a resumed run: the figure of its previous process
    assert reported_gpu_bytes({"pid": me, "gpu_mem_bytes": 5, "gpu_mem_pid": me + 1}) == 0
    assert reported_gpu_bytes({"pid": me}) == 0


def test_the_trainer_reports_what_torch_holds_on_cuda_only(monkeypatch):
    from engine.train.session import TrainingRun
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 7 * 2 ** 30)
    fake = SimpleNamespace(device=torch.device("cuda", 0))
    assert dev.reserved_memory_bytes(fake.device) == 7 * 2 ** 30
    assert TrainingRun.gpu_memory_status(fake) == {"gpu_mem_bytes": 7 * 2 ** 30,
                                                    "gpu_mem_pid": os.getpid()}
    assert TrainingRun.gpu_memory_status(SimpleNamespace(device=torch.device("cpu"))) == {}


@pytest.mark.parametrize("text, nested", [
    ("Name:\tpython\nNSpid:\t4242\n", False),          # the host's namespace
    ("Name:\tpython\nNSpid:\t918273\t17\n", True),     # a container's: host pid, ours
    ("Name:\tpython\n", False),                        # a kernel without NSpid
])
def test_a_nested_pid_namespace_is_recognised(text, nested):
    assert nested_pid_namespace(text) is nested
