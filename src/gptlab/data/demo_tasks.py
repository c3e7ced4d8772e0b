"""Six small labelled tasks cut from the demo corpus (``gptlab.data.corpus``), one or two per kind.

They need no download, so fine-tuning and in-context evaluation can be demonstrated and tested
on CPU with a tiny model pre-trained on the same corpus. Every split is fixed: its documents are
the corpus's own split (``gptlab.data.corpus.is_held_out``: the held-out documents, which
pre-training validates on, go to ``validation``, the rest to ``train``, so no document feeds
both) and its examples are drawn by a random generator seeded with the task and split names. The
tasks change only when the corpus does, i.e. with the Python version.

- ``demo_topic`` (classification): a paragraph -> which of four areas of the docs it is from:
  the language reference (help topics), internet, debugging and testing, or files and formats.
- ``demo_nextsent`` (entailment): does sentence B directly follow sentence A? B is the next
  sentence of the same paragraph, or a sentence from another document.
- ``demo_order`` (similarity): are two sentences adjacent in a paragraph, in either order? A
  symmetric relation; the negatives pair sentences of two documents.
- ``demo_continuation`` (multiple_choice): a sentence and four candidates for the next one: the
  true one and three sentences that open a paragraph of documents on other modules or topics.
  Told apart by what the sentences say and by how they read: a next sentence goes on ("It",
  "If ...", "The default ..."), an opening one starts afresh ("Return ...", "Create ...").
- ``demo_wordorder`` (multiple_choice): a sentence and four candidates for the next one: the true
  one and three copies of it with the words between its first and last shuffled. Only word order
  tells them apart, which is what a language model's likelihood measures and a classifier fine-tuned
  on a few hundred examples does not learn: the demo prompts it and does not fine-tune it.
- ``demo_tagging`` (ner): a sentence as words (punctuation split off, CoNLL style) with the code
  spans it quotes in ``"..."`` or backticks tagged in IOB2: ``KW`` when the span starts with a
  Python keyword, else ``CODE``; ``None``/``True``/``False`` are ``KW`` anywhere.

Each has ``VALIDATION_SIZE`` validation examples and ``TRAIN_SIZES`` training examples, more for
the tasks a small model needs more labels for. Class labels are balanced in every split, the
multiple-choice answer position too; the tagging task takes three quarters
of its sentences from those with a code span. A GPT reads a word's first sub-token with only the
words before it in view, so the tags are chosen to be decidable there (from the opening quote
and the span's first word): the task stays learnable when labels sit on first sub-tokens.
"""

from __future__ import annotations

import copy
import functools
import keyword
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gptlab.data.corpus import MODULES, demo_corpus_splits
from gptlab.tasks.spec import TaskSpec

SPLITS = ("train", "validation")
VALIDATION_SIZE = 160
TOPIC_LABELS = ["language", "internet", "debugging", "files"]
# Top-level modules of each topic beyond "language", which is the help topics (pydoc_data).
TOPIC_MODULES = {
    "internet": frozenset(
        "email ftplib html http ipaddress mailbox mimetypes poplib smtplib socket socketserver "
        "urllib xml xmlrpc".split()
    ),
    "debugging": frozenset(
        "bdb cProfile doctest logging pdb profile pstats timeit trace traceback unittest".split()
    ),
    "files": frozenset(
        "base64 bz2 configparser csv filecmp fileinput glob gzip io json lzma marshal pathlib pickle "
        "shelve shutil tarfile tempfile zipfile zipimport".split()
    ),
}
NEXTSENT_LABELS = ["entailment", "not_entailment"]
ORDER_LABELS = ["not_adjacent", "adjacent"]
NUM_CHOICES = 4
TAG_LABELS = ["O", "B-CODE", "I-CODE", "B-KW", "I-KW"]
# Paragraph lengths (characters) for the topic task: long enough to name a topic, and within a
# 256-token context.
TOPIC_CHARS = (150, 700)
SENTENCE_WORDS = (5, 40)
# Tagging splits punctuation off words, so a sentence has more words than spaces.
MAX_TAGGED_WORDS = 80
# Prose, not grammar rules or code: the share of characters that are letters or spaces.
MIN_PROSE_SHARE = 0.8
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"`(])")
# Words for tagging: a double backtick, or a run of word characters (dotted names in one piece),
# or any other single character.
_WORD = re.compile(r"``|\w+(?:\.\w+)*|[^\w\s]")
_CODE_QUOTES = frozenset(['"', "`", "``"])
_ALWAYS_KW = frozenset(["None", "True", "False"])


