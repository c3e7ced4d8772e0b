"""Raw-text pre-training data: task spec -> documents -> cached uint16 token files -> (x, y) windows.

**Source.** An ``lm`` task (``tasks/*.yaml``) names its documents by ``format`` (see ``FORMATS``)
plus ``data_dir`` and ``files`` (split -> file name or glob, or a list of them; splits ``train`` and
optionally ``validation``), or by ``hub`` (``datasets.load_dataset`` arguments) when it has no
local files. Without a validation split, ``val_fraction`` of the documents (after a shuffle with a
fixed seed, so every run is evaluated on the same text) is held out; a single document
(tinyshakespeare) gives its last ``val_fraction`` of tokens instead.

**Cache.** Every document is tokenized once (GPT-2 BPE, ``EOT_ID`` after each) and a split's tokens
are stored as one uint16 file in ``cache_dir``, named by the sha256 of the source content, the
tokenizer and ``CACHE_VERSION``. A JSON sidecar records the token count and the sha256 of the
token bytes; a file that disagrees with it is rebuilt, never read. The train sidecar also keeps
the blank lines skipped per source split (``lines``/``jsonl`` files), so a run served from the cache
reports them as a run that read the files does.

**Train stream.** The train tokens are cut into ``N`` non-overlapping windows of ``block_size + 1``
tokens at stride ``block_size`` (``x = w[:-1]``, ``y = w[1:]``). The stream is endless: global
sample position ``p`` reads window ``perm_e[p % N]`` with ``e = p // N`` and ``perm_e`` a permutation
seeded by ``(seed, e)``, so each window is seen once per data epoch. Under DDP rank ``r`` of ``W``
takes positions ``begin + r, begin + r + W, ...``. A fit reads the slice ``[start_sample,
start_sample + length)`` of the stream as one Lightning epoch (see ``TextDataModule.set_stream``);
the datamodule's ``state_dict`` records how far training got, so a resumed fit continues the
stream exactly where the checkpoint was taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from gptlab.atomic import write_atomic
from gptlab.data.corpus import demo_corpus_documents
from gptlab.data.formats import DataFormatError
from gptlab.data.tokenizer import EOT_ID, get_tokenizer

log = logging.getLogger(__name__)

# Bump when the token files this module writes would change for the same source.
CACHE_VERSION = 2
FORMATS = {
    "text": "one UTF-8 document per file; CRLF/CR line endings become LF",
    "lines": "one UTF-8 document per non-empty line",
    "jsonl": "one JSON object per line, document in field text_field",
    "json": "a JSON array of objects (or JSON lines), document in field text_field",
    "parquet": "a Parquet table, document in column text_field",
    "embedded": "Python's own documentation (gptlab.data.corpus); needs no files",
}
SPLITS = ("train", "validation")
# The held-out documents must not depend on the run's seed, or runs could not be compared.
SPLIT_SEED = 0
# A hub dataset larger than this is tokenized by datasets.map, batch by batch in worker processes,
# rather than read into memory whole and encoded on threads (which is faster where it fits).
IN_MEMORY_MAX_BYTES = 256 * 2**20
# Where a document may be cut for parallel encoding without changing its ids: between a character
# that is not whitespace and one that is (see _cut_points). Both classes are chosen so that no
# Unicode definition disagrees (Python's isspace and the Rust regex's \s differ on a few control
# characters): letters, digits, "_" and printable ASCII before; ASCII whitespace after.
_CUT = re.compile(r"[\w!-~](?=[\t\n\v\f\r ])")
# Parallel encoding splits the text into this many units per thread (at least MIN_UNIT_CHARS
# each), so a thread slowed by other load on the machine takes fewer of them.
UNITS_PER_THREAD = 8
MIN_UNIT_CHARS = 2**16
TOKEN_DTYPE = np.uint16  # GPT-2 ids (< 50304) fit; half the disk and page cache of int32
_EOT_ARRAY = np.array([EOT_ID], dtype=np.uint32)  # tiktoken's numpy dtype
_UNSAFE_FILENAME_CHARS = re.compile(r"[^\w.-]")


@dataclass(frozen=True)
class TextTask:
    """The part of an ``lm`` task spec this module reads."""

    name: str
    format: str
    data_dir: Path | None
    files: dict[str, list[str]]
    text_field: str
    hub: Mapping[str, Any] | None
    val_fraction: float

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TextTask:
        name = str(spec["name"])
        if spec.get("kind", "lm") != "lm":
            raise ValueError(f"task {name!r}: TextDataModule reads kind 'lm' tasks, not {spec['kind']!r}")
        fmt = spec.get("format", "text")
        if fmt not in FORMATS:
            raise ValueError(f"task {name!r}: unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
        files = spec.get("files") or {}
        if not isinstance(files, Mapping):  # a bare name or list means the train split
            files = {"train": files}
        # a split set to null is absent (`task.files.validation=null`: hold out val_fraction)
        files = {split: f for split, f in files.items() if f is not None}
        if unknown := sorted(set(files) - set(SPLITS)):
            raise ValueError(
                f"task {name!r}: unknown split(s) {unknown} in files; valid splits: {', '.join(SPLITS)}"
            )
        val_fraction = float(spec.get("val_fraction", 0.1))
        if not 0 < val_fraction < 1:
            raise ValueError(f"task {name!r}: val_fraction must be in (0, 1), got {val_fraction}")
        return cls(
            name=name,
            format=fmt,
            data_dir=Path(spec["data_dir"]).expanduser() if spec.get("data_dir") is not None else None,
            files={split: [f] if isinstance(f, str) else [str(x) for x in f] for split, f in files.items()},
            text_field=str(spec.get("text_field", "text")),
            hub=spec.get("hub"),
            val_fraction=val_fraction,
        )

    def describe(self) -> str:
        return f"format {self.format!r}: {FORMATS[self.format]}"


# A split's documents: a list of texts (local files, read whole), or a hub dataset (column "text").
Documents = list[str] | datasets.Dataset


@dataclass(frozen=True)
class _Source:
    fingerprint: Any  # JSON-able; equal fingerprints mean equal documents
    # (split -> its documents, split -> blank lines of its files skipped while reading them)
    load: Callable[[], tuple[dict[str, Documents], dict[str, int]]]


# ----------------------------------------------------------------------------- reading documents


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _decode(task: TextTask, path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # -sig: a leading BOM is not text
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            f"task {task.name!r}: {path} is not valid UTF-8: line {line} has bytes {data[err.start:err.end]!r} "
            f"({err.reason}); convert the file (e.g. iconv -f cp1252 -t utf-8); {task.describe()}"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _field(task: TextTask, path: Path, record: Any, where: str) -> str:
    value = record.get(task.text_field) if isinstance(record, Mapping) else None
    if not isinstance(value, str):
        raise DataFormatError(f"task {task.name!r}: {path}, {where} has no string field {task.text_field!r}")
    return value


def _json(task: TextTask, path: Path, text: str, line: int = 1) -> Any:
    """``json.loads(text)``; a bad document is a ``DataFormatError`` naming the file line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(
            f"task {task.name!r}: {path}, line {line + err.lineno - 1}: not valid JSON ({err.msg}, column "
            f"{err.colno}); {task.describe()}"
        ) from None
    except RecursionError:  # nested deeper than Python's stack allows
        raise DataFormatError(f"task {task.name!r}: {path}, line {line}: JSON nested too deeply") from None


