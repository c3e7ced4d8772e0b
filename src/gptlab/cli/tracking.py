"""What a run tells its experiment trackers beyond per-step metrics: the resolved config, the
results rows, the hyper-parameters with the final metrics where trackers compare runs
(TensorBoard's HPARAMS tab, the W&B summary), and (W&B) the end of the run, whatever way the run
ended.

Lightning's loggers write on global rank 0 only, so nothing here needs a rank check.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import fields

from lightning.fabric.loggers import TensorBoardLogger as FabricTensorBoardLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from gptlab.conditions import SEED_KEYS, Condition
from gptlab.report.results import ResultRow

RESULTS_TABLE_KEY = "results"
CONDITION_KEY = "condition"
FINAL_PREFIX = "final/"


def log_resolved_config(loggers: Iterable[Logger], cfg: DictConfig, condition: Condition) -> None:
    """Every value the run used, interpolations resolved, and its condition's hash (W&B config,
    TensorBoard's and the CSV logger's hparams.yaml)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams({**resolved, CONDITION_KEY: condition.hash})


def log_final_metrics(
    loggers: Iterable[Logger], cfg: DictConfig, condition: Condition, metrics: Mapping[str, float], step: int
) -> None:
    """The run's hyper-parameters (its condition's values, seeds and hash) with its final metrics
    as ``final/<metric>``: TensorBoard's hparams plugin data (the HPARAMS tab lists every run of a
    sweep with them) and the W&B run summary (its config already holds the resolved config)."""
    final = {f"{FINAL_PREFIX}{name}": value for name, value in metrics.items()}
    seeds = {key: OmegaConf.select(cfg, key) for key in SEED_KEYS if OmegaConf.select(cfg, key) is not None}
    hparams = {**condition.values, **seeds, CONDITION_KEY: condition.hash}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            # Lightning's fabric-level method writes the plugin data; the subclass's own would also
            # merge these flat keys into hparams.yaml, which holds the nested resolved config
            FabricTensorBoardLogger.log_hyperparams(logger, hparams, metrics=final, step=step)
        elif isinstance(logger, WandbLogger):
            logger.experiment.summary.update({**final, CONDITION_KEY: condition.hash})


def log_results_table(loggers: Iterable[Logger], rows: Sequence[ResultRow]) -> None:
    """The run's ``results.jsonl`` rows as a W&B Table (the other loggers have no table type)."""
    columns = [f.name for f in fields(ResultRow)]
    data = [[getattr(row, c) for c in columns] for row in rows]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=RESULTS_TABLE_KEY, columns=columns, data=data)


@contextlib.contextmanager
def wandb_run_finished() -> Iterator[None]:
    """Finish the active W&B run when the block ends, marked failed if it raised.

    Lightning never calls ``wandb.finish()``; without it the next job of an in-process multirun
    would log into this job's run, and a failed job would look like it is still running.
    """
    failed = True
    try:
        yield
        failed = False
    finally:
        wandb = sys.modules.get("wandb")  # never imported: no run to finish
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