@dataclass(frozen=True)
class _Document:
    group: str  # "language" for a help topic, else the top-level module it documents
    split: str
    paragraphs: tuple[str, ...]  # prose paragraphs, lines joined, title left out
    sentences: tuple[tuple[str, ...], ...]  # the sentences of each paragraph


def _prose_share(text: str) -> float:
    return sum(c.isalpha() or c == " " for c in text) / max(len(text), 1)


def _sentences(paragraph: str) -> tuple[str, ...]:
    lo, hi = SENTENCE_WORDS
    return tuple(
        s
        for s in _SENTENCE_END.split(paragraph)
        if lo <= len(s.split()) <= hi and s.endswith((".", "?", "!")) and _prose_share(s) >= MIN_PROSE_SHARE
    )


@functools.cache
def _documents() -> tuple[_Document, ...]:
    module_roots = {name.split(".")[0] for name in MODULES}
    documents = []
    for split, texts in demo_corpus_splits().items():
        for text in texts:
            title, *paragraphs = text.split("\n\n")
            head = title.split(".")[0]
            # Module documents are headed by a qualified name; help topics by a phrase.
            group = head if re.fullmatch(r"[\w.]+", title) and head in module_roots else "language"
            prose = tuple(
                joined for p in paragraphs if _prose_share(joined := " ".join(p.split("\n"))) >= MIN_PROSE_SHARE
            )
            documents.append(_Document(group, split, prose, tuple(_sentences(p) for p in prose)))
    return tuple(documents)


@functools.cache
def _train_texts() -> frozenset[str]:
    return frozenset(
        text
        for doc in _in_split("train")
        for text in (*doc.paragraphs, *(s for para in doc.sentences for s in para))
    )


def _new(split: str, text: str) -> bool:
    """Whether ``text`` may be used in ``split``: short docstring sentences recur across modules, and
    validation leaves out those that train documents also hold, so no text is in both splits."""
    return split == "train" or text not in _train_texts()


def _size(task: str, split: str) -> int:
    return TRAIN_SIZES[task] if split == "train" else VALIDATION_SIZE


def _rng(task: str, split: str) -> random.Random:
    return random.Random(f"gptlab-demo/{task}/{split}")  # str seeds are hashed with sha512: stable


def _in_split(split: str) -> list[_Document]:
    return [doc for doc in _documents() if doc.split == split]


def _topic(split: str) -> list[dict[str, Any]]:
    rng, per_class = _rng("demo_topic", split), _size("demo_topic", split) // len(TOPIC_LABELS)
    lo, hi = TOPIC_CHARS
    examples = []
    for label, name in enumerate(TOPIC_LABELS):
        pool = [
            p
            for doc in _in_split(split)
            if doc.group == name or (name in TOPIC_MODULES and doc.group in TOPIC_MODULES[name])
            for p in doc.paragraphs
            if lo <= len(p) <= hi and _new(split, p)
        ]
        examples += [{"text": p, "label": label} for p in rng.sample(pool, per_class)]
    rng.shuffle(examples)
    return examples


def _adjacent_pairs(split: str) -> list[tuple[int, str, str]]:
    """(document number, sentence, next sentence of the same paragraph) of every document in ``split``."""
    return [
        (n, para[i], para[i + 1])
        for n, doc in enumerate(_in_split(split))
        for para in doc.sentences
        for i in range(len(para) - 1)
        if _new(split, para[i]) and _new(split, para[i + 1])
    ]