def _read_parquet(task: TextTask, path: Path) -> list[str]:
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DataFormatError(f"task {task.name!r}: {path} is not a readable Parquet file ({err})") from None
    if task.text_field not in table.column_names:
        raise DataFormatError(
            f"task {task.name!r}: {path} has no column {task.text_field!r} (columns: {table.column_names})"
        )
    return [_field(task, path, row, f"row {n}") for n, row in enumerate(table.to_pylist(), 1)]


def _read_documents(task: TextTask, path: Path) -> tuple[list[str], int]:
    """The documents of one file and the blank lines skipped (only ``lines``/``jsonl`` files have any)."""
    if task.format == "parquet":
        return _read_parquet(task, path), 0
    text = _decode(task, path)
    if task.format == "text":
        return [text], 0
    if task.format == "json" and text.lstrip().startswith("["):
        records = _json(task, path, text)
        return [_field(task, path, record, f"record {n}") for n, record in enumerate(records, 1)], 0
    lines = text.split("\n")
    kept = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if blank := len(lines) - len(kept) - (lines[-1] == ""):  # the file's final newline ends no blank line
        log.info("task %s: %s: skipped %d blank line(s)", task.name, path, blank)
    if task.format == "lines":
        return [line for _, line in kept], blank
    return [_field(task, path, _json(task, path, line, n), f"line {n}") for n, line in kept], blank


