"""Class labels and NER tags as written -> ids into ``task.labels``; the seeded training subset."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from gptlab.data.sources.base import INTEGER, DataFormatError, Loc, Raw
from gptlab.tasks.spec import TaskSpec


def needs_label_set(spec: TaskSpec) -> bool:
    """Whether the task's examples carry label names that map onto ``spec.labels``."""
    return spec.task_kind.has_class_labels and not spec.regression


def label_set(raw: Raw, field: str) -> list[str]:
    """The sorted label names of a split (numerically when all are integers)."""
    names = {str(v) for e in raw.examples for v in (e[field] if isinstance(e[field], list) else [e[field]])}
    numeric = all(INTEGER.fullmatch(n) for n in names)
    return sorted(names, key=int if numeric else None)


def _class_id(value: Any, index: Mapping[str, int]) -> int | None:
    name = str(value)
    if name in index:
        return index[name]
    if name.isascii() and name.isdigit() and int(name) < len(index):
        return int(name)
    return None


def encode_labels(spec: TaskSpec, labels: list[str] | None, raw: Raw) -> list[dict[str, Any]]:
    """Class labels and NER tags as ids into ``labels`` (in place); other kinds pass through."""
    if not needs_label_set(spec):
        return raw.examples
    assert labels is not None
    index = {name: i for i, name in enumerate(labels)}
    field = spec.task_kind.label_field
    for example, loc in zip(raw.examples, raw.locs):
        written = example[field]
        if not isinstance(written, list):  # one class label per example
            label = _class_id(written, index)
            if label is None:
                raise DataFormatError(
                    f"{loc}: label {written!r} is not one of the labels {labels} (nor an index into them)"
                )
            example[field] = label
            continue
        ids = [_class_id(t, index) for t in written]  # a tag per word
        if None in ids:
            i = ids.index(None)
            where = Loc(loc.source, "line", loc.number + i) if raw.tags_on_lines else f"{loc}, token {i + 1}"
            raise DataFormatError(f"{where}: tag {written[i]!r} is not one of the labels {labels}")
        example[field] = ids
    return raw.examples


def train_subset(spec: TaskSpec, examples: list[dict[str, Any]], source: str, seed: int) -> list[dict[str, Any]]:
    """``spec.train_limit`` examples drawn with ``seed`` (same seed, same subset), in file order."""
    limit = spec.train_limit
    if not isinstance(limit, int) or not 1 <= limit <= len(examples):
        raise DataFormatError(
            f"task {spec.name!r}: train_limit={limit!r}, but the training split ({source}) has "
            f"{len(examples)} examples: use 1..{len(examples)} or null"
        )
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]
