"""GPT-1's input transformations (Radford et al. 2018, section 3.3), as pure functions over token ids.

Every task becomes one or more token sequences that start with ``[start]`` and end with
``[extract]``, whose hidden state feeds the task head:

================  ==============================================================  =========
transform (kind)  sequences                                                       count
================  ==============================================================  =========
single            ``[start] text [extract]``                                      1
pair              ``[start] premise [delim] hypothesis [extract]``                1
both_orders       ``[start] a [delim] b [extract]`` and ``[start] b [delim] a [extract]``  2
choices           ``[start] context [delim] answer_k [extract]`` for every answer  #answers
words             ``[start] w1 w2 ... wn [extract]``, a label on each word's first  1
                  sub-token (``-100`` elsewhere)
================  ==============================================================  =========

``TRANSFORMS`` maps each transformation's name (a kind's ``transform`` in ``gptlab.tasks.kinds``) to
a function from normalised examples to ``Transformed`` ones.

**Truncation.** A sequence never exceeds ``block_size`` and never loses a special token; only text
is cut, and every transform reports whether it cut anything (``Transformed.truncated``):

- classification: the text keeps its beginning (cut from its end).
- entailment, similarity: *longest first*: while the pair is too long, the longer text loses its
  last token (the first text on a tie), so both keep their beginnings and a short text is left
  whole. Similarity's two orderings hold the same truncated texts.
- multiple choice: the context is shared by all answers and cut the same way for each, so the
  answers are compared on equal terms. Longest first between the context and the longest answer,
  but the context keeps its **end** (the words right before the answer) while every answer keeps
  its beginning.
- ner: whole words are kept from the start while they fit; the words after them are dropped
  (``Transformed.dropped_words`` counts them) and scored as predicted outside any entity. A first
  word that alone is too long keeps its leading sub-tokens, so every example keeps a labelled word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gptlab.data.tokenizer import DELIM_ID, EXTRACT_ID, START_ID, encode_texts

IGNORE_INDEX = -100  # torch's cross-entropy ignore_index


@dataclass(frozen=True)
class Transformed:
    """One example, ready to batch.

    ``extract_index[s]`` is the position of ``[extract]`` in ``sequences[s]``. For ner,
    ``token_labels`` and ``word_index`` are aligned with ``sequences[0]``: the tag of word ``i`` sits
    at the position of its first sub-token, where ``word_index`` holds ``i``; elsewhere they hold
    ``-100`` and ``-1``. ``word_tags`` are the tags of every word of the sentence, also of those
    truncation dropped: entity scores count the gold entities the model never saw as missed.
    """

    sequences: list[list[int]]
    extract_index: list[int]
    label: int | float | None
    truncated: bool
    token_labels: list[int] | None = None
    word_index: list[int] | None = None
    word_tags: list[int] | None = None
    dropped_words: int = 0

    @property
    def max_length(self) -> int:
        """Length of the longest sequence (what a batch is padded to)."""
        return max(len(seq) for seq in self.sequences)


def _budget(block_size: int, specials: int) -> int:
    if block_size <= specials:
        raise ValueError(f"block_size={block_size} leaves no room for text next to {specials} special tokens")
    return block_size - specials


def _longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths the two texts keep when the longer one (``a`` on a tie) is cut first."""
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    # Cut the longer down to the shorter, then both alternately: the closed form of the token loop.
    gap = min(abs(len_a - len_b), excess)
    a, b = (len_a - gap, len_b) if len_a >= len_b else (len_a, len_b - gap)
    rest = excess - gap
    return a - (rest + 1) // 2, b - rest // 2


def _single(text: Sequence[int]) -> list[int]:
    return [START_ID, *text, EXTRACT_ID]


def _pair(a: Sequence[int], b: Sequence[int]) -> list[int]:
    return [START_ID, *a, DELIM_ID, *b, EXTRACT_ID]


def classification(text: Sequence[int], label: int | float, block_size: int) -> Transformed:
    """``[start] text [extract]``; the text keeps its beginning."""
    budget = _budget(block_size, 2)
    seq = _single(text[:budget])
    return Transformed([seq], [len(seq) - 1], label, truncated=len(text) > budget)


def _cut_pair(
    a: Sequence[int], b: Sequence[int], block_size: int
) -> tuple[Sequence[int], Sequence[int], bool]:
    keep_a, keep_b = _longest_first(len(a), len(b), _budget(block_size, 3))
    return a[:keep_a], b[:keep_b], (keep_a, keep_b) != (len(a), len(b))


def entailment(premise: Sequence[int], hypothesis: Sequence[int], label: int, block_size: int) -> Transformed:
    """``[start] premise [delim] hypothesis [extract]``; longest first, both keep their beginnings."""
    a, b, truncated = _cut_pair(premise, hypothesis, block_size)
    seq = _pair(a, b)
    return Transformed([seq], [len(seq) - 1], label, truncated)


def similarity(a: Sequence[int], b: Sequence[int], label: int | float, block_size: int) -> Transformed:
    """Both orderings, ``[start] a [delim] b [extract]`` then ``[start] b [delim] a [extract]``:
    similarity has no natural order, so the head sees (and sums) both."""
    a, b, truncated = _cut_pair(a, b, block_size)
    first, second = _pair(a, b), _pair(b, a)
    return Transformed([first, second], [len(first) - 1, len(second) - 1], label, truncated)


