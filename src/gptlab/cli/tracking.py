"""What a run tells its experiment trackers beyond per-step metrics: the resolved config, the
results rows, and (W&B) the end of the run, whatever way the run ended.

Lightning's loggers write on global rank 0 only, so nothing here needs a rank check.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields

from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from gptlab.report.results import ResultRow

RESULTS_TABLE_KEY = "results"


def log_resolved_config(loggers: Iterable[Logger], cfg: DictConfig) -> None:
    """Every value the run used, interpolations resolved (W&B config, TensorBoard hparams,
    the CSV logger's hparams.yaml)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(resolved)


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
