"""Evaluation suites: several tasks scored in context on one checkpoint, and one aggregate score.

A suite (``conf/eval_suite/<name>.yaml``, chosen with ``eval_suite=<name>``) names its tasks, each
with the metric it contributes to the aggregate (the one lm-evaluation-harness and the GPT-3 paper
report for it: ``acc_norm`` for HellaSwag, ``acc`` for WinoGrande, ...) and optionally an
unconditional normalisation (``mutual_info``, ``gptlab.data.prompts.UNCONDITIONAL_CONTEXTS``); the
split it is scored on where that is not the task's first eval split; the numbers of
demonstrations it runs each task at (``shots``); and a per-task example limit.

**Aggregate** (DCLM's CORE): each task's metric is *centered*, ``(value - chance) / (1 - chance)``
with the task's chance level on its eval split (``gptlab.tasks.chance``; 0 where a task has none,
as LAMBADA), so 0 is chance and 1 perfect whatever the number of answers; the suite's score at one
``k`` is the mean of its tasks' centered values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gptlab.data.prompts import UNCONDITIONAL_CONTEXTS
from gptlab.resources import group_choices

# The name of the aggregate's result rows (metric) and of the suite score in the returned metrics.
SCORE_METRIC = "centered_mean"


@dataclass(frozen=True)
class SuiteTask:
    """One task of a suite: its name (``tasks/<name>.yaml``), the metric it contributes, its
    unconditional normalisation (None: off) and the split it is scored on (None: the task's first
    eval split)."""

    name: str
    metric: str
    mutual_info: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class SuiteSpec:
    """The typed view of one ``eval_suite`` node (see the module doc)."""

    name: str
    tasks: tuple[SuiteTask, ...]
    shots: tuple[int, ...] = (0,)
    limit: int | None = None

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> SuiteSpec:
        """Build and check a suite; an unknown task, key or setting is an error naming it."""
        name = node.get("name", "?")
        where = f"eval_suite={name}"
        known = {"name", "tasks", "shots", "limit"}
        if unknown := sorted(set(node) - known):
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        tasks = node.get("tasks")
        if not isinstance(tasks, Sequence) or isinstance(tasks, str) or not tasks:
            raise ValueError(
                f"{where}: tasks must be a non-empty list of task names or {{name, metric, mutual_info, split}}, "
                f"got {tasks!r}"
            )
        entries = [_entry(where, {"name": t} if isinstance(t, str) else t) for t in tasks]
        shots = node.get("shots", [0])
        if not isinstance(shots, Sequence) or not shots or not all(isinstance(k, int) and k >= 0 for k in shots):
            raise ValueError(f"{where}: shots must be a non-empty list of demonstration counts >= 0, got {shots!r}")
        limit = node.get("limit")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{where}: limit must be a positive number of examples or null, got {limit!r}")
        return cls(name=str(name), tasks=tuple(entries), shots=tuple(dict.fromkeys(shots)), limit=limit)


def _entry(where: str, settings: Mapping[str, Any]) -> SuiteTask:
    known = [f.name for f in fields(SuiteTask)]
    task = settings.get("name") if isinstance(settings, Mapping) else None
    if task is None:
        raise ValueError(f"{where}: a task entry {settings!r} has no name; an entry is a task name or {{{', '.join(known)}}}")
    available = group_choices("task")
    if task not in available:
        raise ValueError(f"{where}: unknown task {task!r}; valid tasks: {', '.join(available)}")
    if unknown := sorted(set(settings) - set(known)):
        raise ValueError(f"{where}, task {task}: unknown key(s) {unknown}; valid keys: {', '.join(known)}")
    metric = settings.get("metric", "acc")
    mutual_info = settings.get("mutual_info")
    if mutual_info not in (None, *UNCONDITIONAL_CONTEXTS):
        raise ValueError(
            f"{where}, task {task}: mutual_info={mutual_info!r}; valid: null, {', '.join(UNCONDITIONAL_CONTEXTS)}"
        )
    return SuiteTask(task, str(metric), mutual_info, settings.get("split"))


def suite_contribution(cfg: DictConfig) -> tuple[str | None, str | None]:
    """(suite name, metric) of a run that belongs to an evaluation suite (its config keeps the
    ``eval_suite`` node), else (None, None)."""
    node = cfg.get("eval_suite")
    if not node:
        return None, None
    suite = SuiteSpec.from_config(OmegaConf.to_container(node, resolve=True))
    return suite.name, next((t.metric for t in suite.tasks if t.name == cfg.task.name), None)


def centered(value: float, chance: float | None) -> float:
    """``value`` rescaled so that the task's chance level is 0 and a perfect score 1."""
    chance = chance or 0.0
    return (value - chance) / (1.0 - chance)


def suite_score(results: Sequence[tuple[float, float | None]]) -> float:
    """The mean centered value of the suite's (value, chance) results at one ``k``."""
    return sum(centered(value, chance) for value, chance in results) / len(results)
