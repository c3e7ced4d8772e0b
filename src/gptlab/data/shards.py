"""Token shards: a corpus's tokens as numbered uint16 files, built in bounded memory, resumably.

**Layout** of a cache folder (``gptlab.data.token_cache`` names it):

- ``train-000000.bin``, ``val-000000.bin``, ...: the tokens of one build *step* per output split
  (absent when the step has none for it);
- ``step-000000.json``: the step's sidecar, written after its shards (it is what marks the step
  complete): the units it encoded (``[first, end)``), each shard's token count and the crc32 of
  every ``BLOCK_TOKENS`` block (the one record of its contents), the blank lines skipped per
  corpus split, and the size and mtime of every file it read;
- ``manifest.json``, written last: the build is complete, with every shard and the files read.

**Build.** Units (``gptlab.data.corpus_units``) are encoded in ``num_proc`` worker processes, at
most ``2 * num_proc`` in flight, and their tokens appended in unit order to the step's open
shards, so memory is bounded by the units in flight, not by the corpus or the shard size. A step
ends after the unit that brings one of its shards to ``shard_tokens`` tokens. Shards are written
to hidden temporary files and renamed when complete (``gptlab.atomic``), so a half-written shard is
never read.

**Resume.** A build that stopped (killed, or a malformed record) keeps its complete steps: the next
build checks them (sidecar readable, shard sizes as recorded, the files they read unchanged) and
continues from the unit after the last good one. A step whose file changed is kept when the bytes
it read did not (a digest of each unit's bytes), so fixing a malformed line, or appending to a
file, costs only the steps from there on.

**Cache hits** check sizes, not contents: the manifest, the files' sizes and mtimes, each shard's
size (``verify=True`` also checks every block's crc32). Contents are checked when read:
``ShardReader`` checks the crc32 of each block the first time a process reads it, and a step whose
shard fails either check is rebuilt from its units, with a warning, to the recorded crc32s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from gptlab.atomic import TEMP_SUFFIX, AtomicFile, write_atomic
from gptlab.data.corpus_units import OUTPUTS, Corpus, Unit, unchanged
from gptlab.data.tokenize import TOKEN_DTYPE
from gptlab.data.unit_encoding import Encoded, digest_of, encode_from, unit_bytes

log = logging.getLogger(__name__)

# Bump when the files this module writes would change for the same corpus.
CACHE_VERSION = 4
BLOCK_TOKENS = 1 << 20  # the unit of crc32 checks when reading: 2 MiB
MANIFEST = "manifest.json"
_ITEMSIZE = np.dtype(TOKEN_DTYPE).itemsize


class CorruptCacheError(RuntimeError):
    """A shard that still fails its checks after a rebuild: its corpus changed under the cache."""


@dataclass(frozen=True)
class Shard:
    path: Path
    tokens: int
    crc32: tuple[int, ...]
    step: int


def _step_name(step: int) -> str:
    return f"step-{step:06d}.json"


def _shard_name(output: str, step: int) -> str:
    return f"{output}-{step:06d}.bin"


class _ShardFile:
    """One shard being written: an ``AtomicFile`` (opened with its first tokens), put in place by ``close``."""

    def __init__(self, path: Path) -> None:
        self.path, self.tokens, self.crcs, self._crc = path, 0, [], 0
        self._file: AtomicFile | None = None

    def write(self, tokens: np.ndarray) -> None:
        if not len(tokens):
            return
        if self._file is None:
            self._file = AtomicFile(self.path)
        data = memoryview(np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)).cast("B")  # no copy
        self._file.file.write(data)
        while data:  # the crc32 of each BLOCK_TOKENS block
            take = (BLOCK_TOKENS - self.tokens % BLOCK_TOKENS) * _ITEMSIZE
            self._crc = zlib.crc32(data[:take], self._crc)
            self.tokens += len(data[:take]) // _ITEMSIZE
            data = data[take:]
            if self.tokens % BLOCK_TOKENS == 0:
                self.crcs.append(self._crc)
                self._crc = 0

    def close(self) -> dict[str, Any] | None:
        """Flush, sync and rename the shard into place; its sidecar entry (None: no tokens)."""
        if self._file is None:
            return None
        if self.tokens % BLOCK_TOKENS:
            self.crcs.append(self._crc)
        self._file.commit()
        return {"file": self.path.name, "tokens": self.tokens, "crc32": self.crcs}


class _Step:
    """The step being built: its shards, units and what they read."""

    def __init__(self, folder: Path, index: int, first_unit: int) -> None:
        self.folder, self.index, self.first, self.end = folder, index, first_unit, first_unit
        self.shards = {output: _ShardFile(folder / _shard_name(output, index)) for output in OUTPUTS}
        self.blank_lines: dict[str, int] = {}
        self.files: set[str] = set()
        self.digest: Any = hashlib.blake2b(digest_size=16)  # None once a unit has no digest

    def add(self, unit: Unit, encoded: Encoded) -> None:
        for output, tokens in encoded.tokens.items():
            self.shards[output].write(tokens)
        if self.digest is not None and encoded.digest is not None:
            self.digest.update(bytes.fromhex(encoded.digest))
        else:
            self.digest = None
        if unit.path is not None:
            self.blank_lines[unit.split] = self.blank_lines.get(unit.split, 0) + encoded.blank_lines
            self.files.add(unit.path)
        self.end += 1

    def full(self, shard_tokens: int) -> bool:
        return any(shard.tokens >= shard_tokens for shard in self.shards.values())

    def close(self, corpus: Corpus) -> dict[str, Any]:
        meta = {
            "cache_version": CACHE_VERSION,
            "units": [self.first, self.end],
            "shards": {output: shard.close() for output, shard in self.shards.items()},
            "blank_lines": self.blank_lines,
            "files": {path: corpus.files[path] for path in sorted(self.files)},
            "digest": self.digest and self.digest.hexdigest(),
        }
        write_atomic(self.folder / _step_name(self.index), json.dumps(meta).encode())
        return meta


# ----------------------------------------------------------------------------- building and checking


def build(corpus: Corpus, folder: Path, shard_tokens: int, num_proc: int) -> dict[str, Any]:
    """Build (or finish building) the cache in ``folder``; its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    steps = _complete_steps(folder, corpus)
    for stale in folder.glob(f".*{TEMP_SUFFIX}"):  # a killed build's unfinished shards
        stale.unlink(missing_ok=True)
    if steps:
        log.info("token cache %s: resuming after %d complete step(s)", folder, len(steps))
    step = _Step(folder, len(steps), steps[-1]["units"][1] if steps else 0)
    for unit, encoded in encode_from(corpus, step.end, num_proc):
        step.add(unit, encoded)
        if step.full(shard_tokens):
            steps.append(step.close(corpus))
            step = _Step(folder, len(steps), step.end)
    if step.end > step.first or not steps:
        steps.append(step.close(corpus))
    for later in _later_steps(folder, len(steps)):
        later.unlink()
    manifest = {"cache_version": CACHE_VERSION, "files": corpus.files, "steps": steps}
    write_atomic(folder / MANIFEST, json.dumps(manifest).encode())
    return manifest


