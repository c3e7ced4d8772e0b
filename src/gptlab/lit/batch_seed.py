"""Per-batch seeding, so a resumed run draws the same dropout masks as an uninterrupted one."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch


class BatchSeed(pl.Callback):
    """Reseeds torch's RNG before every training micro-batch from ``(seed, rank, epoch, batch)``.

    Without it the random state at a step depends on everything that drew from the global RNG
    before it: each DataLoader iterator (validation included) draws a base seed, and a restart
    re-creates them, so a run resumed from a checkpoint would draw other dropout masks than the
    straight run. Keyed on the micro-batch's own coordinates, which Lightning restores on resume,
    the masks are a function of the position in training alone.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        key = [self.seed, trainer.global_rank, trainer.current_epoch, batch_idx]
        # SeedSequence: nearby keys give unrelated streams (seed + batch_idx would overlap across runs).
        torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0]))
