"""An ``lm`` task's corpus as a fixed sequence of work units, and what one unit holds.

A **unit** is a piece of the corpus small enough to read, decode and tokenize in one go: a byte
range of a ``text``, ``lines`` or ``jsonl`` file (about ``UNIT_BYTES``, cut at a line end, or for
``text`` at a ``safe_cut``, so a long document is encoded in pieces with the ids of the whole), a
Parquet row group, a whole ``json`` file (a JSON array cannot be cut), or ``UNIT_ROWS`` documents of
a Hub dataset or the embedded corpus. The units depend only on the corpus, never on how many
processes encode them, so a cache built with any ``num_proc`` is the same. A worker process reads
its unit itself (``unit_pieces``); only the Hub's and the embedded corpus's rows come from the main
process.

**Splits.** Where the task names a ``validation`` split, its documents are the ``val`` tokens.
Otherwise ``val_fraction`` of the documents are held out by ``is_held_out``: a hash of the
document's text (of its file name for ``text``, where a document is a file), so the held-out set is
fixed by the corpus alone (not the run's seed, not the order of the files, not their number), a
duplicated document is never on both sides, and it is decided while streaming. A corpus of one
``text`` file holds out its last ``val_fraction`` of bytes instead, from the nearest safe cut on
(the first after that point, or else the last before it).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.data.sources import check_format, describe, split_paths
from gptlab.data.sources.base import DataFormatError, decode_bytes
from gptlab.data.sources.documents import corpus_splits, document_source, sha256_file
from gptlab.data.sources.files import FILE_FORMATS, read_parquet
from gptlab.data.sources.records import check_fields
from gptlab.data.tokenize import EOT_TOKENS, TOKEN_DTYPE, encode, last_safe_cut, safe_cut
from gptlab.tasks.spec import TaskSpec

UNIT_BYTES = 2**20
UNIT_ROWS = 4096
RACY_SECONDS = 2
OUTPUTS = ("train", "val")
# Formats whose files are cut into byte ranges at line ends; ``text`` is cut at safe cuts.
_LINE_FORMATS = ("lines", "jsonl")


def is_held_out(key: str, val_fraction: float) -> bool:
    """Whether the document with ``key`` (its text, or a ``text`` file's name) is held out: a
    64-bit hash of it below ``val_fraction`` of the range, so about that share of documents are."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < val_fraction * 2**64


@dataclass(frozen=True)
class Unit:
    """One work unit (see the module doc)."""

    split: str  # the corpus split it reads ("train"/"validation"): where its blank lines count
    output: str | None  # "train"/"val", or None: each document by is_held_out
    path: str | None = None  # the file it reads (None: texts)
    start: int = 0  # first byte, or the Parquet row group
    end: int = 0  # end byte, or the row group + 1
    starts_document: bool = True  # format text: the file's document starts / ends in this unit
    ends_document: bool = True
    texts: tuple[str, ...] = ()  # rows read by the main process


@dataclass(frozen=True)
class Reading:
    """What a worker needs to read a unit of the task (picklable)."""

    spec: TaskSpec
    fields: dict[str, Any]
    options: dict[str, Any]


@dataclass
class Corpus:
    """A task's corpus as units. ``files`` maps every file read to ``[size, mtime_ns]`` (a changed file
    changes it); ``fingerprint`` is the rest of what the tokens depend on."""

    reading: Reading
    fingerprint: dict[str, Any]
    files: dict[str, list[int]]
    units: Callable[[int], Iterator[Unit]] = field(repr=False)  # the units from index k on


def file_identity(path: Path) -> list[Any]:
    """``[size, mtime_ns]`` of a corpus file, plus its sha256 when it changed within ``RACY_SECONDS``:
    a file written again that fast may keep its size and mtime (git's "racily clean" files)."""
    try:
        stat = path.stat()
        if not os.access(path, os.R_OK):
            raise PermissionError(13, "permission denied")
        identity: list[Any] = [stat.st_size, stat.st_mtime_ns]
        if time.time_ns() - stat.st_mtime_ns < RACY_SECONDS * 10**9:
            identity.append(sha256_file(path))
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read it ({err.strerror})") from None
    return identity


def unchanged(recorded: list[Any], path: str) -> bool:
    """Whether the file at ``path`` still has the ``recorded`` identity (``file_identity``)."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    if [stat.st_size, stat.st_mtime_ns] != recorded[:2]:
        return False
    return len(recorded) == 2 or sha256_file(Path(path)) == recorded[2]


def plan_corpus(spec: TaskSpec) -> Corpus:
    """The task's corpus as units (see the module doc); files are listed and checked, not read."""
    check_format(spec)
    splits = corpus_splits(spec) if spec.format != "embedded" else ["train", "validation"]
    reading = _reading(spec)
    fingerprint = {"format": spec.format, "unit_bytes": UNIT_BYTES, "unit_rows": UNIT_ROWS,
                   "val_fraction": spec.val_fraction}  # fmt: skip
    if spec.format in ("hub", "embedded"):
        return _row_corpus(spec, reading, splits, fingerprint)
    paths = {split: split_paths(spec, split) for split in splits}
    files = {str(p): file_identity(p) for ps in paths.values() for p in ps}
    fingerprint |= {"fields": reading.fields, "encoding": reading.options.get("encoding", "utf-8"),
                    "files": {s: [str(p) for p in ps] for s, ps in paths.items()}}  # fmt: skip
    encoding = str(reading.options.get("encoding", "utf-8"))
    if spec.format in ("text", *_LINE_FORMATS) and not _ascii_compatible(encoding):
        raise DataFormatError(
            f"task {spec.name!r}: task.options.encoding={encoding!r} is not ASCII-compatible; a corpus "
            "is read in pieces cut at ASCII bytes (UTF-8 and single-byte codecs such as cp1252 are)"
        )

    def units(skip: int) -> Iterator[Unit]:
        return islice(_file_units(spec, paths), skip, None)

    return Corpus(reading, fingerprint, files, units)


def _reading(spec: TaskSpec) -> Reading:
    fmt = FILE_FORMATS.get(spec.format)
    fields = {**((fmt and fmt.fields) or {}), **spec.fields_or_defaults}
    options = {**((fmt and fmt.options) or {}), **spec.options}
    check_fields(spec, fields)
    return Reading(spec, fields, options)


def _ascii_compatible(encoding: str) -> bool:
    try:
        return "\n a".encode(encoding) == b"\n a" and not encoding.lower().startswith(("utf-16", "utf-32"))
    except LookupError:
        raise DataFormatError(f"unknown encoding {encoding!r} (task.options.encoding)") from None


def _file_units(spec: TaskSpec, paths: dict[str, list[Path]]) -> Iterator[Unit]:
    has_validation = "validation" in paths
    data_dir = Path(str(spec.data_dir)).expanduser()
    single = spec.format == "text" and not has_validation and len(paths["train"]) == 1
    for split, files in paths.items():
        output = ("train" if split == "train" else "val") if has_validation else None
        for path in files:
            size = path.stat().st_size
            if single:
                with open(path, "rb") as f:
                    target = size - int(spec.val_fraction * size)
                    cut = safe_cut(f, target, size)
                    cut = cut if cut < size else last_safe_cut(f, target)
                if 0 < cut < size:
                    yield from _text_units(split, "train", path, 0, cut, starts=True, ends=False)
                    yield from _text_units(split, "val", path, cut, size, starts=False, ends=True)
                elif size:  # nowhere to cut: all of it is train, and the empty val split is reported
                    yield from _text_units(split, "train", path, 0, size, True, True)
            elif spec.format == "text":
                if output is None:
                    relative = path.relative_to(data_dir).as_posix() if path.is_relative_to(data_dir) else path.name
                    held = is_held_out(relative, spec.val_fraction)
                yield from _text_units(split, output or ("val" if held else "train"), path, 0, size, True, True)
            elif spec.format in _LINE_FORMATS:
                yield from _line_units(split, output, path, size)
            elif spec.format == "parquet":
                yield from (Unit(split, output, str(path), g, g + 1) for g in range(_row_groups(path)))
            else:  # a JSON array is read whole
                yield Unit(split, output, str(path), 0, size)


def _row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_row_groups
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path} is not a readable Parquet file ({err})") from None


