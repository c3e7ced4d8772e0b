"""Command-line entry points. Importing this package registers gptlab's OmegaConf resolvers,
so every entry point (and every test that composes the configs through it) can resolve them."""

from omegaconf import OmegaConf


def mixed_precision() -> str:
    """Lightning precision for a GPU: bf16 autocast where supported (Ampere+), else fp16."""
    import torch

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


OmegaConf.register_new_resolver("gptlab.mixed_precision", mixed_precision, replace=True)

# the sweep's resolvers: job directory names (hydra.sweep.subdir) and the W&B group
from gptlab.cli import sweep as _sweep  # noqa: E402,F401
