"""Format ``hub``: a ``datasets.load_dataset`` copy of a task, in the one Hub dialect.

``hub: {path, name, splits, fields, options, ...}``: ``splits`` maps the task's split names to the
Hub's (default: the same name), ``fields`` and ``options`` replace the task's own for the Hub copy
(its columns may differ from the local files'), and every other key is passed to
``datasets.load_dataset``. Hub ``ClassLabel`` integers become their names, so a Hub copy whose class
order differs from ``task.labels`` still maps right.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gptlab.data.sources.base import DataFormatError, Loc, Raw
from gptlab.data.sources.records import check_fields, make_example
from gptlab.tasks.spec import TaskSpec

DIALECT_KEYS = ("splits", "fields", "options")


def hub_split(spec: TaskSpec, split: str) -> str:
    """The Hub's name for the task's ``split``."""
    return str(((spec.hub or {}).get("splits") or {}).get(split, split))


def hub_fields(spec: TaskSpec) -> dict[str, Any]:
    """Normalised field -> Hub column."""
    return dict((spec.hub or {}).get("fields") or spec.fields_or_defaults)


def load_hub_split(spec: TaskSpec, split: str) -> tuple[Any, str]:
    """(``datasets.Dataset`` of the Hub split, a description of it for messages)."""
    if not spec.hub:
        raise DataFormatError(f"task {spec.name!r}: format 'hub' needs a hub entry, e.g. hub: {{path, name}}")
    import datasets  # only the Hub needs it, and importing it takes a second

    args = {k: v for k, v in spec.hub.items() if k not in DIALECT_KEYS}
    name = hub_split(spec, split)
    try:
        ds = datasets.load_dataset(**args, split=name)
    except Exception as err:  # offline, unknown id, missing split ...: say what was asked for
        raise DataFormatError(
            f"task {spec.name!r}: datasets.load_dataset({args}, split={name!r}) failed: {err}"
        ) from err
    source = f"hub {'/'.join(str(args[k]) for k in ('path', 'name') if args.get(k))} split {name!r}"
    return ds, source


def read_hub(spec: TaskSpec, split: str) -> Raw:
    """The normalised examples of one Hub split."""
    fields = hub_fields(spec)
    options = (spec.hub or {}).get("options") or spec.options
    check_fields(spec, fields)
    ds, source = load_hub_split(spec, split)
    names = _class_names(spec, ds.features, fields)
    raw = Raw(source)
    for n, row in enumerate(ds, 1):
        for key, classes in names.items():
            row[key] = _class_name(row[key], classes)
        loc = Loc(source, "row", n)
        raw.add(make_example(spec, fields, options, row, loc), loc)
    return raw


def hub_documents(spec: TaskSpec, split: str) -> tuple[Any, Any]:
    """(a ``datasets.Dataset``, or with ``hub.streaming: true`` an ``IterableDataset``, whose one
    column ``text`` holds the split's documents; its fingerprint).

    A corpus stays a dataset rather than a list, so a large one is tokenized batch by batch; a
    streamed one is never downloaded whole, and is fingerprinted by its arguments alone.
    """
    ds, source = load_hub_split(spec, split)
    column = hub_fields(spec)["text"]
    if ds.column_names is not None and column not in ds.column_names:
        raise DataFormatError(f"task {spec.name!r}: {source} has no column {column!r} ({ds.column_names})")
    texts = ds.select_columns([column])
    fingerprint = getattr(ds, "_fingerprint", None) or json.dumps(spec.hub, sort_keys=True, default=str)
    return (texts if column == "text" else texts.rename_column(column, "text")), [source, column, fingerprint]


def _class_names(spec: TaskSpec, features: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, list[str]]:
    """Column -> ClassLabel names of the label / tags column, for kinds with class labels."""
    kind = spec.task_kind
    if not kind.has_class_labels or spec.regression:
        return {}
    key = fields[kind.label_field]
    feature = features.get(key) if isinstance(key, str) else None
    names = getattr(getattr(feature, "feature", feature), "names", None)  # ClassLabel or a list of them
    return {key: names} if names else {}


def _class_name(found: Any, names: list[str]) -> Any:
    if isinstance(found, list):
        return [_class_name(v, names) for v in found]
    # -1 (GLUE's hidden test labels) stays -1 and is then reported as not a label
    return names[found] if isinstance(found, int) and 0 <= found < len(names) else found
