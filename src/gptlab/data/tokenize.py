"""Parallel tokenization of documents: texts -> one uint16 array of GPT-2 ids, ``EOT_ID`` after each.

Text that fits in memory is cut into work units at points that cannot change its ids
(``_cut_points``) and encoded on threads (tiktoken releases the GIL); a large Hub corpus streams
through ``datasets.map`` in worker processes instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import datasets
import numpy as np

from gptlab.data.tokenizer import EOT_ID, get_tokenizer

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


def tokenize_documents(docs: Any, num_proc: int = 1) -> np.ndarray:
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
