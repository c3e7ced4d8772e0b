"""``build_gpt``: the Hydra ``_target_`` of ``conf/model/*.yaml``.

The YAML fixes the model's shape; ``init_from`` only supplies weights. So a checkpoint that does
not fit the configured shape is an error reported before training, never a silent resize, and
run-time settings such as dropout come from the config, not from the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from gptlab.model.checkpoint import CONFIG_KEY, backbone_state_dict, load_gpt_checkpoint, read_checkpoint
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.model.hf import (
    gpt_config_from_hf,
    hf_to_gptlab_state,
    load_hf_gpt2,
    load_matching_state,
    looks_like_path,
    read_hf_gpt2,
)

# Switches that change what the weights compute without changing any tensor's shape.
_ARCHITECTURE_FIELDS = ("norm", "attention", "layer_norm_eps", "tie_embeddings")


def build_gpt(init_from: str | os.PathLike[str] | None = None, **config: Any) -> GPT:
    """A ``GPT`` shaped by ``config`` (``GPTConfig`` fields), with weights from ``init_from``.

    ``init_from``: ``None`` for random init; an existing file for a gptlab checkpoint; an existing
    directory for a Hugging Face GPT-2 checkpoint; anything else is a Hub id (``"gpt2"``, ...).
    """
    valid = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ValueError(
            f"build_gpt: unknown model config key(s) {unknown}; valid fields: {sorted(valid)}"
        )
    model = GPT(GPTConfig.from_dict(config))
    if init_from is None:
        return model
    init_from = os.fspath(init_from)
    source = f"init_from={init_from!r}"
    path = Path(init_from).expanduser()
    if path.is_file():
        checkpoint = read_checkpoint(path)
        if CONFIG_KEY not in checkpoint:
            raise ValueError(f"{source}: {path} is not a gptlab checkpoint (no {CONFIG_KEY!r} entry)")
        trained = GPTConfig.from_dict(checkpoint[CONFIG_KEY])
        state = backbone_state_dict(checkpoint, path)
    elif not path.is_dir() and looks_like_path(init_from):
        raise FileNotFoundError(f"{source}: no such file or directory: {path}")
    else:  # an HF directory or a Hub id
        hf_config, hf_state = read_hf_gpt2(init_from)
        trained = gpt_config_from_hf(hf_config)
        state = hf_to_gptlab_state(hf_state, model)
    _check_architecture(model.config, trained, source)
    load_matching_state(model, state, source)
    return model


def _check_architecture(config: GPTConfig, trained: GPTConfig, source: str) -> None:
    """Refuse weights trained under different switches: same shapes, different function."""
    names = list(_ARCHITECTURE_FIELDS)
    if config.attention == "alternating":
        names.append("local_window")
    for name in names:
        ours, theirs = getattr(config, name), getattr(trained, name)
        if ours != theirs:
            raise ValueError(
                f"{source}: the checkpoint was trained with {name}={theirs!r} but model "
                f"{config.name!r} has {name}={ours!r}; set model.{name}={theirs} to use these weights"
            )


def load_pretrained(source: str | os.PathLike[str]) -> GPT:
    """The model stored at ``source`` with the shape stored with it (no size to name): a gptlab
    checkpoint (a file), a Hugging Face GPT-2 directory, or a Hub id."""
    source = os.fspath(source)
    path = Path(source).expanduser()
    if path.is_file():
        return load_gpt_checkpoint(path)
    if not path.is_dir() and looks_like_path(source):
        raise FileNotFoundError(f"{source}: no such checkpoint file or model directory")
    return load_hf_gpt2(source)
