"""Bounds on settings, stated once where the setting is declared.

A constructor parameter carries its bound in its annotation, ``lr: Annotated[float, Bound(gt=0)]``;
a dataclass field in its metadata, ``field(default=12, metadata=Bound(gt=0).metadata)``. The
constructor checks its arguments with ``check_arguments`` (a direct Python call fails with the
same message as a bad config), and ``gptlab.schema`` derives a config node's schema from the same
signature or fields (``signature_schema``), so no bound is written twice.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


@dataclass(frozen=True)
class Bound:
    """Allowed values: a range (``gt``/``ge`` and ``lt``/``le``), a set of ``choices``, a list
    ``length``, and ``items``, the bound of each item of a list."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None
    length: int | None = None
    items: Bound | None = None

    @property
    def metadata(self) -> dict[str, Bound]:
        """For a dataclass field: ``field(..., metadata=Bound(...).metadata)``."""
        return {"bound": self}

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (already of the right type; a list's items are checked by
        ``items``), or None."""
        if isinstance(value, (list, tuple)):
            return f"expected {self.length} values" if self.length not in (None, len(value)) else None
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        low = next(((op, getattr(self, op)) for op in ("gt", "ge") if getattr(self, op) is not None), None)
        high = next(((op, getattr(self, op)) for op in ("lt", "le") if getattr(self, op) is not None), None)
        ok = (low is None or (value > low[1] if low[0] == "gt" else value >= low[1])) and (
            high is None or (value < high[1] if high[0] == "lt" else value <= high[1])
        )
        if ok:
            return None
        if low and high:
            opening, closing = "(" if low[0] == "gt" else "[", ")" if high[0] == "lt" else "]"
            return f"must be in {opening}{low[1]}, {high[1]}{closing}"
        op, limit = low or high  # type: ignore[misc]
        return f"must be {_SYMBOLS[op]} {limit}"


NO_BOUND = Bound()
POSITIVE = Bound(gt=0)
NON_NEGATIVE = Bound(ge=0)
FRACTION = Bound(ge=0, lt=1)
BETAS = Bound(length=2, items=FRACTION)
# what Lightning's seed_everything accepts (it picks a random seed otherwise)
SEED = Bound(ge=0, le=2**32 - 1)


def split_annotation(hint: Any) -> tuple[Any, Bound]:
    """(the type, its ``Bound``) of a possibly ``Annotated`` hint."""
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        return base, next((e for e in extras if isinstance(e, Bound)), NO_BOUND)
    return hint, NO_BOUND


@functools.cache  # a constructor checks its arguments on every call; its annotations never change
def parameter_bounds(function: Callable[..., Any]) -> dict[str, tuple[Any, Bound, Any]]:
    """Parameter name -> (type, bound, default or ``dataclasses.MISSING``) of ``function``."""
    hints = typing.get_type_hints(function, include_extras=True)
    out = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        hint, bound = split_annotation(hints.get(name, Any))
        default = dataclasses.MISSING if parameter.default is parameter.empty else parameter.default
        out[name] = (hint, bound, default)
    return out


def _raise_problems(owner: str, checked: list[tuple[str, Any, Bound]]) -> None:
    problems = []
    for name, value, bound in checked:
        if bound is NO_BOUND or value is None:
            continue
        items = value if bound.items is not None and isinstance(value, (list, tuple)) else []
        for problem in [bound.problem(value), *(bound.items.problem(item) for item in items)]:
            if problem:
                problems.append(f"{name}={value!r}: {problem}")
    if problems:
        raise ValueError(f"{owner}: " + "; ".join(problems))


def check_arguments(function: Callable[..., Any], arguments: Mapping[str, Any]) -> None:
    """Raise one ``ValueError`` naming every argument of ``function`` outside its bound
    (a constructor calls it with ``locals()``)."""
    bounds = parameter_bounds(function)
    owner = function.__qualname__.removesuffix(".__init__")
    _raise_problems(owner, [(name, arguments.get(name), bound) for name, (_, bound, _) in bounds.items()])


def check_fields(instance: Any) -> None:
    """Raise one ``ValueError`` naming every field of dataclass ``instance`` outside its bound."""
    checked = [(f.name, getattr(instance, f.name), f.metadata.get("bound", NO_BOUND)) for f in dataclasses.fields(instance)]
    _raise_problems(type(instance).__name__, checked)


def signature_schema(name: str, function: Callable[..., Any], extra: Mapping[str, Any] | None = None) -> type:
    """A schema dataclass (see ``gptlab.schema``) whose fields are ``function``'s parameters, their
    types and bounds, plus ``extra`` (name -> type) required fields such as ``_target_``."""
    specs: list[tuple[str, Any, Any]] = [(key, hint, dataclasses.field()) for key, hint in (extra or {}).items()]
    for key, (hint, bound, default) in parameter_bounds(function).items():
        # a schema is data, never instantiated: a default only says the key may be left out
        optional = dataclasses.field(default=None, metadata=bound.metadata)
        required = dataclasses.field(metadata=bound.metadata)
        specs.append((key, hint, required if default is dataclasses.MISSING else optional))
    return dataclasses.make_dataclass(name, specs, kw_only=True)
