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
token bytes; a file that disagrees with it is rebuilt, never read.

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
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from gptlab.data.corpus import demo_corpus_documents
from gptlab.data.tokenizer import EOT_ID, get_tokenizer

log = logging.getLogger(__name__)

# Bump when the token files this module writes would change for the same source.
CACHE_VERSION = 1
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
# Below this much text, worker processes cost more than they save (measured on 2 cores: 30 MB of
# wikitext lines took 8.2 s in one process, 6.9 s in two).
PARALLEL_MIN_BYTES = 16 * 2**20
TOKEN_DTYPE = np.uint16  # GPT-2 ids (< 50304) fit; half the disk and page cache of int32
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


@dataclass(frozen=True)
class _Source:
    fingerprint: Any  # JSON-able; equal fingerprints mean equal documents
    load: Callable[[], dict[str, datasets.Dataset]]  # split -> dataset with a "text" column


# ----------------------------------------------------------------------------- reading documents


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _decode(task: TextTask, path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a leading BOM is not text
    except UnicodeDecodeError as err:
        raise ValueError(f"task {task.name!r}: {path} is not valid UTF-8 ({err}); {task.describe()}") from err
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _field(task: TextTask, path: Path, record: Any, where: str) -> str:
    value = record.get(task.text_field) if isinstance(record, Mapping) else None
    if not isinstance(value, str):
        raise ValueError(f"task {task.name!r}: {path} {where} has no string field {task.text_field!r}")
    return value


def _read_documents(task: TextTask, path: Path) -> list[str]:
    if task.format == "text":
        return [_decode(task, path)]
    if task.format == "lines":
        return [line for line in _decode(task, path).split("\n") if line.strip()]
    if task.format in ("json", "jsonl"):
        text = _decode(task, path)
        try:
            if task.format == "json" and text.lstrip().startswith("["):
                records = list(enumerate(json.loads(text), 1))
            else:
                records = [
                    (n, json.loads(line)) for n, line in enumerate(text.split("\n"), 1) if line.strip()
                ]
        except json.JSONDecodeError as err:
            raise ValueError(
                f"task {task.name!r}: {path} is not valid JSON ({err}); {task.describe()}"
            ) from err
        return [_field(task, path, record, f"record {n}") for n, record in records]
    # parquet
    columns = pq.read_schema(path).names
    if task.text_field not in columns:
        raise ValueError(f"task {task.name!r}: {path} has no column {task.text_field!r} (columns: {columns})")
    return [_field(task, path, row, f"row {n}") for n, row in enumerate(pq.read_table(path).to_pylist(), 1)]


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

    def load() -> dict[str, datasets.Dataset]:
        return {
            split: datasets.Dataset.from_dict({"text": [doc for p in ps for doc in _read_documents(task, p)]})
            for split, ps in paths.items()
        }

    return _Source(fingerprint, load)


def _embedded_source() -> _Source:
    docs = demo_corpus_documents()
    digest = hashlib.sha256("\0".join(docs).encode()).hexdigest()
    return _Source(
        {"format": "embedded", "sha256": digest},
        lambda: {"train": datasets.Dataset.from_dict({"text": docs})},
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

    def load() -> dict[str, datasets.Dataset]:
        texts = {split: ds.select_columns([field]) for split, ds in loaded.items()}
        return (
            texts
            if field == "text"
            else {split: ds.rename_column(field, "text") for split, ds in texts.items()}
        )

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


def _encode_batch(batch: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
    # Blank documents would only add a lone EOT.
    texts = [t for t in batch["text"] if t and not t.isspace()]
    encoded = get_tokenizer().encode_ordinary_batch(texts)  # threads inside tiktoken
    # One output row per batch (a batched map may change the row count): fewer, longer Arrow rows.
    return {"ids": [np.array([t for ids in encoded for t in (*ids, EOT_ID)], dtype=TOKEN_DTYPE)]}


def tokenize_documents(docs: datasets.Dataset, num_proc: int = 1) -> np.ndarray:
    """All documents of ``docs`` (column ``text``) as one uint16 token array, ``EOT_ID`` after each."""
    parallel = num_proc > 1 and len(docs) >= 2 * num_proc and docs.data.nbytes >= PARALLEL_MIN_BYTES
    encoded = docs.map(
        _encode_batch,
        batched=True,
        num_proc=num_proc if parallel else None,
        remove_columns=docs.column_names,
        desc="tokenizing",
    )
    if len(encoded) == 0:  # every document was blank
        return np.zeros(0, TOKEN_DTYPE)
    chunks = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in encoded.data.column("ids").chunks]
    return np.concatenate(chunks).astype(TOKEN_DTYPE, copy=False)


def _split_tokens(
    task: TextTask, splits: dict[str, datasets.Dataset], num_proc: int
) -> dict[str, np.ndarray]:
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
        "train": tokenize_documents(train.select(np.sort(order[:-n_val])), num_proc),
        "val": tokenize_documents(train.select(np.sort(order[-n_val:])), num_proc),
    }


# ----------------------------------------------------------------------------- token cache


def _write_atomic(path: Path, data: bytes) -> None:
    # A crash mid-write leaves only a temp file; readers see the old file or the complete new one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache may be shared between users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_tokens(path: Path, tokens: np.ndarray) -> None:
    data = tokens.astype(TOKEN_DTYPE, copy=False).tobytes()
    _write_atomic(path, data)
    # The sidecar goes last: it is what marks the token file complete.
    meta = {
        "tokens": len(tokens),
        "sha256": hashlib.sha256(data).hexdigest(),
        "dtype": "uint16",
        "cache_version": CACHE_VERSION,
    }
    _write_atomic(path.with_suffix(".json"), json.dumps(meta).encode())


def _cached_token_count(path: Path) -> int | None:
    """Token count of a complete cache file; None when it is missing or damaged (then it is reported)."""
    sidecar = path.with_suffix(".json")
    if not path.exists() and not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        expected = int(meta["tokens"]) * np.dtype(TOKEN_DTYPE).itemsize
        size = path.stat().st_size
        if size != expected:
            problem = f"{size} bytes where the sidecar says {expected}"
        elif _sha256_file(path) != meta["sha256"]:
            problem = "sha256 of the tokens differs from the sidecar"
        else:
            return int(meta["tokens"])
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
        counts = {split: _cached_token_count(path) for split, path in paths.items()}
        if all(count is not None for count in counts.values()):
            return {split: (paths[split], counts[split]) for split in paths}
        tokens = _split_tokens(self.task, source.load(), self.num_proc)
        if sum(len(t) for t in tokens.values()) == 0:
            raise ValueError(
                f"task {self.task.name!r}: the corpus is empty (0 tokens; {self.task.describe()})"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for split, path in paths.items():
            _write_tokens(path, tokens[split])
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
