"""Checking one config node against a schema dataclass: types, bounds, unknown and missing keys.

``check_node`` walks a resolved node and its schema (``gptlab.schema``) and appends one message per
problem, named by the full key (``regime.module.lr=-1: must be > 0``). A ``TargetNode`` field is
checked against the schema derived from its ``_target_``'s signature (``target_schema``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from gptlab.bounds import NO_BOUND, signature_schema


class TargetNode:
    """A node built by ``hydra.utils.instantiate``: checked against the signature of its ``_target_``
    (its parameters, their types and the bounds in their annotations; ``gptlab.bounds``)."""


def check_node(values: Any, schema: type, path: str, errors: list[str], source: Any = None) -> bool:
    """Check mapping ``values`` against dataclass ``schema``; append problems to ``errors``.

    ``source`` is the unresolved config node of ``values``, if any: its interpolated keys are left
    to the key they point to. Returns whether ``values`` had the right shape to look inside.
    """
    if not isinstance(values, Mapping):
        errors.append(f"{path}={show(values)}: expected a mapping of keys")
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
    value: Any, hint: Any, metadata: Mapping[str, Any], where: str, errors: list[str], source: Any = None
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
            errors.append(f"{where}={show(value)}: expected {names}")
            return
    if not _has_type(value, hint):
        errors.append(f"{where}={show(value)}: expected {_type_name(hint)}")
        return
    if hint is TargetNode:
        _check_target(value, where, errors, source)
        return
    if dataclasses.is_dataclass(hint):
        check_node(value, hint, where, errors, source)
        return
    bound = metadata.get("bound", NO_BOUND)
    if typing.get_origin(hint) in (list, tuple):
        args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
            bound = dataclasses.replace(bound, length=len(args))  # tuple[float, float]: two values
        if problem := bound.problem(value):
            errors.append(f"{where}={show(value)}: {problem}")
        item_metadata = bound.items.metadata if bound.items is not None else {}
        for i, item in enumerate(value):
            _check_value(item, args[0] if args else Any, item_metadata, f"{where}[{i}]", errors)
        return
    if problem := bound.problem(value):
        errors.append(f"{where}={show(value)}: {problem}")


@functools.cache
def target_schema(target: str) -> type:
    """The schema of a node built from ``_target_``: the class's constructor (or the function's)
    parameters, with the types and bounds of their annotations."""
    built = get_object(target)
    function = built.__init__ if isinstance(built, type) else built
    return signature_schema(f"{target.rsplit('.', 1)[-1]}Schema", function, {"_target_": str})


def _check_target(value: Mapping[str, Any], where: str, errors: list[str], source: Any) -> None:
    target = value.get("_target_")
    if not isinstance(target, str):
        errors.append(f"{where}._target_: missing; name the class or function that builds this node")
        return
    try:
        schema = target_schema(target)
    except ImportError as err:
        errors.append(f"{where}._target_={target}: cannot be imported ({err})")
        return
    check_node(value, schema, where, errors, source)


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _has_type(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if isinstance(hint, type) and hint not in (*_TYPE_NAMES, list, tuple) and isinstance(value, Mapping):
        return True  # an object built from its own node (model: GPT), checked where that node is
    if dataclasses.is_dataclass(hint) or hint is TargetNode:
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
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, Mapping)
    if origin is type(None):
        return value is None
    return isinstance(value, origin)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _type_name(hint: Any) -> str:
    if dataclasses.is_dataclass(hint) or hint is TargetNode or typing.get_origin(hint) in (dict, Mapping):
        return "a mapping"
    if typing.get_origin(hint) in (list, tuple):
        return "a list"
    if hint is type(None):
        return "null"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def show(value: Any) -> str:
    """A value as it would be written in an override (``null``, ``true``, ``-1``, ``mid``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
