"""Stop a run at the first non-finite loss, before it can overwrite a good checkpoint."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class FiniteLossGuard(pl.Callback):
    """Raises at the first NaN/Inf training loss, naming the step.

    Lightning runs ``ModelCheckpoint`` after every other callback, so raising here means the
    step's (possibly NaN) weights are never saved: the newest checkpoint on disk stays the last
    good one, and the app exits non-zero.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"training loss is {float(loss)} at step {trainer.global_step} (batch {batch_idx} of "
                f"epoch {trainer.current_epoch}); stopped. The last good checkpoint is in "
                f"{getattr(trainer.checkpoint_callback, 'dirpath', None)}; lower the learning rate or "
                f"check the data, then resume with ckpt_path=last (the newest valid checkpoint there)"
            )
