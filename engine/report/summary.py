"""Per-run numbers for reports, read from run directories through engine.runs.

Every number here is derived from status.json, metrics.jsonl, samples.jsonl, the run's
config.toml and (for bits per character) the prepared data's meta.json. What a number
means is written down once, in METHODS, which report.md copies verbatim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import ConfigError, TrainConfig
from engine.jsonl import Thinned
from engine.model.arithmetic import PARAM_CONVENTIONS, model_vocab, param_count, param_counts
from engine.report.compute import METHODS as COMPUTE_METHODS
from engine.report.compute import Point, RunAxes, point, run_axes
from engine.train.control import TrainClock
from engine.report.meta import find_meta
from engine.report import text_evals
from engine.report.reading import RunReading, read_run
from engine.runs import RunDir

LN2 = math.log(2)
DIVERSITY_KEYS = ("ttr", "mattr", "distinct_1", "distinct_2", "distinct_3", "repetition_4", "words")
OVERFIT_RISE = 0.01        # val must end >1% above its best to count as overfitting
DEGENERATE_REPETITION = 0.30
MAX_TRAIN_POINTS = 4000  # train records kept per run (Thinned: at most twice this)
MIN_WORDS = 200  # TTR of fewer words per run swings with the sample: flagged, not compared

METHODS = {
    "params": "Parameters, and the convention of each count (engine.model.arithmetic."
              "PARAM_CONVENTIONS): \"params (nanoGPT)\", the N of every fit and of gain per "
              f"doubling, is {PARAM_CONVENTIONS['nanogpt']}; \"non-emb.\" is "
              f"{PARAM_CONVENTIONS['non_embedding']}; total is "
              f"{PARAM_CONVENTIONS['total']}. With a GPT-2 vocabulary (50,304 × n_embd "
              "token weights) most of a small model is embedding, so its nanoGPT count "
              "barely moves with depth: read returns to size against the non-embedding "
              "count too. Taken from status.json when the training process recorded them, "
              "else counted from the run's config by `engine.model.arithmetic.param_count` "
              "(exact for this architecture).",
    "best_val": "Best val loss: the lowest `val_loss` over the eval records of metrics.jsonl "
                "(nats per token), with the iteration it was reached at.",
    "final_val": "Final val loss / final train loss: the last eval record's `val_loss` and "
                 "`train_loss` (both averaged over `eval_iters` batches by the trainer).",
    "gap": "Train-val gap: final val loss − final train loss (positive = val worse).",
    "bpc": "Bits per character: best val loss / ln 2 / characters per token. A char-level "
           "tokenizer has exactly 1 character per token; for BPE the characters per token "
           "come from the prepared data's meta.json (`chars_per_token`, else "
           "`bytes_per_token`, which equals characters per token for ASCII text). This is "
           "the number that compares char and BPE runs.",
    "text_eval": "On a fixed text (`nanotui eval RUN --text FILE`): the run's best.pt on "
                 "that text, windows of T tokens; loss = total nats / predicted tokens, "
                 "perplexity = exp(loss), bits/byte = total nats / ln 2 / UTF-8 bytes of the "
                 "predicted span (engine.sample.evaluate); the newest eval per text and T. A "
                 "text is named by its file name and the first 8 hex digits of its sha256 "
                 "(two texts are never one column). Only bits/byte compares tokenizers.",
    "ppl": "Perplexity (BPE runs): exp(best val loss), per token.",
    "bpb": "Bits per byte (BPE runs): best val loss / ln 2 / bytes per token, with bytes "
           "per token from the prepared data's meta.json (`bytes_per_token`): the number "
           "that compares models across tokenizers.",
    "tok_s": "Tokens/s: status.json `tok_s`, the figure every view shows: tokens per step "
             "/ the median seconds per step over the run's recent steps (up to 200), with "
             "start-up, compilation and evals left out.",
    "tok_s_load": "Throughput under load: a CPU run records how many cores other work kept "
                  "busy as it started (status.json `cpu_load`); where they were busy, its "
                  "tok/s is marked “(loaded)” and is not a property of the model: compare "
                  "tok/s only between runs on an otherwise idle machine.",
    "precision": "Precision: status.json `dtype`, the autocast precision the run trained "
                 "in; `dtype = \"auto\"` resolves once by the device's kind (bf16 where the "
                 "CPU or GPU has it natively), the same for every run of a sweep on one "
                 "machine; the CPU attention path (status.json `cpu_attention`) is measured "
                 "per shape.",
    "wall": "Wall time: status.json `ended_at − started_at`; for a run still going, the "
            "time of its last metrics record − `started_at`.",
    "tokens": "Tokens (x axis of the token plot): the records' `tokens` field when the "
              "trainer wrote it, else iteration × batch_size × block_size × "
              "gradient_accumulation_steps.",
    "diversity": "Diversity: the samples of each run's latest eval at the stated decoding "
                 "setting, scored on their completions (prompt excluded) by "
                 "`engine.sample.metrics.eval_metrics`, words = lower-cased runs of letters: "
                 "TTR = unique words / words and MATTR = mean TTR over 50-word windows, both "
                 "averaged per sample; distinct-n = unique word n-grams / n-grams pooled over "
                 "the samples; repetition-4 = 1 − unique 4-grams / 4-grams, averaged per "
                 "sample (loops score near 1); words = mean words per sample.",
    "overfit": f"Overfitting: val loss at the last eval more than {OVERFIT_RISE:.0%} above "
               "its best while train loss at the last eval is below train loss at the best "
               "eval; reported with the iteration of the best val loss (where val starts "
               "rising).",
    "degeneration": f"Degeneration: repetition-4 above {DEGENERATE_REPETITION:.2f} at the "
                    "stated decoding setting (the text loops on itself).",
    **COMPUTE_METHODS,
}


@dataclass
class RunSummary:
    run: RunDir
    state: str
    reason: str | None
    config: TrainConfig | None
    varied: dict[str, Any]
    params: int | None = None
    params_total: int | None = None
    params_non_embedding: int | None = None
    params_note: str = ""
    vocab: int | None = None           # the model's vocabulary, for other parameter conventions
    best_val: float | None = None
    best_iter: int | None = None
    final_val: float | None = None
    final_train: float | None = None
    final_iter: int | None = None
    gap: float | None = None
    chars_per_token: float | None = None
    bpc: float | None = None
    bpc_note: str = ""
    bytes_per_token: float | None = None
    perplexity: float | None = None
    tok_s: float | None = None
    busy_cores: float | None = None  # other work's cores at run start, where it kept them busy
    precision: str | None = None     # status.json dtype: the precision trained in
    attention: str | None = None     # the CPU attention path (None off the CPU)
    wall_s: float | None = None
    overfit_iter: int | None = None
    overfit_note: str = ""
    axes: RunAxes = field(default_factory=RunAxes)
    tokens_trained: float | None = None
    train_flops: float | None = None
    train_time_s: float | None = None
    tokens_per_param: float | None = None
    val_bpb: float | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)
    trains: list[dict[str, Any]] = field(default_factory=list)
    eval_points: list[Point] = field(default_factory=list)  # s.evals on every x axis
    samples: list[dict[str, Any]] = field(default_factory=list)
    temperature_samples: list[dict[str, Any]] = field(default_factory=list)  # a study's
    text_evals: list[dict[str, Any]] = field(default_factory=list)  # `nanotui eval`, newest per text

    @property
    def bpb(self) -> float | None:
        """Bits per byte of the best val loss: the one value (engine.report.compute's
        RunAxes.bpb) that runs.csv's val_bpb, the tables and the TUI's axis all show."""
        return self.val_bpb

    @property
    def id(self) -> str:
        return self.run.id

    @property
    def finished(self) -> bool:
        return self.state == "done" and self.best_val is not None

    @property
    def tokenizer(self) -> str:
        return self.config.tokenizer if self.config else "?"

    @property
    def state_label(self) -> str:
        if self.state == "done":
            return "done"
        return f"{self.state} ({self.reason})" if self.reason else self.state

    def tokens_at(self, rec: dict[str, Any]) -> float | None:
        if isinstance(rec.get("tokens"), (int, float)):
            return float(rec["tokens"])
        if self.config is None or not isinstance(rec.get("iter"), (int, float)):
            return None
        return float(rec["iter"]) * self.config.tokens_per_iter


def finite_number(x: Any) -> float | None:
    """x as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def summarize(run: RunDir, runs_root: Path) -> RunSummary:
    """Everything the report says of one run. State, best val loss, parameters and tok/s
    come from the one reading every view uses (engine.report.reading)."""
    status = run.read_status()
    reading = read_run(run, status)
    try:
        cfg: TrainConfig | None = run.load_config()
    except ConfigError:
        cfg = None
    try:
        varied = dict(run.run_table().get("varied", {}))
    except ConfigError:
        varied = {}
    s = RunSummary(run=run, state=reading.state, reason=reading.reason or None, config=cfg,
                   varied=varied)
    # one pass over metrics.jsonl, a chunk at a time: every eval, the train records thinned
    # to what a figure can show (a million-step run would otherwise take gigabytes)
    # Each record is put on every x axis (engine.report.compute) as it streams by, so the
    # training clock sums every step even where the train curve is thinned.
    meta, meta_src = find_meta(cfg, status, runs_root)
    s.axes = run_axes(run, runs_root, cfg, status, (meta, meta_src)) if cfg else RunAxes()
    clock = TrainClock()
    evals, trains, last_t = [], Thinned(MAX_TRAIN_POINTS), None
    eval_points: list[tuple[dict[str, Any], Point]] = []
    last_train: Point | None = None
    for r in run.metrics_tail().iter_new():
        pt = point(r, clock, s.axes)
        if r.get("kind") == "eval" and finite_number(r.get("val_loss")) is not None:
            evals.append(r)
            if pt is not None:
                eval_points.append((r, pt))
        elif r.get("kind") == "train":
            trains.add(r)
            if pt is not None and (last_train is None or pt.iter >= last_train.iter):
                last_train = pt
        t = finite_number(r.get("t"))
        if t is not None and (last_t is None or t > last_t):
            last_t = t
    s.evals = sorted(evals, key=lambda r: r.get("iter", 0))
    s.trains = sorted(trains.result(), key=lambda r: r.get("iter", 0))
    s.samples = run.read_samples()
    s.text_evals = text_evals.latest(run.read_text_evals())
    s.temperature_samples = run.read_temperature_samples()
    _params(s, reading, status, meta)
    _losses(s, reading)
    _bits_per_char(s, status, meta, meta_src)
    s.tok_s = reading.tok_s
    load = status.get("cpu_load") if isinstance(status.get("cpu_load"), dict) else {}
    if load.get("busy") is True:
        s.busy_cores = finite_number(load.get("busy_cores"))
    s.precision = status.get("dtype") if isinstance(status.get("dtype"), str) else None
    s.attention = status.get("cpu_attention") if isinstance(status.get("cpu_attention"), str) else None
    s.wall_s = _wall_seconds(status, last_t)
    _compute(s, eval_points, last_train)
    return s


