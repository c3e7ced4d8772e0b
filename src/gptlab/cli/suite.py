"""``gptlab eval_suite=<name> model.init_from=CKPT``: every task of an evaluation suite, in context,
on one checkpoint, and the suite's aggregate score (``gptlab.tasks.suite``).

Each task × ``k`` is one ordinary in-context run (``train``, all of them scoring one backbone,
built once) with its own run directory,
``<run dir>/suite/<task>_k<k>/`` (its ``results.jsonl`` and ``predictions.jsonl``), so the report
reads them as any other run. Every task's config and data are checked and read **before** any
model runs: a suite naming an unknown task, or a malformed line in any of its files, stops it with
an error naming the task (and the reader's file and line). The suite's score at each ``k`` is
appended to the run directory's ``results.jsonl`` (task: the suite's name, metric
``centered_mean``, chance 0) and printed with the table of its tasks.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab.cli.train import build_datamodule, train
from gptlab.conditions import Condition
from gptlab.data.contract import TaskDataModule
from gptlab.heap import frozen_heap
from gptlab.report.results import SCRATCH, ResultRow, append_results
from gptlab.resources import config_dir
from gptlab.schema import ConfigError, is_incontext, validate_config
from gptlab.tasks.kinds import regime_for_k
from gptlab.tasks.metrics import val_prefix
from gptlab.tasks.suite import SCORE_METRIC, SuiteSpec, SuiteTask, centered, suite_score

log = logging.getLogger("gptlab")


@dataclass
class SuiteRun:
    """One task of the suite at one ``k``: its run config, DataModule and, once run, its result."""

    task: SuiteTask
    k: int
    cfg: DictConfig
    datamodule: TaskDataModule | None = None
    value: float | None = None
    chance: float | None = None


def suite_runs(cfg: DictConfig, suite: SuiteSpec) -> list[SuiteRun]:
    """The run config of every task × k: ``cfg`` with the task's own YAML, k, the regime named after
    k, the task's unconditional normalisation, the suite's limit and its own run directory."""
    runs = []
    root = Path(cfg.paths.output_dir)
    for k in suite.shots:
        for task in suite.tasks:
            sub = copy.deepcopy(cfg)
            with open_dict(sub):  # (eval_suite stays: the run's rows say which suite they enter)
                sub.task = OmegaConf.load(config_dir() / "task" / f"{task.name}.yaml")
                if task.split is not None:
                    sub.task.eval_splits = [task.split]
                sub.regime.name, sub.regime.k = regime_for_k(k), k
                sub.regime.mutual_info, sub.regime.limit = task.mutual_info, suite.limit
                sub.paths.output_dir = str(root / "suite" / f"{task.name}_k{k}")
            runs.append(SuiteRun(task, k, sub))
    return runs


def prepare(run: SuiteRun, suite: SuiteSpec) -> None:
    """Check the run's config, read and tokenize its data, and check that it logs the suite's metric."""
    where = f"eval_suite={suite.name}, task {run.task.name} (k={run.k})"
    try:
        validate_config(run.cfg)
        datamodule = build_datamodule(run.cfg)
        datamodule.setup("validate")
    except Exception as err:  # noqa: BLE001 - every bad input is reported under the task it is in
        raise ConfigError(f"{where}: {err}") from err
    split = datamodule.eval_splits[0]
    chance = datamodule.chance_levels.get(split, {})
    if run.task.metric not in chance:
        raise ConfigError(
            f"{where}: metric {run.task.metric!r} is not one the task logs; valid: {', '.join(chance)}"
        )
    run.datamodule, run.chance = datamodule, chance[run.task.metric]


def run_suite(cfg: DictConfig) -> dict[str, float]:
    """Evaluate every task of ``cfg.eval_suite`` (see the module doc); returns ``suite/score`` (the
    first k's), ``suite/k<k>/score`` and ``suite/k<k>/<task>/<metric>``."""
    suite = SuiteSpec.from_config(OmegaConf.to_container(cfg.eval_suite, resolve=True))
    if not is_incontext(cfg):
        raise ConfigError(
            f"eval_suite={suite.name} evaluates in context, but regime={cfg.regime.name} is a "
            f"{cfg.regime.nature} regime: use regime=zero_shot"
        )
    runs = suite_runs(cfg, suite)
    with frozen_heap():
        for run in runs:  # every task is checked and read before any model runs
            prepare(run, suite)
        model = instantiate(cfg.model)  # one backbone for every task: it is only read
        for run in runs:
            metrics = train(run.cfg, run.datamodule, model)
            splits = run.datamodule.eval_splits
            run.value = metrics[f"{val_prefix(splits[0], splits)}{run.task.metric}"]
    scores = {k: suite_score([(r.value, r.chance) for r in runs if r.k == k]) for k in suite.shots}
    if rank_zero_only.rank == 0:
        condition = Condition.of(cfg)
        rows = [
            ResultRow(
                task=suite.name, split="suite", metric=SCORE_METRIC, value=score, regime=regime_for_k(k),
                model=cfg.model.name, init=cfg.model.get("init_from") or SCRATCH, seed=cfg.seed, k=k,
                n_eval=len(suite.tasks), chance=0.0, suite=suite.name, condition=condition.hash,
                config=condition.values,
            )
            for k, score in scores.items()
        ]
        log.info("suite scores: %s", append_results(Path(cfg.paths.output_dir), rows))
        print(suite_table(suite, runs, scores))
    return {
        "suite/score": scores[suite.shots[0]],
        **{f"suite/k{k}/score": score for k, score in scores.items()},
        **{f"suite/k{r.k}/{r.task.name}/{r.task.metric}": r.value for r in runs},
    }


def suite_table(suite: SuiteSpec, runs: list[SuiteRun], scores: dict[int, float]) -> str:
    """The suite's tasks, their metric, value, chance and centered value, and the score per k."""
    lines = [f"[gptlab] eval_suite={suite.name}", f"{'task':<16}{'k':>3}  {'metric':<16}{'value':>7}{'chance':>8}{'centered':>10}"]
    for run in runs:
        chance = "-" if run.chance is None else f"{run.chance:.3f}"
        lines.append(
            f"{run.task.name:<16}{run.k:>3}  {run.task.metric:<16}{run.value:>7.3f}{chance:>8}"
            f"{centered(run.value, run.chance):>10.3f}"
        )
    for k, score in scores.items():
        lines.append(f"score (mean centered, k={k}): {score:.4f}")
    return "\n".join(lines)
