"""The pieces of training, reusable on their own: data loading, batches, the model, the
learning-rate schedule, one optimizer step (Trainer.train_step), loss estimates and
checkpoints. engine.train.process drives them for one run directory; `nanotui bench` and
benchmarks/train_speed.py time Trainer.train_step itself, so what they measure is what
runs train with.

Iteration numbers count completed optimizer steps (see engine.train.process).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.config import TrainConfig
from engine.data.datasets import prepared_dir_for
from engine.data.nanogpt import nanogpt_data_meta
from engine.errors import UserError, one_line
from engine.model import cpu_tuner
from engine.train.threads import Governor
from engine.model import device as dev
from engine.model.checkpoint import CKPT_FORMAT, model_state
from engine.model.gpt import GPT, GPTConfig
from engine.model.horizon import get_lr, resolved_config  # noqa: F401 (get_lr: the schedule's home)

EVAL_SEED_OFFSET = 1     # eval batches come from their own generator: same batches every eval


class TrainError(UserError):
    """A problem with the run's input (data, checkpoint, device); one clear line."""


# ---- data ----------------------------------------------------------------------------------

def resolve_data_dir(cfg: TrainConfig) -> Path:
    """The prepared directory: cfg.data_dir when set, else cfg.dataset prepared into the
    cache (engine.data.datasets), with progress in stdout.log."""
    return Path(prepared_dir_for(cfg, progress=_progress_logger()))


def _progress_logger() -> Callable[[int, int], None]:
    """Preparing a dataset can take minutes: say so in stdout.log every 10%."""
    last = [-1]

    def progress(done: int, total: int) -> None:
        pct = int(100 * done / total) // 10 * 10 if total else 0
        if pct != last[0]:
            last[0] = pct
            print(f"preparing data: {pct}%", flush=True)
    return progress


