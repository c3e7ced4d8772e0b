"""Chance level of a task's metrics: what a predictor that ignores its input scores.

Each kind names its rule (``chance`` in ``gptlab.tasks.kinds``):

* ``majority`` (class tasks: classification, entailment, similarity): always predict the most frequent label of
  the **full** training split (a tie goes to the smaller label id), scored by the task's own
  metrics on the eval split: accuracy of the majority class, F1 of a constant prediction (0 when
  it is the negative class), MCC 0, ...
* ``uniform_choice`` (multiple choice): the expected accuracy of a uniform random pick, the mean of 1/n_choices.
* Kinds without a rule (NER, language modelling) and regression tasks: none (``None``).

``acc`` and ``acc_norm`` (in-context runs log both, whatever the task's metrics), and
``acc_mutual_info`` where a run logs it, get the same value: the predictor above does not look
at the answers' lengths or their unconditional likelihood. The training split is read in
full even when ``train_limit`` cuts it for fine-tuning, so every run of a task shares one chance
line per split. The DataModules compute them where they read the data (``gptlab.data``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from gptlab.tasks.metrics import build_metrics
from gptlab.tasks.spec import TaskSpec

# accuracies every in-context run logs, and the one only a run with unconditional scores logs
LOGGED_ACCURACIES = ("acc", "acc_norm")
ACCURACIES = (*LOGGED_ACCURACIES, "acc_mutual_info")


def has_chance_level(spec: TaskSpec) -> bool:
    """Whether ``spec``'s metrics have a chance level (its kind has a rule and it is no regression)."""
    return spec.task_kind.chance is not None and not spec.regression


def majority_label(train: Sequence[Mapping[str, Any]]) -> int:
    """The most frequent label of ``train``; a tie goes to the smaller label id."""
    counts = Counter(int(example["label"]) for example in train)
    return min(counts, key=lambda label: (-counts[label], label))


Levels = dict[str, float | None]


def _uniform_choice(
    spec: TaskSpec, names: list[str], train: Sequence[Mapping[str, Any]] | None, evaluation: Sequence[Mapping[str, Any]]
) -> Levels:
    """A uniform random pick among each example's answers: accuracy only."""
    expected = sum(1.0 / len(example["choices"]) for example in evaluation) / len(evaluation)
    return {name: expected if name in ACCURACIES else None for name in names}


def _majority(
    spec: TaskSpec, names: list[str], train: Sequence[Mapping[str, Any]] | None, evaluation: Sequence[Mapping[str, Any]]
) -> Levels:
    """The training split's most frequent label, scored by the task's own metrics."""
    levels: Levels = dict.fromkeys(names)
    if not train:
        return levels
    target = torch.tensor([int(example["label"]) for example in evaluation])
    preds = torch.full_like(target, majority_label(train))
    others = [m for m in spec.metrics if m not in ACCURACIES]
    metrics = build_metrics(dataclasses.replace(spec, metrics=others))
    levels.update({name: float(value) for name, value in metrics(preds, target).items()})
    levels.update(dict.fromkeys([n for n in names if n in ACCURACIES], float((preds == target).float().mean())))
    return levels


# A kind's ``chance`` entry (gptlab.tasks.kinds) names one of these.
CHANCE_RULES = {"majority": _majority, "uniform_choice": _uniform_choice}


def chance_levels(
    spec: TaskSpec,
    train: Sequence[Mapping[str, Any]] | None,
    evaluation: Sequence[Mapping[str, Any]],
    mutual_info: bool = False,
) -> dict[str, float | None]:
    """Metric name -> chance value on the eval split ``evaluation`` (see the module doc).

    Keys are ``spec.metrics`` plus ``acc`` and ``acc_norm`` (and ``acc_mutual_info`` with
    ``mutual_info``). ``train`` (normalised examples with labels) is needed by the majority rule
    only; without it its values are ``None``.
    """
    accuracies = ACCURACIES if mutual_info else LOGGED_ACCURACIES
    names = list(dict.fromkeys([*spec.metrics, *accuracies]))
    if not has_chance_level(spec) or not evaluation:
        return dict.fromkeys(names)
    return CHANCE_RULES[spec.task_kind.chance](spec, names, train, evaluation)