def _later_steps(folder: Path, count: int) -> list[Path]:
    """Sidecars and shards of steps ``count`` and on (left by an earlier, longer build)."""
    return [p for p in folder.iterdir() if p.suffix in (".json", ".bin") and p.stem[-6:].isdigit()
            and int(p.stem[-6:]) >= count]  # fmt: skip


def _complete_steps(folder: Path, corpus: Corpus) -> list[dict[str, Any]]:
    """The sidecars of the complete steps a build can keep (see the module doc), in order."""
    steps: list[dict[str, Any]] = []
    while (path := folder / _step_name(len(steps))).exists():
        problem = _step_problem(folder, path, corpus, steps[-1]["units"][1] if steps else 0)
        if isinstance(problem, str):
            log.warning("token cache %s: step %d is not kept (%s); rebuilding from there", folder, len(steps), problem)
            break
        steps.append(problem)
    return steps


def _step_problem(folder: Path, path: Path, corpus: Corpus, first_unit: int) -> dict[str, Any] | str:
    """The step's sidecar, or what is wrong with it."""
    try:
        meta = json.loads(path.read_text())
        if meta.get("cache_version") != CACHE_VERSION:
            return f"written by cache version {meta.get('cache_version')}"
        if meta["units"][0] != first_unit:
            return f"it starts at unit {meta['units'][0]}, not {first_unit}"
        if changed := [f for f, identity in meta["files"].items() if f not in corpus.files or not unchanged(identity, f)]:
            if not meta.get("digest") or _units_digest(corpus, *meta["units"]) != meta["digest"]:
                return f"{changed[0]} changed where it read it"
            # the file changed elsewhere (e.g. a fix further on, or text appended): the step stands
            meta["files"] = {f: corpus.files[f] for f in meta["files"]}
            write_atomic(path, json.dumps(meta).encode())
        for entry in meta["shards"].values():
            if entry and (problem := _size_problem(folder / entry["file"], entry["tokens"])):
                return problem
        return meta
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        return f"{path.name}: {type(err).__name__}: {err}"


def _units_digest(corpus: Corpus, first: int, end: int) -> str | None:
    """The digest a step of units ``[first, end)`` records, from the files as they are now."""
    digest = hashlib.blake2b(digest_size=16)
    for unit in islice(corpus.units(first), end - first):
        found = digest_of(unit_bytes(corpus.reading, unit))
        if found is None:
            return None
        digest.update(bytes.fromhex(found))
    return digest.hexdigest()


def _size_problem(path: Path, tokens: int) -> str | None:
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"{path.name}: {err.strerror}"
    return None if size == tokens * _ITEMSIZE else f"{path.name} has {size} bytes where its step says {tokens * _ITEMSIZE}"


