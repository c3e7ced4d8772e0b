"""In-loop evaluation: an evaluation suite scored every N optimizer steps of pre-training.

build-nanogpt evaluates HellaSwag every 250 steps, nanochat reports its CORE score as it trains:
``SuiteEvaluation`` does the same for any suite (``gptlab.tasks.suite``; ``callbacks=inloop_eval``),
with a per-task example limit. Each task is read and tokenized once, when fitting starts (a bad
task or file stops the run before its first step); at each evaluation the backbone being trained
is scored in context, exactly as ``regime=zero_shot`` (or ``few_shot``) scores a checkpoint, by the
same DataModules and modules, without a Trainer of their own.

* **Where it goes.** The loggers get ``inloop/<task>/<metric>`` (each task's suite metric),
  ``inloop/score`` (the suite's centered mean at the first k), ``inloop/tokens`` (tokens trained
  on so far) and ``inloop/seconds`` (what the evaluation cost) at the optimizer step; the run's
  ``results.jsonl`` gets every metric of every task plus the suite's score, as rows with ``step``
  and ``tokens`` (``gptlab-report`` plots them against tokens).
* **Ranks.** Every rank scores its share of each task's examples (the DataModules split them
  round-robin) and the metrics are reduced across ranks (torchmetrics); rank 0 writes the rows.
* **Resume.** The steps already in ``results.jsonl`` for this suite are not evaluated again, so a
  resumed run continues its curve without duplicate points. The first step (before any update)
  and the last are evaluated too, if they were not already.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import OmegaConf

from gptlab.bounds import POSITIVE, check_arguments
from gptlab.conditions import Condition
from gptlab.data.generative import GenerativeDataModule
from gptlab.data.incontext import InContextDataModule
from gptlab.lit.generative import GenerativeModule
from gptlab.lit.incontext import EvaluationModule, InContextModule
from gptlab.report.results import RESULTS_FILE, SCRATCH, ResultRow, append_results, read_results
from gptlab.resources import config_dir
from gptlab.tasks.kinds import regime_for_k, task_kind
from gptlab.tasks.metrics import val_prefix
from gptlab.tasks.suite import SCORE_METRIC, SuiteSpec, SuiteTask, suite_score

log = logging.getLogger(__name__)

# The in-context scorers of conf/regime/zero_shot.yaml (its datamodule/module and regime.generate),
# by the kinds' `incontext` entry; a test checks that the two agree.
SCORERS: dict[str, tuple[type[InContextDataModule], type[EvaluationModule]]] = {
    "choice": (InContextDataModule, InContextModule),
    "generate": (GenerativeDataModule, GenerativeModule),
}


def task_config(name: str, data_dir: str) -> dict[str, Any]:
    """``tasks/<name>.yaml`` resolved with ``paths.data_dir = data_dir``."""
    root = OmegaConf.create({"paths": {"data_dir": data_dir}})
    root.task = OmegaConf.load(config_dir() / "task" / f"{name}.yaml")
    return OmegaConf.to_container(root.task, resolve=True)


class _Scorer:
    """One task of the suite at one k: its DataModule (read once) and its evaluation module."""

    def __init__(self, entry: SuiteTask, k: int, datamodule: InContextDataModule, module: EvaluationModule) -> None:
        self.entry, self.k, self.datamodule, self.module = entry, k, datamodule, module

    def score(self, device: torch.device) -> dict[str, float]:
        """Every metric of the task by its name without ``val/`` (first eval split)."""
        module, splits = self.module, self.datamodule.eval_splits
        module.on_validation_epoch_start()
        for index, loader in enumerate(self.datamodule.val_dataloader()):
            for batch_idx, batch in enumerate(loader):
                module.validation_step(move_data_to_device(batch, device), batch_idx, index)
        module.logits.clear()
        prefix = val_prefix(splits[0], splits)
        return {
            name[len(prefix):]: float(value) for name, value in module.compute_metrics().items() if name.startswith(prefix)
        }


class SuiteEvaluation(pl.Callback):
    """Scores ``suite`` (an ``eval_suite`` node: name, tasks, shots, limit) every ``every_n_steps``
    optimizer steps of pre-training (see the module doc). ``data_dir`` is the tasks'
    ``paths.data_dir``; ``block_size`` and ``batch_size`` are the scoring window and examples per
    batch; ``output_dir`` is the run directory whose ``results.jsonl`` gets the rows, which record
    ``model``, ``init``, ``seed`` and the pre-training run's ``condition`` (set by the run that
    builds the callback)."""

    def __init__(
        self,
        suite: Mapping[str, Any],
        every_n_steps: Annotated[int, POSITIVE],
        data_dir: str,
        output_dir: str,
        block_size: Annotated[int, POSITIVE],
        batch_size: Annotated[int, POSITIVE] = 16,
        model: str = "",
        init: str | None = None,
        seed: int = 0,
    ) -> None:
        check_arguments(SuiteEvaluation.__init__, locals())
        self.suite = SuiteSpec.from_config(suite)
        self.every_n_steps, self.data_dir, self.output_dir = every_n_steps, data_dir, Path(output_dir)
        self.block_size, self.batch_size = block_size, batch_size
        self.identity = {"model": model, "init": init or SCRATCH, "seed": seed}
        self.condition: Condition | None = None
        self.scorers: list[_Scorer] = []
        self.done: set[int] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.scorers:
            return
        for k in self.suite.shots:
            for entry in self.suite.tasks:
                self.scorers.append(self._scorer(entry, k, trainer, pl_module))
        results = self.output_dir / RESULTS_FILE
        if results.is_file():  # a resumed run: its curve so far
            self.done = {row["step"] for row in read_results(results) if row["suite"] == self.suite.name}

    def _scorer(self, entry: SuiteTask, k: int, trainer: pl.Trainer, pl_module: pl.LightningModule) -> _Scorer:
        where = f"in-loop eval_suite={self.suite.name}, task {entry.name} (k={k})"
        try:
            task = task_config(entry.name, self.data_dir)
            if entry.split is not None:
                task["eval_splits"] = [entry.split]
            scorer = task_kind(task["kind"]).incontext
            if scorer not in SCORERS:
                raise ValueError(f"kind {task['kind']!r} is not scored in context by {' or '.join(SCORERS)}")
            datamodule_class, module_class = SCORERS[scorer]
            datamodule = datamodule_class(
                task, self.block_size, self.batch_size, k=k, mutual_info=entry.mutual_info, limit=self.suite.limit
            )
            datamodule.trainer = trainer  # its ranks: each scores its share of the examples
            datamodule.setup("validate")
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"{where}: {err}") from err
        module = module_class(pl_module.model)
        module.configure_task(datamodule.spec, list(datamodule.eval_splits), dict(datamodule.truncated))
        return _Scorer(entry, k, datamodule, module.to(pl_module.device))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step not in self.done:  # the curve starts where training starts
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step not in self.done:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step not in self.done:
            self.evaluate(trainer, pl_module)

    def tokens_seen(self, trainer: pl.Trainer) -> int:
        """Tokens trained on by the current step: every optimizer step reads the pre-training
        DataModule's batch of windows on every rank, accumulated."""
        datamodule = trainer.datamodule
        per_step = datamodule.batch_size * datamodule.block_size * trainer.accumulate_grad_batches * trainer.world_size
        return trainer.global_step * per_step

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score every task now, log the suite's metrics and score, and write the rows."""
        step, tokens, start = trainer.global_step, self.tokens_seen(trainer), time.perf_counter()
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            scores = [scorer.score(pl_module.device) for scorer in self.scorers]
        pl_module.train(was_training)
        seconds = time.perf_counter() - start
        self.done.add(step)
        chance = [s.datamodule.chance_levels[s.datamodule.eval_splits[0]] for s in self.scorers]
        totals = {
            k: suite_score([(m[s.entry.metric], c.get(s.entry.metric)) for s, m, c in zip(self.scorers, scores, chance) if s.k == k])
            for k in self.suite.shots
        }
        logged = {f"inloop/{s.entry.name}/{s.entry.metric}" + (f"/k{s.k}" if s.k else ""): m[s.entry.metric]
                  for s, m in zip(self.scorers, scores)}
        logged.update({"inloop/score": totals[self.suite.shots[0]], "inloop/tokens": float(tokens), "inloop/seconds": seconds})
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=step)
        log.info("in-loop %s at step %d (%d tokens): score %.4f, %.1f s", self.suite.name, step, tokens,
                 logged["inloop/score"], seconds)
        if trainer.is_global_zero:
            append_results(self.output_dir, self.rows(step, tokens, scores, chance, totals))

    def rows(
        self, step: int, tokens: int, scores: list[dict[str, float]], chance: list[dict[str, float | None]],
        totals: dict[int, float],
    ) -> list[ResultRow]:
        """Every task's metrics and the suite's score at this step, as ``results.jsonl`` rows."""
        name = self.suite.name
        common = {**self.identity, "step": step, "tokens": tokens}
        if self.condition is not None:
            common.update(condition=self.condition.hash, config=self.condition.values)
        rows = []
        for scorer, metrics, levels in zip(self.scorers, scores, chance):
            datamodule = scorer.datamodule
            split = datamodule.eval_splits[0]
            n_eval = len(datamodule.requests(split))
            rows += [
                ResultRow(
                    task=scorer.entry.name, split=split, metric=metric, value=value, regime=regime_for_k(scorer.k),
                    k=scorer.k, n_eval=n_eval, fewshot_seed=datamodule.fewshot_seed, prompt=datamodule.prompt_name,
                    chance=levels.get(metric), suite=name if metric == scorer.entry.metric else None, **common,
                )
                for metric, value in metrics.items()
            ]
        rows += [
            ResultRow(task=name, split="suite", metric=SCORE_METRIC, value=score, regime=regime_for_k(k), k=k,
                      n_eval=len(self.suite.tasks), chance=0.0, suite=name, **common)
            for k, score in totals.items()
        ]
        return rows
