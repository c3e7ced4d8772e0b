"""The size registry: every ``conf/model/<name>.yaml`` is one named model shape."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from gptlab.resources import config_dir, group_choices


def model_config(name: str) -> dict[str, Any]:
    """The fields of registered size ``name`` as a plain dict."""
    path = config_dir() / "model" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(group_choices('model'))}")
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(values, dict)
    return {k: v for k, v in values.items() if k not in ("_target_", "init_from")}