def block_crcs(path: Path) -> list[int]:
    """The crc32 of each ``BLOCK_TOKENS`` block of the shard at ``path``, as its step records them."""
    with open(path, "rb") as f:
        return [zlib.crc32(block) for block in iter(lambda: f.read(BLOCK_TOKENS * _ITEMSIZE), b"")]


def open_cache(corpus: Corpus, folder: Path, verify: bool) -> dict[str, Any] | None:
    """The manifest of a complete cache of ``corpus`` in ``folder``, its damaged steps rebuilt;
    None when there is no complete cache for the corpus as it is now."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("token cache %s: %s unreadable (%s); rebuilding", folder, MANIFEST, err)
        return None
    files = manifest.get("files")
    if (
        manifest.get("cache_version") != CACHE_VERSION
        or not isinstance(files, dict)
        or files.keys() != corpus.files.keys()
        or not all(unchanged(identity, path) for path, identity in files.items())
    ):
        log.info("token cache %s: the corpus or the cache version changed; building again", folder)
        return None
    for index, step in enumerate(manifest["steps"]):
        for output, entry in step["shards"].items():
            if not entry:
                continue
            shard = folder / entry["file"]
            problem = _size_problem(shard, entry["tokens"])
            if problem is None and verify and block_crcs(shard) != entry["crc32"]:
                problem = f"{shard.name}: a block's crc32 differs from its step's"
            if problem:
                log.warning("token cache %s: %s; rebuilding step %d", folder, problem, index)
                rebuild_step(corpus, folder, index)
                break
    return manifest


def rebuild_step(corpus: Corpus, folder: Path, index: int) -> None:
    """Encode step ``index``'s units again into its shards; they must come out as recorded."""
    meta = json.loads((folder / _step_name(index)).read_text())
    first, end = meta["units"]
    step = _Step(folder, index, first)
    for unit, encoded in encode_from(corpus, first, 1, count=end - first):
        step.add(unit, encoded)
    for output, shard in step.shards.items():
        entry, recorded = shard.close(), meta["shards"][output]
        if (entry and (entry["tokens"], entry["crc32"])) != (recorded and (recorded["tokens"], recorded["crc32"])):
            raise CorruptCacheError(
                f"token cache {folder}: step {index} rebuilt to other tokens than it recorded; delete the "
                "folder to build it again"
            )


def shard_lists(folder: Path, manifest: dict[str, Any]) -> dict[str, list[Shard]]:
    """Output split -> its shards, in order."""
    shards: dict[str, list[Shard]] = {output: [] for output in OUTPUTS}
    for index, step in enumerate(manifest["steps"]):
        for output, entry in step["shards"].items():
            if entry:
                shards[output].append(
                    Shard(folder / entry["file"], entry["tokens"], tuple(entry["crc32"]), index)
                )
    return shards


def skipped_lines(manifest: dict[str, Any]) -> dict[str, int]:
    """Corpus split -> blank lines skipped reading its files."""
    total: dict[str, int] = {}
    for step in manifest["steps"]:
        for split, count in step["blank_lines"].items():
            total[split] = total.get(split, 0) + count
    return total


# ----------------------------------------------------------------------------- reading


class ShardReader:
    """Token ranges of shards, each ``BLOCK_TOKENS`` block checked (crc32) the first time this process
    reads it; a failing block's step is rebuilt by ``repair(step)``, with a warning, and read again."""

    def __init__(self, shards: list[Shard], repair: Callable[[int], None]) -> None:
        self.shards, self.repair = shards, repair
        self._maps: dict[int, np.ndarray] = {}
        self._checked: set[tuple[int, int]] = set()

    def read(self, index: int, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of shard ``index``."""
        tokens = self._map(index)
        for block in range(start // BLOCK_TOKENS, (stop - 1) // BLOCK_TOKENS + 1):
            if (index, block) not in self._checked:
                tokens = self._check(index, block)
        return tokens[start:stop]

    def _map(self, index: int) -> np.ndarray:
        if index not in self._maps:
            self._maps[index] = np.memmap(self.shards[index].path, dtype=TOKEN_DTYPE, mode="r")
        return self._maps[index]

    def _check(self, index: int, block: int) -> np.ndarray:
        shard = self.shards[index]
        for attempt in range(2):
            tokens = self._map(index)
            data = tokens[block * BLOCK_TOKENS : (block + 1) * BLOCK_TOKENS]
            if len(tokens) == shard.tokens and zlib.crc32(data) == shard.crc32[block]:
                self._checked.add((index, block))
                return tokens
            if attempt:
                break
            log.warning("token shard %s: block %d fails its crc32; rebuilding step %d", shard.path, block, shard.step)
            self.repair(shard.step)
            self._maps.pop(index)
            self._checked = {checked for checked in self._checked if checked[0] != index}
        raise CorruptCacheError(f"token shard {shard.path}: block {block} still fails its crc32 after a rebuild")

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes map the files themselves and check the blocks they read.
        return {**self.__dict__, "_maps": {}, "_checked": set()}
