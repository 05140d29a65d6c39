"""Training configuration: one dataclass with nanoGPT's key names, loaded from TOML.

A run directory's `config.toml` is flat TrainConfig keys at the top level, plus
`schema_version`, an optional `[sampling]` table (SamplingConfig), an optional
`[run]` table (identity: sweep, name, varied values; written by engine.experiments) and
an optional `[horizon]` table (how the run's length and schedule were resolved, written
at launch by engine.model.horizon: the key and value that set the length, the keys that
were derived rather than written, the vocabulary, N, tokens and training FLOPs).

A run's length is set by one of HORIZON_KEYS (max_iters, max_tokens, tokens_per_param,
train_flops); warmup_iters and lr_decay_iters left unset (None) are derived from the
resolved length (engine.model.horizon), so a run of any length gets a schedule that fits
it. In a run's saved config.toml the flat keys hold the resolved values and `[horizon]`
says which of them were derived.

Loading is strict: unknown keys (with a did-you-mean), wrong types and impossible
shapes are errors that name the file, the key and the value. Config and metadata are
TOML/JSON, never pickle.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from engine.errors import UserError
from engine.toml_lines import limit_problem, read_limited


SCHEMA_VERSION = 1

# The keys that set a run's length; one per level of an experiments file (the innermost
# level wins), resolved to max_iters by engine.model.horizon.
HORIZON_KEYS = ("max_iters", "max_tokens", "tokens_per_param", "train_flops")
DEFAULT_MAX_ITERS = 600000        # nanoGPT's, for a config that sets no horizon at all
# A fraction of the horizon, not nanoGPT's fixed 2000 steps: 2000 is 0.3% of nanoGPT's
# 600k-step GPT-2 run but all of a 300-step CPU run. 5% gives a 300-step run 15 steps
# (AdamW's second moment at beta2 = 0.95 averages ~20 steps) and reaches nanoGPT's cap of
# 2000 at 40k steps; the course file's hand-set 100 of 5000 was 2%.
DEFAULT_WARMUP_FRAC = 0.05
WARMUP_CAP = 2000
# The parameter-count conventions (engine.model.arithmetic.param_count implements them);
# here so that a config can be validated without the model room.
PARAM_CONVENTIONS = {
    "nanogpt": "nanoGPT's get_num_params(): every weight except the position embedding "
               "(token embedding counted once, tied to the output head)",
    "non_embedding": "every weight except the token and position embeddings "
                     "(Kaplan et al. 2020's N)",
    "total": "every weight, both embeddings included",
}
DEFAULT_PARAM_CONVENTION = "nanogpt"


class ConfigError(UserError, ValueError):
    """A configuration problem a user can fix; the message is one clear line."""


@dataclass
class SamplingConfig:
    """How samples are drawn at every eval and by `nanotui sample`."""

    prompts: list[str] = field(default_factory=lambda: ["Once upon a time"])
    num_samples: int = 1          # samples per prompt at each eval
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    # "full": each token sees min(length, block_size) tokens, as nanoGPT's sample.py;
    # "rebuild": faster past block_size, from half a window (engine.model.gpt.GPT.generate)
    context: str = "full"
    seed: int = 1337              # fixed, so evals of one run (and runs of a sweep) compare


@dataclass
class TrainConfig:
    """Every knob of one training run. Names and defaults follow nanoGPT's train.py."""

    # data
    dataset: str = "shakespeare"  # "tinystories" | "shakespeare" | a .txt path | a prepared dir
    #                               (nanotui's, or nanoGPT's train.bin/val.bin[/meta.pkl])
    data_dir: str = ""            # a prepared dir (train.bin, val.bin, meta.json); wins over dataset
    tokenizer: str = "char"       # "char" | "gpt2"
    val_fraction: float = 0.1     # used when the source has no validation file of its own
    # model
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    dropout: float = 0.0
    bias: bool = False
    vocab_size: int | None = None  # None: taken from the prepared data's meta.json
    # optimisation
    batch_size: int = 12
    gradient_accumulation_steps: int = 1
    learning_rate: float = 6e-4
    # the horizon: one of max_iters | max_tokens | tokens_per_param | train_flops
    max_iters: int | None = None  # None: resolved from the others (or DEFAULT_MAX_ITERS)
    max_tokens: int | None = None         # training tokens; max_iters = ceil(D / tokens_per_iter)
    tokens_per_param: float | None = None  # D = k * N (N by param_convention)
    train_flops: float | None = None      # D = C / training FLOPs per token
    param_convention: str = DEFAULT_PARAM_CONVENTION  # "nanogpt" | "non_embedding" | "total"
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0        # 0 disables clipping
    # learning-rate schedule
    decay_lr: bool = True         # False is the same as lr_schedule = "constant"
    lr_schedule: str = "cosine"   # "cosine" | "linear" | "constant"
    warmup_iters: int | None = None   # None: warmup_frac x max_iters, at most WARMUP_CAP
    warmup_frac: float = DEFAULT_WARMUP_FRAC
    lr_decay_iters: int | None = None  # None: max_iters (the cosine ends with the run)
    min_lr: float = 6e-5
    # evaluation, logging, stopping
    eval_interval: int = 2000
    eval_iters: int = 200
    log_interval: int = 1
    early_stop_patience: int = 0  # evals without val improvement before stopping; 0 = never
    # system
    device: str = "auto"          # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    dtype: str = "auto"           # "auto" | "float32" | "bfloat16" | "float16"
    compile: bool = False
    cpu_attention: str = "auto"   # "auto" (measured, cached) | "fused" | "torch" | "sdpa"
    cpu_threads: int | str = "auto"  # "auto" (the free cores, followed) | N (engine/train/threads.py)
    seed: int = 1337
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "config") -> None:
        """Raise ConfigError for values that cannot train."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{source}: {key} = {getattr(self, key)!r}: {why}")

        for key in ("n_layer", "n_head", "n_embd", "block_size", "batch_size",
                    "gradient_accumulation_steps", "max_iters", "eval_interval",
                    "eval_iters", "log_interval", "max_tokens", "lr_decay_iters"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise bad(key, "must be at least 1")
        for key in ("tokens_per_param", "train_flops"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise bad(key, "must be a positive finite number")
        if self.warmup_iters is not None and self.warmup_iters < 0:
            raise bad("warmup_iters", "must be 0 or more")
        if not (math.isfinite(self.warmup_frac) and 0.0 <= self.warmup_frac < 1.0):
            raise bad("warmup_frac", "must be in [0, 1)")
        if self.param_convention not in PARAM_CONVENTIONS:
            raise bad("param_convention", f"must be one of {', '.join(PARAM_CONVENTIONS)}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"{source}: n_embd = {self.n_embd} is not divisible by n_head = {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        if not 0.0 < self.val_fraction < 1.0:
            raise bad("val_fraction", "must be between 0 and 1")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "must be positive")
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise bad("lr_schedule", "must be one of cosine, linear, constant")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise bad("dtype", "must be one of auto, float32, bfloat16, float16")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise bad("device", "must be auto, cpu, cuda, cuda:N or mps")
        if self.cpu_attention not in ("auto", "fused", "torch", "sdpa"):
            raise bad("cpu_attention", "must be one of auto, fused, torch, sdpa")
        if self.cpu_threads != "auto" and (type(self.cpu_threads) is not int or self.cpu_threads < 1):
            raise bad("cpu_threads", "must be \"auto\" or a whole number of threads (1 or more)")
        if self.tokenizer not in ("char", "gpt2"):
            raise bad("tokenizer", "must be char or gpt2")
        if self.vocab_size is not None and self.vocab_size < 2:
            raise bad("vocab_size", "must be at least 2")
        if self.early_stop_patience < 0:
            raise bad("early_stop_patience", "must be 0 (off) or more")
        s = self.sampling
        if s.temperature <= 0:
            raise ConfigError(f"{source}: sampling.temperature = {s.temperature!r}: must be positive")
        if s.top_k is not None and s.top_k < 1:
            raise ConfigError(f"{source}: sampling.top_k = {s.top_k!r}: must be at least 1")
        if s.context not in ("full", "rebuild"):
            raise ConfigError(f"{source}: sampling.context = {s.context!r}: must be full or rebuild")
        if s.top_p is not None and not 0.0 < s.top_p <= 1.0:
            raise ConfigError(f"{source}: sampling.top_p = {s.top_p!r}: must be in (0, 1]")
        if s.max_new_tokens < 1 or s.num_samples < 1:
            raise ConfigError(f"{source}: sampling.max_new_tokens and num_samples must be at least 1")

    # ---- conversion -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A TOML-ready dict (None values are dropped: TOML has no null)."""
        d = dataclasses.asdict(self)
        return _drop_none(d)

    def replace(self, **changes: Any) -> "TrainConfig":
        sampling = changes.pop("sampling", None)
        cfg = dataclasses.replace(self, **changes)
        if sampling is not None:
            cfg.sampling = sampling
        return cfg

    @property
    def tokens_per_iter(self) -> int:
        return self.batch_size * self.block_size * self.gradient_accumulation_steps


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


