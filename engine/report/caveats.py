"""What a reader must be told before comparing numbers: the precision each run trained in
(one per sweep, else a warning), throughput measured while other work kept the CPU busy,
a parameter count that is mostly embedding, and why a sweep of one weight shape (heads)
gives near-identical samples. Each is one sentence (or a table cell) every report uses.
"""

from __future__ import annotations

from engine.report.course import Member, Study, same_params
from engine.report.summary import RunSummary
from engine.report.tables import fmt


def precision_of(summaries: list[RunSummary]) -> str:
    """Precision and attention path of a model's runs as one cell ("bfloat16 · fused")."""
    seen = sorted({f"{s.precision or '?'}" + (f" · {s.attention}" if s.attention else "")
                   for s in summaries})
    return " / ".join(seen) if seen else "—"


def precision_text(study: Study) -> str:
    """One sentence: the precision every run trained in, or a warning naming the sweeps
    whose runs differ (their numbers then compare precisions as much as shapes)."""
    runs = [s for m in study.members() for s in m.runs if s.precision]
    if not runs:
        return "Precision: not recorded (runs trained before nanotui recorded it)."
    values = sorted({s.precision for s in runs})
    if len(values) == 1:
        return (f"Precision: {values[0]} in every run that recorded it; the attention path "
                "is in the methods table.")
    mixed = [name for name, ms in study.sweeps.items()
             if len({s.precision for m in ms for s in m.runs if s.precision}) > 1]
    return (f"**Warning:** runs trained in different precisions ({', '.join(values)})"
            + (f", within the sweep(s) {', '.join(mixed)}" if mixed else "")
            + ": their losses and speeds compare the precisions as much as the shapes "
            "(the methods table names each model's).")


def same_start_note(members: list[Member], key: str | None) -> str | None:
    """Why the samples of a sweep like heads read alike: every configuration has the same
    weight shapes (one parameter count) and the same seeds, so each seed's runs start from
    identical weights and see identical batches; only how attention splits n_embd differs."""
    done = [m for m in members if m.finished]
    if key is None or len(done) < 2 or not same_params(done):
        return None
    seeds = {tuple(sorted(s.config.seed for s in m.runs if s.config)) for m in done}
    if len(seeds) != 1:
        return None
    return (f"Why the samples look alike: every `{key}` here has the same weight shapes "
            f"({fmt(done[0].params, 'int')} parameters) and the same seed(s) "
            f"({', '.join(str(x) for x in next(iter(seeds)))}), so the runs start from "
            "identical initial weights and train on identical batches; they differ only in "
            f"what `{key}` changes inside the model. Near-identical samples are expected and "
            f"are not a finding about `{key}`; only differences beyond the seeds' spread are.")


EMBEDDING_SHARE = 0.5  # above this share of the nanoGPT count, say that N is mostly embedding


def embedding_note(summaries: list[RunSummary]) -> str | None:
    """Where the token embedding is most of the nanoGPT count (a GPT-2 vocabulary on a
    small model), returns to size and a fit against N say little: said, with the share."""
    shares = [(1 - s.params_non_embedding / s.params, s) for s in summaries
              if s.params and s.params_non_embedding is not None]
    high = [(f, s) for f, s in shares if f > EMBEDDING_SHARE]
    if not high:
        return None
    lo, hi = min(f for f, _ in high), max(f for f, _ in high)
    share = f"{lo:.0%}" if round(lo, 2) == round(hi, 2) else f"{lo:.0%}-{hi:.0%}"
    return (f"**Note:** the token embedding is {share} of the nanoGPT parameter count of "
            f"{len(high)} of {len(shares)} runs, so N barely moves with the shape: gain per "
            "doubling and the fit against N measure mostly the embedding; compare the "
            "non-embedding counts (column “params (non-emb.)”).")


def throughput_caveat(summaries: list[RunSummary]) -> list[str]:
    """tok/s measured while other work kept the cores busy says more about the machine
    than about the model: named, and left out of any comparison."""
    loaded = [f"{s.run.name} ({s.busy_cores:.1f} cores busy)" for s in summaries
              if s.busy_cores is not None and s.tok_s]
    if not loaded:
        return []
    if len(loaded) == sum(1 for s in summaries if s.tok_s):
        return ["**Caveat:** tok/s of every run was measured while other work kept the CPU "
                f"busy ({', '.join(loaded)}): the figures (marked “(loaded)”) reflect the "
                "machine's load, not the models; do not compare them."]
    return [f"**Caveat:** tok/s was measured while other work kept the CPU busy for "
            f"{', '.join(loaded)}: those figures (marked “(loaded)”) reflect the machine's "
            "load, not the model's shape; do not compare them with the others."]
