"""Bootstrap standard errors from per-example records: the size a binomial proportion's standard
error has, and only for metrics that are the mean of the records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gptlab.report.stderr import bootstrap_stderr, example_values, metric_stderrs


def test_the_bootstrap_standard_error_of_a_proportion_is_its_binomial_standard_error() -> None:
    values = (np.random.default_rng(0).random(400) < 0.3).astype(float)
    p = values.mean()
    assert bootstrap_stderr(values) == pytest.approx(math.sqrt(p * (1 - p) / len(values)), rel=0.1)
    assert bootstrap_stderr(values) == bootstrap_stderr(values)  # seeded: the same every time
    assert bootstrap_stderr([1.0]) is None and bootstrap_stderr([0.0, 0.0, 0.0]) == 0.0


def test_choice_and_generation_records_give_each_metrics_per_example_values() -> None:
    choice = [
        {"chosen": "a", "chosen_norm": "b", "gold": "b", "correct": False},
        {"chosen": "c", "chosen_norm": "c", "gold": "c", "correct": True},
    ]
    assert example_values(choice, "acc") == [0.0, 1.0]
    assert example_values(choice, "acc_norm") == [1.0, 1.0]
    assert example_values(choice, "acc_mutual_info") is None  # not scored so
    generation = [{"exact_match": 1.0, "f1": 1.0}, {"exact_match": 0.0, "f1": 0.5}]
    assert example_values(generation, "f1") == [1.0, 0.5]
    assert example_values(generation, "perplexity") is None


def test_only_a_value_that_is_the_mean_of_the_records_gets_a_standard_error() -> None:
    records = {"validation": [{"exact_match": float(i % 2), "f1": 0.5} for i in range(10)]}
    logged = {("validation", "exact_match"): 0.5, ("validation", "f1"): 0.9, ("test", "exact_match"): 0.5}
    errors = metric_stderrs(records, logged)
    assert set(errors) == {("validation", "exact_match")}  # f1's logged value is not their mean
    assert errors["validation", "exact_match"] == pytest.approx(math.sqrt(0.25 / 10), rel=0.15)
