"""A nanoGPT out_dir brought into runs/ as a finished run (`nanotui import`).

nanoGPT's train.py leaves `out_dir/ckpt.pt` = {model, optimizer, model_args, iter_num,
best_val_loss, config}, config being train.py's globals (its settings), and the user often
keeps its stdout (`python train.py ... | tee log.txt`). The run directory made from them
holds what every view reads of a run nanotui trained (engine.runs):

    config.toml     the settings that are TrainConfig keys with nanoGPT's meaning, the
                    model's shape from model_args (the truth when they disagree: a run
                    resumed or fine-tuned with other flags), tokenizer and vocab_size
    imported.json   where it came from, and nanoGPT's whole config, with the keys that map
                    onto nothing here listed (out_dir, wandb_*, init_from, ...): kept, not
                    dropped
    status.json     done, marked imported; iteration, losses and tok/s from the log when
                    there is one, else the checkpoint's iter_num and best_val_loss
    metrics.jsonl   the log's train and eval lines (engine.interop.nanogpt_log)
    ckpt.pt         the weights (`_orig_mod.` prefixes stripped), model_args and the
                    tokenizer's vocabulary, without the optimizer: an imported run is read,
                    sampled, compared and exported, never resumed. best.pt is the same file.

The whole run is built in a temporary directory beside its sweep and renamed into place,
so a failed import leaves nothing that looks like a run (or a queued run a launch would
start). The source is only read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from engine.config import TRAIN_KEYS, ConfigError, TrainConfig, check_train_keys
from engine.data.nanogpt import checkpoint_data_dirs, nanogpt_data_meta, read_meta_pkl
from engine.data.tokenizers import GPT2_TOKENS
from engine.errors import UserError, one_line
from engine.files import atomic_write_json
from engine.interop.nanogpt_log import LogCurve, NanoGptLog, Progress, scan_log, write_records
from engine.model.checkpoint import (
    CKPT_FORMAT,
    CheckpointError,
    build_model,
    load_checkpoint,
    model_state,
    save_checkpoint,
)
from engine.model.gpt import GPT
from engine.runs import IMPORTED, RunDir, RunError, create_run, process_start_time, safe_part

# TrainConfig keys whose nanoGPT value means something else (dataset is a name under
# data/), or that nanoGPT does not have: set from what the import finds, never copied
NOT_COPIED = {"dataset", "data_dir", "tokenizer", "vocab_size", "val_fraction"}


Stage = Callable[[str], Progress]   # starts a stage of work on a log: its progress function


class NanoGptImportError(UserError):
    """An out_dir that cannot be imported: one line naming it and why."""


@dataclass
class NanoGptRun:
    """What one out_dir holds, read and checked; nothing written yet."""

    source: Path
    ckpt_path: Path
    name: str
    ck: dict[str, Any]
    config: TrainConfig
    unmapped: dict[str, Any]
    meta: dict[str, Any] | None
    meta_source: str
    log: NanoGptLog | None
    params: tuple[int, int]
    notes: list[str] = field(default_factory=list)
    curve: LogCurve | None = None    # the log's numbers, once its records are written


def read_out_dir(path: Path, meta_path: Path | None = None, log_path: Path | None = None,
                 name: str | None = None, stage: Stage | None = None) -> NanoGptRun:
    """Read an out_dir (or its ckpt.pt) and everything it implies; raise NanoGptImportError.
    `stage` follows the read of the log."""
    path = Path(path).expanduser()
    ckpt = path / "ckpt.pt" if path.is_dir() else path
    if not ckpt.is_file():
        raise NanoGptImportError(f"{path}: no ckpt.pt (expected a nanoGPT out_dir or a .pt file)")
    source = Path(os.path.abspath(ckpt)).parent  # a symlinked ckpt.pt: the folder it is in
    ck = load_checkpoint(ckpt)
    if not isinstance(ck.get("model_args"), dict):
        raise NanoGptImportError(f"{ckpt}: no model_args: not a nanoGPT checkpoint")
    name = name or (source.name if ckpt.stem == "ckpt" else ckpt.stem)
    if not safe_part(name):
        raise NanoGptImportError(f"{path}: {name!r} cannot name a run: pass --name")
    model, params = _check_weights(ckpt, ck)
    del model
    meta, meta_source, data_dir = _find_meta(ckpt, ck, meta_path)
    if meta is not None and meta["vocab_size"] > ck["model_args"]["vocab_size"]:
        raise NanoGptImportError(
            f"{ckpt}: the tokenizer from {meta_source} has {meta['vocab_size']} tokens, the "
            f"model only {ck['model_args']['vocab_size']}: not its tokenizer (pass --meta)")
    cfg, unmapped = _config(ck, meta, data_dir, ckpt)
    if log_path is None and (source / "log.txt").is_file():
        log_path = source / "log.txt"
    if log_path is not None and not Path(log_path).is_file():
        raise NanoGptImportError(f"{log_path}: no such log file (or not a regular file)")
    log = (scan_log(log_path, stage(f"reading {log_path}") if stage else None)
           if log_path is not None else None)
    run = NanoGptRun(source, ckpt, name, ck, cfg, unmapped, meta, meta_source, log, params)
    if meta is None:
        run.notes.append(f"no tokenizer: no data/{ck.get('config', {}).get('dataset')}/meta.pkl "
                         "found and the vocabulary is smaller than GPT-2's; pass --meta "
                         "to sample text")
    if log is not None and not (log.train_lines or log.eval_lines):
        run.notes.append(f"{log.path}: no `iter N: loss` or `step N: train loss` lines")
    return run


def _check_weights(ckpt: Path, ck: dict[str, Any]) -> tuple[GPT, tuple[int, int]]:
    """The weights load into nanotui's GPT (the same architecture and parameter names)."""
    try:
        model = build_model(ck, ckpt)
    except CheckpointError as e:
        raise NanoGptImportError(str(e)) from None
    return model, (model.get_num_params(), model.get_num_params(False))


