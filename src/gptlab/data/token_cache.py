"""The token cache: an ``lm`` task's train and val splits as uint16 token files, built once.

Every document is tokenized once (GPT-2 BPE, ``EOT_ID`` after each) and a split's tokens are stored
as one uint16 file in ``cache_dir``, named by the sha256 of the source's fingerprint (its files'
contents, format and fields), the tokenizer, ``val_fraction`` and ``CACHE_VERSION``. A JSON sidecar
records the token count and the sha256 of the token bytes; a file that disagrees with it is
rebuilt, never read. The train sidecar also keeps the blank lines skipped per source split, so a
run served from the cache reports them as a run that read the files does.

Without a validation split, ``val_fraction`` of the documents (after a shuffle with a fixed seed,
so every run is evaluated on the same text) is held out; a single document (tinyshakespeare) gives
its last ``val_fraction`` of tokens instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from gptlab.atomic import write_atomic
from gptlab.data.sources.documents import Documents, document_source, sha256_file
from gptlab.data.tokenize import TOKEN_DTYPE, tokenize_documents
from gptlab.data.tokenizer import get_tokenizer
from gptlab.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

# Bump when the token files this module writes would change for the same source.
CACHE_VERSION = 2
# The held-out documents must not depend on the run's seed, or runs could not be compared.
SPLIT_SEED = 0
_UNSAFE_FILENAME_CHARS = re.compile(r"[^\w.-]")
# A split's token file and its token count.
TokenFile = tuple[Path, int]


def token_files(spec: TaskSpec, cache_dir: Path, num_proc: int) -> tuple[dict[str, TokenFile], dict[str, int]]:
    """The cached ``train``/``val`` token files with their token counts, built first if needed, and
    the blank lines skipped per source split."""
    source = document_source(spec)
    key = hashlib.sha256(
        json.dumps(
            [CACHE_VERSION, get_tokenizer().name, source.fingerprint, spec.val_fraction], sort_keys=True
        ).encode()
    ).hexdigest()
    stem = f"{_UNSAFE_FILENAME_CHARS.sub('_', spec.name)}-{key[:16]}"
    paths = {split: cache_dir / f"{stem}.{split}.bin" for split in ("train", "val")}
    metas = {split: _cached_meta(path) for split, path in paths.items()}
    if all(meta is not None for meta in metas.values()):
        return {split: (paths[split], int(metas[split]["tokens"])) for split in paths}, metas["train"].get("skipped_lines", {})
    documents, skipped_lines = source.load()
    tokens = _split_tokens(spec, documents, num_proc)
    if sum(len(t) for t in tokens.values()) == 0:
        raise ValueError(f"task {spec.name!r}: the corpus is empty (0 tokens; format {spec.format!r})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    for split, path in paths.items():
        extra = {"skipped_lines": skipped_lines} if split == "train" else {}
        _write_tokens(path, tokens[split], **extra)
    log.info("task %s: cached %s", spec.name, {s: f"{len(t)} tokens" for s, t in tokens.items()})
    return {split: (paths[split], len(tokens[split])) for split in paths}, skipped_lines


def _subset(docs: Documents, indices: np.ndarray) -> Documents:
    return docs.select(indices) if isinstance(docs, datasets.Dataset) else [docs[i] for i in indices]


def _split_tokens(spec: TaskSpec, splits: dict[str, Documents], num_proc: int) -> dict[str, np.ndarray]:
    """Train and val tokens; the val split is carved out deterministically when the task has none."""
    train = splits["train"]
    if len(train) == 0:
        raise ValueError(f"task {spec.name!r}: the corpus is empty (0 documents; format {spec.format!r})")
    if "validation" in splits:
        return {
            "train": tokenize_documents(train, num_proc),
            "val": tokenize_documents(splits["validation"], num_proc),
        }
    if len(train) == 1:
        tokens = tokenize_documents(train, num_proc)
        cut = single_document_cut(spec, len(tokens))
        return {"train": tokens[:cut], "val": tokens[cut:]}
    kept, held = held_out_documents(spec, len(train))
    return {
        "train": tokenize_documents(_subset(train, kept), num_proc),
        "val": tokenize_documents(_subset(train, held), num_proc),
    }


def held_out_documents(spec: TaskSpec, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices, each sorted, of a corpus of ``n_docs`` > 1 documents without a
    validation split: ``val_fraction`` of them after a shuffle with ``SPLIT_SEED``."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n_docs)
    n_val = min(math.ceil(spec.val_fraction * n_docs), n_docs - 1)
    return np.sort(order[:-n_val]), np.sort(order[-n_val:])


def single_document_cut(spec: TaskSpec, n_tokens: int) -> int:
    """Where a one-document corpus's ``n_tokens`` tokens are cut: the last ``val_fraction`` are held out."""
    return n_tokens - math.ceil(spec.val_fraction * n_tokens)



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
        elif sha256_file(path) != meta["sha256"]:
            problem = "sha256 of the tokens differs from the sidecar"
        else:
            return meta
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"{type(err).__name__}: {err}"
    log.warning("token cache %s is unusable (%s); rebuilding it", path, problem)
    return None

