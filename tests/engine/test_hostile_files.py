"""Files others can plant in shared and cache directories (a FIFO, a link to /dev/zero, a
symlinked lock, a folder that is a file) never block, exhaust memory or fail a run; and
prepared data is never more readable than its source."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from engine.data.datasets import prepare
from engine.files import FileTooLarge, NotRegularFile, read_regular, regular_lock
from engine.launch.gpu import GIB
from engine.launch.reservations import Board
from engine.model import cpu_tuner
from engine.model.gpt import GPTConfig

SHAPE = GPTConfig(block_size=32, vocab_size=65, n_layer=1, n_head=2, n_embd=32)


def finishes(fn, timeout_s: float = 10.0):
    """fn()'s result, or a failure when it is still blocked after timeout_s."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test below
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"still blocked after {timeout_s} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_read_regular_refuses_fifos_links_devices_and_oversized_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(b"x" * 100)
    (tmp_path / "ok").write_bytes(b"{}")
    for name in ("fifo", "zero"):
        with pytest.raises(NotRegularFile):
            finishes(lambda name=name: read_regular(tmp_path / name, 4096))
    with pytest.raises(FileTooLarge):
        read_regular(tmp_path / "big", 99)
    assert read_regular(tmp_path / "ok", 2) == b"{}"


def test_a_fifo_in_the_reservations_dir_does_not_freeze_placement(tmp_path):
    board = Board(tmp_path / "res")
    with board.locked():
        mine = board.add("GPU-x", GIB, tmp_path / "runs", "a/b")
    os.mkfifo(board.path / "12345-9-fifo.json")
    (board.path / "12345-9-zero.json").symlink_to("/dev/zero")

    def place():
        with board.locked():
            return [r.run_id for r in board.read()]

    assert finishes(place) == ["a/b"]
    assert mine.exists()


def test_a_fifo_as_the_reservations_lock_turns_reservations_off_not_hangs(tmp_path):
    from engine.launch.placement import Policy
    from engine.launch.reservations import SharedPlacer
    from tests.engine.test_reservations import card
    (tmp_path / "res").mkdir(mode=0o1777)
    os.chmod(tmp_path / "res", 0o1777)
    os.mkfifo(tmp_path / "res" / ".lock")
    said: list[str] = []
    placer = SharedPlacer(tmp_path / "runs", Board(tmp_path / "res"), log=said.append)
    p, ticket = finishes(lambda: placer.place("r", GIB, [card(GIB)], [], Policy(), "auto",
                                              time.time()))
    assert p.gpu["uuid"] == "GPU-shared-0" and ticket is None
    assert len(said) == 1 and "reservations off" in said[0] and "not a regular file" in said[0]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NANOTUI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NANOTUI_CPU_KERNEL", "0")  # no compiler wait: torch and sdpa
    monkeypatch.delenv(cpu_tuner.RETUNE_ENV, raising=False)
    monkeypatch.setenv("NANOTUI_CPU_TUNE_STEPS", "1")
    return tmp_path / "cache"


def entry_path() -> Path:
    cands = cpu_tuner.candidates(SHAPE, "float32", None)
    assert len(cands) > 1
    return cpu_tuner.cache_path(cpu_tuner.cache_key(SHAPE, 2, "float32", cands))


@pytest.mark.parametrize("plant", ["fifo", "dev-zero"])
def test_a_tuner_cache_entry_that_is_a_fifo_or_dev_zero_is_measured_over(cache, plant):
    entry = entry_path()
    entry.parent.mkdir(parents=True)
    if plant == "fifo":
        os.mkfifo(entry)
    else:
        entry.symlink_to("/dev/zero")
    choice = finishes(lambda: cpu_tuner.choose(SHAPE, 2, "float32", "auto"), 120)
    assert choice.how == "measured"


@pytest.mark.parametrize("plant", ["symlinked lock", "fifo lock", "cache folder is a file"])
def test_an_unusable_tuner_cache_trains_untuned_instead_of_failing(cache, tmp_path, plant):
    entry = entry_path()
    if plant == "cache folder is a file":
        cache.mkdir()
        entry.parent.write_text("not a folder")
    else:
        entry.parent.mkdir(parents=True)
        lock = Path(f"{entry}.lock")
        if plant == "fifo lock":
            os.mkfifo(lock)
        else:
            (tmp_path / "theirs").write_text("")
            os.chmod(tmp_path / "theirs", 0o444)
            lock.symlink_to(tmp_path / "theirs")
    said: list[str] = []
    choice = finishes(lambda: cpu_tuner.choose(SHAPE, 2, "float32", "auto", log=said.append))
    assert choice.how == "untuned" and choice.dtype.is_floating_point
    assert any("not tuned" in s for s in said)
    assert "tuning cache unusable" in choice.describe(SHAPE.n_head, SHAPE.n_embd)


def test_regular_lock_waits_then_times_out_with_one_line(tmp_path):
    with regular_lock(tmp_path / "l", 1):
        with pytest.raises(OSError, match="held for over 0 s"):
            finishes(lambda: regular_lock(tmp_path / "l", 0.05).__enter__())


def test_prepared_data_is_never_more_readable_than_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOTUI_DATA_DIR", str(tmp_path / "cache"))
    old = os.umask(0o022)
    try:
        secret_dir = tmp_path / "private"
        secret_dir.mkdir(mode=0o700)
        secret = secret_dir / "id_rsa"
        secret.write_text("-----BEGIN KEY-----\n" + "abcdefgh\n" * 200)
        os.chmod(secret, 0o600)
        out = prepare(str(secret), "char", 0.1)
        (tmp_path / "pub").mkdir(mode=0o755)
        public = tmp_path / "pub" / "public.txt"
        public.write_text("hello world\n" * 200)
        shared = prepare(str(public), "char", 0.1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "train.bin": 0o600, "val.bin": 0o600, "meta.json": 0o600}
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in shared.iterdir())


def test_the_checksum_memo_follows_the_umask(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOTUI_DATA_DIR", str(tmp_path / "cache"))
    old = os.umask(0o002)
    try:
        (tmp_path / "t.txt").write_text("hello world\n" * 200)
        prepare(str(tmp_path / "t.txt"), "char", 0.1)
    finally:
        os.umask(old)
    memo = tmp_path / "cache" / "sha256.json"
    assert stat.S_IMODE(memo.stat().st_mode) == 0o664
