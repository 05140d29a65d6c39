"""`nanotui eval` results (a run's eval.jsonl) as every table shows them: report.md,
runs.csv, the course report and the leaderboard.

A text is its sha256, not its file name: two different files both called `test.txt` are
two columns, and one text copied under two names is one. A column is a text at one
context length T (a loss at T=64 is not one at T=256), named by the file name, the first
8 hex digits of the sha256 and T. Of several evals of a run on one column the newest
wins. Loss and perplexity are per token of the run's own tokenizer, so only bits per
byte compares char and BPE runs; the tables say so.

Reading a report must not import torch, so this lives here and not beside the evaluator
(engine.sample.evaluate); it imports nothing of the report, which all imports it. The
report's section is engine.report.tables.text_eval_section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from engine.text import safe_text

SHORT_SHA = 8


@dataclass(frozen=True)
class EvalColumn:
    name: str           # the file name the text was first seen under
    sha256: str
    block_size: Any

    @property
    def key(self) -> tuple[str, Any]:
        return (self.sha256, self.block_size)

    @property
    def label(self) -> str:
        """"t.txt (3f2a9c1e) @ T=64": what a Markdown header says."""
        return f"{self.name} ({self.sha256[:SHORT_SHA]}) @ T={self.block_size}"

    def csv_name(self, what: str) -> str:
        """"eval_bits_per_byte[t.txt 3f2a9c1e T=64]": a runs.csv column."""
        return f"eval_{what}[{self.name} {self.sha256[:SHORT_SHA]} T={self.block_size}]"


CSV_FIELDS = ("loss", "perplexity", "bits_per_byte")


def key_of(rec: dict[str, Any]) -> tuple[str, Any]:
    return (rec["text_sha256"], rec.get("block_size"))


def latest(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record per (text sha256, block size), in the order texts first appear.
    `records` are eval.jsonl's lines in file order, already checked (engine.jsonl)."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in records:
        out[key_of(r)] = r
    return list(out.values())


def columns(per_run: Iterable[list[dict[str, Any]]]) -> list[EvalColumn]:
    """Every (text, T) some run was evaluated on, in the order they first appear."""
    seen: dict[tuple, EvalColumn] = {}
    for evals in per_run:
        for e in evals:
            if key_of(e) not in seen:
                # the name comes from a file (a student's, in a bundle): no terminal
                # control sequences, no line breaks in a header
                name = " ".join(safe_text(Path(str(e.get("text"))).name).split())
                seen[key_of(e)] = EvalColumn(name, e["text_sha256"], e.get("block_size"))
    return list(seen.values())


def on(evals: list[dict[str, Any]], col: EvalColumn) -> dict[str, Any] | None:
    """A run's (newest) record on the column's text, or None."""
    found = None
    for e in evals:
        if key_of(e) == col.key:
            found = e
    return found


def value(evals: list[dict[str, Any]], col: EvalColumn, what: str) -> float | None:
    rec = on(evals, col)
    return rec.get(what) if rec is not None else None


def csv_head(cols: list[EvalColumn]) -> list[str]:
    return [c.csv_name(w) for c in cols for w in CSV_FIELDS]


def csv_cells(evals: list[dict[str, Any]], cols: list[EvalColumn]) -> list[Any]:
    return ["" if value(evals, c, w) is None else value(evals, c, w) for c in cols for w in CSV_FIELDS]
