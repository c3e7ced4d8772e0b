"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
