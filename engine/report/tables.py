"""Formatting for report tables and runs.csv."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from engine.report import text_evals
from engine.report.summary import RunSummary
from engine.report.decoding import describe_decoding, diversity

MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "max_iters")

COMPUTE_COLUMNS = ["train_flops", "train_time_s", "tokens_per_param", "val_bpb"]
CSV_COLUMNS = [
    "sweep", "run", "state", "reason", "varied", "group", "tokenizer", *MODEL_KEYS, "params",
    "params_total", "best_val_loss", "best_iter", "final_val_loss", "final_train_loss",
    "final_iter", "train_val_gap", "chars_per_token", "bits_per_char", "perplexity",
    "tok_s", "wall_s", "overfit_from_iter", "in_fit", "decoding", "diversity_iter",
    "diversity_samples", "words", "ttr", "mattr", "distinct_1", "distinct_2", "distinct_3",
    "repetition_4", *COMPUTE_COLUMNS,
]


def fmt(x: Any, kind: str = "") -> str:
    """One table cell. Missing values are an em dash."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if kind == "loss":
        return f"{x:.4f}"
    if kind == "gap":
        return f"{x:+.4f}"
    if kind in ("bpc", "div"):
        return f"{x:.3f}"
    if kind == "ppl":
        return f"{x:.2f}"
    if kind == "int":
        return f"{int(round(x)):,}"
    if kind == "words":
        return f"{x:.0f}"
    if kind == "time":
        s = int(round(x))
        h, rem = divmod(s, 3600)
        m, sec = divmod(rem, 60)
        return f"{h}:{m:02d}:{sec:02d}" if h else (f"{m}m {sec:02d}s" if m else f"{x:.1f} s")
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


PATH_KEYS = ("dataset", "data_dir")


def shown_setting(key: str, value: Any) -> Any:
    """A setting as a hand-in shows it: a dataset or data directory given as a path by
    its last part (no local paths in a report)."""
    if key in PATH_KEYS and isinstance(value, str) and "/" in value:
        return Path(value).name or value
    return value


def md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _numeric(cell: str) -> bool:
    return cell == "—" or cell.replace(",", "").replace(".", "").replace(":", "").lstrip(
        "+-").replace("m ", "").rstrip("s ").isdigit()


def md_table(head: list[str], rows: list[list[str]]) -> str:
    """A pipe table; columns of numbers are right-aligned, text left-aligned."""
    align = ["---:" if rows and all(_numeric(r[i]) for r in rows) and any(r[i] != "—" for r in rows)
             else "---" for i in range(len(head))]
    lines = ["| " + " | ".join(md_cell(h) for h in head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def group_value(s: RunSummary, key: str) -> str:
    if s.config is None:
        return "?"
    v = s.config.to_dict().get(key)
    return json.dumps(v) if not isinstance(v, str) else v


def _r(x: float | None, digits: int = 6) -> Any:
    """Derived numbers (differences, ratios) rounded so float noise does not show."""
    return "" if x is None else round(x, digits)


def csv_head(texts: list[text_evals.EvalColumn]) -> list[str]:
    """runs.csv's header: the fixed columns, then loss, perplexity and bits per byte on
    each text some run was evaluated on (`nanotui eval`)."""
    return [*CSV_COLUMNS, *text_evals.csv_head(texts)]


def csv_row(s: RunSummary, decoding: tuple | None, group_by: str | None, in_fit: bool,
            texts: list[text_evals.EvalColumn] = ()) -> list[Any]:
    d, n, it = diversity(s, decoding) if decoding else ({}, 0, None)
    blank = lambda v: "" if v is None else v  # noqa: E731
    return [s.run.sweep, s.run.name, s.state, blank(s.reason), json.dumps(s.varied, sort_keys=True),
            group_value(s, group_by) if group_by else "", s.tokenizer,
            *[blank(getattr(s.config, k)) if s.config else "" for k in MODEL_KEYS], blank(s.params),
            blank(s.params_total), blank(s.best_val), blank(s.best_iter), blank(s.final_val),
            blank(s.final_train), blank(s.final_iter), _r(s.gap), blank(s.chars_per_token),
            _r(s.bpc), _r(s.perplexity), _r(s.tok_s, 1), _r(s.wall_s, 1),
            blank(s.overfit_iter), int(in_fit), describe_decoding(decoding) if decoding else "",
            blank(it), n, *[_r(d.get(k)) for k in ("words", "ttr", "mattr", "distinct_1",
                                                   "distinct_2", "distinct_3", "repetition_4")],
            *compute_cells(s), *text_evals.csv_cells(s.text_evals, list(texts))]


def compute_cells(s: RunSummary) -> list[Any]:
    """runs.csv's COMPUTE_COLUMNS (engine.report.compute says what each means)."""
    return [_r(s.train_flops, 0), _r(s.train_time_s, 2), _r(s.tokens_per_param, 3),
            _r(s.val_bpb)]


def text_eval_section(rows: list[tuple[str, str, list[dict[str, Any]]]]) -> list[str]:
    """report.md's "On a fixed text" section from (run name, tokenizer, its evals) rows;
    nothing when no run was evaluated."""
    cols = text_evals.columns(evals for _, _, evals in rows)
    if not cols:
        return []
    table = []
    for c in cols:
        for name, tokenizer, evals in rows:
            e = text_evals.on(evals, c)
            if e is None:
                continue
            table.append([c.label, name, tokenizer, fmt(e.get("iter"), "int"),
                          fmt(e.get("tokens"), "int"), fmt(e.get("bytes"), "int"),
                          fmt(e.get("loss"), "loss"), fmt(e.get("perplexity"), "ppl"),
                          fmt(e.get("bits_per_byte"), "bpc")])
    mixed = len({tok for _, tok, evals in rows if evals}) > 1
    return ["## On a fixed text (`nanotui eval`)", "",
            "Each run's best checkpoint on a text of your choice, at a fixed context T "
            "(text = file name, first 8 hex digits of its sha256, T). Loss is nats per token "
            "and perplexity per token of the run's own tokenizer; bits per byte compares "
            "runs across tokenizers" + (" (char and BPE runs here: compare them by bits per "
            "byte only)." if mixed else "."), "",
            md_table(["text", "run", "tokenizer", "checkpoint iter", "tokens", "bytes",
                      "loss", "perplexity", "bits/byte"], table)]


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside names as numbers: n_head=4 < 8 < 16 < 32."""
    return tuple((0, float(part), "") if i % 2 else (1, 0.0, part)
                 for i, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", text)))
