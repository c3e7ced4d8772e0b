"""The token cache: an ``lm`` task's ``train`` and ``val`` tokens as shards, built once.

Every document is tokenized once (GPT-2 BPE, ``EOT_ID`` after each) into uint16 shards
(``gptlab.data.shards``) in a folder of ``cache_dir`` named by the task and the sha256 of what the
tokens depend on: the corpus's format, fields, encoding and file names (or Hub dataset),
``val_fraction``, the unit sizes, ``shard_tokens``, the tokenizer and ``CACHE_VERSION``. The files'
sizes and mtimes are checked against the cache's manifest at every start, so a changed file is
read again (from the first step whose bytes changed) without hashing the corpus. How the documents are
read and split is ``gptlab.data.corpus_units``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from gptlab.data.corpus_units import plan_corpus
from gptlab.data.shards import CACHE_VERSION, Shard, ShardReader, build, open_cache, rebuild_step, shard_lists, skipped_lines
from gptlab.data.tokenizer import get_tokenizer
from gptlab.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

DEFAULT_SHARD_TOKENS = 100_000_000  # llm.c's and build-nanogpt's FineWeb shards
_UNSAFE_FILENAME_CHARS = re.compile(r"[^\w.-]")


@dataclass(frozen=True)
class TokenShards:
    """One output split (``train`` or ``val``) of a cache: its shards and how to rebuild one."""

    shards: list[Shard]
    spec: TaskSpec
    folder: Path

    @property
    def tokens(self) -> int:
        return sum(shard.tokens for shard in self.shards)

    def reader(self) -> ShardReader:
        return ShardReader(self.shards, functools.partial(_repair, self.spec, self.folder))


def _repair(spec: TaskSpec, folder: Path, step: int) -> None:
    rebuild_step(plan_corpus(spec), folder, step)


def cache_folder(spec: TaskSpec, cache_dir: Path, fingerprint: object, shard_tokens: int) -> Path:
    key = hashlib.sha256(
        json.dumps([CACHE_VERSION, get_tokenizer().name, fingerprint, shard_tokens], sort_keys=True).encode()
    ).hexdigest()
    return cache_dir / f"{_UNSAFE_FILENAME_CHARS.sub('_', spec.name)}-{key[:16]}"


def token_shards(
    spec: TaskSpec, cache_dir: Path, num_proc: int, shard_tokens: int = DEFAULT_SHARD_TOKENS, verify: bool = False
) -> tuple[dict[str, TokenShards], dict[str, int]]:
    """The cached ``train``/``val`` shards, built (or finished) first if needed, and the blank lines
    skipped per corpus split. ``verify`` checks every block's crc32, not only the sizes."""
    corpus = plan_corpus(spec)
    folder = cache_folder(spec, cache_dir, corpus.fingerprint, shard_tokens)
    manifest = open_cache(corpus, folder, verify)
    if manifest is None:
        manifest = build(corpus, folder, shard_tokens, num_proc)
        log.info("task %s: cached in %s", spec.name, folder)
    splits = {output: TokenShards(shards, spec, folder) for output, shards in shard_lists(folder, manifest).items()}
    if sum(split.tokens for split in splits.values()) == 0:
        raise ValueError(f"task {spec.name!r}: the corpus is empty (0 tokens; format {spec.format!r})")
    return splits, skipped_lines(manifest)
