"""A text's GPT-2 ids (``encode``), the dtype they are cached in, and where a long document may be
cut so that its parts encode to the ids of the whole (``safe_cut``)."""

from __future__ import annotations

import re
from typing import BinaryIO

import numpy as np

from gptlab.data.tokenizer import EOT_ID, get_tokenizer

TOKEN_DTYPE = np.uint16  # GPT-2 ids (< 50304) fit; half the disk and page cache of int32
EOT_TOKENS = np.array([EOT_ID], dtype=np.uint32)  # tiktoken's dtype, as encode returns
# A byte position where a document may be cut (see safe_cut): an ASCII letter, digit, "_" or
# printable character, then ASCII whitespace. Both classes are chosen so that no Unicode definition
# disagrees (Python's isspace and the Rust regex's \s differ on a few control characters), and
# ASCII bytes stand for themselves in UTF-8 and in every ASCII-compatible single-byte codec.
_SAFE_CUT = re.compile(rb"[\w!-~](?=[\t\n\v\f\r ])")
_SCAN_BYTES = 1 << 16


def encode(text: str) -> np.ndarray:
    """``encode_ordinary(text)`` as tiktoken's uint32 array (a literal ``<|endoftext|>`` in the text is
    plain text); callers narrow a batch of them to ``TOKEN_DTYPE`` at once."""
    # encode_to_numpy releases the GIL and makes no Python ints.
    return get_tokenizer().encode_to_numpy(text, disallowed_special=())


def safe_cut(f: BinaryIO, position: int, end: int) -> int:
    """The first byte position at or after ``position`` (and before ``end``) of the open file ``f``
    where its text can be cut without changing its tokens; ``end`` if there is none.

    The cut goes between an ASCII non-whitespace byte and an ASCII whitespace byte (``_SAFE_CUT``).
    Why the two parts then tokenize to exactly the ids of the whole: GPT-2's pre-tokenizer
    (``GPT2_PATTERN``) cuts text into pieces and BPE runs within each piece. Each alternative of the
    pattern matches either no whitespace except an optional leading space (contractions,
    ``" ?\\p{L}++"``, ``" ?\\p{N}++"``, ``" ?[^\\s\\p{L}\\p{N}]++"``) or only whitespace
    (``"\\s++$"``, ``"\\s+(?!\\S)"``, ``"\\s"``), and some alternative matches any character, so the
    pieces tile the text. Let the cut be at ``i``: ``text[i - 1]`` is not whitespace, ``text[i]`` is.
    No piece holds both, because whitespace appears in a non-whitespace piece only as its first
    character, so a piece boundary lies at ``i``. Every piece that starts before ``i`` is matched
    alike in the prefix ``text[:i]``: a non-whitespace alternative stops or fails at ``i`` in both
    (at whitespace in the whole text, at the end in the prefix), and a whitespace run, its
    look-ahead and ``$`` stop at the non-whitespace character at ``i - 1`` or earlier. So the prefix
    has the same pieces as the whole text before ``i``; and since the pattern has no look-behind and
    ``$`` is the same end of text, the suffix ``text[i:]`` has the whole text's pieces from ``i`` on.
    A CR or CRLF turned into LF is whitespace either way, and never follows the cut's first byte.
    """
    while position < end:
        f.seek(position)
        block = f.read(min(_SCAN_BYTES, end - position))
        if not block:
            break
        found = _SAFE_CUT.search(block)
        if found is not None:
            return position + found.end()
        # the block's last byte may start a cut whose whitespace is in the next block
        position += max(1, len(block) - 1)
    return end


def last_safe_cut(f: BinaryIO, end: int) -> int:
    """The last ``safe_cut`` position of the open file ``f`` before ``end``; 0 if there is none."""
    while end > 0:
        start = max(0, end - _SCAN_BYTES)
        f.seek(start)
        found = [m.end() for m in _SAFE_CUT.finditer(f.read(end - start))]
        if found:
            return start + found[-1]
        if start == 0:
            break
        end = start + 1  # a cut whose first byte ends this block
    return 0
