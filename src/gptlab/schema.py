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
and ``metadata`` holds its checks. The fields of a ``_target_`` node's schema are the parameters
of the class it names (``tests/test_schema.py`` keeps them in step).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gptlab.model.gpt import ATTENTIONS, NORMS
from gptlab.tasks.kinds import REGIME_NATURES
from gptlab.tasks.spec import TaskSpec, renamed_keys

SEED_RANGE = (0, 2**32 - 1)  # what Lightning's seed_everything accepts (it picks a random seed otherwise)


class ConfigError(ValueError):
    """A composed config that cannot run; the message lists every bad key with what it allows."""


def key(
    *,
    optional: bool = False,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
    length: int | None = None,
    items: Mapping[str, Any] | None = None,
) -> Any:
    """A schema field: required unless ``optional``; bounds, choices, list length, per-item checks."""
    checks = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "length": length, "items": items}
    return field(default=None if optional else MISSING, metadata={k: v for k, v in checks.items() if v is not None})


# ----------------------------------------------------------------------------- schemas


@dataclass(kw_only=True)
class ModelSchema:
    """``conf/model/*.yaml``: ``gptlab.model.build.build_gpt`` arguments (``GPTConfig`` fields + init_from)."""

    _target_: str = key()
    name: str = key()
    n_layer: int = key(gt=0)
    n_head: int = key(gt=0)
    n_embd: int = key(gt=0)
    block_size: int = key(gt=0)
    vocab_size: int = key(optional=True, gt=0)
    dropout: float = key(optional=True, ge=0, lt=1)
    bias: bool = key(optional=True)
    norm: str = key(optional=True, choices=NORMS)
    attention: str = key(optional=True, choices=ATTENTIONS)
    local_window: int = key(optional=True, gt=0)
    layer_norm_eps: float = key(optional=True, gt=0)
    init_from: str | None = key(optional=True)


BETAS = {"ge": 0, "lt": 1}


@dataclass(kw_only=True)
class LMModuleSchema:
    """``gptlab.lit.lm.LMModule``."""

    _target_: str = key()
    model: Any = key()
    lr: float = key(optional=True, gt=0)
    weight_decay: float = key(optional=True, ge=0)
    betas: list[float] = key(optional=True, length=2, items=BETAS)
    eps: float = key(optional=True, gt=0)
    warmup_steps: int = key(optional=True, ge=0)
    min_lr_ratio: float = key(optional=True, gt=0, le=1)


@dataclass(kw_only=True)
class FinetuneModuleSchema:
    """``gptlab.lit.finetune.FinetuneModule``."""

    _target_: str = key()
    model: Any = key()
    task: Any = key()
    lm_lambda: float = key(optional=True, ge=0)
    lr: float = key(optional=True, gt=0)
    weight_decay: float = key(optional=True, ge=0)
    warmup_ratio: float = key(optional=True, ge=0, lt=1)
    classifier_dropout: float = key(optional=True, ge=0, lt=1)
    betas: list[float] = key(optional=True, length=2, items=BETAS)
    eps: float = key(optional=True, gt=0)


@dataclass(kw_only=True)
class InContextModuleSchema:
    """``gptlab.lit.incontext.InContextModule``."""

    _target_: str = key()
    model: Any = key()


