"""Config schemas: bad keys, types and values fail at start-up, naming the key and what it allows."""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class, get_method
from omegaconf import DictConfig, OmegaConf

import gptlab.cli  # noqa: F401  (registers the resolvers the configs use)
from gptlab.bounds import check_arguments
from gptlab.cli.train import train
from gptlab.model.gpt import GPTConfig
from gptlab.resources import group_choices
from gptlab.node_check import target_schema
from gptlab.schema import ConfigError, InContextRegimeSchema, ModelSchema, validate_config
from gptlab.tasks.kinds import KINDS
from gptlab.tasks.spec import TaskSpec

# a task each regime runs
GROUPS = ("model", "task", "regime", "debug", "hardware", "experiment", "hparams_search")
REGIME_TASK = {"pretrain": "demo_corpus", "finetune": "sst2", "zero_shot": "sst2", "one_shot": "sst2", "few_shot": "sst2"}


@functools.lru_cache(maxsize=None)
def _composed(groups: tuple[str, ...]) -> DictConfig:
    # conftest's composer by import, not as a fixture: this cache lives for the whole session
    return compose_config("paths.output_dir=unused", *groups)


def compose_with(*overrides: str) -> DictConfig:
    """The composed config; group choices (``regime=finetune``) are composed once per test session,
    value overrides are applied to a copy with Hydra's own override parser."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    groups = tuple(o.input_line for o in parsed if "." not in o.key_or_group and o.key_or_group in GROUPS)
    cfg = copy.deepcopy(_composed(groups))
    for o in parsed:
        if o.input_line not in groups:
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=False, force_add=o.is_add())
    return cfg


def errors_of(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(compose_with(*overrides))
    return str(err.value)


@pytest.mark.parametrize("regime", group_choices("regime"))
@pytest.mark.parametrize("debug", [None, "fast"])
def test_every_regime_validates_alone_and_under_debug(regime: str, debug: str | None) -> None:
    overrides = [f"regime={regime}", f"task={REGIME_TASK[regime]}", *([f"debug={debug}"] if debug else [])]
    validate_config(compose_with(*overrides))


@pytest.mark.parametrize("task", group_choices("task"))
def test_every_task_validates_under_every_regime_nature_that_runs_its_kind(task: str) -> None:
    node = compose_with(f"task={task}").task  # composed: a task may start from another (defaults)
    regimes = {"pretrain": "pretrain", "finetune": "finetune", "incontext": "zero_shot"}
    for nature in KINDS[node.kind].regimes:
        if nature == "incontext" and node.get("regression"):
            continue  # no answers to choose among: refused in context (tests/test_incontext.py)
        validate_config(compose_with(f"task={task}", f"regime={regimes[nature]}"))


@pytest.mark.parametrize("search", group_choices("hparams_search"))
def test_every_hparams_search_validates(search: str) -> None:
    validate_config(compose_with(f"hparams_search={search}"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # pretrain module ranges
        (["regime.module.lr=-1"], "regime.module.lr=-1: must be > 0"),
        (["regime.module.lr=0"], "regime.module.lr=0: must be > 0"),
        (["regime.module.weight_decay=-0.1"], "regime.module.weight_decay=-0.1: must be >= 0"),
        (["regime.module.warmup_steps=-5"], "regime.module.warmup_steps=-5: must be >= 0"),
        (["regime.module.min_lr_ratio=0"], "regime.module.min_lr_ratio=0: must be in (0, 1]"),
        (["regime.module.min_lr_ratio=1.5"], "regime.module.min_lr_ratio=1.5: must be in (0, 1]"),
        (["regime.module.betas=[0.9,1.0]"], "regime.module.betas[1]=1.0: must be in [0, 1)"),
        (["regime.module.betas=[0.9]"], "regime.module.betas=[0.9]: expected 2 values"),
        (["regime.module.lr=abc"], "regime.module.lr=abc: expected a finite number"),
        (["regime.module.lr=nan"], "regime.module.lr=nan: expected a finite number"),
        # finetune module ranges
        (["regime=finetune", "task=sst2", "regime.module.lm_lambda=-0.5"], "regime.module.lm_lambda=-0.5: must be >= 0"),
        (["regime=finetune", "task=sst2", "regime.module.warmup_ratio=1"], "regime.module.warmup_ratio=1: must be in [0, 1)"),
        (["regime=finetune", "task=sst2", "regime.module.classifier_dropout=1.0"],
         "regime.module.classifier_dropout=1.0: must be in [0, 1)"),
        (["regime=finetune", "task=sst2", "regime.datamodule.eval_batch_size=0"],
         "regime.datamodule.eval_batch_size=0: must be > 0"),
        # batch sizes, seeds
        (["regime.batch_size=0"], "regime.batch_size=0: must be > 0"),
        (["regime.global_batch_size=-8"], "regime.global_batch_size=-8: must be > 0"),
        (["regime.batch_size=2.5"], "regime.batch_size=2.5: expected an integer"),
        (["seed=-1"], "seed=-1: must be in [0, 4294967295]"),
        (["seed=4294967296"], "seed=4294967296: must be in [0, 4294967295]"),
        (["seed=one"], "seed=one: expected an integer"),
        # in-context regimes
        (["regime=few_shot", "task=sst2", "regime.k=-1"], "regime.k=-1: must be >= 0"),
        (["regime=few_shot", "task=sst2", "regime.k=two"], "regime.k=two: expected an integer"),
        (["regime=few_shot", "task=sst2", "regime.fit=maybe"], "regime.fit=maybe: expected true or false"),
        (["regime=few_shot", "task=sst2", "regime.prompt=5"], "regime.prompt=5: expected a string or null"),
        (["regime=zero_shot", "task=sst2", "regime.k=3"], "regime.k=3: regime zero_shot takes k=0"),
        (["regime=one_shot", "task=sst2", "regime.k=0"], "regime.k=0: regime one_shot takes k=1"),
        # model
        (["model.dropout=1.0"], "model.dropout=1.0: must be in [0, 1)"),
        (["model.dropout=-0.1"], "model.dropout=-0.1: must be in [0, 1)"),
        (["model.n_layer=0"], "model.n_layer=0: must be > 0"),
        (["model.norm=mid"], "model.norm=mid: must be one of pre, post"),
        (["model.attention=sparse"], "model.attention=sparse: must be one of dense, alternating"),
        (["model.bias=yes"], "model.bias=yes: expected true or false"),
        (["model.n_head=5"], "model: GPTConfig: n_embd=48 is not divisible by n_head=5"),
        # task
        (["task.kind=poetry"], "task.kind=poetry: must be one of lm, classification"),
        (["task.format=csv"], "task.format=csv: must be one of jsonl, json, parquet, text, lines, hub, embedded, mixture (for kind lm)"),
        (["task=tinyshakespeare", "task.val_fraction=1.0"], "task.val_fraction=1.0: must be in (0, 1)"),
        (["regime=finetune", "task=sst2", "task.train_limit=0"], "task.train_limit=0: must be >= 1"),
        (["regime=finetune", "task=sst2", "task.format=tsv"], "task.format=tsv: must be one of glue_tsv, jsonl, json, parquet, hub, demo (for kind classification)"),
        (["task=mixture", "task.mixture.wikitext.weight=-1"], "mixture.wikitext.weight=-1 must be a positive number"),
        (["task=tinyshakespeare", "+task.mixture={}"], "mixture is read only by format 'mixture', not 'text'"),
        (["regime=finetune", "task=sst2", "+task.generation={max_new_tokens: 5}"],
         "generation settings are for kind 'generation', not 'classification'"),
        # sample
        (["sample.temperature=0"], "sample.temperature=0: must be > 0"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(overrides: list[str], message: str) -> None:
    assert message in errors_of(*overrides)


@pytest.mark.parametrize(
    ("node", "overrides"),
    [
        ("regime.module", ["+regime.module.lrr=0.1"]),
        ("regime.datamodule", ["+regime.datamodule.batchsize=4"]),
        ("regime.module", ["regime=finetune", "task=sst2", "+regime.module.lm_lamda=0.1"]),
        ("regime.datamodule", ["regime=few_shot", "task=sst2", "+regime.datamodule.shots=3"]),
        ("regime.module", ["regime=zero_shot", "task=sst2", "+regime.module.k=3"]),
        ("regime", ["regime=few_shot", "task=sst2", "+regime.num_shots=3"]),
        ("model", ["+model.n_layers=4"]),
        ("task", ["+task.lables=[a,b]"]),
    ],
)
def test_unknown_keys_are_named_with_the_valid_ones(node: str, overrides: list[str]) -> None:
    unknown = overrides[-1][1:].split("=")[0]
    text = errors_of(*overrides)
    line = next(line for line in text.splitlines() if unknown in line)
    assert f"{unknown}: unknown key; valid keys:" in line
    # the valid keys listed are the schema's, which a test below ties to the class's parameters
    assert line.split("valid keys: ")[1].split(", ")


def test_every_problem_is_reported_at_once() -> None:
    text = errors_of("regime.module.lr=-1", "model.norm=mid", "seed=-1", "+regime.datamodule.x=1")
    assert [line.strip().split(":")[0] for line in text.splitlines()[1:]] == [
        "seed=-1", "model.norm=mid", "regime.datamodule.x", "regime.module.lr=-1",
    ]


def test_unknown_regime_nature_lists_the_known_ones() -> None:
    assert "regime.nature=mine: must be one of pretrain, finetune, incontext" in errors_of("regime.nature=mine")


def test_a_bad_config_fails_before_any_data_is_read(tmp_path: Path) -> None:
    cfg = compose_with(
        "task=tinyshakespeare", f"paths.data_dir={tmp_path / 'missing'}", "regime.module.lr=-1",
        f"paths.cache_dir={tmp_path / 'cache'}",
    )
    with pytest.raises(ConfigError, match=re.escape("regime.module.lr=-1: must be > 0")):
        train(cfg)  # not FileNotFoundError: the data would have been read later
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- schemas vs. code


def _regime_targets() -> dict[str, tuple[str, str]]:
    """(module target, datamodule target) for each regime file (and its perplexity fallback)."""
    out = {}
    for name in group_choices("regime"):
        regime = compose_with(f"regime={name}", f"task={REGIME_TASK[name]}").regime
        out[name] = (regime.module._target_, regime.datamodule._target_)
        if "perplexity" in regime:
            out[f"{name}.perplexity"] = (regime.perplexity.module._target_, regime.perplexity.datamodule._target_)
    return out


def _fields(schema: type) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)}


def _parameters(target: str) -> set[str]:
    return set(inspect.signature(get_class(target)).parameters)


@pytest.mark.parametrize("regime", sorted(_regime_targets()))
def test_module_and_datamodule_schemas_are_the_constructor_parameters(regime: str) -> None:
    for target in _regime_targets()[regime]:
        assert _fields(target_schema(target)) - {"_target_"} == _parameters(target), (regime, target)


@pytest.mark.parametrize(
    ("override", "config_error", "target", "argument", "python_error"),
    [
        (
            "regime.module.warmup_ratio=1.5", "regime.module.warmup_ratio=1.5: must be in [0, 1)",
            "gptlab.lit.finetune.FinetuneModule", {"warmup_ratio": 1.5}, "warmup_ratio=1.5: must be in [0, 1)",
        ),
        (
            "regime.module.betas=[0.9,1.0]", "regime.module.betas[1]=1.0: must be in [0, 1)",
            "gptlab.lit.finetune.FinetuneModule", {"betas": (0.9, 1.0)}, "betas=(0.9, 1.0): must be in [0, 1)",
        ),
        (
            "+regime.datamodule.bucket_size=0", "regime.datamodule.bucket_size=0: must be > 0",
            "gptlab.data.labeled.LabeledDataModule", {"bucket_size": 0}, "bucket_size=0: must be > 0",
        ),
    ],
)
def test_a_bound_stated_in_a_signature_is_enforced_by_the_schema_and_the_constructor(
    override: str, config_error: str, target: str, argument: dict[str, Any], python_error: str
) -> None:
    """Each bound is written once, in the constructor's annotation; both checks read it there."""
    assert config_error in errors_of("regime=finetune", "task=sst2", override)
    with pytest.raises(ValueError, match=re.escape(python_error)):
        check_arguments(get_class(target).__init__, argument)


