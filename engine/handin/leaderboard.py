"""`nanotui leaderboard BUNDLE...`: one table across students' hand-ins.

One row per bundled run that has a val loss. Verified bundles rank first; then runs with
bits per byte on the column's text, by bits per byte (comparable across tokenizers); then
the rest by best val loss (nats per token of their own tokenizer). Bits per byte come
from `nanotui eval` records (eval.jsonl): the text most runs were evaluated on (by
sha256, at one block size) is the columns' text, named in the header by file name, short
sha256 and T (engine.report.text_evals); bits per byte is the number that compares char
and BPE runs, loss and perplexity on it are per token of each run's own tokenizer.
Parameters are counted under one stated convention (engine.model.arithmetic). "verified" is `nanotui verify`'s verdict on the
whole bundle (manifest, schemas, recomputed numbers); a rerun is not part of it.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.handin.archive import open_bundle
from engine.handin.verify import verify_bundle
from engine.report.tables import fmt, md_table
from engine.report.text_evals import EvalColumn, columns, key_of, latest, on
from engine.model.arithmetic import DEFAULT_PARAM_CONVENTION, PARAM_CONVENTIONS, model_vocab, param_count

COLUMNS = ["rank", "student", "run", "tokenizer", "best_val_loss", "bits_per_byte", "eval_loss",
           "eval_perplexity", "eval_text", "eval_text_sha256", "eval_block_size", "params",
           "tokens", "seed", "verified"]


@dataclass(frozen=True)
class Leaderboard:
    rows: list[dict[str, Any]]
    convention: str
    text: EvalColumn | None            # the text of the bits-per-byte, loss and perplexity columns

    def to_dict(self) -> dict[str, Any]:
        return {"convention": self.convention, "convention_text": PARAM_CONVENTIONS[self.convention],
                "text": self.text.name if self.text else None,
                "text_sha256": self.text.sha256 if self.text else None,
                "block_size": self.text.block_size if self.text else None, "rows": self.rows}


def build(paths: list[Path], convention: str = DEFAULT_PARAM_CONVENTION) -> Leaderboard:
    """Read and verify every bundle (BundleError for one that is unsafe to read)."""
    if convention not in PARAM_CONVENTIONS:
        raise ValueError(f"--params must be one of {', '.join(PARAM_CONVENTIONS)}")
    found = []
    for p in paths:
        b = open_bundle(p)
        v = verify_bundle(b)
        verdict = "yes" if v.ok else f"no ({len(v.problems)} problems)"
        found += [(b.root, n, verdict) for n in v.runs]
    runs_on = Counter(key_of(e) for _, n, _ in found for e in latest(n.text_evals))
    by_key = {c.key: c for c in columns(n.text_evals for _, n, _ in found)}
    text = by_key[runs_on.most_common(1)[0][0]] if runs_on else None
    rows = []
    for student, n, verdict in found:
        if n.best_val is None:
            continue
        e = on(n.text_evals, text) if text is not None else None
        params = None
        if n.config is not None and n.meta is not None:
            params = param_count(n.config, model_vocab(n.config, n.meta), convention)
        rows.append({"student": student, "run": n.id,
                     "tokenizer": n.config.tokenizer if n.config else None,
                     "best_val_loss": n.best_val, "params": params,
                     "bits_per_byte": e["bits_per_byte"] if e else None,
                     "eval_loss": e["loss"] if e else None,
                     "eval_perplexity": e.get("perplexity") if e else None,
                     "eval_text": text.name if e else None,
                     "eval_text_sha256": text.sha256 if e else None,
                     "eval_block_size": text.block_size if e else None,
                     "tokens": n.tokens, "seed": n.seed, "verified": verdict})
    rows.sort(key=lambda r: (r["verified"] != "yes", r["bits_per_byte"] is None,
                             r["bits_per_byte"] or 0.0, r["best_val_loss"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return Leaderboard(rows, convention, text)


def to_csv(lb: Leaderboard) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in lb.rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def to_markdown(lb: Leaderboard) -> str:
    on_text = f" {lb.text.label}" if lb.text else ""
    head = ["#", "student", "run", "tokenizer", "best val", f"bits/byte{on_text}",
            f"loss{on_text}", f"perplexity{on_text}", f"params ({lb.convention})",
            "tokens", "seed", "verified"]
    rows = [[str(r["rank"]), r["student"], r["run"], str(r["tokenizer"] or "?"),
             fmt(r["best_val_loss"], "loss"), fmt(r["bits_per_byte"], "div"),
             fmt(r["eval_loss"], "loss"), fmt(r["eval_perplexity"], "ppl"),
             fmt(r["params"], "int"), fmt(r["tokens"], "int"), fmt(r["seed"]), r["verified"]]
            for r in lb.rows]
    notes = [f"Params: {lb.convention}, {PARAM_CONVENTIONS[lb.convention]}.",
             "Order: verified bundles first; then by bits per byte on the named text "
             "(`nanotui eval`: file name, first 8 hex digits of its sha256, context T; "
             "comparable across tokenizers), runs without it last by best val. Loss and "
             "perplexity, on the text and best val alike, are per token of each run's own "
             "tokenizer.",
             "Verified: `nanotui verify` found no problem in the bundle (no rerun)."]
    return md_table(head, rows) + "\n" + "\n".join(notes) + "\n"
