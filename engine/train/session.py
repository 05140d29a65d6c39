"""One run's training session: TrainingRun sets up a run directory's config, data, model
and Trainer (every user error surfaces there, before anything in the run directory
changes), then runs the loop that reads like nanoGPT's train.py: evals, samples,
checkpoints and status.json. engine.train.process runs it as a process (signals, exit
codes, failures recorded); see that module for the iteration-numbering contract.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any, Callable

import torch

from engine.config import load_horizon_record
from engine.data.nanogpt import measure_bytes_per_token
from engine.errors import one_line
from engine.model import cpu_tuner
from engine.model import device as dev
from engine.model.arithmetic import model_vocab
from engine.model.checkpoint import load_checkpoint, save_checkpoint
from engine.model.horizon import saved_horizon
from engine.runs import RunDir
from engine.train.control import StepTimer, Stop
from engine.train.extension import extensions_from_table, lr_at
from engine.train.provenance import provenance
from engine.train.threads import Governor
from engine.train.trainer import Trainer, TrainError, load_data


class TrainingRun:
    """Drives a Trainer for one run directory: evals, samples, checkpoints, status."""

    STATUS_EVERY_S = 1.0

    def __init__(self, run: RunDir, resume: bool, log: Callable[[str], None] = print):
        self.run = run
        self.resume = resume
        self.log = log
        self.stop = Stop()
        self.status_t = 0.0
        self.status_pending: dict[str, Any] = {}
        # setup: every user error surfaces here, before anything in the run dir changes
        self.cfg = run.load_config()
        self.extensions = extensions_from_table(run.run_table())  # a finished run extended
        try:  # placed on a real GPU: train there or fail with the cause, never on the CPU
            self.device = dev.resolve_placed_device(self.cfg.device)
        except ValueError as e:
            raise TrainError(str(e)) from None
        self.simulated_gpu = dev.simulated_gpu()
        if self.simulated_gpu:
            log(f"placed on {self.simulated_gpu}, a simulated card: training on the CPU")
        self.dtype = dev.resolve_dtype(self.cfg.dtype, self.device)
        if self.device.type == "cpu":
            dev.keep_freed_memory()  # 15-30% faster CPU steps: no page faults per step
        if self.dtype == torch.bfloat16 and self.device.type == "cuda" \
                and not dev.has_native_bf16(self.device):
            raise TrainError(f"dtype = 'bfloat16': {dev.device_name(self.device)} has no bf16 "
                             f"tensor cores (emulated bf16 is slower than float16); use "
                             f"dtype = 'float16' or 'auto'")
        train_data, val_data, self.meta = load_data(self.cfg)
        vocab = model_vocab(self.cfg, self.meta)
        # on CPU the thread count follows the cores other processes leave free (threads.py)
        try:
            threads = Governor(self.cfg.cpu_threads) if self.device.type == "cpu" else None
        except ValueError as e:  # a bad NANOTUI_CPU_THREADS
            raise TrainError(str(e)) from None
        # One precision per sweep: "auto" resolves by the device's kind (bf16 where the CPU
        # or GPU has it natively), the same for every run of a sweep on one machine; on
        # the CPU only the attention path is then measured per shape (cpu_tuner), so a
        # sweep never mixes precisions by a per-shape timing taken under load.
        fixed = self.dtype if self.cfg.dtype == "auto" and self.device.type == "cpu" else None
        self.trainer = Trainer(self.cfg, train_data, val_data, vocab, self.device, dtype=fixed,
                               log=log, threads=threads)
        self.horizon = saved_horizon(self.cfg, load_horizon_record(run.config_path), vocab)
        self.cfg = self.trainer.cfg   # resolved: max_iters, warmup_iters, lr_decay_iters set
        self.dtype = self.trainer.dtype  # on CPU measured with the attention path (cpu_tuner)
        self.ckpt: dict[str, Any] | None = None
        if resume and run.ckpt_path.exists():
            # on the CPU: RNG states must be CPU tensors; load_state_dict moves the rest
            self.ckpt = load_checkpoint(run.ckpt_path, map_location="cpu")
            self.trainer.load_state_dict(self.ckpt)
        elif resume:
            log(f"no {run.ckpt_path.name} yet: starting from scratch")
        from engine.sample.generate import load_tokenizer
        self.tokenizer, why = load_tokenizer(self.meta)
        if self.tokenizer is None:
            log(f"samples disabled: {why}")
        elif not self.meta.get("bytes_per_token"):  # a nanoGPT data dir: measured once
            self.meta["bytes_per_token"] = measure_bytes_per_token(val_data, self.tokenizer)
        self.device_name = dev.device_name(self.device)
        self.flops_per_token = self.trainer.model.flops_per_token()

    def lr(self, it: int) -> float:
        return lr_at(it, self.cfg, self.extensions)

    # -- status and logging --
    def status(self, force: bool = False, **fields: Any) -> None:
        """Merge fields into status.json at most about once a second (it is read by the UI),
        or now when forced; fields held back are written with the next write."""
        self.status_pending.update(fields)
        now = time.time()
        if not force and now - self.status_t < self.STATUS_EVERY_S:
            return
        self.status_t = now
        self.run.update_status(**self.status_pending)
        self.status_pending = {}

    def gpu_memory_status(self) -> dict[str, Any]:
        """{"gpu_mem_bytes": what torch holds on the card} on CUDA, else {}: placement
        counts the run's memory as allocated from it (engine.launch.placement)."""
        held = dev.reserved_memory_bytes(self.device)
        return {} if held is None else {"gpu_mem_bytes": held, "gpu_mem_pid": os.getpid()}

    def speed_fields(self, tok_s: float) -> dict[str, Any]:
        m = dev.mfu(self.flops_per_token, tok_s, self.device_name, self.dtype)
        return {"tok_s": tok_s, "mfu": m, "flops": None if m is not None else self.flops_per_token * tok_s}

    def checkpoint_state(self) -> dict[str, Any]:
        state = self.trainer.state_dict()
        state["meta"] = self.meta  # the vocabulary travels with the weights (engine.sample.generate)
        return state

    # -- one eval --
    def follow_load(self) -> None:
        """On CPU: fewer or more threads when other processes' load has changed (at most
        once per threads.SETTLE_S); the change is logged and goes to status.json."""
        threads = self.trainer.threads
        if threads is None:
            return
        line = threads.check()
        if line is not None:
            self.log("CPU threads: " + line)
            self.status(force=True, **threads.status())

    def evaluate(self) -> dict[str, float]:
        t = self.trainer
        self.follow_load()
        t0 = time.time()
        losses = t.estimate_loss()
        it = t.iter_num
        self.log(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if not (math.isfinite(losses["val"]) and math.isfinite(losses["train"])):
            self.run.log_metric(kind="eval", iter=it, train_loss=losses["train"],
                                val_loss=losses["val"], t=time.time())
            raise NonFinite(f"loss is {losses['val']} at the eval of iter {it}")
        pooled = None
        if self.tokenizer is not None:
            try:
                pooled = self.write_samples(it)
            except Exception as e:  # samples are a view on training, never a reason to stop it
                self.log(f"samples at {it} failed: {one_line(e)}")
        # "samples": the eval's diversity scores (engine.sample.metrics.eval_metrics, pooled)
        self.run.log_metric(kind="eval", iter=it, train_loss=losses["train"], val_loss=losses["val"],
                            lr=self.lr(it), tokens=it * t.tokens_per_iter,
                            samples=pooled, t=time.time())
        improved = losses["val"] < t.best_val_loss
        if improved:
            t.best_val_loss, t.best_iter, t.evals_since_best = losses["val"], it, 0
        else:
            t.evals_since_best += 1
        t.last_eval_iter = it
        if not t.all_finite():
            raise NonFinite(f"weights are not finite at iter {it}")
        state = self.checkpoint_state()
        save_checkpoint(state, self.run.ckpt_path)
        if improved:
            save_checkpoint(state, self.run.best_path)
        # eval_s: with write_every_s, the rhythm by which readers tell a stalled run
        # (engine.report.liveness)
        self.status(force=True, iter=it, train_loss=losses["train"], val_loss=losses["val"],
                    best_val_loss=t.best_val_loss, best_iter=t.best_iter,
                    eval_s=time.time() - t0)
        self.log(f"eval took {time.time() - t0:.1f}s; checkpoint saved"
                 + (" (new best)" if improved else ""))
        return losses

    def write_samples(self, it: int) -> dict[str, Any] | None:
        from engine.sample.generate import generate_samples
        from engine.sample.metrics import eval_metrics
        s = self.cfg.sampling
        # in the training dtype, as `nanotui sample` draws them: the same seed, the same text
        samples = generate_samples(self.trainer.model, self.tokenizer, s.prompts, s.num_samples,
                                   s.max_new_tokens, s.temperature, s.top_k, s.top_p, s.seed,
                                   context=s.context, precision=dev.dtype_name(self.dtype))
        for rec in samples:
            self.run.log_sample(iter=it, **rec)
        if not samples:
            return None
        m = eval_metrics([r["completion"] for r in samples])
        self.log(f"samples at {it}: ttr {m['ttr']:.3f} distinct_2 {m['distinct_2']:.3f} "
                 f"repetition_4 {m['repetition_4']:.3f} | {samples[0]['text'][:80]!r}")
        return m

    # -- the loop --
    def execute(self) -> int:
        self.stop.install()
        try:
            return self._loop()
        finally:
            self.stop.uninstall()

    def _loop(self) -> int:
        cfg, t = self.cfg, self.trainer
        self._announce()
        timer = self.timer = StepTimer()
        while True:
            if (t.iter_num % cfg.eval_interval == 0 or t.iter_num >= cfg.max_iters) \
                    and t.last_eval_iter != t.iter_num:
                self.evaluate()
                if cfg.early_stop_patience and t.evals_since_best >= cfg.early_stop_patience:
                    self.log(f"early stop: no val improvement in {t.evals_since_best} evals "
                             f"(best {t.best_val_loss:.4f} at iter {t.best_iter})")
                    return self.finish("done", "early stop", 0)
                timer.restart()  # the eval's time is not a step's
            if t.iter_num >= cfg.max_iters:
                return self.finish("done", None, 0)
            if self.stop.requested:
                return self.stop_now()

            lr = self.lr(t.iter_num + 1)   # the lr of the step that completes iter + 1
            loss = t.train_step(lr)
            timer.steps += 1
            it = t.iter_num
            if it % cfg.log_interval == 0 or self.stop.requested or it >= cfg.max_iters:
                self._log_step(it, loss.item(), lr)  # .item() synchronises: timings are real
                self.follow_load()

    def _announce(self) -> None:
        """Mark the run running (with this process, device and provenance) and say so."""
        cfg, t, run = self.cfg, self.trainer, self.run
        run.prepare_for_resume(t.iter_num if self.ckpt is not None else -1)
        import psutil
        me = psutil.Process()
        run.update_status(
            state="running", reason=None, exit_code=None, ended_at=None, started_at=time.time(),
            pid=os.getpid(), pid_create_time=me.create_time(), host=socket.gethostname(),
            device=str(self.device), device_name=self.device_name, dtype=dev.dtype_name(self.dtype),
            params=t.model.get_num_params(), params_total=t.model.get_num_params(False),
            iter=t.iter_num, max_iters=cfg.max_iters, best_val_loss=_none_if_inf(t.best_val_loss),
            best_iter=t.best_iter, compile="off", tok_s=None, mfu=None, eta_s=None,
            dtype_setting=cfg.dtype,
            cpu_attention=t.cpu_choice.path if t.cpu_choice is not None else None,
            # tok/s compares runs only when the cores were not shared: what other work
            # used just before this run's steps began (None off the CPU)
            cpu_load=self._cpu_load(),
            bytes_per_token=self.meta.get("bytes_per_token"),  # for bits per byte in views
            **(t.threads.status() if t.threads else {"cpu_threads": None, "cpu_threads_why": None}),
            simulated_gpu=self.simulated_gpu, provenance=provenance(self.device_name))
        self.log(f"{run.id}: {t.model.get_num_params():,} params, device {self.device} "
                 f"({self.device_name}), dtype {dev.dtype_name(self.dtype)}, "
                 f"{t.tokens_per_iter:,} tokens/iter, {'resuming at iter ' + str(t.iter_num) if self.ckpt else 'from scratch'}")
        self.log(self.horizon.schedule_line())
        for warning in self.horizon.warnings():
            self.log(f"warning: {warning}")
        if t.cpu_choice is not None:
            self.log("CPU attention: " + t.cpu_attention_line())
        if self.extensions:
            self.log(self.extensions[-1].describe())
        if cfg.compile:
            self.log("compiling the model...")
            run.update_status(compile=t.compile())

    def _cpu_load(self) -> dict[str, Any] | None:
        if self.device.type != "cpu":
            return None
        busy = cpu_tuner.busy_cores()
        return {"busy_cores": busy, "busy": busy is not None and busy >= cpu_tuner.BUSY_CORES}

    def _log_step(self, it: int, train_loss: float, lr: float) -> None:
        """A log point: the train record, the stdout line and status.json's progress."""
        cfg, t, timer = self.cfg, self.trainer, self.timer
        now = time.time()
        dt = timer.lap(now)
        if not math.isfinite(train_loss):
            raise NonFinite(f"loss is {train_loss} at iter {it}")
        tok_s = t.tokens_per_iter / dt
        speed = self.speed_fields(tok_s)
        self.run.log_metric(kind="train", iter=it, loss=train_loss, lr=lr, dt_ms=dt * 1000,
                            tok_s=tok_s, mfu=speed["mfu"], tokens=it * t.tokens_per_iter, t=now)
        util = (f"mfu {speed['mfu'] * 100:.2f}%" if speed["mfu"] is not None
                else f"{speed['flops'] / 1e9:.1f} GFLOP/s")
        self.log(f"iter {it}: loss {train_loss:.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms, "
                 f"tok/s {tok_s:,.0f}, {util}")
        eta = timer.eta(cfg.max_iters - it)
        # status.json's tok_s is the run's speed as every view shows it: the median step of
        # the recent window (warm-up excluded), not the noisy last lap
        typical = self.speed_fields(t.tokens_per_iter / timer.median()) if timer.times else speed
        self.status(iter=it, train_loss=train_loss, tok_s=typical["tok_s"], mfu=typical["mfu"],
                    compile=t.compile_status, eta_s=eta,
                    write_every_s=max(dt * cfg.log_interval, self.STATUS_EVERY_S),
                    **self.gpu_memory_status())

    def stop_now(self) -> int:
        t = self.trainer
        if t.all_finite():
            save_checkpoint(self.checkpoint_state(), self.run.ckpt_path)
            self.log(f"stopped at iter {t.iter_num}; checkpoint saved")
        return self.finish("stopped", "stopped by signal", 0)

    def finish(self, state: str, reason: str | None, code: int) -> int:
        if self.trainer.threads is not None:
            self.trainer.threads.close()  # its cores are free for our other runs
        progress = dict(self.status_pending, iter=self.trainer.iter_num)
        timer = getattr(self, "timer", None)
        if timer is not None and timer.times:
            # A finished run's speed is its typical step (the median of the recent laps,
            # warm-up excluded), not whatever the last lap happened to be.
            progress.update(self.speed_fields(self.trainer.tokens_per_iter / timer.median()))
        self.run.update_status(state=state, reason=reason, exit_code=code, ended_at=time.time(),
                               **{**progress, "eta_s": 0 if state == "done" else None})
        self.log(f"{state} at iter {self.trainer.iter_num}" + (f": {reason}" if reason else ""))
        return code


class NonFinite(Exception):
    """The loss (or the weights) became NaN/inf: the run failed; checkpoints are kept."""


def _none_if_inf(x: float) -> float | None:
    return x if math.isfinite(x) else None
