"""Every shipped config file composes, and the objects it describes can be built."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

import gptlab.cli  # noqa: F401  (registers the resolvers the configs use)
from gptlab.resources import group_choices
from gptlab.schema import validate_config


@pytest.fixture
def compose_with(compose_config):
    """``compose_with(*overrides)``: the ``train`` config, with an output directory that is never written."""
    return functools.partial(compose_config, "paths.output_dir=unused")


@pytest.mark.parametrize("name", group_choices("hardware"))
def test_every_hardware_profile_composes_with_a_model_and_task(name: str, compose_with) -> None:
    cfg = compose_with(f"hardware={name}", "model=gpt2")
    OmegaConf.resolve(cfg)  # every interpolation and resolver must succeed
    validate_config(cfg)
    assert cfg.trainer.accelerator in ("cpu", "gpu")
    strategy = cfg.trainer.get("strategy")
    if OmegaConf.is_dict(strategy):  # FSDP: the strategy object itself is built without a GPU
        built = instantiate(strategy)
        assert type(built).__name__ == "FSDPStrategy"


@pytest.mark.parametrize("name", group_choices("experiment"))
def test_every_experiment_composes(name: str, compose_with) -> None:
    cfg = compose_with(f"experiment={name}")
    OmegaConf.resolve(cfg)
    validate_config(cfg)


@pytest.mark.parametrize("name", group_choices("model"))
def test_every_model_size_composes_and_matches_its_name(name: str, compose_with) -> None:
    cfg = compose_with(f"model={name}")
    assert cfg.model.name == name
    validate_config(cfg)


def test_gpu_precision_falls_back_to_fp16_without_bf16(compose_with) -> None:
    from gptlab.cli import mixed_precision

    assert mixed_precision() in ("bf16-mixed", "16-mixed")
    cfg = compose_with("hardware=gpu")
    assert cfg.trainer.precision == mixed_precision()


def test_slurm_profile_drives_the_submitit_launcher(compose_with) -> None:
    cfg = compose_with("hardware=slurm", "hardware.nodes=4", "hardware.partition=gpu", return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert "submitit" in launcher._target_.lower()
    assert (launcher.nodes, launcher.gpus_per_node, launcher.partition) == (4, 8, "gpu")
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (4, 8)
