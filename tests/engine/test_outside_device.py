"""`nanotui sample` and `nanotui bench` with --device auto choose through placement, not
torch's cuda:0: a unit of ours with room counting every reservation on the machine, held
by a reservation of their own while they run; else the CPU, with the reason said.
Cards here answer as real ones would (not simulated); torch is never asked for CUDA."""

from __future__ import annotations

import pytest

from engine.launch.gpu import GIB, GpuSnapshot, VisibleGpuSource
from engine.launch.outside import place_outside_queue
from engine.launch.reservations import Board
from tui.cli import main

UUIDS = ["GPU-aaaa0000", "GPU-bbbb1111", "GPU-cccc2222", "GPU-dddd3333"]


def h100(i, used_gb=1.0, util=0, **kw):
    return GpuSnapshot(i, UUIDS[i], "NVIDIA H100 80GB HBM3", int(used_gb * GIB), 80 * GIB,
                       util, 30, 70.0, capability=(9, 0), **kw)


class Cards:
    def __init__(self, cards):
        self.cards = cards

    def snapshot(self):
        return list(self.cards)


def visible(cards, spec):
    """The cards as this shell sees them under CUDA_VISIBLE_DEVICES=spec."""
    env = {} if spec is None else {"CUDA_VISIBLE_DEVICES": spec}
    return VisibleGpuSource(Cards(cards), env=env).snapshot()


def test_auto_skips_cuda0_filled_by_another_user_and_holds_a_reservation(tmp_path):
    board = Board(tmp_path / "res")
    cards = visible([h100(0, used_gb=79, util=100), h100(1)], None)
    with place_outside_queue(4 * GIB, "nanotui sample a/b", cards, board=board) as placed:
        assert placed.device == "cuda:1"
        assert placed.reason.startswith("on GPU 1 (cuda:1) (NVIDIA H100 80GB HBM3)")
        with board.locked():
            held, = board.read()
        assert held.uuid == UUIDS[1] and held.bytes == 4 * GIB and "nanotui sample" in held.run_id
    with board.locked():
        assert board.read() == []  # released when the job ends


def test_auto_counts_reservations_and_numbers_in_torchs_order(tmp_path):
    """Under CUDA_VISIBLE_DEVICES=3,2 a dispatcher has promised card 3 (torch's cuda:0)
    nearly all its memory: the job goes to card 2, which torch here calls cuda:1."""
    board = Board(tmp_path / "res")
    with board.locked():
        board.add(UUIDS[3], 78 * GIB, tmp_path / "other-runs", "depth/n_layer=12")
    cards = visible([h100(0), h100(1), h100(2, util=50), h100(3)], "3,2")
    placed = place_outside_queue(8 * GIB, "nanotui bench", cards, board=board)
    assert placed.device == "cuda:1" and "GPU 2 (cuda:1)" in placed.reason
    placed.release()
    # both full: the CPU, and why
    with board.locked():
        board.add(UUIDS[2], 78 * GIB, tmp_path / "other-runs", "depth/n_layer=12")
    placed = place_outside_queue(8 * GIB, "nanotui bench", cards, board=board)
    assert placed.device == "cpu" and placed.ticket is None
    assert placed.reason.startswith("on the CPU: no GPU of ours has room now (needs 8.0 GiB")
    assert "promised to run depth/n_layer=12" in placed.reason


@pytest.mark.parametrize("cards, said", [
    ([], "on the CPU: no GPU here"),
    ([h100(0, ours=False)], "on the CPU: no GPU of ours"),
    ([h100(0, problem="GPU 0 (NVIDIA H100 80GB HBM3): torch here is built without CUDA")],
     "on the CPU: GPU 0 (NVIDIA H100 80GB HBM3): torch here is built without CUDA"),
    ([h100(0, used_gb=1, simulated=True, cuda_index=0)], "is a fake card"),
])
def test_auto_falls_back_to_the_cpu_with_the_reason(tmp_path, cards, said):
    placed = place_outside_queue(GIB, "nanotui sample", cards, board=Board(tmp_path / "r"))
    assert placed.device == "cpu" and said in placed.reason and placed.ticket is None


def test_allowed_gpus_of_the_experiments_file_are_kept(tmp_path):
    cards = visible([h100(0), h100(1, util=90)], None)
    placed = place_outside_queue(GIB, "nanotui bench", cards, allowed=(1,),
                                 board=Board(tmp_path / "r"))
    assert placed.device == "cuda:1"
    placed.release()


def test_bench_and_sample_commands_pass_the_placed_device(tmp_path, monkeypatch, capsys):
    from engine.launch import gpu
    from engine.sample import generate
    from engine.train import bench
    cards = [h100(0, used_gb=79, util=100), h100(1), h100(2), h100(3, used_gb=70)]
    monkeypatch.setattr(gpu, "default_gpu_source", lambda: VisibleGpuSource(
        Cards(cards), env={"CUDA_VISIBLE_DEVICES": "3,2"}))
    seen = []
    monkeypatch.setattr(bench, "run_bench", lambda cfg, **kw: seen.append(cfg.device) or {})
    monkeypatch.setattr(bench, "format_summary", lambda r: "")
    assert main(["bench", "--n_layer=1", "--n_embd=64", "--n_head=1", "--block_size=64"]) == 0
    assert seen == ["cuda:1"]   # card 2: card 3 (cuda:0) is nearly full
    assert "bench: on GPU 2 (cuda:1)" in capsys.readouterr().err
    # an explicit device is the user's: not placed
    assert main(["bench", "--n_layer=1", "--n_embd=64", "--n_head=1", "--device=cuda:0"]) == 0
    assert seen[-1] == "cuda:0" and "bench:" not in capsys.readouterr().err

    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x" * 1000)
    monkeypatch.setattr(generate, "sample_command",
                        lambda target, args: seen.append(args.device) or 0)
    assert main(["sample", str(ckpt)]) == 0
    assert seen[-1] == "cuda:1"
    assert "sample: on GPU 2 (cuda:1)" in capsys.readouterr().err


def test_bench_on_fake_cards_says_it_trains_on_the_cpu(tmp_path, monkeypatch, capsys):
    import json
    p = tmp_path / "cards.json"
    p.write_text(json.dumps({"gpus": [{"uuid": "GPU-f0", "name": "Fake H100",
                                       "memory_total_gb": 80}]}))
    monkeypatch.setenv("NANOTUI_FAKE_GPUS", str(p))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main(["bench", "--n_layer=1", "--n_head=1", "--n_embd=16", "--block_size=16",
                 "--batch_size=2", "--iters=1", "--warmup=0", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["device"] == "cpu"
    assert "bench: on the CPU: GPU 0 (Fake H100) is a fake card" in out.err


def test_the_sampling_estimate_grows_with_the_kv_cache():
    from engine.config import TrainConfig
    from engine.launch.estimate import sampling_bytes
    cfg = TrainConfig(n_layer=12, n_embd=768, n_head=12, block_size=1024)
    one, eight = sampling_bytes(cfg, 124_000_000, 50304, 1), sampling_bytes(cfg, 124_000_000,
                                                                             50304, 8)
    assert eight - one == 7 * (2 * 12 * 1024 * 768 * 4 + 50304 * 4)