# ---- key and type checking ------------------------------------------------------

TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "sampling"]
SAMPLING_KEYS = [f.name for f in dataclasses.fields(SamplingConfig)]
_TRAIN_TYPES = get_type_hints(TrainConfig)
_SAMPLING_TYPES = get_type_hints(SamplingConfig)


def did_you_mean(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check one TOML value against a dataclass annotation; ints are accepted for floats."""
    text = str(annotation)
    if text == "int | str" and isinstance(value, (int, str)) and not isinstance(value, bool):
        return value  # validate() says which values
    optional = "None" in text
    if value is None and optional:
        return None
    if annotation is bool or text.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: expected true or false")
    if annotation is int or text.startswith("int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: expected an integer")
    if annotation is float or text.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} = {value!r}: expected a number")
    if annotation is str or text.startswith("str"):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r}: expected a string")
    if text.startswith("list[str]"):
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{where} = {value!r}: expected a non-empty list of strings")
    raise ConfigError(f"{where}: unsupported value {value!r}")  # pragma: no cover


def sampling_from_dict(d: dict[str, Any], source: str = "config",
                       base: SamplingConfig | None = None) -> SamplingConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: [sampling] must be a table")
    kwargs = dataclasses.asdict(base) if base else {}
    for key, value in d.items():
        if key not in _SAMPLING_TYPES:
            raise ConfigError(f"{source}: unknown key sampling.{key}{did_you_mean(key, SAMPLING_KEYS)}")
        kwargs[key] = coerce(value, _SAMPLING_TYPES[key], f"{source}: sampling.{key}")
    if "prompts" in kwargs:
        check_prompts(kwargs["prompts"], f"{source}: sampling.prompts")
    return SamplingConfig(**kwargs)


MAX_PROMPT_CHARS = 20_000  # far beyond any block_size (the model sees the last block only)
MAX_PROMPTS = 100          # every eval samples each one


def check_prompts(prompts: list[str], where: str) -> None:
    """Refuse prompts that would cost memory and time at every eval for nothing."""
    if len(prompts) > MAX_PROMPTS:
        raise ConfigError(f"{where}: {len(prompts)} prompts, at most {MAX_PROMPTS}")
    for p in prompts:
        if len(p) > MAX_PROMPT_CHARS:
            raise ConfigError(f"{where}: a prompt of {len(p):,} characters, at most "
                              f"{MAX_PROMPT_CHARS:,} (the model sees only its last block_size "
                              f"tokens)")


def check_train_keys(d: dict[str, Any], source: str) -> dict[str, Any]:
    """Type-check flat TrainConfig keys; return them coerced."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key not in _TRAIN_TYPES or key == "sampling":
            raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean(key, TRAIN_KEYS)}")
        out[key] = coerce(value, _TRAIN_TYPES[key], f"{source}: {key}")
    return out


