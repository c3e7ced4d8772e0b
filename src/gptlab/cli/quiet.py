"""What a run does not print: dependency messages that say nothing about the run.

Lightning advertises a cloud logger at every Trainer start and reports the accelerators it did not
find; torch 2.13 warns about an API Lightning still uses. A run prints its progress, metrics and
where its files are; ``quiet()`` drops the rest, once per process.
"""

from __future__ import annotations

import functools
import logging
import warnings

# Lightning's rank-zero info lines that are neither progress nor results
_LIGHTNING_CHATTER = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:")
# warnings from dependencies, by message: the deprecation is Lightning's to fix, and the
# DataModules restore their own stream position, so "not resumable" does not apply
_DEPENDENCY_WARNINGS = (r".*isinstance\(treespec, LeafSpec\).*", r".*your dataloader is not resumable.*")


def _not_chatter(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_LIGHTNING_CHATTER)


@functools.cache
def quiet() -> None:
    """Filter the messages above (idempotent)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_not_chatter)
    for message in _DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