def _compute(s: RunSummary, eval_points: list[tuple[dict[str, Any], Point]],
             last: Point | None) -> None:
    """Training FLOPs, training time, tokens per parameter and bits per byte, from the
    one home of the axes (engine.report.compute)."""
    s.eval_points = [p for _, p in sorted(eval_points, key=lambda e: e[0].get("iter", 0))]
    s.tokens_trained = last.tokens if last else None
    s.train_time_s = last.time if last else None
    s.train_flops = s.axes.flops(s.tokens_trained)
    if s.tokens_trained and s.params:
        s.tokens_per_param = s.tokens_trained / s.params
    s.val_bpb = s.axes.bpb(s.best_val)


def _params(s: RunSummary, reading: RunReading, status: dict[str, Any], meta: dict | None) -> None:
    """The trained model's count when recorded, else counted from the config with the
    model's vocabulary (padded as training pads it)."""
    if reading.params is not None:
        s.params, s.params_total, s.params_note = reading.params, reading.params_total, "status.json"
    cfg = s.config
    vocab = None
    if cfg is not None:
        try:
            vocab = model_vocab(cfg, meta or {"vocab_size": status.get("vocab_size")})
        except ConfigError:
            vocab = None
    s.vocab = vocab if isinstance(vocab, int) else None
    if cfg is not None and isinstance(vocab, int):
        s.params_non_embedding = param_count(cfg, vocab, "non_embedding")
        p, pt = param_counts(cfg, vocab)
        s.params = s.params if s.params is not None else p
        s.params_total = s.params_total if s.params_total is not None else pt
        s.params_note = s.params_note or f"counted (vocab {vocab})"
    elif s.params is None:
        s.params_note = "unknown: no vocab size in config, status.json or meta.json"


