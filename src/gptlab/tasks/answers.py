"""Generated answers against their targets: exact match and token F1 after normalisation.

``normalize`` applies a task's ``GenerationSpec`` rules (see ``gptlab.tasks.spec``). Exact match
is lm-evaluation-harness's ``exact_match`` with its options (and SQuAD's two extra rules, articles
and whitespace, where set); token F1 is SQuAD's: the harmonic mean of precision and recall of the
normalised words as bags. A generation is scored against every target (the answer and its
aliases) and keeps its best score, as TriviaQA's and SQuAD's official scripts do.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from gptlab.data.tokenizer import EOT
from gptlab.tasks.spec import GenerationSpec

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_DIGITS = str.maketrans("", "", string.digits)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_FIRST_WORD_END = re.compile(r"\S\s")


def answer_end(text: str, rules: GenerationSpec) -> int | None:
    """Where the answer in generated ``text`` ends, once it has: the first stop string
    (``rules.until`` or ``<|endoftext|>``, lm-eval's ``generate_until`` cut), or with
    ``first_word`` the first whitespace after a word; None while it may still go on."""
    ends = [found for stop in (*rules.until, EOT) if (found := text.find(stop)) >= 0]
    if rules.first_word and (word := _FIRST_WORD_END.search(text)):
        ends.append(word.start() + 1)
    return min(ends, default=None)


def cut_answer(text: str, rules: GenerationSpec) -> str:
    """The answer of a finished generation: ``text`` up to ``answer_end`` (all of it if none)."""
    end = answer_end(text, rules)
    return text if end is None else text[:end]


def normalize(text: str, rules: GenerationSpec) -> str:
    """``text`` after the rules of ``rules`` (lm-eval's order, then SQuAD's two extra steps)."""
    for pattern in rules.regexes_to_ignore:
        text = re.sub(pattern, "", text)
    if rules.ignore_case:
        text = text.lower()
    if rules.ignore_punctuation:
        text = text.translate(_PUNCTUATION)
    if rules.ignore_numbers:
        text = text.translate(_DIGITS)
    if rules.ignore_articles:
        text = _ARTICLES.sub(" ", text)
    if rules.collapse_whitespace:
        text = " ".join(text.split())
    return text


def token_f1(prediction: str, target: str) -> float:
    """SQuAD's F1 of two normalised strings' words (1.0 when both have none)."""
    pred, gold = prediction.split(), target.split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_scores(generation: str, targets: Sequence[str], rules: GenerationSpec) -> dict[str, float]:
    """``exact_match`` and ``f1`` of one generation: the best over ``targets``."""
    prediction = normalize(generation.strip(), rules)
    golds = [normalize(target, rules) for target in targets]
    return {
        "exact_match": float(any(prediction == gold for gold in golds)),
        "f1": max(token_f1(prediction, gold) for gold in golds),
    }
