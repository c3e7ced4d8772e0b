"""Reading and tokenizing the units of a corpus (``gptlab.data.corpus_units``), in order, in worker
processes or threads or here.

A worker reads its unit itself (``unit_bytes``), splits it into documents (``unit_pieces``: the
format's reader, or for ``lines``/``jsonl`` units whose every record is well formed a lean path
with the same result) and encodes them (``encode_unit``). ``encode_from`` hands the units out,
at most ``2 * num_proc`` in flight, and yields the results in unit order; a malformed record's
error names its line counted from the start of its file.
"""

from __future__ import annotations

import functools
import gc
import json
import multiprocessing
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.data.corpus_units import OUTPUTS, LINE_FORMATS, Corpus, Reading, Unit, held_out
from gptlab.data.sources import describe
from gptlab.data.sources.base import DataFormatError, Raw, decode_bytes, encoding_of, numbered_lines
from gptlab.data.sources.files import FILE_FORMATS, read_parquet
from gptlab.data.tokenize import EOT_TOKENS, TOKEN_DTYPE, encode


class UnitError(Exception):
    """A unit's data is malformed: ``message`` names ``line``, counted from the unit's first byte,
    as ``<path>, line <line>``; the caller, who can count the lines before it, makes it absolute."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(line, message)
        self.line, self.message = line, message


# (output "train"/"val", text, starts a document, ends a document)
Piece = tuple[str, str, bool, bool]


def unit_bytes(reading: Reading, unit: Unit) -> bytes | None:
    """The bytes of a file that ``unit`` reads (None for a Parquet row group or rows of texts)."""
    if unit.path is None or reading.spec.format == "parquet":
        return None
    with open(unit.path, "rb") as f:
        f.seek(unit.start)
        return f.read(unit.end - unit.start)


def digest_of(data: bytes | None) -> str | None:
    """What a step records of a unit's bytes, to keep its shards when another part of its file changes
    (a check against edits, not against an adversary: crc32 and length, four times faster than sha256)."""
    return None if data is None else f"{zlib.crc32(data):08x}{len(data):016x}"


def unit_pieces(reading: Reading, unit: Unit, data: bytes | None = None) -> tuple[list[Piece], int]:
    """The documents (or, for ``text``, the piece of one) of ``unit``, each with its output split,
    and the blank lines skipped reading it; ``data``: its ``unit_bytes``, when already read."""
    spec = reading.spec

    def documents(texts: list[str]) -> list[Piece]:
        if unit.output is not None:
            return [(unit.output, text, True, True) for text in texts]
        held = held_out(texts, spec.val_fraction, unit.whole_corpus)
        return [("val" if h else "train", text, True, True) for text, h in zip(texts, held)]

    if unit.path is None:
        return documents(list(unit.texts)), 0
    path = Path(unit.path)
    if spec.format == "parquet":
        raw = read_parquet(spec, path, reading.fields, reading.options, row_group=unit.start)
        return documents([e["text"] for e in raw.examples]), 0
    data = unit_bytes(reading, unit) if data is None else data
    assert data is not None
    encoding = encoding_of(reading.options)
    try:
        text = decode_bytes(data, path, encoding, describe(spec.format), file_start=unit.start == 0)
        if spec.format == "text":
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            return [(unit.output, text, unit.starts_document, unit.ends_document)], 0
        if (fast := _line_documents(spec.format, reading.fields["text"], text)) is not None:
            return documents(fast[0]), fast[1]
        raw = FILE_FORMATS[spec.format].reader(spec, path, text, reading.fields, reading.options)
    except DataFormatError as err:
        found = str(err).removeprefix(f"{path}, line ")
        if found == str(err) or unit.start == 0:  # no line, or counted from the file's start
            raise
        line = int(found.split(":", 1)[0].split(" ", 1)[0])
        raise UnitError(line, str(err)) from None
    return documents([e["text"] for e in raw.examples]), raw.blank_lines


def _line_documents(fmt: str, key: Any, text: str) -> tuple[list[str], int] | None:
    """The documents and blank lines of a ``lines`` or ``jsonl`` unit whose every record is well
    formed (a JSON object with a string at top-level ``key``), as the format's reader gives them but
    without its per-record bookkeeping (a tenth of a build's time goes to reading); None for any
    other unit, which the reader then reads and reports on."""
    if fmt not in LINE_FORMATS or not isinstance(key, str):  # a list of keys is joined by the reader
        return None
    counted = Raw("")  # its blank_lines, as the readers count them
    kept = [line for _, line in numbered_lines(text, counted, whitespace_is_blank=True)]
    if fmt == "lines":
        return kept, counted.blank_lines
    try:
        records = [json.loads(line) for line in kept]
    except (ValueError, RecursionError):
        return None
    docs = [record.get(key) if isinstance(record, dict) else None for record in records]
    if not all(isinstance(doc, str) for doc in docs):
        return None
    return docs, counted.blank_lines


@dataclass
class Encoded:
    """A unit's tokens per output split (``EOT_ID`` after each document), its blank lines skipped
    and the ``digest_of`` its bytes."""

    tokens: dict[str, np.ndarray]
    blank_lines: int
    digest: str | None


def encode_unit(reading: Reading, unit: Unit) -> Encoded:
    """``unit``'s documents as tokens; a blank document adds nothing (it would be a lone EOT)."""
    data = unit_bytes(reading, unit)
    pieces, blank_lines = unit_pieces(reading, unit, data)
    parts: dict[str, list[np.ndarray]] = {output: [] for output in OUTPUTS}
    for output, text, starts, ends in pieces:
        if starts and ends and (not text or text.isspace()):
            continue
        parts[output].append(encode(text))
        if ends:
            parts[output].append(EOT_TOKENS)
    # one narrowing per unit rather than per document
    tokens = {o: np.concatenate(p).astype(TOKEN_DTYPE) if p else np.zeros(0, TOKEN_DTYPE) for o, p in parts.items()}
    return Encoded(tokens, blank_lines, digest_of(data))


# ----------------------------------------------------------------------------- handing units out


_worker_reading: Reading | None = None  # a worker's task, given once rather than with every unit


def _start_worker(reading: Reading) -> None:
    global _worker_reading
    _worker_reading = reading


def _encode_in_worker(unit: Unit) -> Encoded:
    assert _worker_reading is not None
    return encode_unit(_worker_reading, unit)


def _encoded(
    reading: Reading, units: Iterator[Unit], num_proc: int, on_threads: bool
) -> Iterator[tuple[Unit, Encoded]]:
    """Each unit with its tokens, in unit order, encoded in ``num_proc`` processes (threads of this
    process when ``on_threads``; here when 1)."""
    if num_proc <= 1:
        for unit in units:
            yield unit, encode_unit(reading, unit)
        return
    pool: Executor
    if on_threads:
        pool = ThreadPoolExecutor(num_proc)
    else:
        # fork: workers start at once and share the tokenizer already loaded; they use no threads.
        # Frozen, the objects they inherit are skipped by their garbage collector, whose passes
        # would otherwise write to (and so copy) every inherited page over a long build.
        gc.freeze()
        pool = ProcessPoolExecutor(
            num_proc, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker, initargs=(reading,)
        )
    encode = functools.partial(encode_unit, reading) if on_threads else _encode_in_worker
    try:
        pending: deque = deque()
        for unit in units:
            pending.append((unit, pool.submit(encode, unit)))
            if len(pending) >= 2 * num_proc:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(cancel_futures=True)
        if not on_threads:
            gc.unfreeze()


def _lines_before(path: str, offset: int) -> int:
    count = 0
    with open(path, "rb") as f:
        while offset > 0 and (block := f.read(min(offset, 1 << 20))):
            count += block.count(b"\n")
            offset -= len(block)
    return count


def encode_from(corpus: Corpus, first: int, num_proc: int, count: int | None = None) -> Iterator[tuple[Unit, Encoded]]:
    """``_encoded`` of the units from index ``first`` on (``count`` of them, or all), a malformed
    unit's error naming its line counted from the start of its file."""
    done = 0
    try:
        units = islice(corpus.units(first), count)
        for done, pair in enumerate(_encoded(corpus.reading, units, num_proc, corpus.on_threads), 1):
            yield pair
    except UnitError as err:
        # results come in unit order: the failing unit is the one after the last encoded
        failed = next(corpus.units(first + done))
        path = str(failed.path)
        line = _lines_before(path, failed.start) + err.line
        raise DataFormatError(err.message.replace(f"{path}, line {err.line}", f"{path}, line {line}", 1)) from None
