"""``LogitBuffer``: one fp32 tensor that the LM head writes its logits into, kept for as long as its
owner computes them (a model's training loss: (rows, vocabulary) chunks; an evaluation's scoring:
blocks of ``gptlab.lit.head_scores.HEAD_BLOCK``).

Why: on a CPU a fresh tensor of that size per chunk (64-400 MB at GPT-2's vocabulary) costs the OS
mapping and zeroing every page on first touch: a quarter of in-context scoring's time, and ~15% of
a small model's training step on 2 cores (BENCHMARKS.md, mfu). A kept tensor's pages are touched
once. A GPU's caching allocator reuses memory itself: there the buffer keeps nothing.
"""

from __future__ import annotations

import torch


class LogitBuffer:
    """A (rows, vocab) fp32 tensor: on the CPU allocated on first use and again only when the shape
    asked for changes; on another device a new one each time, from its caching allocator. ``clear``
    frees it."""

    def __init__(self) -> None:
        self._tensor: torch.Tensor | None = None

    def get(self, rows: int, vocab: int, device: torch.device) -> torch.Tensor:
        """A (rows, vocab) fp32 tensor on ``device``; its contents are whatever was last written."""
        if torch.device(device).type != "cpu":
            return torch.empty((rows, vocab), dtype=torch.float32, device=device)
        held = self._tensor
        if held is None or held.shape != (rows, vocab):
            self._tensor = held = None  # freed before its successor is allocated
            self._tensor = torch.empty((rows, vocab), dtype=torch.float32)
        return self._tensor

    def clear(self) -> None:
        self._tensor = None
