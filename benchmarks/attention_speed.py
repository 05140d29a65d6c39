"""One layer's causal attention, forward + backward, side by side: nanotui's CPU kernel
(engine/cpu_kernels.py) vs torch's scaled_dot_product_attention (what nanoGPT calls).

    python benchmarks/attention_speed.py
    python benchmarks/attention_speed.py --shapes 8,128 --repeats 25 --threads 1

For each (n_head, n_embd) at --batch-size x --block-size, every variant runs fwd+bwd on the
same (B, T, 3C) input in turn, order rotating each round; medians over --repeats rounds
after --warmup. Variants: sdpa-fp32 (nanoGPT on CPU), sdpa-bf16, fused-bf16 (the training
path under bf16 autocast: the C++ kernel, engine/native.py), fused-fma-bf16 (the same
without the AVX512-BF16 dot products, where the CPU has them), matmul-bf16 (the torch-op
fallback, engine/cpu_kernels.py), and both in fp32. Use it to A/B a change to the attention kernel
before timing whole steps with train_speed.py: at small head sizes this is where a
nanotui CPU step spends ~45% of its time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.model import cpu_kernels  # noqa: E402

from engine.model import device  # noqa: E402

from engine.model import native  # noqa: E402


def sdpa(qkv: torch.Tensor, n_head: int) -> torch.Tensor:
    B, T, C3 = qkv.shape
    q, k, v = (t.view(B, T, n_head, -1).transpose(1, 2) for t in qkv.split(C3 // 3, dim=2))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)


def attention(kind: str, qkv: torch.Tensor, n_head: int) -> torch.Tensor:
    """kind: fused, fused-fma (bf16 inputs without the bf16 dot products), matmul."""
    cpu_kernels.CPU_ATTENTION = kind.split("-")[0]
    native.bf16_dot_products(kind == "fused")
    return cpu_kernels.causal_attention(qkv, n_head)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="8,128 8,256 32,256",
                    help="space-separated n_head,n_embd (default: the issue's head sizes 16, 32, 8)")
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device.keep_freed_memory()  # as a CPU training process does
    B, T = args.batch_size, args.block_size
    has_dot_products = native.bf16_dot_products(True)
    if native.load() is None:
        print(f"fused kernel unavailable ({native.why_not()}): fused-* rows time the fallback")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={B} T={T}; "
          f"ms per fwd+bwd, medians of {args.repeats} rounds")
    for shape in args.shapes.split():
        n_head, n_embd = (int(x) for x in shape.split(","))
        g = torch.Generator().manual_seed(0)
        variants = {}
        for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            qkv = torch.randn(B, T, 3 * n_embd, generator=g).to(dt).requires_grad_()
            dy = torch.randn(B, T, n_embd, generator=g).to(dt)
            variants[f"sdpa-{name}"] = (lambda x: sdpa(x, n_head), qkv, dy)
            variants[f"fused-{name}"] = (lambda x: attention("fused", x, n_head), qkv, dy)
            if dt == torch.bfloat16 and has_dot_products:
                variants["fused-fma-bf16"] = (lambda x: attention("fused-fma", x, n_head), qkv, dy)
            variants[f"matmul-{name}"] = (lambda x: attention("matmul", x, n_head), qkv, dy)
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for r in range(args.warmup + args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                f, x, dy = variants[name]
                t0 = time.perf_counter()
                f(x).backward(dy)
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
                x.grad = None
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"n_head {n_head:>3} n_embd {n_embd:>4} (head size {n_embd // n_head:>3}): "
              + "  ".join(f"{k} {v:6.1f}" for k, v in med.items())
              + f"  | sdpa-fp32 / fused-bf16 {med['sdpa-fp32'] / med['fused-bf16']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
