"""GPT-1 input transformations: where the special tokens go, and what truncation keeps."""

from __future__ import annotations

import pytest

from gptlab.data import transforms as T
from gptlab.data.tokenizer import DELIM_ID, EXTRACT_ID, START_ID, get_tokenizer

S, D, E = START_ID, DELIM_ID, EXTRACT_ID


def text(n: int, base: int = 0) -> list[int]:
    """``n`` distinct token ids, so a test can see exactly which ones survived."""
    return list(range(base, base + n))


def test_classification_is_start_text_extract() -> None:
    out = T.classification([5, 6, 7], 2, block_size=16)
    assert out.sequences == [[S, 5, 6, 7, E]]
    assert out.extract_index == [4]
    assert (out.label, out.truncated, out.token_labels) == (2, False, None)


def test_entailment_puts_the_delimiter_between_premise_and_hypothesis() -> None:
    out = T.entailment([1, 2], [3], 0, block_size=16)
    assert out.sequences == [[S, 1, 2, D, 3, E]]
    assert out.extract_index == [5]


def test_similarity_yields_both_orderings() -> None:
    out = T.similarity([1, 2], [3], 0.75, block_size=16)
    assert out.sequences == [[S, 1, 2, D, 3, E], [S, 3, D, 1, 2, E]]
    assert out.extract_index == [5, 5]
    assert out.label == 0.75


@pytest.mark.parametrize("num_answers", [1, 2, 4, 7])
def test_multiple_choice_yields_one_sequence_per_answer(num_answers: int) -> None:
    answers = [text(k + 1, base=100 * (k + 1)) for k in range(num_answers)]
    out = T.multiple_choice([1, 2, 3], answers, num_answers - 1, block_size=32)
    assert out.sequences == [[S, 1, 2, 3, D, *a, E] for a in answers]
    assert out.extract_index == [len(seq) - 1 for seq in out.sequences]
    assert out.label == num_answers - 1 and not out.truncated


def test_ner_labels_first_sub_tokens_and_maps_them_back_to_words() -> None:
    words = ["Tokenization", "of", "unbelievably", "long", "words"]
    tags = [1, 0, 2, 0, 3]
    enc = get_tokenizer()
    pieces = enc.encode_ordinary_batch(T.spaced_words(words))
    assert any(len(p) > 1 for p in pieces), "the test needs words of several sub-tokens"
    out = T.ner(pieces, tags, block_size=64)
    (seq,) = out.sequences
    # GPT-2 sees running text: every word but the first after a space.
    assert seq[0] == S and seq[-1] == E and enc.decode(seq[1:-1]) == "Tokenization of unbelievably long words"
    assert out.token_labels is not None and out.word_index is not None
    assert len(out.token_labels) == len(out.word_index) == len(seq)
    starts = [t for t, w in enumerate(out.word_index) if w >= 0]
    assert [out.word_index[t] for t in starts] == list(range(len(words)))
    assert [out.token_labels[t] for t in starts] == tags
    # each word starts where its pieces start; every other position is ignored
    assert starts == [1 + sum(len(p) for p in pieces[:i]) for i in range(len(words))]
    assert all(out.token_labels[t] == T.IGNORE_INDEX for t in range(len(seq)) if t not in starts)
    assert (out.truncated, out.dropped_words, out.label) == (False, 0, None)


# ----------------------------------------------------------------------------- truncation


def test_a_long_classification_text_keeps_its_beginning_and_the_specials() -> None:
    out = T.classification(text(20), 0, block_size=8)
    assert out.sequences == [[S, *text(6), E]]
    assert out.truncated and out.extract_index == [7]


def _longest_first_loop(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """The rule as stated: one token at a time off the longer text, the first on a tie."""
    while len_a + len_b > budget:
        if len_a >= len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


@pytest.mark.parametrize("block_size", [4, 5, 9, 16])
def test_pairs_are_cut_longest_first_from_their_ends(block_size: int) -> None:
    for len_a in range(0, 15):
        for len_b in range(0, 15):
            a, b = text(len_a), text(len_b, base=1000)
            keep_a, keep_b = _longest_first_loop(len_a, len_b, block_size - 3)
            out = T.entailment(a, b, 1, block_size)
            assert out.sequences == [[S, *a[:keep_a], D, *b[:keep_b], E]]
            assert len(out.sequences[0]) <= block_size
            assert out.truncated == ((keep_a, keep_b) != (len_a, len_b))


def test_similarity_truncates_both_orderings_alike() -> None:
    a, b = text(10), text(3, base=500)
    out = T.similarity(a, b, 1, block_size=10)  # 7 text tokens: a keeps 4, b all 3
    assert out.sequences == [[S, *a[:4], D, *b, E], [S, *b, D, *a[:4], E]]
    assert out.truncated


def test_multiple_choice_keeps_the_end_of_the_context_and_the_start_of_answers() -> None:
    context = text(30)
    answers = [text(3, base=100), text(12, base=200), text(1, base=300)]
    # 13 text tokens: context 6, answers 7 (a tie cuts the context)
    out = T.multiple_choice(context, answers, 1, block_size=16)
    assert out.truncated
    for seq, answer in zip(out.sequences, answers):
        assert len(seq) <= 16 and seq[0] == S and seq[-1] == E and seq.count(D) == 1
        assert seq[1 : seq.index(D)] == context[-6:]  # the same context for every answer
        assert seq[seq.index(D) + 1 : -1] == answer[:7]


def test_ner_drops_the_words_that_do_not_fit_and_counts_them() -> None:
    pieces = [[1], [2, 3], [4, 5, 6], [7], [8]]
    out = T.ner(pieces, [1, 2, 3, 4, 0], block_size=7)  # room for 5 text tokens: words 0 and 1 only
    assert out.sequences == [[S, 1, 2, 3, E]]
    assert out.token_labels == [-100, 1, 2, -100, -100]
    assert out.word_index == [-1, 0, 1, -1, -1]
    assert out.truncated and out.dropped_words == 3


def test_ner_keeps_the_start_of_a_first_word_that_alone_is_too_long() -> None:
    out = T.ner([text(10), [99]], [2, 0], block_size=5)
    assert out.sequences == [[S, 0, 1, 2, E]]
    assert out.token_labels == [-100, 2, -100, -100, -100]
    assert out.truncated and out.dropped_words == 1


def test_block_size_must_leave_room_for_text() -> None:
    with pytest.raises(ValueError, match="block_size=3"):
        T.entailment([1], [2], 0, block_size=3)
    with pytest.raises(ValueError, match="2 tags"):
        T.ner([[1]], [0, 1], block_size=8)
    with pytest.raises(ValueError, match="at least one answer"):
        T.multiple_choice([1], [], 0, block_size=8)
