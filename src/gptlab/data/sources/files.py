"""One reader per local file format: decoded text -> ``Raw`` records as normalised examples.

Each reader takes ``(spec, path, text, fields, options)`` and builds every example through
``records.make_example``, so a format serves every kind whose fields it can name. ``text`` and
``lines`` hold documents (kind ``lm``); the fixed-layout formats know their fields (a task may
override any).
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.parsers.expat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptlab.data.sources.base import DataFormatError, Loc, Raw, lines, numbered_lines
from gptlab.data.sources.records import make_example
from gptlab.tasks.kinds import LABEL_RULES
from gptlab.tasks.spec import TaskSpec

Reader = Callable[[TaskSpec, Path, str, Mapping[str, Any], Mapping[str, Any]], Raw]


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
) -> Raw:
    # str.split, not csv: GLUE rows hold raw quotes that a csv reader would take for quoting.
    raw = Raw(str(path))
    rows = [(n, line.split("\t")) for n, line in numbered_lines(text, raw, whitespace_is_blank=False)]
    if not rows:
        return raw
    header = bool(options.get("header", True))
    columns = rows[0][1] if header else [str(i) for i in range(len(rows[0][1]))]
    keys = _columns(fields, columns, header, path)
    for n, row in rows[1:] if header else rows:
        _check_width(row, len(columns), path, n, "tab-separated columns", " (GLUE TSVs are read unquoted)")
        loc = Loc(str(path), "line", n)
        raw.add(make_example(spec, keys, options, row, loc), loc)
    return raw


def _read_conll(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    raw = Raw(str(path), tags_on_lines=True)
    tokens: list[str] = []
    tags: list[str] = []
    width = keys = None
    for n, line in enumerate([*lines(text), ""], 1):  # the extra blank line ends the last sentence
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if tokens:
                raw.add({"tokens": tokens, "tags": tags}, Loc(str(path), "line", n - len(tokens)))
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
) -> Raw:
    raw = Raw(str(path))
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
                loc = Loc(str(path), "line", start)
                raw.add(make_example(spec, keys, options, row, loc), loc)
            else:
                raw.blank_lines += 1
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataFormatError(f"{path}, line {reader.line_num}: malformed CSV ({err})") from None
    return raw


def _read_copa_xml(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    # expat rather than ElementTree: it knows the line of each <item> for error messages.
    raw = Raw(str(path))
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
        loc = Loc(str(path), "line", line)
        raw.add(make_example(spec, fields, options, {k: v.strip() for k, v in record.items()}, loc), loc)
    return raw


def _json(path: Path, text: str, line: int) -> Any:
    """``json.loads(text)``; a bad document is a ``DataFormatError`` naming the file line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(
            f"{path}, line {line + err.lineno - 1}: not valid JSON ({err.msg}, column {err.colno})"
        ) from None
    except RecursionError:  # nested deeper than Python's stack allows
        raise DataFormatError(f"{path}, line {line}: JSON nested too deeply") from None


