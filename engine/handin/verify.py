"""`nanotui verify BUNDLE`: is the hand-in whole, well-formed, and do its reports tell the truth?

In order, each step one line per problem:
  1. the archive (engine.handin.archive): unsafe members refuse the whole bundle;
  2. MANIFEST.json: every file listed is there with its sha256, and nothing else is;
  3. each file's schema: config.toml loads as a TrainConfig, status.json is an object with
     a known state, every line of metrics/samples/eval .jsonl is a record of its kind
     (named by line number), each run's data meta.json has a vocabulary and source_sha256;
  4. each run's numbers recomputed from its metrics.jsonl and config: best and final val
     loss, tokens (the last record's), parameters (engine.model.arithmetic.param_count,
     nanoGPT's convention, with the data's vocabulary); status.json and every report table
     (runs.csv, and report.md's Results table) must agree with them, to the printed digits;
     runs.csv's `nanotui eval` columns must be the run's eval.jsonl numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re

from dataclasses import dataclass, field
from typing import Any

from engine.config import ConfigError, TrainConfig, config_from_dict, tomllib
from engine.handin.archive import Bundle, manifest_problems
from engine.jsonl import metric_record, sample_record, text_eval_record
from engine.model.arithmetic import DEFAULT_PARAM_CONVENTION, model_vocab, param_count
from engine.runs import CONFIG, EVALS, METRICS, SAMPLES, STATES, STATUS

LOSS_TOL = 6e-5      # report tables print 4 decimals; status.json holds the exact float
# runs.csv's eval columns: eval_<what>[<file name> <sha256 prefix> T=<block size>]
EVAL_COLUMN = re.compile(r"^eval_(loss|perplexity|bits_per_byte)\[.* ([0-9a-f]{8}) T=(\S+)\]$")


@dataclass
class RunNumbers:
    """A run's numbers as verify recomputes them from its own files."""
    id: str
    config: TrainConfig | None = None
    meta: dict[str, Any] | None = None
    best_val: float | None = None
    final_val: float | None = None
    best_where: str = ""       # "runs/<id>/metrics.jsonl line N": the record best_val came from
    final_where: str = ""
    tokens: int | None = None
    params: int | None = None
    seed: int | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)      # eval records, by iter
    text_evals: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Verification:
    problems: list[str]
    runs: list[RunNumbers]

    @property
    def ok(self) -> bool:
        return not self.problems


def _jsonl(data: bytes, path: str, check, problems: list[str]) -> list[dict[str, Any]]:
    out = []
    for i, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            problems.append(f"{path}: line {i}: not JSON")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path}: line {i}: not a JSON object")
            continue
        if check is not None:
            rec2, why = check(rec)
            if rec2 is None or why:
                problems.append(f"{path}: line {i}: {why or 'malformed'}")
                continue
        out.append({**rec, "_line": i})   # where a disagreement points
    return out


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def check_run(b: Bundle, entry: dict[str, Any], problems: list[str]) -> RunNumbers:
    rid = str(entry.get("id"))
    base = f"runs/{rid}"
    n = RunNumbers(rid)
    f = b.files
    if f.get(f"{base}/{CONFIG}") is not None:
        try:
            n.config = config_from_dict(tomllib.loads(f[f"{base}/{CONFIG}"].decode()), f"{base}/{CONFIG}")
            n.seed = n.config.seed
        except (ConfigError, ValueError, UnicodeDecodeError) as e:
            problems.append(f"{base}/{CONFIG}: {str(e).splitlines()[0]}")
    status: dict[str, Any] = {}
    if f.get(f"{base}/{STATUS}") is not None:
        try:
            status = json.loads(f[f"{base}/{STATUS}"])
            assert isinstance(status, dict) and status.get("state") in STATES
        except (ValueError, AssertionError):
            problems.append(f"{base}/{STATUS}: not a status object with a known state")
            status = {}
    metrics = _jsonl(f.get(f"{base}/{METRICS}", b""), f"{base}/{METRICS}", metric_record, problems)
    _jsonl(f.get(f"{base}/{SAMPLES}", b""), f"{base}/{SAMPLES}", sample_record, problems)
    n.text_evals = _jsonl(f.get(f"{base}/{EVALS}", b""), f"{base}/{EVALS}", text_eval_record, problems)
    data = str(entry.get("data"))
    try:
        n.meta = json.loads(f[data])
        assert isinstance(n.meta, dict) and n.meta.get("vocab_size") and n.meta.get("source_sha256")
    except (KeyError, ValueError, AssertionError):
        problems.append(f"{data}: missing or not a meta.json with vocab_size and source_sha256")
        n.meta = None
    n.evals = sorted((r for r in metrics if r.get("kind") == "eval" and _num(r.get("val_loss")) is not None),
                     key=lambda r: r["iter"])
    if n.evals:
        best = min(n.evals, key=lambda r: float(r["val_loss"]))
        n.best_val, n.final_val = float(best["val_loss"]), float(n.evals[-1]["val_loss"])
        n.best_where = f"{base}/{METRICS} line {best['_line']}"
        n.final_where = f"{base}/{METRICS} line {n.evals[-1]['_line']}"
    toks = [r["tokens"] for r in metrics if _num(r.get("tokens")) is not None]
    n.tokens = int(max(toks)) if toks else None
    if n.config is not None and n.meta is not None:
        try:
            n.params = param_count(n.config, model_vocab(n.config, n.meta), DEFAULT_PARAM_CONVENTION)
        except ConfigError as e:
            problems.append(f"{base}: {e}")
    _agree(f"{base}/{STATUS} best_val_loss", _num(status.get("best_val_loss")), n.best_val,
           n.best_where, problems)
    if _num(status.get("params")) is not None and n.params is not None and int(status["params"]) != n.params:
        problems.append(f"{base}/{STATUS}: params {int(status['params']):,} but the config "
                        f"and data give {n.params:,}")
    return n


