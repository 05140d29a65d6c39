"""Diversity and repetition scores for generated text.

Words are lower-cased runs of letters/digits, with inner apostrophes kept ("didn't" is
one word; "_" and punctuation split words):

    re.findall(r"[^\\W_]+(?:'[^\\W_]+)*", text.lower())

- ttr: unique words / words (the course assignment's diversity measure; it falls as a
  text gets longer, so compare texts of similar length),
- mattr: moving-average TTR over windows of 50 words (length-robust); a text shorter than
  the window gets the TTR of all its words,
- distinct_1/2/3: unique word n-grams / word n-grams, pooled over several samples (one
  eval's samples) so it measures diversity across samples, not only within one,
- repetition_4: 1 - unique 4-grams / 4-grams within one sample (degenerate loops score
  near 1), averaged over samples,
- words: the number of words.

An empty text (or one too short for an n-gram) scores 0.0: there is nothing to measure.
(The MFU peak table lives in engine.model.device with the rest of the hardware knowledge.)
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
MATTR_WINDOW = 50


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def ttr(ws: Sequence[str]) -> float:
    return len(set(ws)) / len(ws) if ws else 0.0


def mattr(ws: Sequence[str], window: int = MATTR_WINDOW) -> float:
    """Mean TTR of every window of `window` consecutive words (Covington & McFall 2010),
    in O(n) with a sliding counter."""
    n = len(ws)
    if n == 0:
        return 0.0
    if n <= window:
        return ttr(ws)
    counts = Counter(ws[:window])
    total = len(counts)
    for i in range(window, n):
        old, new = ws[i - window], ws[i]
        counts[old] -= 1
        if counts[old] == 0:
            del counts[old]
        counts[new] += 1
        total += len(counts)
    return total / ((n - window + 1) * window)


def ngrams(ws: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def distinct_n(word_lists: Iterable[Sequence[str]], n: int) -> float:
    """Unique n-grams / n-grams over all the given samples (n-grams never span samples)."""
    grams: list[tuple[str, ...]] = []
    for ws in word_lists:
        grams.extend(ngrams(ws, n))
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_n(ws: Sequence[str], n: int = 4) -> float:
    grams = ngrams(ws, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def text_metrics(text: str) -> dict[str, float | int]:
    """All scores of one sample (its distinct-n is within that sample)."""
    ws = words(text)
    return {
        "ttr": ttr(ws),
        "mattr": mattr(ws),
        "distinct_1": distinct_n([ws], 1),
        "distinct_2": distinct_n([ws], 2),
        "distinct_3": distinct_n([ws], 3),
        "repetition_4": repetition_n(ws, 4),
        "words": len(ws),
    }


def eval_metrics(texts: Sequence[str]) -> dict[str, float | int]:
    """Scores of one eval's samples: ttr, mattr and repetition_4 averaged per sample,
    distinct-n pooled over all samples, words summed."""
    lists = [words(t) for t in texts]
    k = len(lists)
    if k == 0:
        return {"ttr": 0.0, "mattr": 0.0, "distinct_1": 0.0, "distinct_2": 0.0,
                "distinct_3": 0.0, "repetition_4": 0.0, "words": 0}
    return {
        "ttr": sum(ttr(ws) for ws in lists) / k,
        "mattr": sum(mattr(ws) for ws in lists) / k,
        "distinct_1": distinct_n(lists, 1),
        "distinct_2": distinct_n(lists, 2),
        "distinct_3": distinct_n(lists, 3),
        "repetition_4": sum(repetition_n(ws, 4) for ws in lists) / k,
        "words": sum(len(ws) for ws in lists),
    }
