"""Prepared data: nanoGPT-identical ids, streaming across block boundaries, caching,
locking, atomic output, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.data import datasets as data

from engine.data import passes as data_passes
from engine.config import TrainConfig
from engine.data.datasets import check_fits, is_prepared, load_meta, prepare, prepared_dir_for
from engine.data.tokenizers import EOT_TEXT, DataError, load_gpt2

REPO = Path(__file__).resolve().parents[2]


def bins(d: Path, meta: dict | None = None):
    meta = meta or load_meta(d)
    dt = np.dtype(meta["dtype"])
    return np.fromfile(d / "train.bin", dt), np.fromfile(d / "val.bin", dt)


def nanogpt_char(text: str):
    """data/shakespeare_char/prepare.py, verbatim in spirit."""
    chars = sorted(list(set(text)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(text)
    train = np.array([stoi[c] for c in text[:int(n * 0.9)]], dtype=np.uint16)
    val = np.array([stoi[c] for c in text[int(n * 0.9):]], dtype=np.uint16)
    return chars, train, val


def char_reference(text: str, val_fraction: float = 0.1):
    """The ids our char tokenizer must give: nanoGPT's, with <|endoftext|> one extra id."""
    plain = text.replace(EOT_TEXT, "")
    chars = sorted(set(plain))
    eot = len(chars) if EOT_TEXT in text else None
    stoi = {c: i for i, c in enumerate(chars)}

    def enc(s):
        out = []
        for i, part in enumerate(s.split(EOT_TEXT)):
            if i:
                out.append(eot)
            out.extend(stoi[c] for c in part)
        return out
    k = int(len(text) * (1 - val_fraction))
    j = text.find(EOT_TEXT, max(0, k - len(EOT_TEXT) + 1))
    if 0 <= j < k:
        k = j
    return chars, eot, enc(text[:k]), enc(text[k:])


def test_shakespeare_char_matches_nanogpt(shared_data):
    path = shared_data / "shakespeare" / "input.txt"
    d = prepare(str(path), "char", 0.1)
    meta = load_meta(d)
    assert (meta["vocab_size"], meta["train_tokens"], meta["val_tokens"]) == (65, 1_003_854, 111_540)
    chars, train, val = nanogpt_char(path.read_text(encoding="utf-8"))
    assert meta["chars"] == chars and meta["eot_token"] is None and meta["dtype"] == "uint16"
    got_train, got_val = bins(d, meta)
    assert np.array_equal(got_train, train) and np.array_equal(got_val, val)
    assert meta["bytes_per_token"] == 1.0
    assert meta["source_sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert meta["val_fraction"] == 0.1 and meta["source"] == str(path.resolve())


def test_shakespeare_gpt2_matches_nanogpt_counts_and_tiktoken(shared_data):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    path = shared_data / "shakespeare" / "input.txt"
    d = prepare(str(path), "gpt2", 0.1, tokenizer_files=[shared_data / "gpt2" / "gpt2.tiktoken"])
    meta = load_meta(d)
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)
    assert meta["vocab_size"] == 50257 and meta["eot_token"] == 50256
    # tiktoken built the README's way, independently of engine.data.tokenizers
    enc = tiktoken.Encoding(
        name="gpt2",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=load_tiktoken_bpe(str(shared_data / "gpt2" / "gpt2.tiktoken")),
        special_tokens={EOT_TEXT: 50256})
    text = path.read_text(encoding="utf-8")
    n = len(text)
    train, val = bins(d, meta)
    assert train[:1000].tolist() == enc.encode_ordinary(text[:int(n * 0.9)])[:1000]
    assert val.tolist() == enc.encode_ordinary(text[int(n * 0.9):])
    assert meta["bytes_per_token"] == pytest.approx(1_115_394 / 338_025)


def test_tinystories_char_streams_in_small_blocks(shared_data, monkeypatch):
    # Tiny blocks put many cuts inside the text: ids must not depend on where they fall.
    monkeypatch.setattr(data_passes, "CHAR_BLOCK", 4093)
    path = shared_data / "tinystories" / "val.txt"
    d = prepare(str(path), "char", 0.1)
    meta = load_meta(d)
    chars, eot, train, val = char_reference(path.read_text(encoding="utf-8"))
    assert meta["chars"] == chars and "<" not in chars and "’" in chars
    assert meta["eot_token"] == eot == len(chars) and meta["vocab_size"] == len(chars) + 1
    got_train, got_val = bins(d, meta)
    assert got_train.tolist() == train and got_val.tolist() == val


def test_tinystories_gpt2_streams_like_whole_text_encoding(shared_data, monkeypatch):
    monkeypatch.setattr(data_passes, "GPT2_BLOCK", 3001)
    path = shared_data / "tinystories" / "val.txt"
    d = prepare(str(path), "gpt2", 0.1, tokenizer_files=[shared_data / "gpt2"])
    enc = load_gpt2().encoding
    text = path.read_text(encoding="utf-8")
    k = int(len(text) * 0.9)
    train, val = bins(d)
    ref_train = enc.encode(text[:k], allowed_special={EOT_TEXT})
    ref_val = enc.encode(text[k:], allowed_special={EOT_TEXT})
    assert train.tolist() == ref_train and val.tolist() == ref_val
    assert int((train == 50256).sum() + (val == 50256).sum()) == 3117


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "\n", " ", "é", "€", "𝄞", EOT_TEXT, "<", "|"]),
                min_size=2, max_size=300),
       st.sampled_from([0.1, 0.25, 0.5]))