@dataclass(kw_only=True)
class TextDataModuleSchema:
    """``gptlab.data.text.TextDataModule``."""

    _target_: str = key()
    task: Any = key()
    block_size: int = key(gt=0)
    batch_size: int = key(gt=0)
    cache_dir: str = key()
    seed: int = key(optional=True, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    num_proc: int = key(optional=True, ge=1)
    num_workers: int = key(optional=True, ge=0)
    val_windows: int | None = key(optional=True, gt=0)
    start_sample: int = key(optional=True, ge=0)


@dataclass(kw_only=True)
class LabeledDataModuleSchema:
    """``gptlab.data.labeled.LabeledDataModule``."""

    _target_: str = key()
    task: Any = key()
    block_size: int = key(gt=0)
    batch_size: int = key(gt=0)
    seed: int = key(optional=True, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    eval_batch_size: int | None = key(optional=True, gt=0)
    num_workers: int = key(optional=True, ge=0)
    bucket_size: int = key(optional=True, gt=0)


@dataclass(kw_only=True)
class InContextDataModuleSchema:
    """``gptlab.data.incontext.InContextDataModule``."""

    _target_: str = key()
    task: Any = key()
    block_size: int = key(gt=0)
    batch_size: int = key(gt=0)
    k: int = key(optional=True, ge=0)
    fewshot_seed: int = key(optional=True)
    prompt: str | None = key(optional=True)
    num_workers: int = key(optional=True, ge=0)


@dataclass(kw_only=True)
class _RegimeSchema:
    """Keys every regime has (``conf/regime/*.yaml``); the subclasses add their data and module."""

    name: str = key()
    nature: str = key(choices=REGIME_NATURES)
    block_size: int = key(gt=0)
    global_batch_size: int = key(gt=0)
    batch_size: int = key(gt=0)


@dataclass(kw_only=True)
class PretrainRegimeSchema(_RegimeSchema):
    datamodule: TextDataModuleSchema = key()
    module: LMModuleSchema = key()


@dataclass(kw_only=True)
class FinetuneRegimeSchema(_RegimeSchema):
    datamodule: LabeledDataModuleSchema = key()
    module: FinetuneModuleSchema = key()


@dataclass(kw_only=True)
class PerplexitySchema:
    """An in-context regime's fallback for lm tasks: the pre-training validation."""

    datamodule: TextDataModuleSchema = key()
    module: LMModuleSchema = key()


@dataclass(kw_only=True)
class InContextRegimeSchema(_RegimeSchema):
    fit: bool = key()
    k: int = key(ge=0)
    fewshot_seed: int = key()
    prompt: str | None = key(optional=True)
    datamodule: InContextDataModuleSchema = key()
    module: InContextModuleSchema = key()
    perplexity: PerplexitySchema | None = key(optional=True)


@dataclass(kw_only=True)
class SampleSchema:
    """``sample``: text printed from the model at the end of a pre-training run."""

    num_samples: int = key(ge=0)
    prompt: str = key()
    max_new_tokens: int = key(gt=0)
    temperature: float = key(gt=0)
    top_k: int | None = key(optional=True, gt=0)


@dataclass(kw_only=True)
class RunSchema:
    """The top-level run settings of ``conf/train.yaml``; the other top-level nodes have their own."""

    OPEN: ClassVar[bool] = True  # Hydra already rejects unknown top-level keys
    seed: int = key(ge=SEED_RANGE[0], le=SEED_RANGE[1])
    ckpt_path: str | None = key(optional=True)
    tags: list[Any] = key(optional=True)
    optimized_metric: str | None = key(optional=True)
    compile: bool = key(optional=True)
    activation_checkpointing: bool = key(optional=True)
    sample: SampleSchema | None = key(optional=True)


# regime nature -> the schema of its regime node
REGIME_SCHEMAS: dict[str, type] = {
    "pretrain": PretrainRegimeSchema,
    "finetune": FinetuneRegimeSchema,
    "incontext": InContextRegimeSchema,
}
# The in-context regimes whose name fixes the number of demonstrations.
FIXED_K = {"zero_shot": 0, "one_shot": 1}


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
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(dict.fromkeys(errors)))


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
        for old, new in renamed_keys(task):
            errors.append(f"task.{old}: replaced by task.{new} (e.g. task.{new}=<value>)")
        task = {k: v for k, v in task.items() if k not in {old for old, _ in renamed_keys(task)}}
    if not check_node(task, TaskSpec, "task", errors, source):
        return
    if not any(e.startswith(("task.kind", "task.format")) for e in errors):
        from gptlab.data.sources import formats_reading  # the readers' own table of formats and kinds

        if task["format"] not in (valid := formats_reading(task["kind"])):
            errors.append(f"task.format={task['format']}: must be one of {', '.join(valid)} (for kind {task['kind']})")


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
    name = regime.get("name") if isinstance(regime, Mapping) else None
    nature = regime.get("nature") if isinstance(regime, Mapping) else None
    if nature not in REGIME_SCHEMAS:
        errors.append(f"regime.nature={_show(nature)}: must be one of {', '.join(REGIME_SCHEMAS)}")
        return
    if check_node(regime, REGIME_SCHEMAS[nature], "regime", errors, source) and name in FIXED_K:
        if not any(e.startswith("regime.k") for e in errors) and regime["k"] != FIXED_K[name]:
            errors.append(
                f"regime.k={regime['k']}: regime {name} takes k={FIXED_K[name]} "
                f"(for {regime['k']} demonstrations use regime=few_shot regime.k={regime['k']})"
            )


def check_node(values: Any, schema: type, path: str, errors: list[str], source: Any = None) -> bool:
    """Check mapping ``values`` against dataclass ``schema``; append problems to ``errors``.

    ``source`` is the unresolved config node of ``values``, if any: its interpolated keys are left
    to the key they point to. Returns whether ``values`` had the right shape to look inside.
    """
    if not isinstance(values, Mapping):
        errors.append(f"{path}={_show(values)}: expected a mapping of keys")
        return False
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    if not getattr(schema, "OPEN", False):
        for name in sorted(set(values) - set(fields), key=str):
            errors.append(f"{_join(path, name)}: unknown key; valid keys: {', '.join(sorted(fields))}")
    for name, f in fields.items():
        where = _join(path, name)
        if name not in values:
            if f.default is MISSING and f.default_factory is MISSING:
                errors.append(f"{where}: missing; it is required")
            continue
        child = None
        if isinstance(source, DictConfig):
            if OmegaConf.is_interpolation(source, name):
                continue
            child = OmegaConf.select(source, name, throw_on_missing=False)
        _check_value(values[name], hints[name], f.metadata, where, errors, child)
    return True


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_value(
    value: Any, hint: Any, checks: Mapping[str, Any], where: str, errors: list[str], source: Any = None
) -> None:
    if value == "???":
        errors.append(f"{where}: missing value (???); set it on the command line or in the config")
        return
    alternatives = _union_args(hint)
    if alternatives is not None:
        if value is None and type(None) in alternatives:
            return
        hint = next((a for a in alternatives if a is not type(None) and _has_type(value, a)), None)
        if hint is None:
            names = " or ".join(_type_name(a) for a in alternatives)
            errors.append(f"{where}={_show(value)}: expected {names}")
            return
    if not _has_type(value, hint):
        errors.append(f"{where}={_show(value)}: expected {_type_name(hint)}")
        return
    if dataclasses.is_dataclass(hint):
        check_node(value, hint, where, errors, source)
        return
    if typing.get_origin(hint) is list:
        if "length" in checks and len(value) != checks["length"]:
            errors.append(f"{where}={_show(value)}: expected {checks['length']} values")
        (item_hint,) = typing.get_args(hint) or (Any,)
        for i, item in enumerate(value):
            _check_value(item, item_hint, checks.get("items", {}), f"{where}[{i}]", errors)
        return
    problem = _range_problem(value, checks)
    if problem:
        errors.append(f"{where}={_show(value)}: {problem}")


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _has_type(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if dataclasses.is_dataclass(hint):
        return isinstance(value, Mapping)
    origin = typing.get_origin(hint) or hint
    if _union_args(hint) is not None:
        return any(_has_type(value, a) for a in typing.get_args(hint))
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:  # an int is a float (lr: 1), a bool is not; NaN and inf are no setting
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, Mapping)
    if origin is type(None):
        return value is None
    return isinstance(value, origin)


def _range_problem(value: Any, checks: Mapping[str, Any]) -> str | None:
    if "choices" in checks and value not in checks["choices"]:
        return f"must be one of {', '.join(map(str, checks['choices']))}"
    low = ("gt", checks["gt"]) if "gt" in checks else ("ge", checks["ge"]) if "ge" in checks else None
    high = ("lt", checks["lt"]) if "lt" in checks else ("le", checks["le"]) if "le" in checks else None
    ok = (
        low is None or (value > low[1] if low[0] == "gt" else value >= low[1])
    ) and (high is None or (value < high[1] if high[0] == "lt" else value <= high[1]))
    if ok:
        return None
    if low and high:
        return f"must be in {'(' if low[0] == 'gt' else '['}{low[1]}, {high[1]}{')' if high[0] == 'lt' else ']'}"
    bound = low or high
    assert bound is not None
    return f"must be {dict(gt='>', ge='>=', lt='<', le='<=')[bound[0]]} {bound[1]}"


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _type_name(hint: Any) -> str:
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) is dict:
        return "a mapping"
    if typing.get_origin(hint) is list:
        return "a list"
    if hint is type(None):
        return "null"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _show(value: Any) -> str:
    """A value as it would be written in an override (``null``, ``true``, ``-1``, ``mid``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
