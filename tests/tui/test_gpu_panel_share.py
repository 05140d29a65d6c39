"""The GPU panel marks units outside our share and shows MIG instances by their label."""

from __future__ import annotations

from dataclasses import replace

from tests.tui.conftest import asynctest, fake_gpus, settle
from tui.widgets.gpu_panel import GpuPanel


@asynctest
async def test_gpu_panel_marks_cards_that_are_not_ours_and_mig_units(world):
    ada, blackwell = fake_gpus()
    mig = replace(blackwell, uuid="MIG-1234", name="NVIDIA A100 MIG 3g.20gb", mig=1,
                  parent_uuid=blackwell.uuid, processes=())
    world.gpus.set([ada, replace(blackwell, ours=False), mig])
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        lines = str(app.screen.query_one(GpuPanel).render()).splitlines()
        heads = [ln for ln in lines if ln[:1].isdigit()]
        assert heads[0].startswith("0 RTX 6000 Ada") and "not ours" not in heads[0]
        assert heads[1].startswith("1 RTX PRO 6000 Blackwell") and heads[1].endswith("not ours")
        assert heads[2].startswith("1.1 A100 MIG 3g.20gb") and "not ours" not in heads[2]


@asynctest
async def test_gpu_picker_offers_mig_units_and_never_cards_that_are_not_ours(world):
    from textual.widgets import OptionList

    from engine.launch.gpu import GIB
    from tui.screens.launch import GpuPickerScreen
    ada, blackwell = fake_gpus()
    migs = [replace(blackwell, uuid=f"MIG-{j}", name="NVIDIA A100 MIG 3g.20gb", mig=j,
                    parent_uuid=blackwell.uuid, memory_used=0, memory_total=20 * GIB,
                    processes=()) for j in (0, 1)]
    world.gpus.set([replace(ada, ours=False), *migs])
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        picker = GpuPickerScreen(app.feed, need_bytes=2 * GIB, n_runs=1)
        app.push_screen(picker)
        await pilot.pause()
        ol = picker.query_one(OptionList)
        ids = [ol.get_option_at_index(i).id for i in range(ol.option_count)]
        assert ids == ["auto", "0", "1.0", "1.1", "cpu"]
        assert ol.get_option("0").disabled and "not ours" in str(ol.get_option("0").prompt)
        assert not ol.get_option("1.1").disabled and "fits" in str(ol.get_option("1.1").prompt)
        await pilot.press("escape")


@asynctest
async def test_gpu_picker_names_torchs_cuda_number_beside_nvmls(world):
    """Under CUDA_VISIBLE_DEVICES=1 torch calls card 1 cuda:0; the dialog shows both, and
    picking it queues NVML's label, which is what --gpu takes."""
    from textual.widgets import OptionList

    from engine.launch.gpu import GIB
    from tui.screens.launch import GpuPickerScreen
    ada, blackwell = fake_gpus()
    world.gpus.set([replace(ada, ours=False), replace(blackwell, cuda_index=0)])
    app = world.app()
    async with app.run_test(size=(140, 45)) as pilot:
        await settle(pilot)
        picker = GpuPickerScreen(app.feed, need_bytes=2 * GIB, n_runs=1)
        app.push_screen(picker)
        await pilot.pause()
        ol = picker.query_one(OptionList)
        one = str(ol.get_option("1").prompt)
        assert one.startswith("1 RTX PRO 6000 Blackwell") and "cuda:0" in one
        assert "cuda:" not in str(ol.get_option("0").prompt)
        await pilot.press("escape")