def _losses(s: RunSummary, reading: RunReading) -> None:
    """Best (the trainer's record), final, gap, and where val started rising."""
    if reading.best_val_loss is not None:
        s.best_val, s.best_iter = reading.best_val_loss, reading.best_iter
    if not s.evals:
        return
    best = min(s.evals, key=lambda r: r["val_loss"])
    if s.best_val is None:
        s.best_val, s.best_iter = float(best["val_loss"]), best.get("iter")
    last = s.evals[-1]
    s.final_val, s.final_iter = float(last["val_loss"]), last.get("iter")
    s.final_train = finite_number(last.get("train_loss"))
    if s.final_train is not None:
        s.gap = s.final_val - s.final_train
    train_at_best = finite_number(best.get("train_loss"))
    if (s.final_val > s.best_val * (1 + OVERFIT_RISE) and s.final_train is not None
            and train_at_best is not None and s.final_train < train_at_best):
        s.overfit_iter = s.best_iter
        s.overfit_note = (f"val loss rose from {s.best_val:.4f} (iter {s.best_iter}) to "
                          f"{s.final_val:.4f} (iter {s.final_iter}) while train loss fell "
                          f"from {train_at_best:.4f} to {s.final_train:.4f}")


def _bits_per_char(s: RunSummary, status: dict[str, Any], meta: dict | None, meta_src: str) -> None:
    if s.best_val is None:
        return
    cfg = s.config
    if cfg is not None and cfg.tokenizer == "char":
        s.chars_per_token = float((meta or {}).get("chars_per_token") or 1.0)
        s.bpc_note = "char tokenizer: 1 character per token"
    elif meta is not None and (finite_number(meta.get("chars_per_token")) or finite_number(meta.get("bytes_per_token"))):
        s.chars_per_token = finite_number(meta.get("chars_per_token")) or finite_number(meta.get("bytes_per_token"))
        s.bpc_note = f"from {meta_src}"
    elif finite_number(status.get("bytes_per_token")):
        s.chars_per_token = float(status["bytes_per_token"])
        s.bpc_note = "bytes_per_token from status.json"
    else:
        s.bpc_note = meta_src
    if s.chars_per_token:
        s.bpc = s.best_val / LN2 / s.chars_per_token
    s.bytes_per_token = (finite_number((meta or {}).get("bytes_per_token"))
                         or finite_number(status.get("bytes_per_token")))
    if cfg is not None and cfg.tokenizer == "gpt2":
        s.perplexity = math.exp(s.best_val)


def _wall_seconds(status: dict[str, Any], last_t: float | None) -> float | None:
    started, ended = finite_number(status.get("started_at")), finite_number(status.get("ended_at"))
    if started is None:
        return None
    if ended is not None:
        return ended - started
    return (last_t - started) if last_t is not None else None