def test_char_any_text_any_block_size_matches_reference(tmp_path_factory, pieces, vf):
    text = "".join(pieces)
    if not text.replace(EOT_TEXT, ""):
        return
    tmp = tmp_path_factory.mktemp("h")
    (tmp / "t.txt").write_text(text, encoding="utf-8")
    old = data_passes.CHAR_BLOCK
    data_passes.CHAR_BLOCK = 7  # cuts inside multi-byte characters and separators
    try:
        try:
            d = prepare(str(tmp / "t.txt"), "char", vf, out_dir=tmp / "out")
        except DataError as e:
            assert "split is empty" in str(e)
            return
    finally:
        data_passes.CHAR_BLOCK = old
    chars, eot, train, val = char_reference(text, vf)
    meta = load_meta(d)
    assert meta["chars"] == chars and meta["eot_token"] == eot
    got_train, got_val = bins(d, meta)
    assert got_train.tolist() == train and got_val.tolist() == val


def test_vocab_over_65535_uses_uint32(tmp_path):
    text = "".join(chr(c) for c in range(0x20000, 0x20000 + 70_000)) * 2
    (tmp_path / "big.txt").write_text(text, encoding="utf-8")
    d = prepare(str(tmp_path / "big.txt"), "char", 0.5)
    meta = load_meta(d)
    assert meta["vocab_size"] == 70_000 and meta["dtype"] == "uint32"
    train, val = bins(d, meta)
    assert train.max() == 69_999 and val.tolist() == list(range(70_000))


def test_prepared_data_is_reused_and_keyed_by_tokenizer_and_fraction(shared_data):
    src = str(shared_data / "shakespeare" / "input.txt")
    a = prepare(src, "char", 0.1)
    mtime = (a / "train.bin").stat().st_mtime_ns
    assert prepare(src, "char", 0.1) == a
    assert (a / "train.bin").stat().st_mtime_ns == mtime
    b = prepare(src, "char", 0.2)
    assert b != a and load_meta(b)["val_tokens"] == 1_115_394 - int(1_115_394 * 0.8)


def test_concurrent_prepares_do_the_work_once(shared_data, tmp_path):
    src = shared_data / "tinystories" / "val.txt"
    code = ("import sys; from engine.data.datasets import prepare; "
            f"print(prepare({str(src)!r}, 'char', 0.1, log=lambda m: print('WORK', m)))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o.count("WORK tokenizing") for o in outs) == 1
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1


def test_interrupted_prepare_leaves_nothing_that_looks_prepared(shared_data, monkeypatch, tmp_path):
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(data_passes, "_char_pass", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(shared_data / "shakespeare" / "input.txt"), "char", 0.1, out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists() and list(tmp_path.iterdir()) == []
    cache = data.cache_root() / "prepared"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_failed_prepare_into_a_dir_keeps_the_earlier_data(shared_data, tmp_path):
    out = tmp_path / "course"
    prepare(str(shared_data / "shakespeare" / "input.txt"), "char", 0.1, out_dir=out)
    before = (out / "meta.json").read_bytes()
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        prepare(str(tmp_path / "empty.txt"), "char", 0.1, out_dir=out)
    (tmp_path / "bin.txt").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DataError, match="not UTF-8 text|not text"):
        prepare(str(tmp_path / "bin.txt"), "char", 0.1, out_dir=out)
    assert (out / "meta.json").read_bytes() == before and is_prepared(out)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]


def _write(name: str, content: bytes | None):
    def make(t: Path) -> Path:
        if content is not None:
            (t / name).write_bytes(content)
        return t / name
    return make


def _dir_of_binary(t: Path) -> Path:
    (t / "d").mkdir()
    (t / "d" / "x.bin").write_bytes(b"\xff\xfe\x00")
    return t / "d"


@pytest.mark.parametrize("make, message", [
    (_write("missing.txt", None), "no such file or dataset"),
    (_write("empty.txt", b""), "is empty"),
    (_write("nul.txt", b"abc\x00def"), "contains NUL"),
    (_write("latin1.txt", "café\n".encode("latin-1")), "not UTF-8 text"),
    (_dir_of_binary, "holds no prepared data"),
])
def test_bad_sources_are_one_clear_line(tmp_path, make, message):
    with pytest.raises(DataError, match=message) as e:
        prepare(str(make(tmp_path)), "char", 0.1)
    assert "\n" not in str(e.value)


def test_unknown_tokenizer_and_unwritable_dir(shared_data, tmp_path):
    src = str(shared_data / "shakespeare" / "input.txt")
    with pytest.raises(DataError, match="unknown tokenizer 'bpe'"):
        prepare(src, "bpe")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot create"):
        prepare(src, "char", out_dir=tmp_path / "file" / "sub")