def _find_meta(ckpt: Path, ck: dict[str, Any], given: Path | None
               ) -> tuple[dict[str, Any] | None, str, Path | None]:
    """(tokenizer meta, where from, the data dir if found): the --meta file or data dir,
    else data/<dataset>/ where nanoGPT's scripts look, else GPT-2 when the vocabulary
    holds it (as nanoGPT's sample.py assumes)."""
    dirs = [Path(given).expanduser()] if given is not None and Path(given).is_dir() else []
    if given is not None and not dirs:
        if not Path(given).is_file():
            raise NanoGptImportError(f"--meta {given}: no such file or directory")
        return read_meta_pkl(Path(given)), str(given), None
    for d in dirs or checkpoint_data_dirs(ckpt, ck):
        if nanogpt_data_meta(d) is not None:
            return nanogpt_data_meta(d), str(d), d
        if (d / "meta.pkl").is_file():
            return read_meta_pkl(d / "meta.pkl"), str(d / "meta.pkl"), d
    if dirs:
        raise NanoGptImportError(f"--meta {given}: no meta.pkl (or nanoGPT train.bin/val.bin) there")
    if ck["model_args"].get("vocab_size", 0) >= GPT2_TOKENS:
        return {"vocab_size": GPT2_TOKENS, "tokenizer": "gpt2"}, "GPT-2 (vocabulary >= 50257)", None
    return None, "", None