def _other_sentence(rng: random.Random, split: str, not_doc: set[int]) -> tuple[int, str]:
    """A random sentence (with its document number) of ``split`` from none of the ``not_doc`` documents."""
    docs = _in_split(split)
    while True:
        n = rng.randrange(len(docs))
        sentences = [s for para in docs[n].sentences for s in para if _new(split, s)]
        if n not in not_doc and sentences:
            return n, rng.choice(sentences)


def _pair_task(task: str, split: str) -> Iterator[tuple[random.Random, bool, str, str]]:
    """(rng, positive, a, b) for a balanced pair task: ``b`` follows ``a``, or ``b`` comes from another
    document. The negatives keep a real pair's first sentence, so ``a`` alone says nothing."""
    rng, size = _rng(task, split), _size(task, split)
    pairs = rng.sample(_adjacent_pairs(split), size)
    for k, (n, a, b) in enumerate(pairs):
        positive = k < size // 2
        yield rng, positive, a, b if positive else _other_sentence(rng, split, {n})[1]


def _shuffled(task: str, split: str, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    _rng(task + "/order", split).shuffle(examples)
    return examples


def _nextsent(split: str) -> list[dict[str, Any]]:
    examples = [
        {
            "text_a": a,
            "text_b": b,
            "label": NEXTSENT_LABELS.index("entailment" if positive else "not_entailment"),
        }
        for _, positive, a, b in _pair_task("demo_nextsent", split)
    ]
    return _shuffled("demo_nextsent", split, examples)


def _order(split: str) -> list[dict[str, Any]]:
    examples = []
    for rng, positive, a, b in _pair_task("demo_order", split):
        # The relation is symmetric: either sentence may come first, for both classes.
        a, b = (b, a) if rng.random() < 0.5 else (a, b)
        label = ORDER_LABELS.index("adjacent" if positive else "not_adjacent")
        examples.append({"text_a": a, "text_b": b, "label": label})
    return _shuffled("demo_order", split, examples)


def _openings(split: str) -> list[tuple[str, list[str]]]:
    """(group, the sentences that open its paragraphs) of every document of ``split`` that has some."""
    by_doc = [
        (doc.group, [para[0] for para in doc.sentences if para and _new(split, para[0])]) for doc in _in_split(split)
    ]
    return [(group, sentences) for group, sentences in by_doc if sentences]


def _choice_task(
    task: str,
    split: str,
    distractors: Callable[[random.Random, str, str], list[str]],
    usable: Callable[[str], bool] = lambda true_next: True,
) -> list[dict[str, Any]]:
    """A sentence, its true next sentence (one that is ``usable``) and ``NUM_CHOICES - 1``
    ``distractors(rng, group, next)``, the answer equally often at each position."""
    rng, size = _rng(task, split), _size(task, split)
    answer_positions = [k % NUM_CHOICES for k in range(size)]
    rng.shuffle(answer_positions)
    docs = _in_split(split)
    pairs = [pair for pair in _adjacent_pairs(split) if usable(pair[2])]
    examples = []
    for (n, context, true_next), label in zip(rng.sample(pairs, size), answer_positions):
        choices = distractors(rng, docs[n].group, true_next)
        choices.insert(label, true_next)
        examples.append({"context": context, "choices": choices, "label": label})
    return examples


def _continuation(split: str) -> list[dict[str, Any]]:
    openings = _openings(split)

    def other_openings(rng: random.Random, group: str, true_next: str) -> list[str]:
        chosen: list[str] = []
        while len(chosen) < NUM_CHOICES - 1:
            # a document first, then its opening: help topics, which have many paragraphs each,
            # are not drawn more often than one-paragraph docstrings
            other, sentences = rng.choice(openings)
            if other != group and (sentence := rng.choice(sentences)) not in chosen:
                chosen.append(sentence)
        return chosen

    return _choice_task("demo_continuation", split, other_openings)


def _wordorder(split: str) -> list[dict[str, Any]]:
    def shuffles(rng: random.Random, group: str, true_next: str) -> list[str]:
        first, *inner, last = true_next.split()
        chosen: list[str] = []
        while len(chosen) < NUM_CHOICES - 1:
            rng.shuffle(inner)
            if (candidate := " ".join([first, *inner, last])) != true_next and candidate not in chosen:
                chosen.append(candidate)
        return chosen

    # three distinct inner words have five other orders: enough distractors, and the loop ends
    return _choice_task("demo_wordorder", split, shuffles, lambda s: len(set(s.split()[1:-1])) >= 3)


def tag_words(sentence: str) -> tuple[list[str], list[int]] | None:
    """The words of ``sentence`` and their tag ids (``TAG_LABELS``); None when a quote is unmatched."""
    words = _WORD.findall(sentence)
    tags = [0] * len(words)
    open_quote, span_start = None, 0
    for i, word in enumerate(words):
        if word in _CODE_QUOTES and open_quote is None:
            open_quote, span_start = word, i + 1
        elif word == open_quote:
            if i > span_start:
                kind = "KW" if keyword.iskeyword(words[span_start]) else "CODE"
                tags[span_start] = TAG_LABELS.index(f"B-{kind}")
                tags[span_start + 1 : i] = [TAG_LABELS.index(f"I-{kind}")] * (i - span_start - 1)
            open_quote = None
        elif open_quote is None and word in _ALWAYS_KW:
            tags[i] = TAG_LABELS.index("B-KW")
    return None if open_quote is not None else (words, tags)


def _tagging(split: str) -> list[dict[str, Any]]:
    rng, size = _rng("demo_tagging", split), _size("demo_tagging", split)
    tagged = [
        t
        for doc in _in_split(split)
        for para in doc.sentences
        for s in para
        if _new(split, s) and (t := tag_words(s)) is not None and len(t[0]) <= MAX_TAGGED_WORDS
    ]
    with_spans = [t for t in tagged if any(t[1])]
    without = [t for t in tagged if not any(t[1])]
    n_with = size * 3 // 4
    chosen = rng.sample(with_spans, n_with) + rng.sample(without, size - n_with)
    rng.shuffle(chosen)
    return [{"tokens": words, "tags": tags} for words, tags in chosen]


# name -> (reader, training examples). Tagging learns its rule from ~1000 sentences,
# continuation its cues from ~800; topic is capped by its smallest class (the "files" paragraphs).
_TASKS: dict[str, tuple[Callable[[str], list[dict[str, Any]]], int]] = {
    "demo_topic": (_topic, 600),
    "demo_nextsent": (_nextsent, 400),
    "demo_order": (_order, 400),
    "demo_continuation": (_continuation, 800),
    "demo_wordorder": (_wordorder, 400),
    "demo_tagging": (_tagging, 1200),
}
DEMO_TASKS = tuple(_TASKS)
TRAIN_SIZES = {name: size for name, (_, size) in _TASKS.items()}


@functools.cache
def _split_examples(name: str, split: str) -> list[dict[str, Any]]:
    reader, _ = _TASKS[name]
    return reader(split)


def read_demo_split(spec: TaskSpec, split: str) -> list[dict[str, Any]]:
    """The normalised examples (see ``gptlab.tasks.spec``) of demo task ``spec.name``'s ``split``."""
    if spec.name not in _TASKS:
        raise ValueError(f"task {spec.name!r}: no such demo task; demo tasks: {', '.join(DEMO_TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"task {spec.name!r}: no split {split!r}; demo splits: {', '.join(SPLITS)}")
    # A copy: the examples are cached, and a caller may edit what it gets.
    return copy.deepcopy(_split_examples(spec.name, split))