def _agree(where: str, claimed: float | None, actual: float | None, source: str,
           problems: list[str]) -> None:
    if claimed is not None and actual is not None and abs(claimed - actual) > LOSS_TOL:
        problems.append(f"{where} says {claimed:.4f}, {source} gives {actual:.4f}")


def _cell(x: str) -> float | None:
    try:
        return float(x.replace(",", ""))
    except ValueError:
        return None


def check_reports(b: Bundle, runs: dict[str, RunNumbers], problems: list[str]) -> None:
    """Every runs.csv and report.md Results table against the recomputed numbers."""
    for path, data in sorted(b.files.items()):
        if not path.startswith("reports/"):
            continue
        if path.endswith("runs.csv"):
            for i, row in enumerate(csv.DictReader(io.StringIO(data.decode("utf-8", "replace"))), 2):
                n = runs.get(f"{row.get('sweep')}/{row.get('run')}")
                if n is None:
                    continue
                where = f"{path}: line {i} ({n.id})"
                _agree(f"{where} best_val_loss", _cell(row.get("best_val_loss") or ""), n.best_val,
                       n.best_where, problems)
                _agree(f"{where} final_val_loss", _cell(row.get("final_val_loss") or ""), n.final_val,
                       n.final_where, problems)
                p = _cell(row.get("params") or "")
                if p is not None and n.params is not None and int(p) != n.params:
                    problems.append(f"{where} params says {int(p):,}, config and data give {n.params:,}")
                _check_eval_cells(where, row, n, f"runs/{n.id}/{EVALS}", problems)
        elif path.endswith("report.md") and path.count("/") == 2:   # reports/<sweep>/report.md
            _check_results_table(path, data.decode("utf-8", "replace"), path.split("/")[1], runs, problems)


def _check_eval_cells(where: str, row: dict[str, str], n: RunNumbers, source: str,
                      problems: list[str]) -> None:
    """runs.csv's `nanotui eval` cells (engine.report.text_evals) against the run's own
    eval.jsonl: the newest record on the column's text (sha256 prefix) and T."""
    for name, cell in row.items():
        m = EVAL_COLUMN.match(name or "")
        claimed = _cell(cell or "")
        if m is None or claimed is None:
            continue
        what, sha8, t = m.group(1), m.group(2), m.group(3)
        rec = None
        for e in n.text_evals:
            if e["text_sha256"].startswith(sha8) and str(e.get("block_size")) == t:
                rec = e
        if rec is None:
            problems.append(f"{where} {name} says {claimed:.4f}, {source} has no eval on that text")
        elif _num(rec.get(what)) is None or abs(claimed - rec[what]) > 1e-9 * max(1.0, abs(rec[what])):
            problems.append(f"{where} {name} says {claimed:.4f}, {source} line {rec['_line']} "
                            f"gives {rec.get(what)}")


def _check_results_table(path: str, text: str, sweep: str, runs: dict[str, RunNumbers],
                         problems: list[str]) -> None:
    lines = text.splitlines()
    try:
        start = lines.index("## Results")
    except ValueError:
        return
    head: list[str] | None = None
    for j in range(start + 1, len(lines)):
        line = lines[j]
        if not line.startswith("|"):
            if head is not None:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if head is None:
            head = cells
            continue
        if set(line) <= set("|-: "):
            continue
        row = dict(zip(head, cells))
        n = runs.get(f"{sweep}/{row.get('run')}")
        if n is None:
            continue
        where = f"{path}: line {j + 1} ({n.id})"
        _agree(f"{where} best val", _cell(row.get("best val", "")), n.best_val, n.best_where, problems)
        _agree(f"{where} final val", _cell(row.get("final val", "")), n.final_val, n.final_where, problems)
        p = _cell(row.get("params (nanoGPT)", ""))
        if p is not None and n.params is not None and int(p) != n.params:
            problems.append(f"{where} params (nanoGPT) says {int(p):,}, config and data give {n.params:,}")


def verify_bundle(b: Bundle) -> Verification:
    problems = manifest_problems(b)
    entries = b.manifest.get("runs") if isinstance(b.manifest.get("runs"), list) else []
    runs = [check_run(b, e, problems) for e in entries if isinstance(e, dict)]
    check_reports(b, {n.id: n for n in runs}, problems)
    return Verification(problems, runs)