def _local_source(task: TextTask) -> _Source:
    assert task.data_dir is not None
    if not task.data_dir.is_dir():
        raise FileNotFoundError(
            f"task {task.name!r}: data_dir '{task.data_dir}' does not exist ({task.describe()})"
        )
    paths: dict[str, list[Path]] = {}
    for split, patterns in task.files.items():
        paths[split] = []
        for pattern in patterns:
            matches = sorted(p for p in task.data_dir.glob(pattern) if p.is_file())
            if not matches:
                raise FileNotFoundError(
                    f"task {task.name!r}: no file matches '{task.data_dir / pattern}' ({task.describe()})"
                )
            paths[split] += matches
    if "train" not in paths:
        raise ValueError(f"task {task.name!r}: files names no 'train' split")
    fingerprint = {
        "format": task.format,
        "text_field": task.text_field,
        "files": {
            s: [[str(p.relative_to(task.data_dir)), _sha256_file(p)] for p in ps] for s, ps in paths.items()
        },
    }

    def load() -> tuple[dict[str, Documents], dict[str, int]]:
        documents, skipped = {}, {}
        for split, ps in paths.items():
            read = [_read_documents(task, p) for p in ps]
            documents[split] = [doc for docs, _ in read for doc in docs]
            skipped[split] = sum(blank for _, blank in read)
        return documents, skipped

    return _Source(fingerprint, load)


def _embedded_source() -> _Source:
    docs = demo_corpus_documents()
    digest = hashlib.sha256("\0".join(docs).encode()).hexdigest()
    return _Source(
        {"format": "embedded", "sha256": digest},
        lambda: ({"train": docs}, {}),
    )


def _hub_source(task: TextTask) -> _Source:
    assert task.hub is not None
    hub, field = task.hub, task.hub.get("text_field", task.text_field)
    wanted = {"train": hub.get("split_train", "train"), "validation": hub.get("split_validation")}
    loaded = {
        split: datasets.load_dataset(hub["path"], hub.get("name"), split=hf_split)
        for split, hf_split in wanted.items()
        if hf_split
    }
    for split, ds in loaded.items():
        if field not in ds.column_names:
            raise ValueError(
                f"task {task.name!r}: hub split {wanted[split]!r} has no column {field!r} ({ds.column_names})"
            )
    fingerprint = {
        "hub": [hub["path"], hub.get("name"), field],
        "splits": {s: ds._fingerprint for s, ds in loaded.items()},
    }

    def load() -> tuple[dict[str, Documents], dict[str, int]]:
        texts = {split: ds.select_columns([field]) for split, ds in loaded.items()}
        if field != "text":
            texts = {split: ds.rename_column(field, "text") for split, ds in texts.items()}
        return texts, {}  # rows are records: there are no lines to skip

    return _Source(fingerprint, load)


def _source(task: TextTask) -> _Source:
    if task.format == "embedded":
        return _embedded_source()
    if task.data_dir is not None and task.files:
        return _local_source(task)
    if task.hub:
        return _hub_source(task)
    raise FileNotFoundError(
        f"task {task.name!r}: no data: data_dir={task.data_dir} files={task.files or None} and no hub source "
        f"({task.describe()})"
    )


# ----------------------------------------------------------------------------- tokenizing


def _cut_points(text: str, every: int) -> list[int]:
    """Positions about ``every`` characters apart where ``text`` can be cut without changing its tokens.

    A cut goes between a non-whitespace character and a whitespace one (``_CUT``). Why the two
    parts then tokenize to exactly the ids of the whole: GPT-2's pre-tokenizer (``GPT2_PATTERN``)
    cuts text into pieces and BPE runs within each piece. Each alternative of the pattern matches
    either no whitespace except an optional leading space (contractions, ``" ?\\p{L}++"``,
    ``" ?\\p{N}++"``, ``" ?[^\\s\\p{L}\\p{N}]++"``) or only whitespace (``"\\s++$"``,
    ``"\\s+(?!\\S)"``, ``"\\s"``), and some alternative matches any character, so the pieces tile
    the text. Let the cut be at ``i``: ``text[i - 1]`` is not whitespace, ``text[i]`` is. No piece
    holds both, because whitespace appears in a non-whitespace piece only as its first character,
    so a piece boundary lies at ``i``. Every piece that starts before ``i`` is matched alike in
    the prefix ``text[:i]``: a non-whitespace alternative stops or fails at ``i`` in both (at
    whitespace in the whole text, at the end in the prefix), and a whitespace run, its look-ahead
    and ``$`` stop at the non-whitespace character at ``i - 1`` or earlier. So the prefix has the
    same pieces as the whole text before
    ``i``; and since the pattern has no look-behind and ``$`` is the same end of text, the suffix
    ``text[i:]`` has the whole text's pieces from ``i`` on.
    """
    cuts, start = [], every
    while start < len(text) and (match := _CUT.search(text, start)):
        cuts.append(match.end())
        start = match.end() + every
    return cuts


