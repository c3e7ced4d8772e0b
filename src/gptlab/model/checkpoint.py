"""gptlab checkpoints: Lightning ``.ckpt`` files that also record the backbone's shape.

Every gptlab LightningModule keeps its backbone as ``self.model`` and writes the backbone's
``GPTConfig`` under ``CONFIG_KEY``, so any of them (pre-trained or fine-tuned) can seed a new run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gptlab.model.gpt import GPT, GPTConfig

CONFIG_KEY = "gptlab_model_config"
BACKBONE_PREFIX = "model."


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code; name the file when it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt/unsafe files
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err


def backbone_state_dict(checkpoint: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone tensors of a gptlab checkpoint, without the ``model.`` prefix."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    return {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}


def load_gpt_checkpoint(path: str | Path) -> GPT:
    """The backbone stored in gptlab checkpoint ``path``, shape taken from the file."""
    checkpoint = read_checkpoint(path)
    if CONFIG_KEY not in checkpoint:
        raise ValueError(f"{path} is not a gptlab checkpoint (no {CONFIG_KEY!r} entry)")
    model = GPT(GPTConfig.from_dict(checkpoint[CONFIG_KEY]))
    model.load_state_dict(backbone_state_dict(checkpoint, path))
    return model