def test_check_fits_and_small_files(tmp_path):
    (tmp_path / "small.txt").write_text("abcdefghij" * 10)
    meta = load_meta(prepare(str(tmp_path / "small.txt"), "char", 0.1))
    assert (meta["train_tokens"], meta["val_tokens"]) == (90, 10)
    check_fits(meta, 8)
    with pytest.raises(DataError, match="the val split has 10 tokens, fewer than block_size"):
        check_fits(meta, 9)
    with pytest.raises(DataError, match=r"fewer than block_size \+ 2 = 66: use a smaller"):
        check_fits(meta, 64)


def test_prepared_dir_for_config(shared_data, tmp_path):
    src = str(shared_data / "shakespeare" / "input.txt")
    d = prepared_dir_for(TrainConfig(dataset=src, tokenizer="char", val_fraction=0.1))
    assert load_meta(d)["train_tokens"] == 1_003_854
    assert prepared_dir_for(TrainConfig(data_dir=str(d))) == d
    assert prepared_dir_for(TrainConfig(dataset=str(d))) == d  # a prepared dir as dataset
    with pytest.raises(DataError, match="holds no prepared data"):
        prepared_dir_for(TrainConfig(data_dir=str(tmp_path)))


def test_meta_that_disagrees_with_the_bins_is_not_prepared(shared_data, tmp_path):
    d = prepare(str(shared_data / "shakespeare" / "input.txt"), "char", 0.1, out_dir=tmp_path / "p")
    with open(d / "val.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="meta.json says 111,540"):
        load_meta(d)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["val_tokens"] == 111_540
    # preparing again repairs it
    prepare(str(shared_data / "shakespeare" / "input.txt"), "char", 0.1, out_dir=d)
    assert is_prepared(d)


def test_find_prepared_never_prepares(shared_data, tmp_path):
    from engine.data.datasets import find_prepared
    src = str(shared_data / "shakespeare" / "input.txt")
    cfg = TrainConfig(dataset=src, tokenizer="char", val_fraction=0.1)
    assert find_prepared(cfg) is None
    assert not (data.cache_root() / "prepared").exists()
    d = prepared_dir_for(cfg)
    assert find_prepared(cfg) == d
    assert find_prepared(cfg.replace(tokenizer="gpt2")) is None
    assert find_prepared(cfg.replace(val_fraction=0.2)) is None
    assert find_prepared(TrainConfig(data_dir=str(d))) == d
    assert find_prepared(TrainConfig(dataset="tinystories")) is None  # not downloaded


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["Once", " upon", "a", " ", "  ", "\n", "\n\n", " \n", "'s",
                                 "'ll", ".", "!!", "42", " 7", "é", " café", "—", "\t",
                                 EOT_TEXT, "\n" + EOT_TEXT + "\n"]), min_size=2, max_size=120))
def test_gpt2_any_text_any_block_size_matches_whole_text(shared_data, tmp_path_factory, pieces):
    text = "".join(pieces)
    enc = load_gpt2([shared_data / "gpt2" / "gpt2.tiktoken"]).encoding
    tmp = tmp_path_factory.mktemp("g")
    (tmp / "t.txt").write_text(text, encoding="utf-8")
    old = data_passes.GPT2_BLOCK, data_passes.MAX_CARRY_BLOCKS
    data_passes.GPT2_BLOCK, data_passes.MAX_CARRY_BLOCKS = 5, 10**9  # never cut blindly
    try:
        try:
            d = prepare(str(tmp / "t.txt"), "gpt2", 0.25, out_dir=tmp / "out")
        except DataError as e:
            assert "split is empty" in str(e)
            return
    finally:
        data_passes.GPT2_BLOCK, data_passes.MAX_CARRY_BLOCKS = old
    k = int(len(text) * 0.75)
    j = text.find(EOT_TEXT, max(0, k - len(EOT_TEXT) + 1))
    if 0 <= j < k:
        k = j
    train, val = bins(d)
    assert train.tolist() == enc.encode(text[:k], allowed_special={EOT_TEXT})
    assert val.tolist() == enc.encode(text[k:], allowed_special={EOT_TEXT})


def test_large_vocab_with_separators_matches_reference(tmp_path):
    # more than 255 ids: the end-of-text id no longer fits the one-byte marker table
    cjk = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 400))
    text = "".join(f"{cjk[i:i + 50]} story {i}\n{EOT_TEXT}\n" for i in range(0, 400, 7)) * 3
    (tmp_path / "cjk.txt").write_text(text, encoding="utf-8")
    d = prepare(str(tmp_path / "cjk.txt"), "char", 0.1)
    chars, eot, train, val = char_reference(text)
    meta = load_meta(d)
    assert eot > 255 and meta["eot_token"] == eot and meta["chars"] == chars
    got_train, got_val = bins(d, meta)
    assert got_train.tolist() == train and got_val.tolist() == val