def _work_units(texts: list[str], num_threads: int) -> list[list[tuple[str, bool]]]:
    """``texts`` in order as work units for ``num_threads`` threads: lists of (piece, ends a document).

    Short documents are grouped and long ones cut (``_cut_points``), so every thread gets work even
    when the corpus is one long document, and a thread pays one task per unit, not per document.
    """
    unit_chars = max(MIN_UNIT_CHARS, -(-sum(map(len, texts)) // (num_threads * UNITS_PER_THREAD)))
    units: list[list[tuple[str, bool]]] = []
    unit: list[tuple[str, bool]] = []
    size = 0
    for text in texts:
        if len(text) <= unit_chars:  # most documents: whole, without looking for cuts
            pieces = [(text, True)]
        else:
            bounds = [0, *_cut_points(text, unit_chars), len(text)]
            pieces = [(text[start:end], end == len(text)) for start, end in zip(bounds, bounds[1:])]
        for piece in pieces:
            unit.append(piece)
            size += len(piece[0])
            if size >= unit_chars:
                units.append(unit)
                unit, size = [], 0
    if unit:
        units.append(unit)
    return units


def _encode_unit(unit: list[tuple[str, bool]]) -> np.ndarray:
    encode = get_tokenizer().encode_to_numpy  # GIL released while it encodes; no Python ints made
    parts = []
    for piece, ends_document in unit:
        # Nothing allowed or disallowed: a literal "<|endoftext|>" in the text is plain text, as in
        # encode_ordinary.
        parts.append(encode(piece, disallowed_special=()))
        if ends_document:
            parts.append(_EOT_ARRAY)
    return np.concatenate(parts).astype(TOKEN_DTYPE)


def encode_documents(texts: Sequence[str], num_threads: int = 1) -> np.ndarray:
    """``texts`` as one uint16 token array, ``EOT_ID`` after each, encoded on ``num_threads`` threads.

    The ids equal ``encode_ordinary`` of each text in turn; blank texts are skipped (they would
    only add a lone EOT).
    """
    texts = [t for t in texts if t and not t.isspace()]
    if not texts:
        return np.zeros(0, TOKEN_DTYPE)
    units = _work_units(texts, num_threads)
    if num_threads <= 1 or len(units) == 1:
        return np.concatenate([_encode_unit(unit) for unit in units])
    with ThreadPoolExecutor(min(num_threads, len(units))) as pool:
        return np.concatenate(list(pool.map(_encode_unit, units)))


def _encode_batch(batch: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
    # One output row per batch (a batched map may change the row count): fewer, longer Arrow rows.
    return {"ids": [encode_documents(batch["text"])]}


def tokenize_documents(docs: Documents, num_proc: int = 1) -> np.ndarray:
    """All documents (a list, or column ``text`` of a dataset) as one uint16 token array, ``EOT_ID`` after each.

    Text that fits in memory is encoded here on ``num_proc`` threads. A dataset of more than
    ``IN_MEMORY_MAX_BYTES`` (a large hub corpus) streams through ``datasets.map`` instead, batch by
    batch, in ``num_proc`` processes.
    """
    if not isinstance(docs, datasets.Dataset):
        return encode_documents(docs, num_proc)
    if docs.data.nbytes <= IN_MEMORY_MAX_BYTES:
        return encode_documents(docs.with_format("arrow")["text"].to_pylist(), num_proc)
    encoded = docs.map(
        _encode_batch,
        batched=True,
        num_proc=num_proc if num_proc > 1 and len(docs) >= 2 * num_proc else None,
        remove_columns=docs.column_names,
        desc="tokenizing",
    )
    if len(encoded) == 0:  # every document was blank
        return np.zeros(0, TOKEN_DTYPE)
    chunks = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in encoded.data.column("ids").chunks]
    return np.concatenate(chunks).astype(TOKEN_DTYPE, copy=False)


def _subset(docs: Documents, indices: np.ndarray) -> Documents:
    return docs.select(indices) if isinstance(docs, datasets.Dataset) else [docs[i] for i in indices]


def _split_tokens(task: TextTask, splits: dict[str, Documents], num_proc: int) -> dict[str, np.ndarray]:
    """Train and val tokens; the val split is carved out deterministically when the task has none."""
    train = splits["train"]
    if len(train) == 0:
        raise ValueError(f"task {task.name!r}: the corpus is empty (0 documents; {task.describe()})")
    if "validation" in splits:
        return {
            "train": tokenize_documents(train, num_proc),
            "val": tokenize_documents(splits["validation"], num_proc),
        }
    if len(train) == 1:
        tokens = tokenize_documents(train, num_proc)
        cut = len(tokens) - math.ceil(task.val_fraction * len(tokens))
        return {"train": tokens[:cut], "val": tokens[cut:]}
    order = np.random.default_rng(SPLIT_SEED).permutation(len(train))
    n_val = min(math.ceil(task.val_fraction * len(train)), len(train) - 1)
    return {
        "train": tokenize_documents(_subset(train, np.sort(order[:-n_val])), num_proc),
        "val": tokenize_documents(_subset(train, np.sort(order[-n_val:])), num_proc),
    }


# ----------------------------------------------------------------------------- token cache


def _write_tokens(path: Path, tokens: np.ndarray, **extra: Any) -> None:
    """The token file, then its sidecar (token count, sha256, format, and the JSON-able ``extra``)."""
    data = tokens.astype(TOKEN_DTYPE, copy=False).tobytes()
    # Each file is replaced atomically: a kill mid-write leaves the old file or none, never half of one.
    write_atomic(path, data)
    # The sidecar goes last: it is what marks the token file complete.
    meta = {
        **extra,
        "tokens": len(tokens),
        "sha256": hashlib.sha256(data).hexdigest(),
        "dtype": "uint16",
        "cache_version": CACHE_VERSION,
    }
    write_atomic(path.with_suffix(".json"), json.dumps(meta).encode())


def _cached_meta(path: Path) -> dict[str, Any] | None:
    """The sidecar of a complete cache file (``tokens`` its token count); None when the file is
    missing or damaged (then it is reported)."""
    sidecar = path.with_suffix(".json")
    if not path.exists() and not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        expected = int(meta["tokens"]) * np.dtype(TOKEN_DTYPE).itemsize
        size = path.stat().st_size
        if (meta.get("cache_version"), meta.get("dtype")) != (CACHE_VERSION, np.dtype(TOKEN_DTYPE).name):
            problem = f"written as cache_version {meta.get('cache_version')} dtype {meta.get('dtype')}"
        elif size != expected:
            problem = f"{size} bytes where the sidecar says {expected}"
        elif _sha256_file(path) != meta["sha256"]:
            problem = "sha256 of the tokens differs from the sidecar"
        else:
            return meta
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"{type(err).__name__}: {err}"
    log.warning("token cache %s is unusable (%s); rebuilding it", path, problem)
    return None


# ----------------------------------------------------------------------------- windows and the stream


class TokenWindows(Dataset):
    """Window ``i`` of a token file, ``tokens[i*B : i*B + B + 1]`` for ``B = block_size``, as ``(x, y)``."""

    def __init__(self, path: Path, num_tokens: int, block_size: int, limit: int | None = None) -> None:
        self.path, self.block_size = path, block_size
        count = max(0, (num_tokens - 1) // block_size)
        self.count = count if limit is None else min(count, limit)
        self._tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.count:
            raise IndexError(f"window {i} out of range [0, {self.count})")
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r")
        start = i * self.block_size
        window = torch.from_numpy(self._tokens[start : start + self.block_size + 1].astype(np.int64))
        return window[:-1], window[1:]

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes reopen the file instead of receiving a pickled copy of it.
        return {**self.__dict__, "_tokens": None}


class StreamSampler(Sampler[int]):
    """Window indices along the endless train stream, one Lightning epoch at a time.

    Lightning epoch ``k`` covers global positions ``[start + k*length, start + (k+1)*length)``; this
    rank takes every ``world_size``-th of them, and a resumed sampler skips those before ``resume``.
    ``len()`` is the whole epoch even when resuming, because Lightning restores its batch counter
    and ends the epoch when that counter reaches ``len()``.
    """

    def __init__(
        self,
        num_windows: int,
        seed: int,
        start: int,
        length: int,
        resume: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_windows, self.seed, self.start, self.length = num_windows, seed, start, length
        self.resume = start if resume is None else resume
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._perm_epoch, self._perm = -1, np.zeros(0, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    @property
    def epoch_start(self) -> int:
        return self.start + self.epoch * self.length

    def window(self, position: int) -> int:
        """The window read at global stream ``position``."""
        data_epoch, offset = divmod(position, self.num_windows)
        if data_epoch != self._perm_epoch:
            self._perm = np.random.default_rng((self.seed, data_epoch)).permutation(self.num_windows)
            self._perm_epoch = data_epoch
        return int(self._perm[offset])

    def __len__(self) -> int:
        return self.length // self.world_size

    def __iter__(self) -> Iterator[int]:
        begin = self.epoch_start
        # The same skip on every rank, so all ranks yield equally many batches (DDP hangs otherwise).
        skip = max(0, -(-(self.resume - begin) // self.world_size))
        for j in range(skip, len(self)):
            yield self.window(begin + j * self.world_size + self.rank)


# ----------------------------------------------------------------------------- the datamodule


class TextDataModule(L.LightningDataModule):
    """Pre-training batches ``(x, y)``, LongTensors of shape ``(batch_size, block_size)``, of an ``lm`` task.

    Stream API for the LightningModule (see the module doc for the stream itself):

    - Nothing is required. ``train_dataloader()`` reads ``[start_sample, start_sample + length)``
      as one Lightning epoch, where ``length = trainer.max_steps * accumulate_grad_batches *
      batch_size * world_size`` when ``max_steps > 0``, else one pass over the ``N`` windows per
      Lightning epoch (epoch ``k`` reading the following ``length`` positions). A resumed fit
      continues from the position stored by ``state_dict()``.
    - ``set_stream(start_sample, total_samples)`` chooses the slice explicitly; call it before the
      train loader is built (``setup`` or ``on_fit_start``). Calling it again with the same
      ``start_sample`` keeps a position restored from a checkpoint.
    - ``stream_position()`` is the global position of the next sample training will consume.

    The trainer must run with ``use_distributed_sampler=False``: the sampler shards by rank itself.
    After ``setup()``, ``skipped_lines`` holds source split -> blank lines skipped in its files.
    """

    def __init__(
        self,
        task: Mapping[str, Any],
        block_size: int,
        batch_size: int,
        cache_dir: str,
        seed: int = 1234,
        num_proc: int = 2,
        num_workers: int = 0,
        val_windows: int | None = None,
        start_sample: int = 0,
    ) -> None:
        super().__init__()
        self.task = TextTask.from_spec(task)
        self.block_size, self.batch_size = block_size, batch_size
        self.cache_dir = Path(cache_dir)
        self.seed, self.num_proc, self.num_workers, self.val_windows = (
            seed,
            num_proc,
            num_workers,
            val_windows,
        )
        self.start_sample, self.total_samples = start_sample, None
        self._resume_sample = start_sample
        self._splits: dict[str, tuple[Path, int]] = {}  # "train"/"val" -> (token file, token count)
        # source split ("train", "validation") -> blank lines its files had, skipped (see _read_documents)
        self.skipped_lines: dict[str, int] = {}
        self._train_sampler: StreamSampler | None = None

    # -- data preparation

    def prepare_data(self) -> None:
        """Tokenize into the cache (Lightning runs this once per node before ``setup``)."""
        self._token_files()

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        splits = self._token_files()
        for split, (_, count) in splits.items():
            if count < self.block_size + 1:
                raise ValueError(
                    f"task {self.task.name!r}: the {split} split has {count} tokens, fewer than "
                    f"block_size + 1 = {self.block_size + 1}"
                )
        self._splits = splits

    def _token_files(self) -> dict[str, tuple[Path, int]]:
        """The cached train/val token files with their token counts, built first if needed."""
        source = _source(self.task)
        tokenizer = get_tokenizer().name
        key = hashlib.sha256(
            json.dumps(
                [CACHE_VERSION, tokenizer, source.fingerprint, self.task.val_fraction], sort_keys=True
            ).encode()
        ).hexdigest()
        stem = f"{_UNSAFE_FILENAME_CHARS.sub('_', self.task.name)}-{key[:16]}"
        paths = {split: self.cache_dir / f"{stem}.{split}.bin" for split in ("train", "val")}
        metas = {split: _cached_meta(path) for split, path in paths.items()}
        if all(meta is not None for meta in metas.values()):
            self.skipped_lines = metas["train"].get("skipped_lines", {})  # every build since CACHE_VERSION 2
            return {split: (paths[split], int(metas[split]["tokens"])) for split in paths}
        documents, self.skipped_lines = source.load()
        tokens = _split_tokens(self.task, documents, self.num_proc)
        if sum(len(t) for t in tokens.values()) == 0:
            raise ValueError(
                f"task {self.task.name!r}: the corpus is empty (0 tokens; {self.task.describe()})"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for split, path in paths.items():
            extra = {"skipped_lines": self.skipped_lines} if split == "train" else {}
            _write_tokens(path, tokens[split], **extra)
        log.info("task %s: cached %s", self.task.name, {s: f"{len(t)} tokens" for s, t in tokens.items()})
        return {split: (paths[split], len(tokens[split])) for split in paths}

    def _split(self, name: str) -> tuple[Path, int]:
        if not self._splits:
            raise RuntimeError("TextDataModule: call setup() (or let the Trainer call it) first")
        return self._splits[name]

    @property
    def num_train_tokens(self) -> int:
        """Tokens in the train split (all of them, before cutting windows)."""
        return self._split("train")[1]

    @property
    def num_val_tokens(self) -> int:
        """Tokens in the val split (all of them, whatever ``val_windows`` keeps)."""
        return self._split("val")[1]

    @property
    def tokens_per_batch(self) -> int:
        """Tokens in one batch summed over ranks (times ``accumulate_grad_batches`` per optimizer step)."""
        return self.batch_size * self.block_size * self._rank_world()[1]

    # -- the stream

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def set_stream(self, start_sample: int, total_samples: int | None = None) -> None:
        """Train on stream positions ``[start_sample, total_samples)`` (``None``: see the class doc)."""
        if start_sample < 0 or (total_samples is not None and total_samples <= start_sample):
            raise ValueError(
                f"set_stream: need 0 <= start_sample < total_samples, got {start_sample}, {total_samples}"
            )
        if start_sample != self.start_sample:
            self._resume_sample = start_sample
        self.start_sample, self.total_samples = start_sample, total_samples

    def _stream_length(self, num_windows: int, world_size: int) -> int:
        trainer = self.trainer
        if self.total_samples is not None:
            return self.total_samples - self.start_sample
        if trainer is not None and trainer.max_steps > 0:
            return trainer.max_steps * trainer.accumulate_grad_batches * self.batch_size * world_size
        return num_windows

    def stream_position(self) -> int:
        """Global stream position of the next train sample not yet consumed by an optimizer step."""
        sampler, trainer = self._train_sampler, self.trainer
        if sampler is None or trainer is None:
            return self._resume_sample
        # Lightning's count of batches trained in this epoch; it is restored on resume, like our sampler.
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return sampler.epoch_start + batches * self.batch_size * sampler.world_size

    def train_dataloader(self) -> DataLoader:
        path, count = self._split("train")
        windows = TokenWindows(path, count, self.block_size)
        rank, world_size = self._rank_world()
        self._train_sampler = StreamSampler(
            num_windows=len(windows),
            seed=self.seed,
            start=self.start_sample,
            length=self._stream_length(len(windows), world_size),
            resume=self._resume_sample,
            rank=rank,
            world_size=world_size,
        )
        return DataLoader(
            windows,
            batch_size=self.batch_size,
            sampler=self._train_sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        path, count = self._split("val")
        windows = TokenWindows(path, count, self.block_size, limit=self.val_windows)
        rank, world_size = self._rank_world()
        sampler = (
            DistributedSampler(windows, num_replicas=world_size, rank=rank, shuffle=False)
            if world_size > 1
            else None
        )
        return DataLoader(windows, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)

    # -- checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "start_sample": self.start_sample,
            "total_samples": self.total_samples,
            "position": self.stream_position(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["seed"] != self.seed:
            log.info("TextDataModule: seed %s from the checkpoint replaces %s", state_dict["seed"], self.seed)
        self.seed = state_dict["seed"]
        self.start_sample, self.total_samples = state_dict["start_sample"], state_dict["total_samples"]
        self._resume_sample = state_dict["position"]
