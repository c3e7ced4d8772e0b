"""A NaN loss stops the run, names the step and leaves the last good checkpoint in place."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from gptlab.cli.train import build_all
from gptlab.lit.guards import NonFiniteLossError
from gptlab.model.checkpoint import read_checkpoint


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path: Path, compose_config) -> None:
    cfg = compose_config(
        "debug=fast",
        f"paths.output_dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.max_steps=6",
        "trainer.val_check_interval=2",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    )
    pl.seed_everything(0)
    datamodule, module, trainer = build_all(cfg)
    real_step = module.training_step

    def poisoned_step(batch, batch_idx):
        loss = real_step(batch, batch_idx)
        return loss * float("nan") if trainer.global_step == 3 else loss

    module.training_step = poisoned_step
    with pytest.raises(NonFiniteLossError, match="training loss is nan at step 3"):
        trainer.fit(module, datamodule=datamodule)
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