def _line_units(split: str, output: str | None, path: Path, size: int) -> Iterator[Unit]:
    with open(path, "rb") as f:
        start = 0
        while start < size:
            end = min(size, start + UNIT_BYTES)
            if end < size:
                f.seek(end)
                while (block := f.read(1 << 16)) and (newline := block.find(b"\n")) < 0:
                    end += len(block)
                end = min(size, end + newline + 1) if block else size
            yield Unit(split, output, str(path), start, end)
            start = end


def _text_units(split: str, output: str, path: Path, lo: int, hi: int, starts: bool, ends: bool) -> Iterator[Unit]:
    with open(path, "rb") as f:
        start = lo
        while True:
            end = safe_cut(f, start + UNIT_BYTES, hi) if start + UNIT_BYTES < hi else hi
            yield Unit(split, output, str(path), start, end, starts and start == lo, ends and end == hi)
            if end >= hi:
                return
            start = end


def _row_corpus(spec: TaskSpec, reading: Reading, splits: list[str], fingerprint: dict[str, Any]) -> Corpus:
    source = document_source(spec)
    documents: dict[str, Any] | None = None

    def units(skip: int) -> Iterator[Unit]:
        nonlocal documents
        documents = documents or source.load()[0]
        has_validation = "validation" in documents
        index = 0
        for split in splits:
            output = ("train" if split == "train" else "val") if has_validation else None
            docs = documents[split]
            for first in range(0, len(docs), UNIT_ROWS):
                if index >= skip:
                    rows = docs[first : first + UNIT_ROWS]
                    yield Unit(split, output, texts=tuple(rows["text"] if isinstance(rows, dict) else rows))
                index += 1

    return Corpus(reading, fingerprint | {"source": source.fingerprint}, {}, units)


