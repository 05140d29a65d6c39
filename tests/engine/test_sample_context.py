"""Past block_size every generated token sees block_size tokens of context, as nanoGPT's
sample.py gives it (its generate loop is replicated here: crop to the last block_size
tokens, one uncached forward per token); the half-window rebuild is opt-in and named in
the samples' metadata."""

from __future__ import annotations

import torch

from engine.model.gpt import GPT, GPTConfig
from engine.sample.generate import generate_samples


def model(block_size=16, vocab=11, seed=0) -> GPT:
    torch.manual_seed(seed)
    m = GPT(GPTConfig(block_size=block_size, vocab_size=vocab, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():  # sharper than the init, so that the context changes the argmax
        for p in m.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.4)
    return m.eval()


@torch.no_grad()
def nanogpt_generate(m: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    """nanoGPT model.py's generate with top_k=1 (greedy), as sample.py calls it."""
    bs = m.config.block_size
    for _ in range(n):
        idx_cond = idx if idx.size(1) <= bs else idx[:, -bs:]
        logits, _ = m(idx_cond)
        idx = torch.cat((idx, logits[:, -1, :].argmax(-1, keepdim=True)), dim=1)
    return idx


def test_greedy_continuation_past_block_size_is_nanogpts_token_for_token():
    m = model()
    prompt = torch.tensor([[1, 2, 3]])
    want = nanogpt_generate(m, prompt, 60)           # ~4 windows past block_size 16
    got = m.generate(prompt, 60, temperature=0)       # the default: context "full"
    assert torch.equal(got, want)
    half = m.generate(prompt, 60, temperature=0, context="rebuild")
    assert torch.equal(half[:, :16], want[:, :16])   # identical while the sequence fits
    assert not torch.equal(half, want)               # then it sees half a window


def test_a_prompt_longer_than_block_size_is_cropped_as_nanogpt_does():
    m = model(seed=1)
    prompt = torch.randint(0, 11, (1, 40), generator=torch.Generator().manual_seed(3))
    assert torch.equal(m.generate(prompt, 10, temperature=0), nanogpt_generate(m, prompt, 10))


class Chars:
    vocab_size, eot_token = 11, None

    def encode(self, text):
        return [ord(c) % 11 for c in text]

    def decode(self, ids):
        return "".join("abcdefghijk"[i] for i in ids)


def test_samples_name_their_context_setting():
    m = model()
    full = generate_samples(m, Chars(), ["abc"], 1, 40, 0.0, None, None, 1)
    fast = generate_samples(m, Chars(), ["abc"], 1, 40, 0.0, None, None, 1, context="rebuild")
    assert full[0]["context"] == "full" and fast[0]["context"] == "rebuild"
    assert full[0]["completion"] != fast[0]["completion"]
