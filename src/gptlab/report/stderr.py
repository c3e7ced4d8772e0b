"""Bootstrap standard errors of a run's metrics from its per-example outputs.

A single run has no spread over seeds, but its value is still an estimate from a finite set of
examples: like lm-evaluation-harness's ``*_stderr``, the standard error is the standard
deviation of the metric over resamples of the examples (with replacement). It applies to the
metrics that are a mean of one value per example, read from the records each run writes to
``predictions.jsonl``: ``acc``, ``acc_norm``, ``acc_mutual_info`` of a choice task (the chosen
answer against the gold one), ``exact_match``, ``f1`` and ``acc`` of a generation task. A
metric whose per-example mean is not the logged value (another aggregation) gets none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BOOTSTRAP_ITERS = 1000
BOOTSTRAP_SEED = 1234
# choice-task metric -> the record's answer under that scoring (gptlab.lit.incontext)
CHOSEN_BY = {"acc_norm": "chosen_norm", "acc_mutual_info": "chosen_mutual_info"}


def bootstrap_stderr(values: Sequence[float], iters: int = BOOTSTRAP_ITERS, seed: int = BOOTSTRAP_SEED) -> float | None:
    """Standard deviation of the mean of ``values`` over ``iters`` resamples; None under 2 values."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.concatenate([
        data[rng.integers(0, data.size, (chunk, data.size))].mean(axis=1)
        for chunk in np.diff(np.r_[0:iters:100, iters])  # 100 resamples at a time bound the memory
    ])
    return float(means.std(ddof=1))


def example_values(records: Sequence[Mapping[str, Any]], metric: str) -> list[float] | None:
    """Each example's value of ``metric``, or None when the records do not hold it."""
    if not records:
        return None
    if all(metric in r for r in records):  # generation tasks record their scores by name
        return [float(r[metric]) for r in records]
    if metric == "acc" and all("chosen" in r and "correct" in r for r in records):
        return [float(r["correct"]) for r in records]
    chosen = CHOSEN_BY.get(metric)
    if chosen and all(chosen in r and "gold" in r for r in records):
        return [float(r[chosen] == r["gold"]) for r in records]
    return None


def metric_stderrs(
    records: Mapping[str, Sequence[Mapping[str, Any]]], values: Mapping[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """(split, metric) -> bootstrap standard error, for each logged value (``values``) that is the
    mean of its split's per-example ``records``."""
    errors = {}
    for (split, metric), value in values.items():
        per_example = example_values(records.get(split, ()), metric)
        if per_example is None or not math.isclose(sum(per_example) / len(per_example), value, rel_tol=1e-6, abs_tol=1e-6):
            continue
        if (stderr := bootstrap_stderr(per_example)) is not None:
            errors[split, metric] = stderr
    return errors
