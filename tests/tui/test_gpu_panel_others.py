"""In a container NVML lists host pids, never ours: the GPU panel and `nanotui gpus` take
what our runs reported holding (status.json gpu_mem_bytes) out of the "others" figure, as
placement does, instead of counting our own runs as other users' memory."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from engine.launch.gpu import GIB, GpuProcess
from tests.tui.conftest import asynctest, fake_gpus, settle
from tui.cli import main
from tui.widgets.gpu_panel import GpuPanel

HOST_PID = 3_999_999  # our run's trainer as the host's NVML numbers it
RUN = "depth/n_layer=2"  # running on GPU-aaaa as this test process (tests/tui/conftest.py)


def container_cards():
    """Card 0 holds our run (2 GiB reported by torch; NVML adds the CUDA context) under a
    host pid, and another user's 16 GiB."""
    ada, blackwell = fake_gpus()
    ada = replace(ada, processes=(GpuProcess(HOST_PID, int(2.4 * GIB)),
                                  GpuProcess(999_999, 16 * GIB)))
    return [ada, blackwell]


def report(world, held: int) -> None:
    world.run(RUN).update_status(gpu_mem_bytes=held, gpu_mem_pid=os.getpid())


def card_line(lines: list[str], head: str) -> str:
    i = next(i for i, ln in enumerate(lines) if ln.startswith(head))
    return lines[i + 2]


@asynctest
async def test_the_panel_does_not_count_our_reported_run_as_others(world):
    world.gpus.set(container_cards())
    report(world, 2 * GIB)
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        lines = str(app.screen.query_one(GpuPanel).render()).splitlines()
        assert card_line(lines, "0 RTX 6000 Ada").split() == [
            "runs:", RUN, "others:", "16.0G"]


@asynctest
async def test_without_a_report_the_panel_still_counts_the_unknown_process(world):
    world.gpus.set(container_cards())
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        lines = str(app.screen.query_one(GpuPanel).render()).splitlines()
        assert card_line(lines, "0 RTX 6000 Ada").split()[-1] == "18.4G"


@pytest.mark.parametrize("held, others", [(2 * GIB, 16 * GIB), (None, int(18.4 * GIB))])
def test_gpus_shows_our_runs_and_others_memory_per_card(world, tmp_path, monkeypatch,
                                                        capsys, held, others):
    cards = tmp_path / "cards.json"
    cards.write_text(json.dumps({"gpus": [g.to_dict() for g in container_cards()]}))
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(cards))
    monkeypatch.setenv("NANOTUI_RESERVATIONS_DIR", str(tmp_path / "res"))
    if held is not None:
        report(world, held)
    assert main(["--runs", str(world.root), "gpus"]) == 0
    out = capsys.readouterr().out.splitlines()
    i = next(i for i, ln in enumerate(out) if ln.startswith("0 "))
    assert out[i + 1].split() == ["└", "runs:", RUN, "others:",
                                  "16.0" if held else "18.4", "GiB"]
    assert main(["--runs", str(world.root), "gpus", "--json"]) == 0
    g0, g1 = json.loads(capsys.readouterr().out)["gpus"]
    assert (g0["our_runs"], g0["others_bytes"]) == ([RUN], pytest.approx(others, abs=1))
    assert (g1["our_runs"], g1["others_bytes"]) == ([], 94 * GIB)
