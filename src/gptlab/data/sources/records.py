"""One source record (a row, a JSON object, a Hub row) -> the normalised example of its task's kind.

``fields`` maps each normalised field to where it lives in the record: a column index (row-based
formats), or a key of a mapping, where a dotted path reaches nested keys and, through a list of
objects, collects one value per element (ARC's ``question.choices.text``). A text field may name a
list of keys (joined with ``options.context_join``, default one space), a list field (``choices``)
one key per item. How the answer is read follows the kind's ``label`` rule (``gptlab.tasks.kinds``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gptlab.data.sources.base import INTEGER, DataFormatError, Loc
from gptlab.tasks.kinds import TaskKind
from gptlab.tasks.spec import TaskSpec

# Fields that hold a list of strings; every other field but the label/tags is one string.
LIST_FIELDS = ("choices", "tokens", "choice_labels", "aliases")
# Fields kept as written, whatever their type: the answer (see the label rules) and COPA's asks-for.
RAW_FIELDS = ("label", "tags", "asks_for")
COPA_CONNECTIVES = {"cause": "because", "effect": "therefore"}


def check_fields(spec: TaskSpec, fields: Mapping[str, Any]) -> None:
    """Every field the kind needs is mapped, and nothing else is."""
    kind = spec.task_kind
    if missing := [f for f in kind.fields if f not in fields]:
        raise DataFormatError(
            f"task {spec.name!r}: fields has no {missing}; kind {spec.kind!r} needs {list(kind.fields)} "
            f"(its examples: {kind.example})"
        )
    if unknown := sorted(set(fields) - set(kind.all_fields)):
        raise DataFormatError(
            f"task {spec.name!r}: unknown field(s) {unknown} for kind {spec.kind!r}; valid: {list(kind.all_fields)}"
        )


def value(record: Any, key: Any, field: str, loc: Loc) -> Any:
    """``record[key]``: an index into a row, or a (dotted) key of a mapping."""
    if isinstance(record, list):
        return record[key]  # keys of row-based formats are indices checked against the header
    if key in record:
        return record[key]
    found = record
    for part in str(key).split("."):
        if isinstance(found, Mapping) and part in found:
            found = found[part]
        elif isinstance(found, list) and found and all(isinstance(v, Mapping) and part in v for v in found):
            found = [v[part] for v in found]
        else:
            raise DataFormatError(f"{loc}: no key {key!r} (field {field!r}); keys found: {sorted(record)}")
    return found


def _string(found: Any, field: str, loc: Loc) -> str:
    if not isinstance(found, str):
        raise DataFormatError(f"{loc}: field {field!r} is {found!r}, not a string")
    return found


def _strings(found: Any, field: str, loc: Loc) -> list[str]:
    if not isinstance(found, list) or not all(isinstance(v, str) for v in found):
        raise DataFormatError(f"{loc}: field {field!r} is {found!r}, not a list of strings")
    return found


def _field(record: Any, keys: Any, field: str, options: Mapping[str, Any], loc: Loc) -> Any:
    if field in RAW_FIELDS:
        return value(record, keys, field, loc)
    if field in LIST_FIELDS:
        if isinstance(keys, list):
            return [_string(value(record, k, field, loc), field, loc) for k in keys]
        return _strings(value(record, keys, field, loc), field, loc)
    if isinstance(keys, list):
        parts = [_string(value(record, k, field, loc), field, loc) for k in keys]
        return str(options.get("context_join", " ")).join(parts)
    return _string(value(record, keys, field, loc), field, loc)


def make_example(
    spec: TaskSpec, fields: Mapping[str, Any], options: Mapping[str, Any], record: Any, loc: Loc
) -> dict[str, Any]:
    """The normalised example of ``spec.kind`` for one source record (class labels still as written)."""
    kind = spec.task_kind
    example = {f: _field(record, fields[f], f, options, loc) for f in kind.all_fields if f in fields}
    _LABEL_RULES.get(kind.label, _no_label)(spec, kind, example, options, loc)
    return example


def _no_label(spec: TaskSpec, kind: TaskKind, example: dict[str, Any], options: Mapping[str, Any], loc: Loc) -> None:
    pass


def _class_label(
    spec: TaskSpec, kind: TaskKind, example: dict[str, Any], options: Mapping[str, Any], loc: Loc
) -> None:
    if spec.regression:
        example["label"] = _float(example["label"], loc)


def _tags(spec: TaskSpec, kind: TaskKind, example: dict[str, Any], options: Mapping[str, Any], loc: Loc) -> None:
    tokens, tags = example["tokens"], example["tags"]
    if not isinstance(tags, list) or len(tags) != len(tokens):
        raise DataFormatError(f"{loc}: {len(tokens)} tokens but tags {tags!r}")


def _choice(spec: TaskSpec, kind: TaskKind, example: dict[str, Any], options: Mapping[str, Any], loc: Loc) -> None:
    choices = example["choices"]
    if len(choices) < 2:
        raise DataFormatError(f"{loc}: {len(choices)} answer choice(s); multiple choice needs at least 2")
    if "asks_for" in example:
        example["context"], example["choices"] = _copa(example["context"], example.pop("asks_for"), choices, loc)
    choice_labels = example.pop("choice_labels", None)
    example["label"] = _choice_index(example["label"], example["choices"], choice_labels, options, loc)


def _text(spec: TaskSpec, kind: TaskKind, example: dict[str, Any], options: Mapping[str, Any], loc: Loc) -> None:
    """A generation target: ``targets`` = the target, then its aliases (deduplicated, in order)."""
    answers = [example["target"], *example.pop("aliases", [])]
    if empty := [i for i, answer in enumerate(answers) if not answer.strip()]:
        which = "target" if empty[0] == 0 else f"alias {empty[0]}"
        raise DataFormatError(f"{loc}: the {which} is empty; a generation example needs non-empty targets")
    example["targets"] = list(dict.fromkeys(answers))


_LABEL_RULES = {"class": _class_label, "tags": _tags, "choice": _choice, "text": _text}


def _float(found: Any, loc: Loc) -> float:
    try:
        number = float(found)
    except (TypeError, ValueError):
        raise DataFormatError(f"{loc}: regression label {found!r} is not a number") from None
    if not math.isfinite(number):
        raise DataFormatError(f"{loc}: regression label {found!r} is not a finite number")
    return number


def _copa(premise: str, asks_for: Any, choices: list[str], loc: Loc) -> tuple[str, list[str]]:
    """lm-evaluation-harness's COPA text (see ``gptlab.data.sources``)."""
    if asks_for not in COPA_CONNECTIVES:
        raise DataFormatError(f"{loc}: asks-for is {asks_for!r}, not one of {list(COPA_CONNECTIVES)}")
    premise = premise.strip()
    premise = premise[:-1] if premise.endswith(".") else premise
    return f"{premise} {COPA_CONNECTIVES[asks_for]}", [c[:1].lower() + c[1:] for c in choices]


def _choice_index(
    raw: Any, choices: list[str], choice_labels: list[str] | None, options: Mapping[str, Any], loc: Loc
) -> int:
    if choice_labels is not None:
        if len(choice_labels) != len(choices):
            raise DataFormatError(f"{loc}: {len(choices)} choices but {len(choice_labels)} choice labels")
        if str(raw) not in choice_labels:
            raise DataFormatError(f"{loc}: answer {raw!r} is not one of the choice labels {choice_labels}")
        return choice_labels.index(str(raw))
    text, base = str(raw).strip(), int(options.get("label_base", 0))
    if len(text) == 1 and "A" <= text <= "Z":
        index = ord(text) - ord("A")
    elif INTEGER.fullmatch(text):
        index = int(text) - base
    else:
        raise DataFormatError(f"{loc}: answer {raw!r} is neither a letter nor an integer")
    if not 0 <= index < len(choices):
        raise DataFormatError(
            f"{loc}: answer {raw!r} is out of range for {len(choices)} choices (label_base {base})"
        )
    return index