# ----------------------------------------------------------------------------- in a worker


class UnitError(Exception):
    """A unit's data is malformed: ``message`` names ``line``, counted from the unit's first byte,
    as ``<path>, line <line>``; the caller, who can count the lines before it, makes it absolute."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(line, message)
        self.line, self.message = line, message


# (output "train"/"val", text, starts a document, ends a document)
Piece = tuple[str, str, bool, bool]


def unit_pieces(reading: Reading, unit: Unit) -> tuple[list[Piece], int]:
    """The documents (or, for ``text``, the piece of one) of ``unit``, each with its output split,
    and the blank lines skipped reading it."""
    spec = reading.spec
    val_fraction = spec.val_fraction

    def route(text: str) -> str:
        return unit.output or ("val" if is_held_out(text, val_fraction) else "train")

    if unit.path is None:
        return [(route(text), text, True, True) for text in unit.texts], 0
    path = Path(unit.path)
    if spec.format == "parquet":
        raw = read_parquet(spec, path, reading.fields, reading.options, row_group=unit.start)
        return [(route(e["text"]), e["text"], True, True) for e in raw.examples], 0
    with open(path, "rb") as f:
        f.seek(unit.start)
        data = f.read(unit.end - unit.start)
    encoding = str(reading.options.get("encoding", "utf-8"))
    try:
        text = decode_bytes(data, path, encoding, describe(spec.format), file_start=unit.start == 0)
        if spec.format == "text":
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            return [(unit.output, text, unit.starts_document, unit.ends_document)], 0
        raw = FILE_FORMATS[spec.format].reader(spec, path, text, reading.fields, reading.options)
    except DataFormatError as err:
        found = str(err).removeprefix(f"{path}, line ")
        if found == str(err) or unit.start == 0:  # no line, or counted from the file's start
            raise
        line = int(found.split(":", 1)[0].split(" ", 1)[0])
        raise UnitError(line, str(err)) from None
    return [(route(e["text"]), e["text"], True, True) for e in raw.examples], raw.blank_lines


@dataclass
class Encoded:
    """A unit's tokens per output split (``EOT_ID`` after each document) and its blank lines skipped."""

    tokens: dict[str, np.ndarray]
    blank_lines: int


def encode_unit(reading: Reading, unit: Unit) -> Encoded:
    """``unit``'s documents as tokens; a blank document adds nothing (it would be a lone EOT)."""
    pieces, blank_lines = unit_pieces(reading, unit)
    parts: dict[str, list[np.ndarray]] = {output: [] for output in OUTPUTS}
    for output, text, starts, ends in pieces:
        if starts and ends and (not text or text.isspace()):
            continue
        parts[output].append(encode(text))
        if ends:
            parts[output].append(EOT_TOKENS)
    tokens = {o: np.concatenate(p) if p else np.zeros(0, TOKEN_DTYPE) for o, p in parts.items()}
    return Encoded(tokens, blank_lines)
