"""Aggregate ``results.jsonl`` rows over seeds: one ``Cell`` (mean, std, n) per condition.

A condition is everything that defines an experiment except its seeds: the row's ``condition``
(``gptlab.conditions``: the hash of the run's resolved config less seeds, paths and logging) and
the keys the tables show it by (task, split, metric, regime, model, initial weights, k, the
number of labelled training examples and the prompt). Rows that share a condition are runs with
different seeds (training seed, few-shot sampling seed) and are averaged; two rows of one
condition and the same seeds are the same experiment twice: they are flagged as duplicates, not
counted as two runs. The config values that tell apart conditions otherwise alike (a swept
``regime.module.lm_lambda``) become each cell's ``params``, which the tables show as columns.

Rows written before conditions were recorded have none; they are grouped by the keys alone, as
then, with a warning.
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gptlab.report.results import DESCRIPTIVE_METRICS
from gptlab.tasks.kinds import FEW_SHOT, FIXED_K  # k of the regimes that fix it, for rows without k

GROUP_KEYS = ("task", "split", "metric", "regime", "model", "init", "k", "n_train_examples", "prompt")
# what makes two rows of one condition the same experiment
SEED_FIELDS = ("seed", "fewshot_seed")

FINETUNE = "finetune"
PRETRAIN = "pretrain"
IN_CONTEXT = (*FIXED_K, FEW_SHOT)
# Table column order; any other regime follows, alphabetically.
REGIME_ORDER = (FINETUNE, *IN_CONTEXT, PRETRAIN)
# Headline metric of a task, first match wins: GLUE reports MCC for CoLA, Pearson for STS-B,
# accuracy for the rest (MRPC/QQP report acc and F1: acc comes first; LAMBADA acc), exact match
# for closed-book QA (TriviaQA reports exact_match and F1), entity F1 for NER, perplexity for
# language modelling.
PRIMARY_METRICS = ("mcc", "pearson", "acc", "exact_match", "f1", "ppl")
PREFERRED_SPLIT = "validation"
Params = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Cell:
    """One condition aggregated over its runs."""

    task: str
    split: str
    metric: str
    regime: str
    model: str | None
    init: str | None
    k: int | None
    n_train_examples: int | None
    prompt: str | None
    mean: float
    # sample standard deviation (n - 1) over seeds; None for a single run
    std: float | None
    # runs: distinct seeds
    n: int
    # the metric's chance / majority-class level, None when no row records it
    chance: float | None
    # the condition's hash (None: rows that record none) and the values of the config keys that
    # tell it apart from conditions with the same keys above (``swept_keys``)
    condition: str | None = None
    params: Params = ()
    # rows beyond one per seed: the same experiment run again (same condition, same seeds)
    duplicates: int = 0
    # bootstrap standard error over the examples of a single run (from its per-example outputs)
    stderr: float | None = None
    # examples evaluated (None: a training split, or rows that do not say)
    n_eval: int | None = None

    @property
    def labelled_examples(self) -> int | None:
        """Labelled examples the model learned from: k in the prompt for in-context regimes, the
        training examples for fine-tuning, None otherwise (pre-training uses no labels)."""
        if self.regime == FINETUNE:
            return self.n_train_examples
        if self.regime in IN_CONTEXT:
            return self.k if self.k is not None else FIXED_K.get(self.regime)
        return None


def _none_last(value: Any) -> tuple[bool, Any]:
    return value is None, value if value is not None else 0


def regime_rank(regime: str) -> tuple[int, str]:
    """Sort key that puts regimes in ``REGIME_ORDER``, unknown ones after, alphabetically."""
    return (REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER), regime)


def cell_sort_key(cell: Cell) -> tuple[Any, ...]:
    return (
        cell.task,
        cell.split,
        cell.metric,
        regime_rank(cell.regime),
        str(cell.model),
        str(cell.init),
        _none_last(cell.k),
        _none_last(cell.n_train_examples),
        str(cell.prompt),
        [param_sort_key(value) for _, value in cell.params],
    )


def is_number(value: Any) -> bool:
    """An int or float config value (a bool is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def param_sort_key(value: Any) -> tuple[Any, ...]:
    """Numbers in numeric order, then other values by their text, None last."""
    number = is_number(value)
    return value is None, not number, value if number else 0, str(value)


def _same(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _frozen(value: Any) -> Any:
    """A config value as a hashable one (lists as tuples, mappings as their JSON), so that swept
    values can key table rows and plot series."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return _same(value) if isinstance(value, dict) else value


def swept_keys(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The config keys whose values differ between conditions that share all ``GROUP_KEYS``
    (a λ ablation's ``regime.module.lm_lambda``), in alphabetical order."""
    configs: dict[tuple[Any, ...], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in rows:
        if row.get("condition") is not None:
            configs[tuple(row.get(name) for name in GROUP_KEYS)][row["condition"]] = row.get("config") or {}
    swept: set[str] = set()
    for alike in configs.values():
        if len(alike) > 1:
            keys = set().union(*alike.values())
            swept |= {key for key in keys if len({_same(c.get(key)) for c in alike.values()}) > 1}
    return sorted(swept)


def aggregate(rows: Iterable[Mapping[str, Any]]) -> list[Cell]:
    """Group ``rows`` (as ``read_results`` returns them) by condition; sorted cells."""
    rows = list(rows)
    if unmarked := sum(row.get("condition") is None for row in rows):
        warnings.warn(
            f"{unmarked} of {len(rows)} result rows record no condition (written before gptlab recorded "
            f"one): they are grouped by {', '.join(GROUP_KEYS)} only, whatever else their runs changed",
            stacklevel=2,
        )
    swept = swept_keys(rows)
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(*(row.get(name) for name in GROUP_KEYS), row.get("condition"))].append(row)
    cells = []
    for (*key, condition), members in groups.items():
        by_seeds: dict[tuple[Any, ...], list[float]] = defaultdict(list)
        for row in members:
            by_seeds[tuple(row.get(name) for name in SEED_FIELDS)].append(float(row["value"]))
        values = [statistics.fmean(same) for same in by_seeds.values()]
        chances = [float(row["chance"]) for row in members if row.get("chance") is not None]
        config = members[0].get("config") or {}
        cells.append(
            Cell(
                **dict(zip(GROUP_KEYS, key)),
                mean=statistics.fmean(values),
                std=statistics.stdev(values) if len(values) > 1 else None,
                n=len(values),
                chance=statistics.fmean(chances) if chances else None,
                condition=condition,
                params=tuple((name, _frozen(config.get(name))) for name in swept),
                duplicates=len(members) - len(values),
                stderr=members[0].get("stderr") if len(members) == 1 else None,
                n_eval=next((row["n_eval"] for row in members if row.get("n_eval") is not None), None),
            )
        )
    return sorted(cells, key=cell_sort_key)


def primary_metric(metrics: Iterable[str]) -> str:
    """The headline metric among ``metrics`` (``PRIMARY_METRICS`` order; else the first in
    alphabetical order that is not a loss); rows that describe the data or answers are never one."""
    available = sorted(set(metrics) - set(DESCRIPTIVE_METRICS)) or sorted(set(metrics))
    if not available:
        raise ValueError("no metrics to choose from")
    for name in PRIMARY_METRICS:
        if name in available:
            return name
    return next((m for m in available if "loss" not in m), available[0])


def select_metric(cells: Iterable[Cell], metric: str | None = None) -> list[Cell]:
    """The cells of each task's primary metric, or of ``metric`` for every task that has it."""
    cells = list(cells)
    by_task: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        by_task[cell.task].append(cell)
    if metric is not None:
        chosen = [c for c in cells if c.metric == metric]
        if not chosen:
            known = ", ".join(sorted({c.metric for c in cells}))
            raise ValueError(f"metric {metric!r} is in no results row; metrics in the results: {known}")
        return chosen
    primary = {task: primary_metric(c.metric for c in task_cells) for task, task_cells in by_task.items()}
    return [c for c in cells if c.metric == primary[c.task]]


def primary_split(cells: Iterable[Cell]) -> str:
    """``validation`` when the cells have it, else the first split in alphabetical order."""
    splits = sorted({c.split for c in cells})
    if not splits:
        raise ValueError("no cells to choose a split from")
    return PREFERRED_SPLIT if PREFERRED_SPLIT in splits else splits[0]
