"""``LogitBuffer``: one (rows, vocabulary) fp32 tensor that the LM head writes its logits into, kept
for as long as its owner computes them (a model's training loss, an evaluation's scoring).

Why: on a CPU a fresh tensor of that size per chunk (64-400 MB at GPT-2's vocabulary) costs the OS
mapping and zeroing every page on first touch: a quarter of in-context scoring's time, and ~15% of
a small model's training step on 2 cores (BENCHMARKS.md, mfu). A kept tensor's pages are touched
once. (A GPU's caching allocator reuses its memory anyway.)
"""

from __future__ import annotations

import torch


class LogitBuffer:
    """A (rows, vocab) fp32 tensor, allocated on first use and again only when the shape or device
    asked for changes; ``clear`` frees it."""

    def __init__(self) -> None:
        self._tensor: torch.Tensor | None = None

    def get(self, rows: int, vocab: int, device: torch.device) -> torch.Tensor:
        """The (rows, vocab) fp32 tensor on ``device``; its contents are whatever was last written."""
        held = self._tensor
        if held is None or held.shape != (rows, vocab) or held.device != device:
            self._tensor = held = None  # freed before its successor is allocated
            self._tensor = torch.empty((rows, vocab), dtype=torch.float32, device=device)
        return self._tensor

    def clear(self) -> None:
        self._tensor = None
