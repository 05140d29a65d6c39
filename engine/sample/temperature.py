"""A temperature study: samples of one checkpoint at several temperatures, scored for
diversity and kept in the run's temperature.jsonl (engine.runs), apart from the evals'
samples, so the report can compare temperatures without mixing them into its diversity
at the eval setting.

Enough text for TTR to compare: at least STUDY_SAMPLES samples per prompt and
STUDY_TOKENS new tokens each (the course asks for 500+) unless asked otherwise.
"""

from __future__ import annotations

from typing import Any

from engine.runs import RunDir
from engine.sample.generate import generate_samples, load_model, sampling_precision
from engine.sample.metrics import eval_metrics

STUDY_SAMPLES = 3
STUDY_TOKENS = 500


def temperature_study(run: RunDir, temperatures: list[float], num_samples: int | None = None,
                      max_new_tokens: int | None = None, seed: int | None = None,
                      device: str = "auto", checkpoint: str = "latest",
                      dtype: str | None = None) -> list[dict[str, Any]]:
    """Sample `run` at each temperature (same prompts, seeds and top-k as its evals),
    append the samples to its temperature.jsonl, and return one row per temperature:
    {"temperature", "samples", "words", "ttr", "distinct_2", "repetition_4", "iter"}."""
    loaded = load_model(run.path, device=device, checkpoint=checkpoint)
    if loaded.tokenizer is None:
        raise ValueError(f"{run.id}: cannot decode text: {loaded.why_no_tokenizer}")
    s = loaded.config.sampling if loaded.config else None
    prompts = s.prompts if s else ["Once upon a time"]
    num = num_samples or max(STUDY_SAMPLES, s.num_samples if s else 1)
    max_new = max_new_tokens or max(STUDY_TOKENS, s.max_new_tokens if s else 0)
    seed = (s.seed if s else 1337) if seed is None else seed
    rows = []
    for t in temperatures:
        samples = generate_samples(loaded.model, loaded.tokenizer, prompts, num, max_new, t,
                                   s.top_k if s else None, s.top_p if s else None, seed,
                                   precision=sampling_precision(loaded, dtype))
        for x in samples:
            run.log_temperature_sample(iter=loaded.iter_num, checkpoint=checkpoint, **x)
        m = eval_metrics([x["completion"] for x in samples])
        rows.append({"temperature": t, "samples": len(samples), "iter": loaded.iter_num,
                     "words": m["words"], "ttr": m["ttr"], "distinct_2": m["distinct_2"],
                     "repetition_4": m["repetition_4"]})
    return rows
