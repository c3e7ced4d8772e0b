"""Task data readers: files in a named format (or a Hub dataset) -> normalised examples.

Every reader yields the examples of ``gptlab.tasks.spec`` for the task's ``kind``. ``load_task``
reads the training split and every eval split, reads the label set from the training split when
the task says ``labels: null``, and keeps a seeded subset of ``train_limit`` training examples.
Local files are ``<spec.data_dir>/<spec.files[split]>``.

**Fields.** ``spec.fields`` maps a normalised field to where it lives in a source record: a column
name, a column index (header-less TSV, CoNLL), or a key of a JSON object / Hub row, where a dotted
path reaches nested keys and, through a list of objects, collects one value per element (ARC's
``question.choices.text`` is the list of answer texts). Multiple choice also takes a list of keys
for ``context`` (the values are joined with ``options.context_join``, default one space) and for
``choices`` (one key per answer), and two optional fields: ``choice_labels`` (the answer key is
looked up in it, as ARC's ``answerKey``) and ``asks_for`` (COPA's cause/effect). The fixed-layout
formats (conll, storycloze_csv, copa_xml, arc_jsonl) know their fields; a task may override any.

**COPA.** As lm-evaluation-harness builds it: context = the premise, stripped, without its final
period, + ``" because"`` (asks-for cause) or ``" therefore"`` (effect); each answer gets a
lower-case first letter, so ``context + " " + answer`` reads as one sentence ("My body cast a
shadow over the grass because" / "the sun was rising."). lm-eval drops the premise's last character
unconditionally; every COPA premise ends with a period, so the two agree on COPA.

**Labels.** A class label or NER tag is a name in ``labels``, or an integer index into it (GLUE's
TSVs write 0/1 for the classes in the declared order). Hub ``ClassLabel`` integers become their
names first, so a Hub copy whose class order differs from ``labels`` still maps right. A
multiple-choice label is a 0-based index into ``choices``: the answer key's position in
``choice_labels`` when the task names them, else a letter (A = 0), else an integer minus
``options.label_base`` (1 for Story Cloze and COPA, whose files count answers from 1). Regression
labels are floats. Anything else is a ``DataFormatError`` naming the file and line (1-based).

**Encoding.** Files are UTF-8 (a leading BOM is dropped); ``options.encoding`` names another codec
(e.g. ``cp1252``). A byte that does not decode is a ``DataFormatError`` naming the file, the line of
the first bad byte and the option.

**Skip policy.** Only blank lines are skipped: in TSV, CSV and JSON-lines files they carry no
record (in CoNLL they separate sentences). Each split logs how many it skipped, and ``load_task`` /
``load_split`` report the counts to a caller that asks (a run writes them to its results as
``skipped_blank_lines``). Every other defect
(a row with the wrong number of columns, invalid JSON or XML, a missing field, a label outside the
label set, a non-finite regression label) is an error: no row is ever dropped or relabelled silently.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import random
import re
import xml.parsers.expat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from gptlab.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

FORMATS = {
    "glue_tsv": "GLUE tab-separated values read with quoting disabled, UTF-8 (a BOM is allowed); "
    "a header row names the columns unless options.header is false (then fields are column indices)",
    "conll": "CoNLL columns split on whitespace, one token per line, a blank line between "
    "sentences, -DOCSTART- lines skipped; fields are column indices {tokens: 0, tags: 3}",
    "storycloze_csv": "Story Cloze Test CSV: InputSentence1..4, RandomFifthSentenceQuiz1/2, "
    "AnswerRightEnding (1 or 2)",
    "copa_xml": 'COPA XML: <item asks-for="cause|effect" most-plausible-alternative="1|2"> with '
    "<p>, <a1>, <a2>",
    "arc_jsonl": "ARC JSON lines: question.stem, question.choices [{text, label}], answerKey",
    "jsonl": "one JSON object per line; fields name its keys (dotted paths reach nested keys)",
    "hub": "datasets.load_dataset(**hub), e.g. hub: {path, name}; the hub entry's optional splits "
    "(split -> Hub split), fields and options replace the task's for the Hub copy",
    "demo": "gptlab's built-in demo tasks (gptlab.data.demo_tasks); needs no files",
}
DEFAULT_SEED = 1234

_LABELED_KINDS = ("classification", "entailment", "similarity", "multiple_choice", "ner")
_FORMAT_KINDS = {
    "glue_tsv": ("classification", "entailment", "similarity"),
    "conll": ("ner",),
    "storycloze_csv": ("multiple_choice",),
    "copa_xml": ("multiple_choice",),
    "arc_jsonl": ("multiple_choice",),
}
_REQUIRED_FIELDS = {
    "classification": ("text", "label"),
    "entailment": ("text_a", "text_b", "label"),
    "similarity": ("text_a", "text_b", "label"),
    "multiple_choice": ("context", "choices", "label"),
    "ner": ("tokens", "tags"),
}
_OPTIONAL_FIELDS = {"multiple_choice": ("choice_labels", "asks_for")}
_DEFAULT_FIELDS: dict[str, dict[str, Any]] = {
    "conll": {"tokens": 0, "tags": 3},
    "storycloze_csv": {
        "context": ["InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4"],
        "choices": ["RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2"],
        "label": "AnswerRightEnding",
    },
    "copa_xml": {
        "context": "p",
        "asks_for": "asks-for",
        "choices": ["a1", "a2"],
        "label": "most-plausible-alternative",
    },
    "arc_jsonl": {
        "context": "question.stem",
        "choices": "question.choices.text",
        "choice_labels": "question.choices.label",
        "label": "answerKey",
    },
}
_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "storycloze_csv": {"label_base": 1},
    "copa_xml": {"label_base": 1},
}
_HUB_ONLY_KEYS = ("splits", "fields", "options")
COPA_CONNECTIVES = {"cause": "because", "effect": "therefore"}
_INTEGER = re.compile(r"-?[0-9]+")


class DataFormatError(ValueError):
    """Task data that cannot be read as its spec says; the message names the file and line."""


class _Loc(NamedTuple):
    """Where a record came from, for error messages: ``<source>, <unit> <number>``."""

    source: str
    unit: str
    number: int

    def __str__(self) -> str:
        return f"{self.source}, {self.unit} {self.number}"


@dataclasses.dataclass
class _Raw:
    """One split as read: examples whose class labels / NER tags are still as written."""

    source: str
    examples: list[dict[str, Any]]
    locs: list[_Loc]
    tags_on_lines: bool = False  # CoNLL: a sentence's i-th tag is on line loc.number + i
    blank_lines: int = 0  # skipped (see the skip policy in the module doc)


# ----------------------------------------------------------------------------- public API


def load_split(
    spec: TaskSpec, split: str, skipped_lines: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """All normalised examples of one split (``train_limit`` is applied by ``load_task``).

    With ``labels: null`` the label set is read from the training split, as ``load_task`` does.
    ``skipped_lines``, when given, receives ``split`` -> blank lines skipped (the skip policy).
    """
    labels = spec.labels
    if labels is None and _needs_labels(spec):
        labels = _label_set(_read(spec, spec.train_split))
    raw = _read(spec, split)
    if skipped_lines is not None:
        skipped_lines[split] = raw.blank_lines
    return _encode(spec, labels, raw)


def load_task(
    spec: TaskSpec, seed: int = DEFAULT_SEED, skipped_lines: dict[str, int] | None = None
) -> tuple[TaskSpec, dict[str, list[dict[str, Any]]]]:
    """The spec with its label set resolved, and split -> examples for train and every eval split.

    ``train_limit`` keeps that many training examples, drawn with ``seed`` (same seed, same subset)
    and kept in file order. ``skipped_lines``, when given, receives split -> blank lines skipped
    (the skip policy in the module doc).
    """
    if spec.kind not in _LABELED_KINDS:
        raise DataFormatError(
            f"task {spec.name!r}: kind {spec.kind!r} has no labeled examples (lm tasks are read by "
            f"gptlab.data.text); valid kinds here: {', '.join(_LABELED_KINDS)}"
        )
    splits = [spec.train_split, *(s for s in spec.eval_splits if s != spec.train_split)]
    raw = {split: _read(spec, split) for split in splits}
    if spec.labels is None and _needs_labels(spec):
        spec = dataclasses.replace(spec, labels=_label_set(raw[spec.train_split]))
        log.info(
            "task %r: labels: null, so the label set was read from %s: %s",
            spec.name, raw[spec.train_split].source, spec.labels,
        )
    data = {split: _encode(spec, spec.labels, r) for split, r in raw.items()}
    if skipped_lines is not None:
        skipped_lines.update({split: r.blank_lines for split, r in raw.items()})
    if spec.train_limit is not None:
        data[spec.train_split] = _subset(spec, data[spec.train_split], raw[spec.train_split].source, seed)
    return spec, data


# ----------------------------------------------------------------------------- dispatch


def _describe(fmt: str) -> str:
    return f"format {fmt!r}: {FORMATS[fmt]}"


def _read(spec: TaskSpec, split: str) -> _Raw:
    fmt = spec.format
    if fmt not in FORMATS:
        raise DataFormatError(
            f"task {spec.name!r}: unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}"
        )
    kinds = _FORMAT_KINDS.get(fmt, _LABELED_KINDS)
    if spec.kind not in kinds:
        raise DataFormatError(
            f"task {spec.name!r}: format {fmt!r} reads kind(s) {', '.join(kinds)}, not {spec.kind!r}"
        )
    if fmt == "demo":
        raw = _read_demo(spec, split)
    elif fmt == "hub":
        raw = _read_hub(spec, split)
    else:
        path = _split_path(spec, split)
        fields = {**_DEFAULT_FIELDS.get(fmt, {}), **spec.fields}
        options = {**_DEFAULT_OPTIONS.get(fmt, {}), **spec.options}
        _check_fields(spec, fields)
        text = _decode(path, fmt, str(options.get("encoding", "utf-8")))
        raw = _FILE_READERS[fmt](spec, path, text, fields, options)
    if not raw.examples:
        raise DataFormatError(f"{raw.source}: no examples in split {split!r} of task {spec.name!r}")
    if raw.blank_lines:
        log.info("task %r, split %r: %s: skipped %d blank line(s)", spec.name, split, raw.source, raw.blank_lines)
    return raw


def _split_path(spec: TaskSpec, split: str) -> Path:
    if spec.data_dir is None:
        raise DataFormatError(
            f"task {spec.name!r}: {_describe(spec.format)} reads local files, but data_dir is not set "
            "(set paths.data_dir or task.data_dir)"
        )
    if split not in spec.files:
        raise DataFormatError(
            f"task {spec.name!r}: no file for split {split!r}; files: {dict(spec.files)}"
        )
    path = Path(spec.data_dir).expanduser() / spec.files[split]
    if not path.is_file():
        online = " (online, task.format=hub reads the Hub copy)" if spec.hub else ""
        raise DataFormatError(
            f"{path}: no such file (task {spec.name!r}, split {split!r}); expected "
            f"{_describe(spec.format)}{online}"
        )
    return path


def _check_fields(spec: TaskSpec, fields: Mapping[str, Any]) -> None:
    required = _REQUIRED_FIELDS[spec.kind]
    valid = (*required, *_OPTIONAL_FIELDS.get(spec.kind, ()))
    if missing := [f for f in required if f not in fields]:
        raise DataFormatError(
            f"task {spec.name!r}: fields has no {missing}; kind {spec.kind!r} needs {list(required)}"
        )
    if unknown := sorted(set(fields) - set(valid)):
        raise DataFormatError(
            f"task {spec.name!r}: unknown field(s) {unknown} for kind {spec.kind!r}; valid: {list(valid)}"
        )


# ----------------------------------------------------------------------------- records -> examples


def _decode(path: Path, fmt: str, encoding: str = "utf-8") -> str:
    data = path.read_bytes()
    # utf-8-sig: MRPC's leading BOM is not part of the first column
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except LookupError:
        raise DataFormatError(f"{path}: unknown encoding {encoding!r} (task.options.encoding)") from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            f"{path}, line {line}: bytes {data[err.start:err.end]!r} are not "
            f"{'UTF-8' if codec == 'utf-8-sig' else encoding} ({err.reason}); "
            f"if the file is in another encoding, name it in task.options.encoding (e.g. cp1252); "
            f"expected {_describe(fmt)}"
        ) from None


def _lines(text: str) -> list[str]:
    # split("\n"), not splitlines(): the latter also breaks at \x0b, \x1c, \u2028 ... inside text.
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _numbered_lines(text: str, raw: _Raw, whitespace_is_blank: bool) -> list[tuple[int, str]]:
    """(line number, line) of the non-blank lines; counts the blank ones in ``raw.blank_lines``.

    A line of spaces is blank only where whitespace means nothing (JSON); in a TSV it is a row.
    """
    lines = _lines(text)
    if lines[-1] == "":  # the file's final newline ends no blank line
        lines.pop()
    kept = [(n, line) for n, line in enumerate(lines, 1) if (line.strip() if whitespace_is_blank else line)]
    raw.blank_lines += len(lines) - len(kept)
    return kept


def _value(record: Any, key: Any, field: str, loc: _Loc) -> Any:
    """``record[key]``: an index into a row, or a (dotted) key of a mapping."""
    if isinstance(record, list):
        return record[key]  # keys of row-based formats are indices checked against the header
    if key in record:
        return record[key]
    value = record
    for part in str(key).split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) and part in v for v in value):
            value = [v[part] for v in value]
        else:
            raise DataFormatError(
                f"{loc}: no key {key!r} (field {field!r}); keys found: {sorted(record)}"
            )
    return value


def _string(value: Any, field: str, loc: _Loc) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"{loc}: field {field!r} is {value!r}, not a string")
    return value


def _strings(value: Any, field: str, loc: _Loc) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{loc}: field {field!r} is {value!r}, not a list of strings")
    return value


def _example(
    spec: TaskSpec, fields: Mapping[str, Any], options: Mapping[str, Any], record: Any, loc: _Loc
) -> dict[str, Any]:
    """The normalised example of ``spec.kind`` for one source record (class labels still raw)."""

    def get(field: str) -> Any:
        return _value(record, fields[field], field, loc)

    if spec.kind == "multiple_choice":
        return _choice_example(fields, options, record, loc)
    if spec.kind == "ner":
        tokens, tags = _strings(get("tokens"), "tokens", loc), get("tags")
        if not isinstance(tags, list) or len(tags) != len(tokens):
            raise DataFormatError(f"{loc}: {len(tokens)} tokens but tags {tags!r}")
        return {"tokens": tokens, "tags": tags}
    names = ("text",) if spec.kind == "classification" else ("text_a", "text_b")
    example: dict[str, Any] = {name: _string(get(name), name, loc) for name in names}
    example["label"] = _float(get("label"), loc) if spec.regression else get("label")
    return example


def _float(value: Any, loc: _Loc) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(f"{loc}: regression label {value!r} is not a number") from None
    if not math.isfinite(number):
        raise DataFormatError(f"{loc}: regression label {value!r} is not a finite number")
    return number


def _choice_example(
    fields: Mapping[str, Any], options: Mapping[str, Any], record: Any, loc: _Loc
) -> dict[str, Any]:
    def many(field: str) -> list[str]:
        keys = fields[field]
        if isinstance(keys, list):
            return [_string(_value(record, k, field, loc), field, loc) for k in keys]
        return _strings(_value(record, keys, field, loc), field, loc)

    context_keys = fields["context"]
    if isinstance(context_keys, list):
        context = str(options.get("context_join", " ")).join(many("context"))
    else:
        context = _string(_value(record, context_keys, "context", loc), "context", loc)
    choices = many("choices")
    if len(choices) < 2:
        raise DataFormatError(f"{loc}: {len(choices)} answer choice(s); multiple choice needs at least 2")
    if "asks_for" in fields:
        context, choices = _copa(context, _value(record, fields["asks_for"], "asks_for", loc), choices, loc)
    raw = _value(record, fields["label"], "label", loc)
    choice_labels = many("choice_labels") if "choice_labels" in fields else None
    label = _choice_index(raw, choices, choice_labels, options, loc)
    return {"context": context, "choices": choices, "label": label}


def _copa(premise: str, asks_for: Any, choices: list[str], loc: _Loc) -> tuple[str, list[str]]:
    """lm-evaluation-harness's COPA text (see the module docstring)."""
    if asks_for not in COPA_CONNECTIVES:
        raise DataFormatError(f"{loc}: asks-for is {asks_for!r}, not one of {list(COPA_CONNECTIVES)}")
    premise = premise.strip()
    premise = premise[:-1] if premise.endswith(".") else premise
    return f"{premise} {COPA_CONNECTIVES[asks_for]}", [c[:1].lower() + c[1:] for c in choices]


