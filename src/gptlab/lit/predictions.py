"""Per-example records of an evaluation, collected on every rank and gathered on all of them."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


class PredictionLog:
    """Split -> per-example records (each with its ``index`` in the split), for ``predictions.jsonl``.

    ``add`` during the evaluation; ``gather`` once at its end on every rank (a collective under
    DDP: each rank scored its own examples), which leaves ``records`` whole and in split order.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[dict[str, Any]]] = {}

    def reset(self, splits: list[str]) -> None:
        self.records = {split: [] for split in splits}

    def add(self, split: str, records: list[dict[str, Any]]) -> None:
        self.records.setdefault(split, []).extend(records)

    def gather(self) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, self.records)
            merged: dict[str, list[dict[str, Any]]] = {}
            for part in parts:
                for split, rows in part.items():
                    merged.setdefault(split, []).extend(rows)
            self.records = merged
        for rows in self.records.values():
            rows.sort(key=lambda row: row["index"])
