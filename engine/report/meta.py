"""Which prepared data a finished run's numbers refer to: its meta.json (vocabulary,
bytes and characters per token, for bits per character), found without preparing or
downloading anything, and said why not when it cannot be found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.data.datasets import find_prepared
from engine.data.tokenizers import cache_root


def find_meta(cfg: TrainConfig | None, status: dict[str, Any], runs_root: Path) -> tuple[dict | None, str]:
    """The prepared data's meta.json for a run, and where it came from (or why not).

    Looked for in: config data_dir, status.json data_dir, a dataset given as a prepared
    dir, engine.data.datasets.find_prepared (the exact cache entry), then the data cache by name
    (`<cache>/prepared/<dataset>-<tokenizer>-*`), trusted only when every matching entry
    agrees on the vocabulary and bytes per token."""
    cands: list[str] = []
    if cfg is not None and cfg.data_dir:
        cands.append(cfg.data_dir)
    if isinstance(status.get("data_dir"), str):
        cands.append(status["data_dir"])
    if cfg is not None and cfg.dataset and Path(cfg.dataset).suffix == "":
        cands.append(cfg.dataset)  # a dataset given as a prepared dir
    for c in cands:
        p = Path(c).expanduser()
        for base in ([p] if p.is_absolute() else [p, runs_root.parent / p, runs_root / p]):
            meta = base / "meta.json"
            if meta.is_file():
                try:
                    return json.loads(meta.read_text()), str(meta)
                except (OSError, json.JSONDecodeError):
                    return None, f"{meta} is unreadable"
    if cfg is not None:
        try:  # the data area's exact lookup (never prepares or downloads)
            d = find_prepared(cfg)
            if d is not None and (d / "meta.json").is_file():
                return json.loads((d / "meta.json").read_text()), str(d / "meta.json")
        except Exception:
            pass  # an unreadable source file: try the cache by name
    cached = _from_cache(cfg)
    if cached is not None:
        return cached
    return None, ("no meta.json found (the config has no data_dir, the data cache has no "
                  "prepared copy, and status.json records neither data_dir nor bytes_per_token)")


def _from_cache(cfg: TrainConfig | None) -> tuple[dict, str] | None:
    """meta.json of the data cache's copy of cfg.dataset, without preparing anything.
    A text-file dataset is matched by its recorded source path; a named one by name,
    trusted only when all cached copies agree on what the report needs."""
    if cfg is None or not cfg.dataset:
        return None
    is_path = "/" in cfg.dataset or cfg.dataset.endswith(".txt")
    try:
        pattern = f"*-{cfg.tokenizer}-*/meta.json" if is_path else f"{cfg.dataset}-{cfg.tokenizer}-*/meta.json"
        found = sorted((cache_root() / "prepared").glob(pattern))
        source = str(Path(cfg.dataset).expanduser().resolve()) if is_path else None
    except Exception:
        return None
    metas = []
    for f in found:
        try:
            m = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("tokenizer") != cfg.tokenizer or (is_path and m.get("source") != source):
            continue
        if m.get("val_fraction") not in (None, cfg.val_fraction):
            continue
        metas.append((m, str(f)))
    keys = {(m.get("vocab_size"), m.get("bytes_per_token"), m.get("chars_per_token")) for m, _ in metas}
    return metas[0] if len(keys) == 1 else None