def test_model_schema_lists_the_build_arguments() -> None:
    build = inspect.signature(get_method(compose_with().model._target_)).parameters
    expected = {f.name for f in dataclasses.fields(GPTConfig)} | {n for n in build if n != "config"}
    assert _fields(ModelSchema) - {"_target_"} == expected


def test_the_task_node_is_checked_against_task_spec_itself() -> None:
    errors = errors_of("task=sst2", "+task.colour=red", "task.train_limit=0", "task.kind=poem")
    assert f"task.colour: unknown key; valid keys: {', '.join(sorted(_fields(TaskSpec)))}" in errors
    assert "task.train_limit=0: must be >= 1" in errors
    assert "task.kind=poem: must be one of lm, classification" in errors


def test_an_old_task_key_names_its_replacement() -> None:
    errors = errors_of("task=tinyshakespeare", "+task.text_field=body")
    assert "task.text_field: replaced by task.fields.text (e.g. task.fields.text=<value>)" in errors


def test_a_format_that_does_not_read_the_kind_is_refused() -> None:
    assert "task.format=conll: must be one of glue_tsv, jsonl" in errors_of("task=sst2", "task.format=conll")


def test_in_context_schema_has_the_regime_keys_the_yaml_sets() -> None:
    regime = compose_with("regime=few_shot", "task=sst2").regime
    assert set(regime) == _fields(InContextRegimeSchema)
