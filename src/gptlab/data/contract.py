"""What every gptlab DataModule tells the run, whatever its regime: the one DataModule contract.

``gptlab.cli.train`` reads a run's DataModule through these attributes only. Each DataModule fills
them while it reads its data (in ``setup``): chance levels are computed from the data as it is
read, never by reading the task again after training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L

from gptlab.tasks.kinds import kinds_run_by
from gptlab.tasks.spec import TaskSpec


class TaskDataModule(L.LightningDataModule):
    """A DataModule of one task for a regime of nature ``NATURE`` (``gptlab.tasks.kinds``).

    After ``setup()``:

    - ``spec``: the task, its labels resolved;
    - ``eval_splits``: the splits ``val_dataloader()`` returns loaders for, in that order;
    - ``chance_levels``: eval split -> metric -> what a predictor that ignores its input scores;
    - ``skipped_lines``: data split -> blank lines the reader skipped;
    - ``truncated``: split -> examples cut to fit the window;
    - ``dropped_words``: split -> words truncation cut from the examples (kinds with a tag per word);
    - ``num_train_examples``: labelled examples trained on or drawn from (None: not counted);
    - ``prompt_name``: the in-context template used (None: no prompt).
    """

    NATURE = ""

    def __init__(self, task: Mapping[str, Any]) -> None:
        super().__init__()
        self.chance_levels: dict[str, dict[str, float | None]] = {}
        self.skipped_lines: dict[str, int] = {}
        self.truncated: dict[str, int] = {}
        self.dropped_words: dict[str, int] = {}
        self.num_train_examples: int | None = None
        self.prompt_name: str | None = None
        self.spec = TaskSpec.from_config(task)
        self.check_task()

    def check_task(self) -> None:
        """Refuse, before any data is read, a task that this DataModule cannot serve."""
        kinds = kinds_run_by(self.NATURE)
        if self.spec.kind not in kinds:
            raise ValueError(
                f"task {self.spec.name!r} is of kind {self.spec.kind!r}; {type(self).__name__} reads "
                f"kinds {', '.join(kinds)}"
            )

    @property
    def eval_splits(self) -> list[str]:
        return list(self.spec.eval_splits)

    def rank_world(self) -> tuple[int, int]:
        """(this process's global rank, number of processes): (0, 1) outside a Trainer."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
