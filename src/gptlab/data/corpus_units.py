"""An ``lm`` task's corpus as a fixed sequence of work units, and what one unit holds.

A **unit** is a piece of the corpus small enough to read, decode and tokenize in one go: a byte
range of a ``text``, ``lines`` or ``jsonl`` file (about ``UNIT_BYTES``, less for a small corpus; cut
at a line end, or for ``text`` at a ``safe_cut``, so a long document is encoded in pieces with the
ids of the whole), a
Parquet row group, a whole ``json`` file (a JSON array cannot be cut), or ``UNIT_ROWS`` documents of
a Hub dataset or the embedded corpus. The units depend only on the corpus, never on how many
processes encode them, so a cache built with any ``num_proc`` is the same. A worker process reads
its unit itself (``unit_pieces``); only the Hub's and the embedded corpus's rows come from the main
process.

**Splits.** Where the task names a ``validation`` split, its documents are the ``val`` tokens.
Otherwise ``val_fraction`` of the documents are held out by ``held_out``: a hash of the
document's text (its length and head; its file name for ``text``, where a document is a file), so
the held-out set is fixed by the corpus alone (not the run's seed, not the order of the files, not
their number), a duplicated document is never on both sides, and it is decided while streaming. A
corpus read in one unit (or a few ``text`` files) that this leaves without a held-out document
holds out the one with the smallest hash. A corpus of one ``text`` file holds out its last
``val_fraction`` of bytes instead, from the nearest safe cut on (the first after that point, or
else the last before it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from gptlab.data.sources import check_format, split_paths
from gptlab.data.sources.base import DataFormatError, encoding_of
from gptlab.data.sources.documents import corpus_splits, document_source, sha256_file
from gptlab.data.sources.files import FILE_FORMATS
from gptlab.data.sources.records import check_fields
from gptlab.data.tokenize import last_safe_cut, safe_cut
from gptlab.tasks.spec import TaskSpec

UNIT_BYTES = 4 * 2**20
# A corpus of less than 128 MiB is cut into 32 units of at least 64 KiB, so its few units still
# spread over the processes; and below THREADS_BELOW_BYTES it is encoded on threads of the main
# process (tiktoken releases the GIL) rather than paying for starting processes.
MIN_UNIT_BYTES, SMALL_CORPUS_UNITS = 2**16, 32
THREADS_BELOW_BYTES = 64 * 2**20
UNIT_ROWS = 4096
RACY_SECONDS = 2
OUTPUTS = ("train", "val")
# Formats whose files are cut into byte ranges at line ends; ``text`` is cut at safe cuts.
LINE_FORMATS = ("lines", "jsonl")


HASHED_CHARS = 256


def document_hash(key: str) -> int:
    """A 64-bit hash of a document's ``key`` (its text, or a ``text`` file's name): of its length and
    first ``HASHED_CHARS`` characters, which tell documents apart at a constant cost per document."""
    head = f"{len(key)}:{key[:HASHED_CHARS]}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(head).digest()[:8], "big")  # sha256: the fastest hashlib here


def held_out(keys: list[str], val_fraction: float, whole_corpus: bool) -> list[bool]:
    """Which of the documents with ``keys`` are held out: those whose hash is below ``val_fraction`` of
    the range, so about that share of them. When ``keys`` are the whole corpus and that holds out
    none of two or more, the one with the smallest hash is (a small corpus still gets a val split)."""
    hashes = [document_hash(key) for key in keys]
    held = [h < val_fraction * 2**64 for h in hashes]
    candidates = [(h, i) for i, (h, key) in enumerate(zip(hashes, keys)) if key.strip()]  # blank: no tokens
    if whole_corpus and len(candidates) > 1 and not any(held):
        held[min(candidates)[1]] = True
    return held


@dataclass(frozen=True)
class Unit:
    """One work unit (see the module doc)."""

    split: str  # the corpus split it reads ("train"/"validation"): where its blank lines count
    output: str | None  # "train"/"val", or None: each document by held_out
    path: str | None = None  # the file it reads (None: texts)
    start: int = 0  # first byte, or the Parquet row group
    end: int = 0  # end byte, or the row group + 1
    starts_document: bool = True  # format text: the file's document starts / ends in this unit
    ends_document: bool = True
    texts: tuple[str, ...] = ()  # rows read by the main process
    whole_corpus: bool = False  # the corpus's only unit (see held_out)


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
    on_threads: bool = False  # small enough to encode on threads (THREADS_BELOW_BYTES)


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
    if spec.format == "mixture":
        raise DataFormatError(
            f"task {spec.name!r} is a mixture of corpora, each read as its own task; name one of its sources "
            f"({', '.join(name for name, _, _ in spec.mixture_sources())}) instead"
        )
    splits = corpus_splits(spec) if spec.format != "embedded" else ["train", "validation"]
    reading = _reading(spec)
    fingerprint = {"format": spec.format, "unit_rows": UNIT_ROWS, "val_fraction": spec.val_fraction}
    if spec.format in ("hub", "embedded"):
        return _row_corpus(spec, reading, splits, fingerprint)
    paths = {split: split_paths(spec, split) for split in splits}
    files = {str(p): file_identity(p) for ps in paths.values() for p in ps}
    sizes = {p: files[str(p)][0] for ps in paths.values() for p in ps}  # as planned, even if a file grows
    unit_bytes = min(UNIT_BYTES, max(MIN_UNIT_BYTES, sum(sizes.values()) // SMALL_CORPUS_UNITS))
    encoding = encoding_of(reading.options)
    fingerprint |= {"fields": reading.fields, "encoding": encoding, "unit_bytes": unit_bytes,
                    "files": {s: [str(p) for p in ps] for s, ps in paths.items()}}  # fmt: skip
    if spec.format in ("text", *LINE_FORMATS) and not _ascii_compatible(encoding):
        raise DataFormatError(
            f"task {spec.name!r}: task.options.encoding={encoding!r} is not ASCII-compatible; a corpus "
            "is read in pieces cut at ASCII bytes (UTF-8 and single-byte codecs such as cp1252 are)"
        )

    def units(skip: int) -> Iterator[Unit]:
        return islice(_marking_a_whole_corpus(_file_units(spec, paths, sizes, unit_bytes)), skip, None)

    return Corpus(reading, fingerprint, files, units, on_threads=sum(sizes.values()) < THREADS_BELOW_BYTES)


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


def _file_units(
    spec: TaskSpec, paths: dict[str, list[Path]], sizes: dict[Path, int], unit_bytes: int
) -> Iterator[Unit]:
    has_validation = "validation" in paths
    single = spec.format == "text" and not has_validation and len(paths["train"]) == 1
    if spec.format == "text" and not has_validation:  # a document is a file: held out by its name
        data_dir = Path(str(spec.data_dir)).expanduser()
        names = [p.relative_to(data_dir).as_posix() if p.is_relative_to(data_dir) else p.name for p in paths["train"]]
        held = held_out(names, spec.val_fraction, whole_corpus=True)
        outputs = {path: "val" if h else "train" for path, h in zip(paths["train"], held)}
    for split, files in paths.items():
        output = ("train" if split == "train" else "val") if has_validation else None
        for path in files:
            size = sizes[path]
            if single:
                with open(path, "rb") as f:
                    target = size - int(spec.val_fraction * size)
                    cut = safe_cut(f, target, size)
                    cut = cut if cut < size else last_safe_cut(f, target)
                if 0 < cut < size:
                    yield from _text_units(split, "train", path, 0, cut, unit_bytes, starts=True, ends=False)
                    yield from _text_units(split, "val", path, cut, size, unit_bytes, starts=False, ends=True)
                elif size:  # nowhere to cut: all of it is train, and the empty val split is reported
                    yield from _text_units(split, "train", path, 0, size, unit_bytes, True, True)
            elif spec.format == "text":
                yield from _text_units(split, output or outputs[path], path, 0, size, unit_bytes, True, True)
            elif spec.format in LINE_FORMATS:
                yield from _line_units(split, output, path, size, unit_bytes)
            elif spec.format == "parquet":
                yield from (Unit(split, output, str(path), g, g + 1) for g in range(_row_groups(path)))
            else:  # a JSON array is read whole
                yield Unit(split, output, str(path), 0, size)


def _marking_a_whole_corpus(units: Iterator[Unit]) -> Iterator[Unit]:
    """``units``, the first marked ``whole_corpus`` when it is the only one and splits by document."""
    first = next(units, None)
    if first is None:
        return
    second = next(units, None)
    yield dataclasses.replace(first, whole_corpus=second is None and first.output is None)
    if second is not None:
        yield second
        yield from units


def _row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_row_groups
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path} is not a readable Parquet file ({err})") from None


def _line_units(split: str, output: str | None, path: Path, size: int, unit_bytes: int) -> Iterator[Unit]:
    with open(path, "rb") as f:
        start = 0
        while start < size:
            end = min(size, start + unit_bytes)
            if end < size:
                f.seek(end)
                while (block := f.read(1 << 12)) and (newline := block.find(b"\n")) < 0:
                    end += len(block)
                end = min(size, end + newline + 1) if block else size
            yield Unit(split, output, str(path), start, end)
            start = end


def _text_units(
    split: str, output: str, path: Path, lo: int, hi: int, unit_bytes: int, starts: bool, ends: bool
) -> Iterator[Unit]:
    with open(path, "rb") as f:
        start = lo
        while True:
            end = safe_cut(f, start + unit_bytes, hi) if start + unit_bytes < hi else hi
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
            for rows in _row_batches(documents[split]):
                if index >= skip:
                    yield Unit(split, output, texts=rows())
                index += 1

    def marked(skip: int) -> Iterator[Unit]:
        return _marking_a_whole_corpus(units(0)) if skip == 0 else units(skip)  # skipping reads no rows

    # the embedded corpus is a list already in memory; a Hub corpus may be of any size
    return Corpus(reading, fingerprint | {"source": source.fingerprint}, {}, marked, on_threads=spec.format == "embedded")


def _row_batches(docs: Any) -> Iterator[Callable[[], tuple[str, ...]]]:
    """Batches of ``UNIT_ROWS`` documents of a list, a Hub dataset or a streamed one, each as a
    function that reads it (so batches skipped on a resume are not read, where that can be)."""
    if hasattr(docs, "__len__"):  # a list or a Dataset: sliced
        for first in range(0, len(docs), UNIT_ROWS):
            yield lambda first=first: tuple(_texts(docs[first : first + UNIT_ROWS]))
        return
    rows = iter(docs)  # an IterableDataset: read in order, whether the batch is wanted or not
    while batch := tuple(row["text"] for row in islice(rows, UNIT_ROWS)):
        yield lambda batch=batch: batch


def _texts(rows: Any) -> list[str]:
    return rows["text"] if isinstance(rows, dict) else rows
