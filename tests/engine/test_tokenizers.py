"""Tokenizers: char ids and separators, GPT-2 from local files, offline failure messages."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from engine.data import tokenizers
from engine.data.tokenizers import (CharTokenizer, DataError, from_meta, load_gpt2,
                               tokenizer_cache_dir)
from engine.config import ConfigError


@pytest.fixture(autouse=True)
def _fresh_encodings(monkeypatch):
    # The module keeps built encodings; tests about where files come from need a clean slate.
    monkeypatch.setattr(tokenizers, "_encodings", {})
    monkeypatch.delenv("NANOTUI_TOKENIZER_FILE", raising=False)


def no_network(monkeypatch):
    import tiktoken

    def refuse(name):
        raise ConnectionError("no network in this test")
    monkeypatch.setattr(tiktoken, "get_encoding", refuse)


def check_gpt2(tok) -> None:
    # The README's reference values for the GPT-2 encoding.
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.encode("<|endoftext|>") == [50256]
    assert tok.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"


def test_char_ids_are_sorted_vocab_positions_and_roundtrip():
    tok = CharTokenizer(sorted(set("hello world")))
    assert tok.vocab_size == 8 and tok.eot_token is None
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("world hello")) == "world hello"


def test_char_separator_is_one_token_after_the_characters():
    tok = from_meta({"tokenizer": "char", "chars": ["\n", "a", "b"], "eot_token": 3})
    assert tok.vocab_size == 4
    assert tok.encode("ab\n<|endoftext|>\nba") == [1, 2, 0, 3, 0, 2, 1]
    assert tok.decode([1, 3, 2]) == "a<|endoftext|>b"


def test_char_unknown_character_is_a_clear_error():
    tok = CharTokenizer(["a", "b"])
    with pytest.raises(DataError, match=r"'z' is not in this dataset's char vocabulary"):
        tok.encode("abz")
    assert issubclass(DataError, ConfigError)  # the CLI prints it as one line


def test_gpt2_from_tiktoken_file(shared_data):
    tok = load_gpt2([shared_data / "gpt2" / "gpt2.tiktoken"])
    check_gpt2(tok)


def test_gpt2_from_vocab_bpe_and_encoder_json_matches_tiktoken_file(shared_data):
    g = shared_data / "gpt2"
    a = load_gpt2([g / "gpt2.tiktoken"])
    b = load_gpt2([g / "vocab.bpe", g / "encoder.json"])
    check_gpt2(b)
    text = (shared_data / "tinystories" / "val.txt").read_text(encoding="utf-8")[:200_000]
    assert a.encode(text) == b.encode(text)
    assert b.decode(b.encode(text)) == text


def test_given_files_are_remembered_in_the_cache_for_later_runs(shared_data, monkeypatch):
    no_network(monkeypatch)
    load_gpt2([shared_data / "gpt2"])  # a folder works too
    assert (tokenizer_cache_dir() / "gpt2.tiktoken").is_file()
    monkeypatch.setattr(tokenizers, "_encodings", {})
    check_gpt2(from_meta({"tokenizer": "gpt2"}))  # found in the cache, no network


def test_env_var_names_the_files(shared_data, monkeypatch, tmp_path):
    no_network(monkeypatch)
    monkeypatch.setenv("NANOTUI_DATA_DIR", str(tmp_path / "cache"))
    g = shared_data / "gpt2"
    monkeypatch.setenv("NANOTUI_TOKENIZER_FILE", f"{g / 'vocab.bpe'}:{g / 'encoder.json'}")
    check_gpt2(load_gpt2())


def test_prefilled_tiktoken_cache_dir_works(shared_data, monkeypatch, tmp_path):
    import tiktoken
    import tiktoken.registry
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    for name, url in [("vocab.bpe", "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"),
                      ("encoder.json", "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json")]:
        shutil.copyfile(shared_data / "gpt2" / name, cache / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    check_gpt2(load_gpt2())


def test_offline_with_nothing_says_exactly_what_to_do(monkeypatch, tmp_path):
    no_network(monkeypatch)
    with pytest.raises(DataError) as e:
        load_gpt2()
    msg = str(e.value)
    assert "\n" not in msg
    for hint in ("gpt2.tiktoken", "vocab.bpe + encoder.json", str(tokenizer_cache_dir()),
                 "--tokenizer-file", "NANOTUI_TOKENIZER_FILE", "TIKTOKEN_CACHE_DIR"):
        assert hint in msg


def test_foreign_or_missing_files_are_refused(tmp_path, shared_data):
    fake = tmp_path / "gpt2.tiktoken"
    fake.write_text("YQ== 0\n")
    with pytest.raises(DataError, match="is not OpenAI's GPT-2"):
        load_gpt2([fake])
    with pytest.raises(DataError, match="does not exist"):
        load_gpt2([tmp_path / "nope.tiktoken"])
    with pytest.raises(DataError, match="need a gpt2.tiktoken file, or both"):
        load_gpt2([shared_data / "gpt2" / "vocab.bpe"])


def test_from_meta_rejects_unknown_tokenizer():
    with pytest.raises(DataError, match="unknown tokenizer 'sentencepiece'"):
        from_meta({"tokenizer": "sentencepiece"})
