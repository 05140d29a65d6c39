"""What a run's samples say, for the reports: the decoding settings they were drawn with,
their diversity (the latest eval's samples at one decoding, averaged over prompts), the
temperature study's rows, and short excerpts."""

from __future__ import annotations

import re
import statistics
from typing import Any

from engine.report.summary import DIVERSITY_KEYS, RunSummary, finite_number
from engine.sample.metrics import eval_metrics

def decoding_key(sample: dict[str, Any]) -> tuple:
    return (sample.get("temperature"), sample.get("top_k"), sample.get("top_p"))


def describe_decoding(key: tuple) -> str:
    t, k, p = key
    parts = [f"temperature {t}" if t is not None else "temperature ?"]
    parts.append(f"top_k {k}" if k is not None else "no top_k")
    if p is not None:
        parts.append(f"top_p {p}")
    return ", ".join(parts)


def common_decoding(summaries: list[RunSummary]) -> tuple | None:
    """The decoding setting used by the most runs (ties: the most samples)."""
    runs_per: dict[tuple, int] = {}
    samples_per: dict[tuple, int] = {}
    for s in summaries:
        keys = [decoding_key(x) for x in s.samples]
        for k in set(keys):
            runs_per[k] = runs_per.get(k, 0) + 1
        for k in keys:
            samples_per[k] = samples_per.get(k, 0) + 1
    if not runs_per:
        return None
    return max(runs_per, key=lambda k: (runs_per[k], samples_per[k], str(k)))


def latest_samples(s: RunSummary, key: tuple) -> list[dict[str, Any]]:
    """The samples of the run's latest eval at decoding setting `key`."""
    at = [x for x in s.samples if decoding_key(x) == key]
    if not at:
        return []
    last = max(x.get("iter", 0) for x in at)
    return [x for x in at if x.get("iter", 0) == last]


def diversity(s: RunSummary, key: tuple) -> tuple[dict[str, float], int, int | None]:
    """Diversity of the run's latest samples at `key`: (scores, n samples, iter).

    Scored with engine.sample.metrics.eval_metrics on the completions (distinct-n pooled over
    the samples, the rest averaged per sample, as the trainer logs it); for records without
    text, the mean of the per-sample scores stored in samples.jsonl."""
    chosen = latest_samples(s, key)
    it = chosen[0].get("iter") if chosen else None
    if not chosen:
        return {}, 0, None
    texts = [x.get("completion", x.get("text")) for x in chosen]
    if all(isinstance(t, str) for t in texts):
        m = dict(eval_metrics(texts))
        m["words"] = m["words"] / len(texts)  # per sample, comparable across runs
        return {k: float(m[k]) for k in DIVERSITY_KEYS if k in m}, len(chosen), it
    # records without text (hand-made or trimmed): the per-sample scores they carry
    scores: dict[str, list[float]] = {}
    for x in chosen:
        m = x.get("metrics") if isinstance(x.get("metrics"), dict) else {}
        for k in DIVERSITY_KEYS:
            v = finite_number(m.get(k))
            if v is not None:
                scores.setdefault(k, []).append(v)
    return {k: statistics.fmean(v) for k, v in scores.items()}, len(chosen), it


def temperature_diversity(s: RunSummary) -> dict[float, tuple[dict[str, float], int]]:
    """A temperature study's scores per temperature (engine.sample.temperature): each
    temperature's samples from the latest checkpoint sampled, scored like the evals'."""
    by_t: dict[float, list[dict[str, Any]]] = {}
    last = max((x.get("iter") or 0 for x in s.temperature_samples), default=0)
    for x in s.temperature_samples:
        t = finite_number(x.get("temperature"))
        if t is not None and (x.get("iter") or 0) == last and isinstance(x.get("completion"), str):
            by_t.setdefault(t, []).append(x)
    out = {}
    for t, xs in sorted(by_t.items()):
        m = dict(eval_metrics([x["completion"] for x in xs]))
        out[t] = ({k: float(m[k]) for k in DIVERSITY_KEYS if k in m}, len(xs))
    return out


_SENT = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def excerpt(text: str, min_sentences: int = 2, max_sentences: int = 4, max_chars: int = 320) -> str:
    """The first 2-4 sentences of `text`, cut at max_chars on a word boundary."""
    text = " ".join(text.split())
    parts = [p for p in _SENT.split(text) if p]
    out = ""
    for i, p in enumerate(parts[:max_sentences]):
        cand = (out + " " + p).strip()
        if i >= min_sentences and len(cand) > max_chars:
            break
        out = cand
    if len(out) > max_chars:
        out = out[:max_chars].rsplit(" ", 1)[0] + " …"
    return out
