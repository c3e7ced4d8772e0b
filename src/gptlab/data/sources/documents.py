"""An ``lm`` task's corpus splits, and the documents of a corpus that is not read from local files.

Local files are read unit by unit (``gptlab.data.corpus_units``); the ``embedded`` corpus needs no
files and brings its own validation documents (``gptlab.data.corpus.is_held_out``); a Hub corpus
stays a ``datasets.Dataset`` (column ``text``), or a streamed ``IterableDataset``, so that a large one
is tokenized batch by batch. An ``lm`` task reads a ``validation`` split only when it names one
(``files.validation``, or for the Hub ``hub.splits.validation``); otherwise the token cache holds
out ``val_fraction`` of the corpus.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptlab.data.sources import check_format
from gptlab.data.sources.base import DataFormatError
from gptlab.data.sources.hub import hub_documents
from gptlab.tasks.spec import TaskSpec

# The splits a corpus may have; what the token cache stores as "train" and "val".
CORPUS_SPLITS = ("train", "validation")
# A split's documents: a list of texts, or a Hub dataset (column "text").
Documents = Any


@dataclass(frozen=True)
class DocumentSource:
    fingerprint: Any  # JSON-able; equal fingerprints mean equal documents
    # (split -> its documents, split -> blank lines skipped while reading them)
    load: Callable[[], tuple[dict[str, Documents], dict[str, int]]]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def corpus_splits(spec: TaskSpec) -> list[str]:
    """The corpus splits the task names: ``train`` and, where given, ``validation``."""
    named = set((spec.hub or {}).get("splits") or {}) if spec.format == "hub" else set(spec.files)
    if unknown := sorted(named - set(CORPUS_SPLITS)):
        where = "hub.splits" if spec.format == "hub" else "files"
        raise DataFormatError(
            f"task {spec.name!r}: unknown split(s) {unknown} in {where}; valid splits: {', '.join(CORPUS_SPLITS)}"
        )
    if spec.format != "hub" and "train" not in named:
        raise DataFormatError(f"task {spec.name!r}: files names no 'train' split; files: {dict(spec.files)}")
    return ["train", *(["validation"] if "validation" in named else [])]


def document_source(spec: TaskSpec) -> DocumentSource:
    """Where the documents of an ``embedded`` or ``hub`` corpus come from, read lazily by ``load``."""
    check_format(spec)
    if spec.format == "embedded":
        from gptlab.data.corpus import demo_corpus_splits

        # its own validation documents: those the demo tasks evaluate on
        splits = demo_corpus_splits()
        digest = hashlib.sha256("\1".join("\0".join(docs) for docs in splits.values()).encode()).hexdigest()
        return DocumentSource({"format": "embedded", "sha256": digest}, lambda: (splits, {}))
    splits = corpus_splits(spec)
    if spec.format == "hub":
        loaded = {split: hub_documents(spec, split) for split in splits}
        return DocumentSource(
            {"hub": {split: fingerprint for split, (_, fingerprint) in loaded.items()}},
            lambda: ({split: ds for split, (ds, _) in loaded.items()}, {}),  # rows: no lines to skip
        )
    raise DataFormatError(f"task {spec.name!r}: format {spec.format!r} is read from local files (gptlab.data.corpus_units)")
