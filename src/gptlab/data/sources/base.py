"""What every reader shares: the error type, where a record came from, one text decoding, lines."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from collections.abc import Mapping
from typing import Any, NamedTuple


# A label or answer written as an integer (GLUE's 0/1, COPA's 1/2)
INTEGER = re.compile(r"-?[0-9]+")


class DataFormatError(ValueError):
    """Task data that cannot be read as its spec says; the message names the file and line."""


class Loc(NamedTuple):
    """Where a record came from, for error messages: ``<source>, <unit> <number>``."""

    source: str
    unit: str
    number: int

    def __str__(self) -> str:
        return f"{self.source}, {self.unit} {self.number}"


@dataclasses.dataclass
class Raw:
    """One split as read: examples whose class labels / NER tags are still as written."""

    source: str
    examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    locs: list[Loc] = dataclasses.field(default_factory=list)
    tags_on_lines: bool = False  # CoNLL: a sentence's i-th tag is on line loc.number + i
    blank_lines: int = 0  # skipped (see the skip policy in gptlab.data.sources)

    def add(self, example: dict[str, Any], loc: Loc) -> None:
        self.examples.append(example)
        self.locs.append(loc)

    def extend(self, other: Raw) -> None:
        """Append the records of ``other`` (the next file of the same split)."""
        self.examples += other.examples
        self.locs += other.locs
        self.tags_on_lines = self.tags_on_lines or other.tags_on_lines
        self.blank_lines += other.blank_lines


def encoding_of(options: Mapping[str, Any]) -> str:
    """The text encoding a task's ``options`` name (``task.options.encoding``), UTF-8 by default."""
    return str(options.get("encoding", "utf-8"))


def decode(path: Path, encoding: str, expected: str) -> str:
    """The text of ``path`` in ``encoding`` (``task.options.encoding``), a leading UTF-8 BOM dropped.

    A byte that does not decode is a ``DataFormatError`` naming the file, the line of the first
    bad byte and the option; ``expected`` describes the format for that message.
    """
    return decode_bytes(path.read_bytes(), path, encoding, expected)


def decode_bytes(data: bytes, path: Path, encoding: str, expected: str, file_start: bool = True) -> str:
    """``data``, bytes of ``path`` (its start when ``file_start``, where a UTF-8 BOM is dropped), as
    ``decode`` reads them; an error names the line counted from the start of ``data``."""
    utf8 = is_utf8(encoding)
    # utf-8-sig: MRPC's leading BOM is not part of the first column
    codec = "utf-8-sig" if utf8 and file_start else "utf-8" if utf8 else encoding
    try:
        return data.decode(codec)
    except LookupError:
        raise DataFormatError(f"{path}: unknown encoding {encoding!r} (task.options.encoding)") from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            f"{path}, line {line}: bytes {data[err.start:err.end]!r} are not "
            f"{'UTF-8' if utf8 else encoding} ({err.reason}); "
            f"if the file is in another encoding, name it in task.options.encoding (e.g. cp1252); "
            f"expected {expected}"
        ) from None


def is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8")


def lines(text: str) -> list[str]:
    """The lines of ``text``, a trailing CR dropped from each (CRLF files read as LF ones)."""
    # split("\n"), not splitlines(): the latter also breaks at \x0b, \x1c, \u2028 ... inside text.
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def numbered_lines(text: str, raw: Raw, whitespace_is_blank: bool) -> list[tuple[int, str]]:
    """(line number, line) of the non-blank lines; counts the blank ones in ``raw.blank_lines``.

    A line of spaces is blank only where whitespace means nothing (JSON, a corpus of lines); in a
    TSV it is a row.
    """
    found = lines(text)
    if found[-1] == "":  # the file's final newline ends no blank line
        found.pop()
    # `line and not line.isspace()`: strip() would copy every line to test it
    kept = [(n, line) for n, line in enumerate(found, 1) if line and not (whitespace_is_blank and line.isspace())]
    raw.blank_lines += len(found) - len(kept)
    return kept