def multiple_choice(
    context: Sequence[int], answers: Sequence[Sequence[int]], label: int, block_size: int
) -> Transformed:
    """``[start] context [delim] answer_k [extract]`` for each answer, any number of them.

    The context keeps its end and the answers their beginnings (see the module doc).
    """
    if not answers:
        raise ValueError("multiple choice needs at least one answer")
    longest = max(len(answer) for answer in answers)
    keep_context, keep_answer = _longest_first(len(context), longest, _budget(block_size, 3))
    kept_context = context[len(context) - keep_context :]
    seqs = [_pair(kept_context, answer[:keep_answer]) for answer in answers]
    truncated = keep_context < len(context) or keep_answer < longest
    return Transformed(seqs, [len(seq) - 1 for seq in seqs], label, truncated)


def spaced_words(words: Sequence[str]) -> list[str]:
    """The strings to BPE-encode for ner: every word but the first gets a leading space, as GPT-2
    sees words in running text (``" world"`` and ``"world"`` are different tokens)."""
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def ner(word_tokens: Sequence[Sequence[int]], tags: Sequence[int], block_size: int) -> Transformed:
    """``[start] w1 ... wn [extract]`` with the tag of each word on its first sub-token.

    ``word_tokens[i]`` is the encoding of ``spaced_words(words)[i]``. Words past ``block_size``
    are dropped (see the module doc).
    """
    if len(word_tokens) != len(tags):
        raise ValueError(f"ner example has {len(word_tokens)} words but {len(tags)} tags")
    budget = _budget(block_size, 2)
    seq, token_labels, word_index = [START_ID], [IGNORE_INDEX], [-1]
    kept = 0
    for i, (pieces, tag) in enumerate(zip(word_tokens, tags)):
        room = budget - (len(seq) - 1)
        if len(pieces) > room:
            if i > 0:
                break
            pieces = pieces[:room]
        kept = i + 1
        if pieces:  # only an empty first word encodes to nothing; it has no position for a label
            seq += pieces
            token_labels += [tag] + [IGNORE_INDEX] * (len(pieces) - 1)
            word_index += [i] + [-1] * (len(pieces) - 1)
    seq.append(EXTRACT_ID)
    token_labels.append(IGNORE_INDEX)
    word_index.append(-1)
    dropped = len(word_tokens) - kept
    truncated = dropped > 0 or (len(word_tokens) > 0 and len(word_tokens[0]) > budget)
    return Transformed(
        [seq],
        [len(seq) - 1],
        None,
        truncated,
        token_labels=token_labels,
        word_index=word_index,
        word_tags=list(tags),
        dropped_words=dropped,
    )


# ----------------------------------------------------------------------------- normalised examples -> sequences

Example = Mapping[str, Any]
# (examples, label as the head takes it, block_size) -> one Transformed per example
BatchTransform = Callable[[Sequence[Example], Callable[[Any], Any], int], list[Transformed]]


def _encode(texts: list[str]) -> list[list[int]]:
    return encode_texts(texts)  # one call per field: the texts are encoded on every CPU


def _regroup(flat: list[list[int]], counts: Sequence[int]) -> list[list[list[int]]]:
    """``flat`` cut back into consecutive groups of ``counts[i]`` items."""
    ends = np.cumsum(counts).tolist()
    return [flat[end - n : end] for n, end in zip(counts, ends)]


def _singles(examples: Sequence[Example], label: Callable[[Any], Any], block_size: int) -> list[Transformed]:
    texts = _encode([ex["text"] for ex in examples])
    return [classification(t, label(ex["label"]), block_size) for t, ex in zip(texts, examples)]


def _pairs_with(pair: Callable[..., Transformed]) -> BatchTransform:
    def transform(examples: Sequence[Example], label: Callable[[Any], Any], block_size: int) -> list[Transformed]:
        texts_a = _encode([ex["text_a"] for ex in examples])
        texts_b = _encode([ex["text_b"] for ex in examples])
        return [pair(a, b, label(ex["label"]), block_size) for a, b, ex in zip(texts_a, texts_b, examples)]

    return transform


def _choices(examples: Sequence[Example], label: Callable[[Any], Any], block_size: int) -> list[Transformed]:
    contexts = _encode([ex["context"] for ex in examples])
    answers = _regroup(_encode([c for ex in examples for c in ex["choices"]]), [len(ex["choices"]) for ex in examples])
    return [multiple_choice(c, a, int(ex["label"]), block_size) for c, a, ex in zip(contexts, answers, examples)]


def _words(examples: Sequence[Example], label: Callable[[Any], Any], block_size: int) -> list[Transformed]:
    words = _regroup(
        _encode([w for ex in examples for w in spaced_words(ex["tokens"])]), [len(ex["tokens"]) for ex in examples]
    )
    return [ner(w, ex["tags"], block_size) for w, ex in zip(words, examples)]


TRANSFORMS: dict[str, BatchTransform] = {
    "single": _singles,
    "pair": _pairs_with(entailment),
    "both_orders": _pairs_with(similarity),
    "choices": _choices,
    "words": _words,
}