def _config(ck: dict[str, Any], meta: dict[str, Any] | None, data_dir: Path | None,
            ckpt: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """nanoGPT's settings as a TrainConfig, and those that have no place in one."""
    given = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    kept: dict[str, Any] = {}
    unmapped: dict[str, Any] = {}
    for key, value in given.items():
        if key in NOT_COPIED:
            continue  # set below from what the import found (the whole config is kept too)
        if key in TRAIN_KEYS:
            try:
                kept.update(check_train_keys({key: value}, "nanoGPT config"))
                continue
            except ConfigError:
                pass  # a value nanotui reads otherwise: kept aside with the rest
        unmapped[key] = value
    args = ck["model_args"]
    kept.update({k: args[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias",
                                      "dropout") if k in args})
    kept["dropout"] = float(kept.get("dropout", 0.0))
    kept["vocab_size"] = int(args["vocab_size"])
    kept["tokenizer"] = (meta or {}).get("tokenizer") or "char"
    dataset = str(data_dir) if data_dir is not None else given.get("dataset")
    if isinstance(dataset, str) and dataset:
        kept["dataset"] = dataset
    try:
        cfg = TrainConfig(**kept)
    except (ConfigError, TypeError) as e:
        raise NanoGptImportError(f"{ckpt}: its settings do not make a valid run: {one_line(e)}") from None
    return cfg, unmapped


# ---- writing the run -----------------------------------------------------------------------

def status_fields(run: NanoGptRun) -> dict[str, Any]:
    """status.json of the imported run: the log's numbers when it has them."""
    ck, cfg = run.ck, run.config
    best = ck.get("best_val_loss")
    best = float(best) if isinstance(best, (int, float, torch.Tensor)) else None
    st: dict[str, Any] = {
        "state": "done", "reason": None, "exit_code": 0, "iter": int(ck.get("iter_num") or 0),
        "max_iters": cfg.max_iters, "best_val_loss": best, "best_iter": ck.get("iter_num"),
        "val_loss": best, "params": run.params[0], "params_total": run.params[1],
        "device": cfg.device, "dtype": cfg.dtype, "eta_s": 0,
        "imported": {"format": "nanogpt", "source": str(run.source),
                     "checkpoint": str(run.ckpt_path.resolve()),
                     "log": str(run.log.path.resolve()) if run.log else None,
                     "tokenizer": run.meta_source or None, "imported_at": time.time()}}
    c = run.curve
    if c is not None and c.best is not None and c.last_eval is not None:
        last, val, train = c.last_eval
        st.update(best_val_loss=c.best[1], best_iter=c.best[0], val_loss=val, train_loss=train,
                  iter=max(st["iter"], last))
    if c is not None and c.trains:
        st.update(tok_s=c.tok_s, mfu=c.mfu)
    return st


def checkpoint_state(run: NanoGptRun) -> dict[str, Any]:
    ck = run.ck
    best = ck.get("best_val_loss")
    return {"format": CKPT_FORMAT, "model": model_state(ck), "model_args": dict(ck["model_args"]),
            "iter_num": int(ck.get("iter_num") or 0),
            "best_val_loss": float(best) if isinstance(best, (int, float, torch.Tensor)) else None,
            "config": run.config.to_dict(), "meta": run.meta}


IMPORT_PREFIX = ".import-"   # RUNS/.import-<pid>-<random>/: an import being written


def remove_stale_imports(runs_root: Path) -> list[Path]:
    """Delete the work folders of imports whose process is gone (a `kill -9` mid-import
    leaves a checkpoint's worth there); those of live imports are left alone."""
    removed = []
    for d in runs_root.glob(f"{IMPORT_PREFIX}*"):
        pid = d.name[len(IMPORT_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or process_start_time(int(pid)) is None:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def write_run(run: NanoGptRun, runs_root: Path, sweep: str, stage: Stage | None = None) -> RunDir:
    """Write the run directory runs_root/sweep/name (RunError if it exists); `stage`
    follows the second read of the log."""
    if not safe_part(sweep):
        raise RunError(f"unsafe sweep name {sweep!r}")
    final = RunDir(Path(runs_root) / sweep / run.name)
    if final.path.exists():
        raise RunError(f"run {final.id} already exists: pick another --sweep or --name")
    final.path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_imports(Path(runs_root))
    tmp_root = Path(tempfile.mkdtemp(dir=runs_root, prefix=f"{IMPORT_PREFIX}{os.getpid()}-"))
    try:
        tmp = create_run(tmp_root, sweep, run.name, run.config, varied={}, exist_ok=False)
        if run.log is not None:
            what = f"writing {sweep}/{run.name} from {run.log.path}"
            run.curve = write_records(run.log, run.config.tokens_per_iter, tmp.log_metrics,
                                      stage(what) if stage else None)
        save_checkpoint(checkpoint_state(run), tmp.ckpt_path)
        try:
            os.link(tmp.ckpt_path, tmp.best_path)
        except OSError:
            shutil.copyfile(tmp.ckpt_path, tmp.best_path)
        atomic_write_json(tmp.path / IMPORTED, {
            "format": "nanogpt", "source": str(run.source), "checkpoint": str(run.ckpt_path),
            "model_args": run.ck["model_args"], "nanogpt_config": run.ck.get("config", {}),
            "unmapped": sorted(run.unmapped), "tokenizer": run.meta_source or None,
            "notes": run.notes})
        tmp.update_status(**status_fields(run))
        os.rename(tmp.path, final.path)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


def import_out_dirs(paths: list[Path], runs_root: Path, sweep: str = "imported",
                    meta_path: Path | None = None, log_path: Path | None = None,
                    name: str | None = None, stage: Stage | None = None
                    ) -> list[tuple[RunDir, NanoGptRun]]:
    """Import every out_dir; all are read and checked before the first is written, so a
    bad one among many writes nothing. `stage(what)` starts a stage of the work on a log
    ("reading PATH", "writing RUN from PATH") and returns the function that follows its
    bytes: a log of a long run takes a while."""
    if (log_path is not None or name is not None) and len(paths) != 1:
        raise NanoGptImportError("--log and --name name one run: give one PATH with them")
    runs = [read_out_dir(p, meta_path, log_path, name, stage) for p in paths]
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise NanoGptImportError(f"two out_dirs would both be run {sweep}/{dup[0]}: import them "
                           "one at a time with --name")
    for r in runs:
        if (Path(runs_root) / sweep / r.name).exists():
            raise RunError(f"run {sweep}/{r.name} already exists: pick another --sweep or --name")
    return [(write_run(r, runs_root, sweep, stage), r) for r in runs]
