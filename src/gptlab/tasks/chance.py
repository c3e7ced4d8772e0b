"""Chance level of a task's metrics: what a predictor that ignores its input scores.

* Class tasks (classification, entailment, similarity): always predict the most frequent label of
  the **full** training split (a tie goes to the smaller label id), scored by the task's own
  metrics on the eval split: accuracy of the majority class, F1 of a constant prediction (0 when
  it is the negative class), MCC 0, ...
* Multiple choice: the expected accuracy of a uniform random pick, the mean of 1/n_choices.
* Regression, NER and language modelling: none (``None``).

``acc`` and ``acc_norm`` (in-context runs log both, whatever the task's metrics) get the same
value: the predictor above does not look at the answers' lengths. The training split is read in
full even when ``train_limit`` cuts it for fine-tuning, so every run of a task shares one chance
line per split.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from gptlab.tasks.metrics import build_metrics
from gptlab.tasks.spec import TaskSpec

ACCURACIES = ("acc", "acc_norm")


def has_chance_level(spec: TaskSpec) -> bool:
    """Whether ``spec``'s metrics have a chance level (class and multiple-choice tasks)."""
    kinds = ("classification", "entailment", "similarity", "multiple_choice")
    return spec.kind in kinds and not spec.regression


def majority_label(train: Sequence[Mapping[str, Any]]) -> int:
    """The most frequent label of ``train``; a tie goes to the smaller label id."""
    counts = Counter(int(example["label"]) for example in train)
    return min(counts, key=lambda label: (-counts[label], label))


def chance_levels(
    spec: TaskSpec,
    train: Sequence[Mapping[str, Any]] | None,
    evaluation: Sequence[Mapping[str, Any]],
) -> dict[str, float | None]:
    """Metric name -> chance value on the eval split ``evaluation`` (see the module doc).

    Keys are ``spec.metrics`` plus ``acc`` and ``acc_norm``. ``train`` (normalised examples with
    labels) is needed for class tasks only; without it their values are ``None``.
    """
    names = list(dict.fromkeys([*spec.metrics, *ACCURACIES]))
    levels: dict[str, float | None] = dict.fromkeys(names)
    if not has_chance_level(spec) or not evaluation:
        return levels
    if spec.kind == "multiple_choice":
        expected = sum(1.0 / len(example["choices"]) for example in evaluation) / len(evaluation)
        return {name: expected if name in ACCURACIES else None for name in names}
    if not train:
        return levels
    target = torch.tensor([int(example["label"]) for example in evaluation])
    preds = torch.full_like(target, majority_label(train))
    others = [m for m in spec.metrics if m not in ACCURACIES]
    metrics = build_metrics(dataclasses.replace(spec, metrics=others))
    levels.update({name: float(value) for name, value in metrics(preds, target).items()})
    accuracy = float((preds == target).float().mean())
    levels.update(dict.fromkeys(ACCURACIES, accuracy))
    return levels


def task_chance_levels(spec: TaskSpec) -> dict[str, dict[str, float | None]]:
    """Eval split -> metric -> chance value, reading the task's full training split and eval splits.

    Tasks without a chance level are not read (every value would be ``None``): ``{}``.
    """
    if not has_chance_level(spec):
        return {}
    from gptlab.data.formats import load_task  # the readers load their dependencies lazily

    spec, data = load_task(dataclasses.replace(spec, train_limit=None))
    train = data.get(spec.train_split)
    return {split: chance_levels(spec, train, data[split]) for split in spec.eval_splits if split in data}
