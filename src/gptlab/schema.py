"""Config schemas: what each node of a composed run config may hold, checked before the run starts.

Hydra composes the tree and already rejects unknown top-level overrides (without ``+``). The
dataclasses below describe the nodes under them (``model``, ``task``, ``regime`` with its
``datamodule`` and ``module``, and the top-level run settings) by type, range and choices.
``validate_config(cfg)`` checks a composed config against them and raises one ``ConfigError`` that
lists every problem by its full key and the allowed values::

    regime.module.lr=-1: must be > 0
    regime.module.lrr: unknown key; valid keys: _target_, betas, eps, lr, ...
    model.norm=mid: must be one of pre, post

It runs at start-up, before any data is read or model built. The schemas are used as data, never
instantiated: a field without a default is a required key, one with a default may be left out,
and its ``metadata`` holds its ``Bound``. Nothing here copies another declaration: a ``_target_``
node's schema is derived from the signature of the class it names (types and the bounds in the
annotations, ``gptlab.bounds``), ``model`` from ``GPTConfig``'s fields, ``task`` is ``TaskSpec``
itself, and the checks that span several nodes are one function, ``check_across_nodes``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gptlab.bounds import NO_BOUND, NON_NEGATIVE, POSITIVE, SEED, Bound
from gptlab.model.gpt import GPTConfig
from gptlab.node_check import TargetNode, check_node, show
from gptlab.tasks.kinds import FIXED_K, REGIME_NATURES, kinds_run_by, regime_node
from gptlab.tasks.spec import TaskSpec, renamed_keys



class ConfigError(ValueError):
    """A composed config that cannot run; the message lists every bad key with what it allows."""


def key(bound: Bound = NO_BOUND, *, optional: bool = False) -> Any:
    """A schema field: required unless ``optional``, with its ``Bound`` (``gptlab.bounds``)."""
    return field(default=None if optional else MISSING, metadata=bound.metadata)


# ----------------------------------------------------------------------------- schemas

# eval_ckpt: the weights a run that trains is evaluated with, the last ones or those of the
# checkpoint callbacks.best_checkpoint kept (lowest val/loss unless it monitors another metric)
EVAL_CKPTS = ("last", "best")

# What a size YAML (conf/model) must state; the other GPTConfig fields have defaults.
MODEL_REQUIRED = ("name", "n_layer", "n_head", "n_embd", "block_size")


def _model_schema() -> type:
    """``conf/model/*.yaml``: ``build_gpt``'s arguments, i.e. ``GPTConfig``'s fields and bounds + ``init_from``."""
    specs = [("_target_", str, field())]
    for f in dataclasses.fields(GPTConfig):
        hint = typing.get_type_hints(GPTConfig)[f.name]
        specs.append((f.name, hint, field(metadata=f.metadata) if f.name in MODEL_REQUIRED else field(default=None, metadata=f.metadata)))
    specs.append(("init_from", str | None, field(default=None)))
    return dataclasses.make_dataclass("ModelSchema", specs, kw_only=True)


ModelSchema = _model_schema()


@dataclass(kw_only=True)
class _RegimeSchema:
    """Keys every regime has (``conf/regime/*.yaml``); the subclasses add their nature's keys."""

    name: str = key()
    nature: str = key(Bound(choices=REGIME_NATURES))
    block_size: int = key(POSITIVE)
    global_batch_size: int = key(POSITIVE)
    batch_size: int = key(POSITIVE)
    datamodule: TargetNode = key()
    module: TargetNode = key()


@dataclass(kw_only=True)
class PretrainRegimeSchema(_RegimeSchema):
    pass


@dataclass(kw_only=True)
class ScorerSchema:
    """A regime's node for the kinds of one scorer or objective (``generate``, ``perplexity``;
    ``gptlab.tasks.kinds.regime_node``): the DataModule and module their runs build instead of
    the regime's own."""

    datamodule: TargetNode = key()
    module: TargetNode = key()


@dataclass(kw_only=True)
class FinetuneRegimeSchema(_RegimeSchema):
    generate: ScorerSchema | None = key(optional=True)


@dataclass(kw_only=True)
class InContextRegimeSchema(_RegimeSchema):
    fit: bool = key()
    k: int = key(NON_NEGATIVE)
    fewshot_seed: int = key()
    prompt: str | None = key(optional=True)
    mutual_info: str | None = key(optional=True)
    limit: int | None = key(POSITIVE, optional=True)
    generate: ScorerSchema | None = key(optional=True)
    perplexity: ScorerSchema | None = key(optional=True)


@dataclass(kw_only=True)
class SampleSchema:
    """``sample``: text printed from the model at the end of a pre-training run."""

    num_samples: int = key(NON_NEGATIVE)
    prompt: str = key()
    max_new_tokens: int = key(POSITIVE)
    temperature: float = key(POSITIVE)
    top_k: int | None = key(POSITIVE, optional=True)


@dataclass(kw_only=True)
class RunSchema:
    """The top-level run settings of ``conf/train.yaml``; the other top-level nodes have their own."""

    OPEN: ClassVar[bool] = True  # Hydra already rejects unknown top-level keys
    seed: int = key(SEED)
    ckpt_path: str | None = key(optional=True)
    tags: list[Any] = key(optional=True)
    optimized_metric: str | None = key(optional=True)
    compile: bool = key(optional=True)
    activation_checkpointing: bool = key(optional=True)
    sample: SampleSchema | None = key(optional=True)
    eval_ckpt: str = key(Bound(choices=EVAL_CKPTS), optional=True)


# regime nature -> the schema of its regime node
REGIME_SCHEMAS: dict[str, type] = {
    "pretrain": PretrainRegimeSchema,
    "finetune": FinetuneRegimeSchema,
    "incontext": InContextRegimeSchema,
}


# ----------------------------------------------------------------------------- checking


def validate_config(cfg: DictConfig) -> None:
    """Check a composed run config against the schemas; one ``ConfigError`` lists every problem.

    A key whose value is an interpolation (``seed: ${seed}``) is checked where the value is written,
    so one bad setting is reported once, under the key the user set.
    """
    errors: list[str] = []
    run = {name: _resolved(cfg, name, errors) for name in _field_names(RunSchema) if name in cfg}
    check_node(run, RunSchema, "", errors, source=cfg)
    if "model" in cfg:
        model = _resolved(cfg, "model", errors)
        check_node(model, ModelSchema, "model", errors, source=cfg.model)
        _check_model_shape(model, errors)
    if "task" in cfg:
        _check_task(_resolved(cfg, "task", errors), cfg.task, errors)
    if "regime" in cfg:
        _check_regime(_resolved(cfg, "regime", errors), cfg.regime, errors)
    if not errors and all(node in cfg for node in ("model", "task", "regime")):
        errors += check_across_nodes(cfg)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(dict.fromkeys(errors)))


def is_incontext(cfg: DictConfig) -> bool:
    """Whether the run's regime evaluates in context (its declared ``nature``)."""
    return cfg.regime.nature == "incontext"


def scorer_node(cfg: DictConfig) -> str | None:
    """The regime node a run is built from when the task's kind does not use the regime's own
    ``datamodule``/``module`` (``gptlab.tasks.kinds.regime_node``): ``generate`` (generation tasks,
    fine-tuned or in context) or ``perplexity`` (lm tasks at k = 0); else None."""
    node = regime_node(cfg.task.kind, cfg.regime.nature)
    if node == "perplexity" and cfg.regime.get("k", 0) != 0:
        return None  # the choice scorer refuses it, saying why (check_incontext_task)
    return node


def check_across_nodes(cfg: DictConfig) -> list[str]:
    """Every check that spans several nodes (task × regime × model), once each node is valid alone:
    the regime runs the task's kind, its DataModule is of the regime's nature, its window fits the
    model, ``eval_ckpt=best`` has a best checkpoint to read, and an in-context regime trains
    nothing, has the number of demonstrations its name says, and can score the task with its
    prompt."""
    regime, task, model = cfg.regime, cfg.task, cfg.model
    errors: list[str] = []
    node = scorer_node(cfg)
    built = regime.get(node) if node else regime  # the node whose DataModule the run builds
    if node and built is None:
        errors.append(f"regime.{node}: missing, but task={task.name} (kind {task.kind!r}) is built from it")
        return errors
    where = f"regime.{node}.datamodule" if node else "regime.datamodule"
    datamodule = get_object(built.datamodule._target_)
    if getattr(datamodule, "NATURE", regime.nature) != regime.nature:
        errors.append(
            f"{where}._target_={built.datamodule._target_}: a DataModule for {datamodule.NATURE} "
            f"regimes, but regime.nature={regime.nature}"
        )
    if is_incontext(cfg):  # first: it says why a kind is not scored in context
        errors += _incontext_problems(cfg)
    kinds = kinds_run_by(regime.nature)
    if task.kind not in kinds and not errors:
        errors.append(
            f"task={task.name} is of kind {task.kind!r}, which regime={regime.name} does not run "
            f"(it runs: {', '.join(kinds)})"
        )
    if cfg.get("eval_ckpt") == "best":
        errors += _best_checkpoint_problems(cfg)
    block = regime.get("block_size")
    if block is not None and block > model.block_size:
        errors.append(
            f"regime.block_size={block} is larger than the context of model={model.name} "
            f"(model.block_size={model.block_size})"
        )
    return errors


def _best_checkpoint_problems(cfg: DictConfig) -> list[str]:
    if not cfg.regime.get("fit", True):
        return [f"eval_ckpt=best: regime={cfg.regime.name} trains nothing (regime.fit=false), so it has no best checkpoint"]
    best = (cfg.get("callbacks") or {}).get("best_checkpoint")
    if best is None or best.get("monitor") is None:
        return ["eval_ckpt=best needs callbacks.best_checkpoint, a ModelCheckpoint with a monitor (conf/callbacks/default.yaml)"]
    return []


def _incontext_problems(cfg: DictConfig) -> list[str]:
    regime = cfg.regime
    if regime.name in FIXED_K and regime.k != FIXED_K[regime.name]:
        return [
            f"regime.k={regime.k}: regime {regime.name} takes k={FIXED_K[regime.name]} "
            f"(for {regime.k} demonstrations use regime=few_shot regime.k={regime.k})"
        ]
    if regime.get("fit", False):
        return [
            f"regime={regime.name} with regime.fit=true: in-context regimes evaluate the backbone as it "
            "is (model.init_from) and never train"
        ]
    if scorer_node(cfg) == "perplexity":
        return []
    from gptlab.data.incontext import check_incontext_task  # the scorer's own rules

    try:
        check_incontext_task(TaskSpec.from_config(cfg.task), regime.get("prompt"), regime.get("mutual_info"))
    except ValueError as err:
        return [str(err)]
    return []


def _resolved(cfg: DictConfig, name: str, errors: list[str]) -> Any:
    try:
        node = cfg[name]
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except OmegaConfBaseException as err:
        errors.append(f"{name}: {err}")
        return None


def _field_names(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _check_task(task: Any, source: Any, errors: list[str]) -> None:
    """The task node against ``TaskSpec``'s fields; an old key names its replacement."""
    if isinstance(task, Mapping):
        renamed = renamed_keys(task)
        for old, new in renamed:
            errors.append(f"task.{old}: replaced by task.{new} (e.g. task.{new}=<value>)")
        task = {k: v for k, v in task.items() if k not in {old for old, _ in renamed}}
    if not check_node(task, TaskSpec, "task", errors, source):
        return
    if not any(e.startswith(("task.kind", "task.format")) for e in errors):
        from gptlab.data.sources import formats_reading  # the readers' own table of formats and kinds

        if task["format"] not in (valid := formats_reading(task["kind"])):
            errors.append(f"task.format={task['format']}: must be one of {', '.join(valid)} (for kind {task['kind']})")
        else:
            try:  # TaskSpec's own checks (carve, generation, prompts, mixture sources, ...), so they
                TaskSpec.from_config(task)  # fail with the config errors, before anything is built
            except ValueError as err:
                errors.append(str(err))


def _check_model_shape(model: Any, errors: list[str]) -> None:
    """What the fields cannot say alone (n_embd divisible by n_head): GPTConfig's own checks."""
    if any(e.startswith("model") for e in errors) or not isinstance(model, Mapping):
        return  # each field is already reported; GPTConfig would repeat them
    from gptlab.model.gpt import GPTConfig

    try:
        GPTConfig.from_dict(dict(model))
    except (TypeError, ValueError) as err:
        errors.append(f"model: {err}")


def _check_regime(regime: Any, source: Any, errors: list[str]) -> None:
    nature = regime.get("nature") if isinstance(regime, Mapping) else None
    if nature not in REGIME_SCHEMAS:
        errors.append(f"regime.nature={show(nature)}: must be one of {', '.join(REGIME_SCHEMAS)}")
        return
    check_node(regime, REGIME_SCHEMAS[nature], "regime", errors, source)
