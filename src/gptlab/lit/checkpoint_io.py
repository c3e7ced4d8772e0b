"""Checkpoints that survive a kill: atomic writes, checked safe reads, and the newest valid file.

``AtomicCheckpointIO`` is the Trainer's checkpoint plugin (``conf/trainer/default.yaml``,
``plugins:``). Lightning's own ``TorchCheckpointIO`` truncates the target file and then writes
it, so a process killed during a save (pre-emption, OOM killer, Ctrl-C twice) leaves a partial
``last.ckpt``. Here every save goes to a hidden temporary file in the same directory, is flushed
to disk and renamed over the target: the previous checkpoint stays valid until the new one is
complete. Loading verifies the archive's CRCs and never executes pickled code.

``newest_valid_checkpoint`` is what ``ckpt_path=last`` resumes from: the most recently written
``*.ckpt`` of a run's checkpoint directory that reads back whole, skipping (with a warning naming
it) any that does not. ``last.ckpt`` may be a copy or a link (``save_last: link``); both work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from gptlab.atomic import TEMP_SUFFIX, write_atomic
from gptlab.model.checkpoint import CheckpointError, read_checkpoint, verify_checkpoint_archive

log = logging.getLogger(__name__)

# A run's checkpoint directory, under its run dir (conf/callbacks/default.yaml writes there)
CHECKPOINT_DIR = "checkpoints"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file + fsync + rename; safe, verified ``torch.load``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage (s3://, gs://): fsspec's own transaction applies
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r})")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | str | torch.device | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            raise ValueError(
                f"{type(self).__name__} loads checkpoints with weights_only=True only (never running pickled "
                f"code); {path} was asked for with weights_only=False"
            )
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_checkpoint(path, map_location=map_location)


def checkpoint_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The ``*.ckpt`` files of ``directory`` (following links; dangling links left out), newest first."""
    directory = Path(directory)
    files = [p for p in directory.glob("*.ckpt") if p.is_file()] if directory.is_dir() else []
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), reverse=True)


def newest_valid_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The most recently written checkpoint in ``directory`` that verifies; None when there is none.

    Each newer file that fails verification is skipped with a warning naming it and the reason.
    """
    for path in checkpoint_files(directory):
        try:
            verify_checkpoint_archive(path)
        except CheckpointError as err:
            log.warning("skipping an unusable checkpoint: %s", err)
            continue
        unfinished = sorted(Path(directory).glob(f".*.ckpt.*{TEMP_SUFFIX}"))
        if unfinished:
            log.warning(
                "%d unfinished checkpoint write(s) from an interrupted save in %s (safe to delete): %s",
                len(unfinished), directory, ", ".join(p.name for p in unfinished),
            )
        return path
    return None
