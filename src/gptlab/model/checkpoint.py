"""gptlab checkpoints: Lightning ``.ckpt`` files that also record the backbone's shape.

Every gptlab LightningModule keeps its backbone as ``self.model`` and writes the backbone's
``GPTConfig`` under ``CONFIG_KEY``, so any of them (pre-trained or fine-tuned) can seed a new run.

Reading is safe and checked: ``torch.load(weights_only=True)`` never runs pickled code, and the
CRC32 of every record of the zip archive is verified first, because ``torch.load`` itself reads a
flipped byte in tensor data as a silently wrong weight. Any unreadable file is a
``CheckpointError`` naming it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from gptlab.model.gpt import GPT, GPTConfig

CONFIG_KEY = "gptlab_model_config"
BACKBONE_PREFIX = "model."


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt or unsafe to load; the message names the file."""


def verify_checkpoint_archive(path: str | Path) -> None:
    """Check that ``path`` is a complete ``torch.save`` zip archive whose records match their CRC32."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or not a torch checkpoint ({err})") from err
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: record {bad!r} fails its CRC check")


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a verified checkpoint without executing pickled code; ``CheckpointError`` names a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    verify_checkpoint_archive(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe (code-carrying) files
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict")
    return checkpoint


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
    model = GPT.for_loading(GPTConfig.from_dict(checkpoint[CONFIG_KEY]))
    model.load_state_dict(backbone_state_dict(checkpoint, path))  # strict: every tensor or an error
    return model