def load_data(cfg: TrainConfig) -> tuple[np.memmap, np.memmap, dict[str, Any]]:
    """(train tokens, val tokens, meta) of the run's prepared data, as read-only memmaps."""
    data_dir = resolve_data_dir(cfg)
    if not data_dir.is_dir():
        raise TrainError(f"data_dir {str(data_dir)!r} does not exist")
    meta_path = data_dir / "meta.json"
    try:
        meta = nanogpt_data_meta(data_dir) or json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise TrainError(f"{meta_path}: missing (a prepared dir holds train.bin, val.bin, meta.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainError(f"{meta_path}: not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise TrainError(f"{meta_path}: expected a JSON object")
    dtype = np.dtype(meta.get("dtype", "uint16"))
    out = []
    for split in ("train", "val"):
        path = data_dir / f"{split}.bin"
        if not path.is_file():
            raise TrainError(f"{path}: missing")
        if path.stat().st_size < dtype.itemsize * (cfg.block_size + 2):
            raise TrainError(f"{path}: has fewer tokens than block_size + 2 = {cfg.block_size + 2}")
        out.append(np.memmap(path, dtype=dtype, mode="r"))
    meta.setdefault("data_dir", str(data_dir))
    return out[0], out[1], meta


def get_batch(data: np.ndarray, cfg: TrainConfig, device: torch.device,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size random windows of block_size tokens: inputs x and next-token targets y."""
    T = cfg.block_size
    ix = torch.randint(len(data) - T - 1, (cfg.batch_size,), generator=generator).numpy()
    # One fancy-indexing read of all windows (instead of batch_size slices and a stack);
    # x and y are each made contiguous by astype, so a pinned copy is one memcpy and the
    # host->device copy is one non-blocking DMA (a strided slice would be staged through
    # a pageable temporary, a blocking copy per tensor per step)
    windows = data[ix[:, None] + np.arange(T + 1)]
    x = torch.from_numpy(windows[:, :-1].astype(np.int64))
    y = torch.from_numpy(windows[:, 1:].astype(np.int64))
    if device.type == "cuda":
        return (x.pin_memory().to(device, non_blocking=True),
                y.pin_memory().to(device, non_blocking=True))
    return x.to(device), y.to(device)


# ---- model and schedule ----------------------------------------------------------------------

def model_args(cfg: TrainConfig, vocab_size: int) -> dict[str, Any]:
    return dict(block_size=cfg.block_size, vocab_size=vocab_size, n_layer=cfg.n_layer,
                n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)


def build_model(cfg: TrainConfig, vocab_size: int, device: torch.device) -> GPT:
    """A freshly initialised GPT (seed torch first for a reproducible init)."""
    return GPT(GPTConfig(**model_args(cfg, vocab_size))).to(device)


# ---- the trainer -------------------------------------------------------------------------------

class Trainer:
    """Model, optimizer and batch stream of one run, one optimizer step at a time."""

    def __init__(self, cfg: TrainConfig, train_data: np.ndarray, val_data: np.ndarray,
                 vocab_size: int, device: torch.device | None = None,
                 dtype: torch.dtype | None = None, log: Callable[[str], None] = print,
                 threads: Governor | None = None):
        cfg = resolved_config(cfg, vocab_size)  # a config built in code may leave them unset
        self.cfg = cfg
        self.log = log
        self.train_data, self.val_data = train_data, val_data
        self.device = device or dev.resolve_device(cfg.device)
        # on CPU the attention path and (with dtype "auto") the precision are measured
        # once per machine and shape (engine.model.cpu_tuner); `dtype` given fixes it
        self.cpu_choice: cpu_tuner.Choice | None = None
        self.threads = threads if self.device.type == "cpu" else None
        if self.threads is not None:
            # first: the tuner measures with the thread count the run will use
            log("CPU threads: " + self.threads.start())
        if self.device.type == "cpu":
            try:
                self.cpu_choice = cpu_tuner.choose(
                    GPTConfig(**model_args(cfg, vocab_size)), cfg.batch_size,
                    dev.dtype_name(dtype) if dtype else cfg.dtype, cfg.cpu_attention, log=log)
            except ValueError as e:  # a bad NANOTUI_CPU_KERNEL or NANOTUI_CPU_TUNE_STEPS
                raise TrainError(str(e)) from None
            dtype = self.cpu_choice.dtype
        self.dtype = dtype or dev.resolve_dtype(cfg.dtype, self.device)
        self.ctx = dev.autocast_context(self.device, self.dtype)
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda" and self.dtype != torch.float32:
            # TF32 for the fp32 leftovers of mixed precision, as nanoGPT; a run that asks
            # for float32 gets true fp32 (and MFU against the card's fp32 peak).
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = build_model(cfg, vocab_size, self.device)
        if self.cpu_choice is not None:
            self.model.set_cpu_attention(self.cpu_choice.path)
        self.optimizer = self.model.configure_optimizers(
            cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), self.device.type)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=dev.needs_grad_scaler(self.device, self.dtype))
        self.batch_gen = torch.Generator().manual_seed(cfg.seed)
        self.compiled: Any = None
        self.compile_status = "off"
        self._compiled_kinds: set[str] = set()  # compiled calls that have run once
        self.iter_num = 0
        self.best_val_loss = math.inf
        self.best_iter: int | None = None
        self.evals_since_best = 0
        self.last_eval_iter: int | None = None
        self.prefetch()

    # -- pieces --
    @property
    def tokens_per_iter(self) -> int:
        return self.cfg.tokens_per_iter

    def cpu_attention_line(self) -> str | None:
        """Which CPU attention path and precision this run takes and why (None off CPU)."""
        if self.cpu_choice is None:
            return None
        return self.cpu_choice.describe(self.cfg.n_head, self.cfg.n_embd)

    def next_batch(self):
        return get_batch(self.train_data, self.cfg, self.device, self.batch_gen)

    def prefetch(self) -> None:
        """Draw the next step's batch now (on CUDA it copies while the GPU computes). The
        generator state from before the draw is what a checkpoint stores, so a resumed
        run draws this same batch again."""
        self.batch_state = self.batch_gen.get_state()
        self.X, self.Y = self.next_batch()

    def compile(self) -> str:
        """torch.compile the model; a failure here (or at the first compiled call of a
        kind: a training step, an eval) is logged and training continues eagerly. Later
        errors are the run's own (an OOM, a NaN check) and propagate as they are."""
        try:
            self.compiled = torch.compile(self.model)
            self.compile_status = "on"
        except Exception as e:  # e.g. no Triton for this GPU, no C compiler
            self._compile_failed(e)
        return self.compile_status

    def _compile_failed(self, e: BaseException) -> None:
        self.log(f"torch.compile failed, continuing without it ({one_line(e)})")
        self.compiled = None
        self.compile_status = "failed"

    def _with_model(self, fn: Callable[[Any], Any], kind: str) -> Any:
        """Run fn(model), compiled when possible. Only the first compiled call of each
        kind ("train", "eval") compiles, so only there is an error a compile failure (and
        falls back to eager); out of memory is never one."""
        if self.compiled is None:
            return fn(self.model)
        if kind in self._compiled_kinds:
            return fn(self.compiled)
        try:
            out = fn(self.compiled)
        except dev.OUT_OF_MEMORY:
            raise
        except Exception as e:
            self._compile_failed(e)
            self.optimizer.zero_grad(set_to_none=True)
            return fn(self.model)
        self._compiled_kinds.add(kind)
        return out

    def train_step(self, lr: float | None = None) -> torch.Tensor:
        """One optimizer step over gradient_accumulation_steps micro-batches; returns the
        mean loss as a 0-d tensor (not synchronised: call float() when you need it)."""
        lr = get_lr(self.iter_num + 1, self.cfg) if lr is None else lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self._with_model(self._accumulate, "train")
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.iter_num += 1
        return loss

    def _accumulate(self, model) -> torch.Tensor:
        steps = self.cfg.gradient_accumulation_steps
        total = torch.zeros((), device=self.device)
        self.model.train()
        for _ in range(steps):
            with self.ctx:
                _, loss = model(self.X, self.Y)
                loss = loss / steps
            self.prefetch()  # the next batch, while the GPU works
            self.scaler.scale(loss).backward()
            total += loss.detach()
        return total

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Mean loss over eval_iters batches of each split; the batches are the same at
        every eval (their own fixed-seed generator), so eval curves are not noisier than
        the model."""
        out = {}
        self.model.eval()
        for split, data in (("train", self.train_data), ("val", self.val_data)):
            gen = torch.Generator().manual_seed(self.cfg.seed + EVAL_SEED_OFFSET)
            losses = torch.zeros(self.cfg.eval_iters)
            for k in range(self.cfg.eval_iters):
                x, y = get_batch(data, self.cfg, self.device, gen)
                with self.ctx:
                    _, loss = self._with_model(lambda m: m(x, y), "eval")
                losses[k] = loss.item()
            out[split] = losses.mean().item()
        self.model.train()
        return out

    def all_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    # -- checkpoints --
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain containers only, so it loads
        with torch.load(weights_only=True)."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "batch": self.batch_state}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CKPT_FORMAT,
            "model": self.model.state_dict(),
            "model_args": asdict(self.model.config),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iter_num": self.iter_num,
            "best_val_loss": self.best_val_loss,
            "best_iter": self.best_iter,
            "evals_since_best": self.evals_since_best,
            "last_eval_iter": self.last_eval_iter,
            "config": self.cfg.to_dict(),
            "rng": rng,
        }

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(model_state(ck))
            self.optimizer.load_state_dict(ck["optimizer"])
            if ck.get("scaler"):
                self.scaler.load_state_dict(ck["scaler"])
            self.iter_num = int(ck["iter_num"])
            self.best_val_loss = float(ck["best_val_loss"])
            self.best_iter = ck.get("best_iter")
            self.evals_since_best = int(ck.get("evals_since_best", 0))
            self.last_eval_iter = ck.get("last_eval_iter")
            rng = ck["rng"]
            torch.set_rng_state(rng["torch"].cpu())
            self.batch_gen.set_state(rng["batch"].cpu())
            if self.device.type == "cuda" and "cuda" in rng:
                try:
                    torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
                except Exception:  # a different number of visible cards: keep fresh state
                    pass
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise TrainError(f"checkpoint does not match this run's config: {one_line(e)}") from None
        self.prefetch()
