"""The samples of a prompt are decoded as one batch, with no host sync per token, and each
keeps its own seed: a sample asked for alone with its recorded seed is the batch's sample
(on the CPU in float32, where this is exact); TF32 is off and the precision recorded."""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.model.gpt import sample_next
from engine.sample.generate import generate_samples
from test_sample_context import Chars, model  # tests/engine is on sys.path

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

# ops that wait for the GPU: reading a value (item, bool, tolist) or an output whose size
# depends on the data; multinomial checks its input with two .item() calls inside
SYNCING_OPS = {"aten._local_scalar_dense.default", "aten.is_nonzero.default",
               "aten.nonzero.default", "aten.masked_select.default", "aten.multinomial.default",
               "aten._unique2.default", "aten.unique_consecutive.default"}


class Syncs(TorchDispatchMode):
    """Counts the operators that make the host wait for a GPU, as they are dispatched."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in SYNCING_OPS:
            self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def count_syncs(monkeypatch, fn) -> int:
    """Syncing operators dispatched plus Python-side reads (tolist is not an operator)."""
    reads = collections.Counter()
    for name in ("tolist", "item", "__bool__"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **kw):
            reads[_name] += 1
            return _real(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, spy)
    with Syncs() as mode:
        fn()
    monkeypatch.undo()
    return sum(mode.ops.values()) + sum(reads.values())


@pytest.mark.parametrize("kw", [dict(temperature=0.9, top_k=None, top_p=None),
                                dict(temperature=0.8, top_k=5, top_p=None),
                                dict(temperature=1.0, top_k=None, top_p=0.9),
                                dict(temperature=0.0, top_k=None, top_p=None)])
def test_host_syncs_do_not_grow_with_the_number_of_tokens(monkeypatch, kw):
    m = model()  # block_size 16: 40 tokens also cross the full-window path
    def gen(n):
        return lambda: generate_samples(m, Chars(), ["abc", "b"], 3, n, seed=1, **kw)
    few, many = count_syncs(monkeypatch, gen(5)), count_syncs(monkeypatch, gen(40))
    assert few == many
    # per prompt, whatever the token count: the tokens' .tolist() and the finite flag's
    # bool() (counted twice: __bool__ and the scalar read it dispatches)
    assert many <= 3 * 2


@pytest.mark.parametrize("context", ["full", "rebuild"])
@pytest.mark.parametrize("kw", [dict(temperature=0.9, top_k=None, top_p=None),
                                dict(temperature=1.3, top_k=4, top_p=None),
                                dict(temperature=1.0, top_k=None, top_p=0.8)])
def test_a_sample_drawn_alone_with_its_seed_is_the_batchs_sample(context, kw):
    m = model()  # 50 tokens at block_size 16: the cache, its refreshes and the full window
    batch = generate_samples(m, Chars(), ["abc"], 5, 50, seed=20, context=context, **kw)
    assert [s["seed"] for s in batch] == [20, 21, 22, 23, 24]
    assert len({s["completion"] for s in batch}) > 1  # the seeds differ, so do the samples
    for s in batch:
        alone = generate_samples(m, Chars(), ["abc"], 1, 50, seed=s["seed"], context=context, **kw)
        assert alone[0]["text"] == s["text"]


def test_samples_record_their_precision_and_tf32_is_off_while_drawing(monkeypatch):
    m = model()
    seen = []
    real = type(m).generate

    def spy(self, *a, **kw):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return real(self, *a, **kw)
    monkeypatch.setattr(type(m), "generate", spy)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)  # as training leaves it
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    fp32 = generate_samples(m, Chars(), ["abc"], 2, 20, 0.9, None, None, 3)
    bf16 = generate_samples(m, Chars(), ["abc"], 2, 20, 0.9, None, None, 3, precision="bfloat16")
    assert seen and all(s == (False, False) for s in seen)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # restored
    # autocast is for CUDA: on the CPU a bf16 run's samples are float32, and say so
    assert [s["precision"] for s in fp32 + bf16] == ["float32"] * 4
    assert all(s["tf32"] is False for s in fp32)
    assert [s["text"] for s in fp32] == [s["text"] for s in bf16]
    with pytest.raises(ValueError, match="precision must be one of"):
        generate_samples(m, Chars(), ["abc"], 1, 5, 0.9, None, None, 3, precision="fp8")


def test_inverse_cdf_rows_are_independent_and_never_pick_a_removed_token():
    logits = torch.randn(6, 30, generator=torch.Generator().manual_seed(0))
    u = torch.rand(6, generator=torch.Generator().manual_seed(1))
    together = sample_next(logits, 0.9, top_k=7, uniforms=u)
    alone = torch.cat([sample_next(logits[i:i + 1], 0.9, top_k=7, uniforms=u[i:i + 1])
                       for i in range(6)])
    assert torch.equal(together, alone)
    # the largest uniform a float32 generator gives (u * total may round up to total)
    top = torch.full((6,), 1 - 2 ** -24)
    kept = torch.topk(logits, 3).indices
    picked = sample_next(logits, 1.0, top_k=3, uniforms=top)
    assert all(int(p) in kept[i].tolist() for i, p in enumerate(picked.flatten()))
    low = sample_next(logits, 1.0, top_k=3, uniforms=torch.zeros(6))
    assert all(int(p) in kept[i].tolist() for i, p in enumerate(low.flatten()))


def test_a_model_with_non_finite_weights_fails_with_one_line_not_token_zero():
    m = model()
    with torch.no_grad():
        m.lm_head.weight[3, 0] = float("nan")
    for temperature in (0.8, 0.0):
        with pytest.raises(ValueError, match="logits are NaN or inf"):
            generate_samples(m, Chars(), ["abc"], 2, 30, temperature, None, None, 1)