def config_from_dict(d: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a parsed config.toml (flat keys + [sampling] + [run])."""
    d = dict(d)
    d.pop("schema_version", None)
    d.pop("run", None)
    d.pop("horizon", None)
    sampling = sampling_from_dict(d.pop("sampling", {}), source)
    kwargs = check_train_keys(d, source)
    try:
        cfg = TrainConfig(**kwargs, sampling=sampling)
    except ConfigError as e:
        raise ConfigError(str(e).replace("config:", f"{source}:", 1)) from None
    cfg.validate(source)
    return cfg


MAX_CONFIG_BYTES = 256 * 1024  # a run's config.toml is about 2 KB


def load_toml(path: str | Path, max_bytes: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    """A TOML file parsed, refused in one line when too big or too deeply nested to parse
    in bounded memory (toml_lines.limit_problem)."""
    path = Path(path)
    try:
        text = read_limited(path, max_bytes)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return parse_toml(text, path, max_bytes)


def parse_toml(text: str, path: str | Path, max_bytes: int) -> dict[str, Any]:
    problem = limit_problem(text, max_bytes)
    if problem:
        raise ConfigError(f"{path}: refused: {problem}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: refused: nested too deeply to parse") from None


def load_config(path: str | Path) -> TrainConfig:
    """Load and validate a run's config.toml."""
    return config_from_dict(load_toml(path), source=str(path))


def dump_config(cfg: TrainConfig, run: dict[str, Any] | None = None,
                horizon: dict[str, Any] | None = None) -> str:
    """The text of a config.toml: schema_version, the flat keys, [sampling], [run],
    [horizon] (engine.model.horizon.Horizon.record)."""
    d: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    d.update(cfg.to_dict())
    if run:
        d["run"] = _drop_none(run)
    if horizon:
        d["horizon"] = _drop_none(horizon)
    import tomli_w  # only writers need it (reading runs, e.g. a bare GPU image, does not)
    return tomli_w.dumps(d)


def load_horizon_record(path: str | Path) -> dict[str, Any]:
    """The `[horizon]` table of a run's config.toml ({} when absent or unreadable)."""
    try:
        rec = load_toml(path).get("horizon")
    except ConfigError:
        return {}
    return rec if isinstance(rec, dict) else {}
