"""A run's tokenizer as files Hugging Face's `AutoTokenizer.from_pretrained` loads, written
with nothing but the standard library (no transformers needed to write them).

GPT-2 BPE: vocab.json and merges.txt, GPT-2's own encoder.json and vocab.bpe, rebuilt from
the tiktoken encoding nanotui tokenizes with (which works offline from gpt2.tiktoken
alone): vocab.json maps each token's bytes, through GPT-2's byte-to-unicode table, to its
id; merge number r - 256 is the pair that makes the token of rank r, found by running BPE
on that token's bytes with only the ranks below r (as tiktoken's own educational module
recovers merges). The result equals OpenAI's files exactly (tests/engine/test_hf_export.py).

Char: a tokenizer.json for `tokenizers` with a WordLevel vocabulary of the characters
(id = index, nanoGPT's scheme), every character its own pre-token, a Fuse decoder (the
characters joined with nothing between them) and `<|endoftext|>` as a special token when
the data had it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.data.tokenizers import EOT_TEXT, CharTokenizer, Gpt2Tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table (encoder.py)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _merge_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """BPE on `token`'s bytes using only ranks below max_rank: the two parts left are the
    merge that made it."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def gpt2_vocab_and_merges(tok: Gpt2Tokenizer) -> tuple[dict[str, int], list[str]]:
    """(vocab.json's map, merges.txt's "a b" lines in merge order) of GPT-2's BPE."""
    enc = tok.encoding
    n = tok.eot_token  # every id below the end-of-text token is a mergeable one
    ranks = {enc.decode_single_token_bytes(i): i for i in range(n)}
    table = bytes_to_unicode()

    def u(b: bytes) -> str:
        return "".join(table[x] for x in b)
    vocab = {u(b): i for b, i in ranks.items()}
    vocab[EOT_TEXT] = n
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _merge_parts(ranks, token, rank)
        if len(parts) != 2:
            raise ValueError(f"GPT-2 BPE: token {rank} has no merge")  # not GPT-2's ranks
        merges.append(f"{u(parts[0])} {u(parts[1])}")
    return vocab, merges


def char_tokenizer_json(tok: CharTokenizer) -> dict[str, Any]:
    vocab = {c: i for i, c in enumerate(tok.chars)}
    added = []
    if tok.eot_token is not None:
        vocab[EOT_TEXT] = tok.eot_token
        added.append({"id": tok.eot_token, "content": EOT_TEXT, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": r"[\s\S]"},
                          "behavior": "Isolated", "invert": False},
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": tok.chars[0]},
    }


def write_tokenizer(out_dir: Path, tok: CharTokenizer | Gpt2Tokenizer, max_length: int) -> list[str]:
    """Write the tokenizer's files into out_dir; returns their names."""
    out_dir = Path(out_dir)
    eot = EOT_TEXT if tok.eot_token is not None else None
    if isinstance(tok, Gpt2Tokenizer):
        vocab, merges = gpt2_vocab_and_merges(tok)
        (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                            encoding="utf-8")
        config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": max_length,
                  "bos_token": eot, "eos_token": eot, "unk_token": eot, "add_prefix_space": False}
        files = ["vocab.json", "merges.txt"]
    else:
        (out_dir / "tokenizer.json").write_text(
            json.dumps(char_tokenizer_json(tok), ensure_ascii=False, indent=1), encoding="utf-8")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
                  "clean_up_tokenization_spaces": False,
                  **({"bos_token": eot, "eos_token": eot} if eot else {})}
        files = ["tokenizer.json"]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n",
                                                   encoding="utf-8")
    return files + ["tokenizer_config.json"]