def _add_records(
    spec: TaskSpec, raw: Raw, records: list[tuple[Loc, Any]], fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    for loc, record in records:
        if not isinstance(record, dict):
            raise DataFormatError(f"{loc}: a JSON {type(record).__name__}, expected an object")
        raw.add(make_example(spec, fields, options, record, loc), loc)
    return raw


def _read_jsonl(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    raw = Raw(str(path))
    records = [
        (Loc(str(path), "line", n), _json(path, line, n))
        for n, line in numbered_lines(text, raw, whitespace_is_blank=True)
    ]
    return _add_records(spec, raw, records, fields, options)


def _read_last_word_jsonl(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    # lm-evaluation-harness's lambada_openai: the words are split on single spaces, the last is
    # the target and the others, joined by spaces, the context.
    raw = Raw(str(path))
    records = []
    for n, line in numbered_lines(text, raw, whitespace_is_blank=True):
        loc, record = Loc(str(path), "line", n), _json(path, line, n)
        passage = record.get("text") if isinstance(record, dict) else None
        if not isinstance(passage, str):
            raise DataFormatError(f"{loc}: expected an object with a string \"text\", got {line[:80]!r}")
        *words, last = passage.split(" ")
        records.append((loc, {"context": " ".join(words), "target": last}))
    return _add_records(spec, raw, records, fields, options)


def _read_json(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    if not text.lstrip().startswith("["):
        return _read_jsonl(spec, path, text, fields, options)
    records = _json(path, text, 1)
    located = [(Loc(str(path), "record", n), record) for n, record in enumerate(records, 1)]
    return _add_records(spec, Raw(str(path)), located, fields, options)


def hellaswag_clean(text: str) -> str:
    """lm-evaluation-harness's hellaswag ``preprocess``: WikiHow's ``[title]`` markers become
    sentence breaks, other bracketed markers go, double spaces become one."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def _read_hellaswag_txt(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    # Six lines per example: "activity_label: ctx", the gold index, then the four endings. Every
    # line counts (an ending may be short), so no line is skipped as blank.
    found = lines(text)
    if found[-1] == "":  # the file's final newline ends no line
        found.pop()
    if len(found) % 6:
        raise DataFormatError(
            f"{path}: {len(found)} lines, not a multiple of 6 (context, gold index, four endings per example)"
        )
    records = []
    for first in range(0, len(found), 6):
        loc = Loc(str(path), "line", first + 1)
        context, gold, *endings = found[first : first + 6]
        if gold.strip() not in ("0", "1", "2", "3"):
            raise DataFormatError(f"{path}, line {first + 2}: gold index {gold!r}, expected 0-3")
        records.append((loc, {
            "context": hellaswag_clean(context),
            "choices": [hellaswag_clean(ending) for ending in endings],
            "label": gold.strip(),
        }))
    return _add_records(spec, Raw(str(path)), records, fields, options)


def _read_text(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    raw = Raw(str(path))
    raw.add({"text": text.replace("\r\n", "\n").replace("\r", "\n")}, Loc(str(path), "line", 1))
    return raw


def _read_lines(
    spec: TaskSpec, path: Path, text: str, fields: Mapping[str, Any], options: Mapping[str, Any]
) -> Raw:
    raw = Raw(str(path))
    for n, line in numbered_lines(text, raw, whitespace_is_blank=True):
        raw.add({"text": line}, Loc(str(path), "line", n))
    return raw


def read_parquet(
    spec: TaskSpec, path: Path, fields: Mapping[str, Any], options: Mapping[str, Any], row_group: int | None = None
) -> Raw:
    """A Parquet table's rows as records (the one binary format: nothing to decode); only the rows
    of ``row_group`` where one is named (their numbers still count from the table's first row)."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        rows = table.read() if row_group is None else table.read_row_group(row_group)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DataFormatError(f"{path} is not a readable Parquet file ({err})") from None
    first = sum(table.metadata.row_group(i).num_rows for i in range(row_group or 0)) + 1
    located = [(Loc(str(path), "row", n), row) for n, row in enumerate(rows.to_pylist(), first)]
    return _add_records(spec, Raw(str(path)), located, fields, options)


# The answer layouts (a kind's ``label`` rule, gptlab.tasks.kinds) of record formats: any.
ANY_ANSWER = (*LABEL_RULES, None)


@dataclass(frozen=True)
class FileFormat:
    """A local file format: what it is, its reader, the answer layouts it holds (which kinds' label
    rules it can read: a COPA file holds one answer index per example, a corpus none) and its
    default fields and options."""

    description: str
    reader: Reader | None  # None: read by read_parquet (binary)
    answers: tuple[str | None, ...] = ANY_ANSWER
    fields: Mapping[str, Any] | None = None
    options: Mapping[str, Any] | None = None


FILE_FORMATS: dict[str, FileFormat] = {
    "glue_tsv": FileFormat(
        "GLUE tab-separated values read with quoting disabled; a header row names the columns unless "
        "options.header is false (then fields are column indices)",
        _read_glue_tsv,
        ("class",),
    ),
    "conll": FileFormat(
        "CoNLL columns split on whitespace, one token per line, a blank line between sentences, "
        "-DOCSTART- lines skipped; fields are column indices {tokens: 0, tags: 3}",
        _read_conll,
        ("tags",),
        {"tokens": 0, "tags": 3},
    ),
    "storycloze_csv": FileFormat(
        "Story Cloze Test CSV: InputSentence1..4, RandomFifthSentenceQuiz1/2, AnswerRightEnding (1 or 2)",
        _read_csv,
        ("choice",),
        {
            "context": ["InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4"],
            "choices": ["RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2"],
            "label": "AnswerRightEnding",
        },
        {"label_base": 1},
    ),
    "copa_xml": FileFormat(
        'COPA XML: <item asks-for="cause|effect" most-plausible-alternative="1|2"> with <p>, <a1>, <a2>',
        _read_copa_xml,
        ("choice",),
        {"context": "p", "asks_for": "asks-for", "choices": ["a1", "a2"], "label": "most-plausible-alternative"},
        {"label_base": 1},
    ),
    "arc_jsonl": FileFormat(
        "ARC JSON lines: question.stem, question.choices [{text, label}], answerKey",
        _read_jsonl,
        ("choice",),
        {
            "context": "question.stem",
            "choices": "question.choices.text",
            "choice_labels": "question.choices.label",
            "label": "answerKey",
        },
    ),
    "last_word_jsonl": FileFormat(
        'JSON lines {"text": passage}: the target is the last word (after the last space), the context '
        "the words before it (OpenAI's LAMBADA, as lm-evaluation-harness's lambada_openai reads it)",
        _read_last_word_jsonl,
        ("text",),
        {"context": "context", "target": "target"},
    ),
    "hellaswag_txt": FileFormat(
        "HellaSwag in six lines per example: 'activity_label: ctx', the gold index (0-3), four endings; "
        "context and endings cleaned as lm-evaluation-harness's hellaswag preprocess cleans them",
        _read_hellaswag_txt,
        ("choice",),
        {"context": "context", "choices": "choices", "label": "label"},
    ),
    "jsonl": FileFormat("one JSON object per line; fields name its keys (dotted paths reach nested keys)", _read_jsonl),
    "json": FileFormat("a JSON array of objects (or JSON lines); fields name their keys", _read_json),
    "parquet": FileFormat("a Parquet table; fields name its columns", None),
    "text": FileFormat("one document per file; CRLF/CR line endings become LF", _read_text, (None,)),
    "lines": FileFormat("one document per non-blank line", _read_lines, (None,)),
}
