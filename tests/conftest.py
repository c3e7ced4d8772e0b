"""Shared pytest fixtures.

``tiny_gpt`` (a factory of tiny seeded backbones) and ``compose_config`` (Hydra composition of the
shipped configs) are what tests request. Their plain functions, ``make_tiny_gpt`` and
``compose_config``, are for module-level helpers a fixture cannot reach (``from conftest import
compose_config``), e.g. a session-wide cache or a helper other test modules import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported where used, so that collecting a torch-free test file stays cheap
    from omegaconf import DictConfig

    from gptlab.model.gpt import GPT

# The shape of ``tiny_gpt``'s models unless a test overrides it: big enough to have two of
# everything (layers, heads), small enough that a forward pass costs nothing.
TINY_GPT = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark files (``../shared/data`` beside the checkout, or ``$GPTLAB_SHARED_DATA``).

    Missing data skips the test locally but fails it in CI, where a skip would hide a broken setup.
    """
    root = Path(
        os.environ.get("GPTLAB_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
    if not root.is_dir():
        message = f"shared data folder {root} is missing (set GPTLAB_SHARED_DATA to its location)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


def make_tiny_gpt(seed: int = 0, eval_mode: bool = False, **overrides: Any) -> GPT:
    """A randomly initialised ``GPT`` of shape ``TINY_GPT`` updated with ``overrides`` (GPTConfig fields).

    ``torch.manual_seed(seed)`` is set first, so the weights (and whatever the test draws from
    torch's global RNG after them) are the same on every run. ``eval_mode``: return it in eval mode.
    """
    import torch

    from gptlab.model.gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY_GPT, **overrides}))
    return model.eval() if eval_mode else model


@pytest.fixture(scope="session")
def tiny_gpt() -> Callable[..., GPT]:
    """The factory ``make_tiny_gpt``: ``tiny_gpt(**overrides)`` builds one tiny, seeded backbone."""
    return make_tiny_gpt


def compose_config(
    *overrides: str, config_name: str = "train", return_hydra_config: bool = False
) -> DictConfig:
    """Hydra's composition of ``config_name`` from the shipped ``conf/`` tree with ``overrides``.

    No overrides are implied: a test that needs e.g. ``paths.output_dir`` set passes it. Hydra is
    initialised for this call only, so compositions never leak global state into other tests.
    """
    from hydra import compose, initialize_config_dir

    from gptlab.resources import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config
        )


@pytest.fixture(name="compose_config", scope="session")
def compose_config_fixture() -> Callable[..., DictConfig]:
    """The function ``compose_config``: ``compose_config("model=gpt2", ...)`` composes ``train``."""
    return compose_config