def _choice_index(
    raw: Any, choices: list[str], choice_labels: list[str] | None, options: Mapping[str, Any], loc: _Loc
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
    elif _INTEGER.fullmatch(text):
        index = int(text) - base
    else:
        raise DataFormatError(f"{loc}: answer {raw!r} is neither a letter nor an integer")
    if not 0 <= index < len(choices):
        raise DataFormatError(
            f"{loc}: answer {raw!r} is out of range for {len(choices)} choices (label_base {base})"
        )
    return index


# ----------------------------------------------------------------------------- file formats


def _columns(fields: Mapping[str, Any], columns: list[str], header: bool, path: Path) -> dict[str, Any]:
    """Field -> column index (lists stay lists), checked against the file's columns."""

    def index(field: str, key: Any) -> int:
        if isinstance(key, int) and -len(columns) <= key < len(columns):
            return key % len(columns)
        if isinstance(key, int):
            raise DataFormatError(
                f"{path}: field {field!r} is column {key}, but the file has {len(columns)} columns"
            )
        if header and key in columns:
            return columns.index(key)
        found = f"columns found: {columns}" if header else "the file has no header: name columns by index"
        raise DataFormatError(f"{path}: no column {key!r} for field {field!r}; {found}")

    return {
        f: [index(f, k) for k in key] if isinstance(key, list) else index(f, key) for f, key in fields.items()
    }


def _check_width(row: list[str], width: int, path: Path, line: int, what: str, note: str = "") -> None:
    if len(row) != width:
        raise DataFormatError(f"{path}, line {line}: {len(row)} {what}, expected {width}{note}")


def _read_glue_tsv(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> _Raw:
    # str.split, not csv: GLUE rows hold raw quotes that a csv reader would take for quoting.
    raw = _Raw(str(path), [], [])
    rows = [(n, line.split("\t")) for n, line in _numbered_lines(text, raw, whitespace_is_blank=False)]
    if not rows:
        return raw
    header = bool(options.get("header", True))
    columns = rows[0][1] if header else [str(i) for i in range(len(rows[0][1]))]
    keys = _columns(fields, columns, header, path)
    for n, row in rows[1:] if header else rows:
        _check_width(row, len(columns), path, n, "tab-separated columns", " (GLUE TSVs are read unquoted)")
        loc = _Loc(str(path), "line", n)
        raw.examples.append(_example(spec, keys, options, row, loc))
        raw.locs.append(loc)
    return raw


def _read_conll(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> _Raw:
    raw = _Raw(str(path), [], [], tags_on_lines=True)
    tokens: list[str] = []
    tags: list[str] = []
    width = keys = None
    for n, line in enumerate([*_lines(text), ""], 1):  # the extra blank line ends the last sentence
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if tokens:
                raw.examples.append({"tokens": tokens, "tags": tags})
                raw.locs.append(_Loc(str(path), "line", n - len(tokens)))
                tokens, tags = [], []
            continue
        if width is None:
            width = len(cols)
            keys = _columns(fields, [str(i) for i in range(width)], False, path)
        _check_width(cols, width, path, n, "columns")
        tokens.append(cols[keys["tokens"]])
        tags.append(cols[keys["tags"]])
    return raw


def _read_csv(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> _Raw:
    raw = _Raw(str(path), [], [])
    reader = csv.reader(io.StringIO(text, newline=""))  # RFC 4180 quoting: endings contain commas
    try:
        columns = next(reader, None)
        while columns == []:  # blank lines before the header
            raw.blank_lines += 1
            columns = next(reader, None)
        if columns is None:
            return raw
        keys = _columns(fields, columns, True, path)
        start = reader.line_num + 1
        for row in reader:
            if row:
                _check_width(row, len(columns), path, start, "comma-separated columns")
                loc = _Loc(str(path), "line", start)
                raw.examples.append(_example(spec, keys, options, row, loc))
                raw.locs.append(loc)
            else:
                raw.blank_lines += 1
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataFormatError(f"{path}, line {reader.line_num}: malformed CSV ({err})") from None
    return raw


def _read_copa_xml(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> _Raw:
    # expat rather than ElementTree: it knows the line of each <item> for error messages.
    raw = _Raw(str(path), [], [])
    items: list[tuple[int, dict[str, str]]] = []
    item: dict[str, str] | None = None  # the open <item>: its attributes and child texts
    child: str | None = None  # the open child element of that item
    parser = xml.parsers.expat.ParserCreate()

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal item, child
        if name == "item":
            item = dict(attrs)
            items.append((parser.CurrentLineNumber, item))
        elif item is not None and child is None:
            child = name
            item[name] = ""

    def end(name: str) -> None:
        nonlocal item, child
        if name == child:
            child = None
        elif name == "item":
            item = None

    def chars(data: str) -> None:
        if item is not None and child is not None:
            item[child] += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    try:
        parser.Parse(text, True)
    except xml.parsers.expat.ExpatError as err:
        raise DataFormatError(
            f"{path}, line {err.lineno}: malformed XML ({xml.parsers.expat.ErrorString(err.code)})"
        ) from None
    for line, record in items:
        loc = _Loc(str(path), "line", line)
        record = {k: v.strip() for k, v in record.items()}
        raw.examples.append(_example(spec, fields, options, record, loc))
        raw.locs.append(loc)
    return raw


def _read_jsonl(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> _Raw:
    raw = _Raw(str(path), [], [])
    for n, line in _numbered_lines(text, raw, whitespace_is_blank=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(
                f"{path}, line {n}: not valid JSON ({err.msg}, column {err.colno})"
            ) from None
        except RecursionError:  # nested deeper than Python's stack allows
            raise DataFormatError(f"{path}, line {n}: JSON nested too deeply") from None
        loc = _Loc(str(path), "line", n)
        if not isinstance(record, dict):
            raise DataFormatError(f"{loc}: a JSON {type(record).__name__}, expected an object")
        raw.examples.append(_example(spec, fields, options, record, loc))
        raw.locs.append(loc)
    return raw


_FILE_READERS = {
    "glue_tsv": _read_glue_tsv,
    "conll": _read_conll,
    "storycloze_csv": _read_csv,
    "copa_xml": _read_copa_xml,
    "arc_jsonl": _read_jsonl,
    "jsonl": _read_jsonl,
}


# ----------------------------------------------------------------------------- no local files


def _read_hub(spec: TaskSpec, split: str) -> _Raw:
    if not spec.hub:
        raise DataFormatError(f"task {spec.name!r}: format 'hub' needs a hub entry, e.g. hub: {{path, name}}")
    import datasets  # only this format needs it, and importing it takes a second

    args = {k: v for k, v in spec.hub.items() if k not in _HUB_ONLY_KEYS}
    hub_split = (spec.hub.get("splits") or {}).get(split, split)
    fields = spec.hub.get("fields") or spec.fields
    options = spec.hub.get("options") or spec.options
    _check_fields(spec, fields)
    try:
        ds = datasets.load_dataset(**args, split=hub_split)
    except Exception as err:  # offline, unknown id, missing split ...: say what was asked for
        raise DataFormatError(
            f"task {spec.name!r}: datasets.load_dataset({args}, split={hub_split!r}) failed: {err}"
        ) from err
    source = f"hub {'/'.join(str(args[k]) for k in ('path', 'name') if args.get(k))} split {hub_split!r}"
    names = _class_names(spec, ds.features, fields)
    raw = _Raw(source, [], [])
    for n, row in enumerate(ds, 1):
        for key, classes in names.items():
            row[key] = _class_name(row[key], classes)
        loc = _Loc(source, "row", n)
        raw.examples.append(_example(spec, fields, options, row, loc))
        raw.locs.append(loc)
    return raw


def _class_names(
    spec: TaskSpec, features: Mapping[str, Any], fields: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Column -> ClassLabel names for the label / tags column (a multiple-choice label is an index)."""
    if spec.kind == "multiple_choice" or spec.regression:
        return {}
    key = fields["tags" if spec.kind == "ner" else "label"]
    feature = features.get(key) if isinstance(key, str) else None
    names = getattr(getattr(feature, "feature", feature), "names", None)  # ClassLabel or a list of them
    return {key: names} if names else {}


def _class_name(value: Any, names: list[str]) -> Any:
    if isinstance(value, list):
        return [_class_name(v, names) for v in value]
    # -1 (GLUE's hidden test labels) stays -1 and is then reported as not a label
    return names[value] if isinstance(value, int) and 0 <= value < len(names) else value


def _read_demo(spec: TaskSpec, split: str) -> _Raw:
    from gptlab.data.demo_tasks import read_demo_split  # lazy: the demo tasks are optional here

    source = f"demo task {spec.name!r} split {split!r}"
    examples = read_demo_split(spec, split)  # fresh copies, so encoding labels in place is safe
    return _Raw(source, examples, [_Loc(source, "example", n) for n in range(1, len(examples) + 1)])


# ----------------------------------------------------------------------------- labels


def _needs_labels(spec: TaskSpec) -> bool:
    return spec.kind in ("classification", "entailment", "similarity", "ner") and not spec.regression


def _label_set(raw: _Raw) -> list[str]:
    """The sorted label names of a split (numerically when all are integers)."""
    names = {
        str(v) for e in raw.examples for v in (e["tags"] if "tags" in e else [e["label"]])
    }
    numeric = all(_INTEGER.fullmatch(n) for n in names)
    return sorted(names, key=int if numeric else None)


def _class_id(value: Any, index: Mapping[str, int]) -> int | None:
    name = str(value)
    if name in index:
        return index[name]
    if name.isascii() and name.isdigit() and int(name) < len(index):
        return int(name)
    return None


def _encode(spec: TaskSpec, labels: list[str] | None, raw: _Raw) -> list[dict[str, Any]]:
    """Class labels and NER tags as ids into ``labels`` (in place); other kinds pass through."""
    if not _needs_labels(spec):
        return raw.examples
    assert labels is not None
    index = {name: i for i, name in enumerate(labels)}
    for example, loc in zip(raw.examples, raw.locs):
        if spec.kind == "ner":
            ids = [_class_id(t, index) for t in example["tags"]]
            if None in ids:
                i = ids.index(None)
                tag = example["tags"][i]
                line = _Loc(loc.source, "line", loc.number + i)
                where = line if raw.tags_on_lines else f"{loc}, token {i + 1}"
                raise DataFormatError(f"{where}: tag {tag!r} is not one of the labels {labels}")
            example["tags"] = ids
        else:
            label = _class_id(example["label"], index)
            if label is None:
                raise DataFormatError(
                    f"{loc}: label {example['label']!r} is not one of the labels {labels} "
                    f"(nor an index into them)"
                )
            example["label"] = label
    return raw.examples


def _subset(spec: TaskSpec, examples: list[dict[str, Any]], source: str, seed: int) -> list[dict[str, Any]]:
    limit = spec.train_limit
    if not isinstance(limit, int) or not 1 <= limit <= len(examples):
        raise DataFormatError(
            f"task {spec.name!r}: train_limit={limit!r}, but the training split ({source}) has "
            f"{len(examples)} examples: use 1..{len(examples)} or null"
        )
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]
