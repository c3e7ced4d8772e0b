"""In-context prompts as lm-evaluation-harness v0.4 builds them: text -> requests -> token ids.

**Requests.** Every example is one context and one continuation per answer. The context is ``k``
demonstrations, each ``render(demo) + target_delimiter + gold answer``, joined by
``fewshot_delimiter``, then ``fewshot_delimiter`` and ``render(example)`` (``k = 0``: only
``render(example)``). Answer ``i`` is the continuation ``target_delimiter + choices[i]``, where the
choices are the prompt's verbalizers (class tasks, in label order) or the example's own answers
(multiple choice), each after ``choice_prefix``.

**Multiple input** (kind ``multiple_input``, GPT-3's partial evaluation; lm-eval's WinoGrande). The
answers are contexts: the template is rendered once per choice, with ``{choice}`` bound to it, and
each is scored by the likelihood of the one continuation ``target_delimiter + continuation`` after
it. A demonstration shows the right choice's context and the continuation. The contexts' tokens
in common (the demonstrations, the words before the blank) form the request's shared context;
each answer's row is its own remaining context tokens, which condition but are not scored, and
then the continuation's.

**Unconditional scores** (lm-eval's ``acc_mutual_info``; GPT-3 section 2.4). With ``mutual_info``
each answer is also scored after a fixed context that says nothing about the example:
``UNCONDITIONAL_CONTEXTS`` names them (lm-eval's empty context, GPT-3's ``"Answer:"``).

**Demonstrations** (lm-eval's ``ContextSampler``). One ``random.Random(fewshot_seed)`` per eval
split (lm-eval runs each eval split as a task of its own), consumed walking the split's examples
in order: ``rng.sample(pool, k)``, or ``k + 1`` when the pool is the eval split itself, keeping the
first ``k`` draws that are not equal to the evaluated example. So the same seed gives the same
demonstrations whatever the model, the batch size or the number of devices.

**Tokens** (lm-eval's ``_encode_pair``). Trailing whitespace of the context moves to the front of
each continuation; ``context + continuation`` is encoded whole, the context alone, and the
continuation's tokens are the whole's after the context's. An empty context becomes
``[<|endoftext|>]`` with the continuation encoded alone (lm-eval's rule for ``context == ""``;
here also for a context of whitespace only, which lm-eval would leave without any token).

**Window.** lm-eval keeps the last ``block_size + 1`` tokens of each ``context + continuation``.
The answers of an example share one context here (it runs through the model once), so the
context is cut from the left until it fits with the *longest* answer: an example is
``truncated`` when that cut removed anything. Answers shorter than the longest see the same
shortened context, where lm-eval would give them a few more context tokens.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gptlab.data.tokenizer import EOT_ID, encode_texts
from gptlab.tasks.spec import PROMPT_FILTERS, PromptSpec

Example = Mapping[str, Any]
# An example's context: one string, or one per choice (a multiple-input example).
Context = str | list[str]
# mutual_info option -> the context each answer is scored after for log P(answer): lm-eval's
# acc_mutual_info uses the empty context (its end-of-text token), GPT-3 (section 2.4) "Answer:"
UNCONDITIONAL_CONTEXTS = {"lm-eval": "", "gpt3": "Answer:"}


class _TemplateFormatter(string.Formatter):
    """``str.format`` whose format spec names a filter of ``PROMPT_FILTERS`` (``{text:strip}``)."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return PROMPT_FILTERS[format_spec](str(value)) if format_spec else format(value)


_FORMATTER = _TemplateFormatter()


def template_fields(template: str) -> list[str]:
    """The example fields ``template`` reads, in order of first use."""
    return list(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f))


def is_multiple_input(example: Example) -> bool:
    """Whether the example's choices are contexts sharing one continuation (kind multiple_input)."""
    return "continuation" in example


def check_template(task: str, prompt: PromptSpec, example: Example, where: str) -> None:
    """Refuse a template that reads a field the task's examples do not have, naming both."""
    if is_multiple_input(example):
        example = {**example, "choice": example["choices"][0]}
    for template in prompt.templates:
        if missing := [f for f in template_fields(template) if f not in example]:
            raise ValueError(
                f"task {task!r}, prompt {prompt.name!r}: the template {template!r} reads field(s) "
                f"{missing}, which the {where} examples do not have; available fields: {sorted(example)}"
            )


def render(prompt: PromptSpec, example: Example) -> str:
    """The example as the template writes it (lm-eval's ``doc_to_text``): the first of the prompt's
    templates whose fields are all non-empty in it, else its last."""
    *firsts, last = prompt.templates
    chosen = next(
        (t for t in firsts if all(str(example.get(f, "")).strip() for f in template_fields(t))), last
    )
    return _FORMATTER.vformat(chosen, (), example)


def answer_choices(prompt: PromptSpec, example: Example) -> list[str]:
    """The answers as lm-eval's ``doc_to_choice`` gives them (``acc_norm`` counts their characters)."""
    choices = prompt.choices if prompt.choices is not None else example["choices"]
    return [prompt.choice_prefix + choice for choice in choices]


def render_inputs(prompt: PromptSpec, example: Example) -> list[str]:
    """A multiple-input example's contexts: the template rendered with ``{choice}`` bound to each choice."""
    return [render(prompt, {**example, "choice": choice}) for choice in example["choices"]]


def demonstration(prompt: PromptSpec, example: Example) -> str:
    """An example as a demonstration shows it: rendered, the target delimiter, its right answer."""
    if is_multiple_input(example):
        gold = {**example, "choice": example["choices"][example["label"]]}
        return render(prompt, gold) + prompt.target_delimiter + example["continuation"]
    return render(prompt, example) + prompt.target_delimiter + gold_answer(prompt, example)


def gold_answer(prompt: PromptSpec, example: Example) -> str:
    """The right answer of an example, as a demonstration shows it: a generation example's first
    target (lm-eval shows the first of a list of targets), else its labelled answer."""
    if "targets" in example:
        return prompt.choice_prefix + example["targets"][0]
    return answer_choices(prompt, example)[example["label"]]


class FewShotSampler:
    """Demonstrations for one eval split, drawn as lm-eval's ``ContextSampler`` draws them.

    ``pool`` is the demonstration split in file order; ``same_split`` says it is the split being
    evaluated, so one extra example is drawn and the evaluated one (any example equal to it)
    dropped. Call ``draw`` once per evaluated example, in split order.
    """

    def __init__(self, pool: Sequence[Example], seed: int, same_split: bool) -> None:
        self.pool, self.same_split = list(pool), same_split
        self.rng = random.Random(seed)

    def draw(self, example: Example, k: int) -> list[Example]:
        if k == 0:  # lm-eval does not call the sampler at all, so the generator is not advanced
            return []
        drawn = self.rng.sample(self.pool, k + 1 if self.same_split else k)
        return [demo for demo in drawn if demo != example][:k]


def fewshot_contexts(
    prompt: PromptSpec,
    examples: Sequence[Example],
    pool: Sequence[Example],
    k: int,
    seed: int,
    same_split: bool,
) -> list[Context]:
    """The context of every example of one eval split, in split order (see the module doc): one
    string, or one per choice for a multiple-input example."""
    sampler = FewShotSampler(pool, seed, same_split)
    contexts: list[Context] = []
    for example in examples:
        shots = [demonstration(prompt, demo) for demo in sampler.draw(example, k)]
        prefix = prompt.fewshot_delimiter.join(shots) + prompt.fewshot_delimiter if shots else ""
        if is_multiple_input(example):
            contexts.append([prefix + text for text in render_inputs(prompt, example)])
        else:
            contexts.append(prefix + render(prompt, example))
    return contexts


@dataclass
class Request:
    """One example, tokenized: a context shared by its answers, one continuation per answer."""

    context: list[int]
    continuations: list[list[int]]
    choice_chars: list[int]  # characters of each answer as doc_to_choice gives it (acc_norm)
    label: int
    truncated: bool  # the context lost tokens on the left to fit block_size
    index: int = 0  # the example's position in its split
    answers: list[str] | None = None  # the answers as doc_to_choice gives them (per-example output)
    # per continuation, its first scored token: those before it only condition (multiple input)
    scored_from: list[int] | None = None
    # with mutual_info: the unconditional context's ids and each answer's ids after it
    unconditional: tuple[list[int], list[list[int]]] | None = None


def encode_pairs(
    contexts: Sequence[str], continuations: Sequence[Sequence[str]]
) -> list[tuple[list[int], list[list[int]]]]:
    """(context ids, ids of each continuation) for every context, as lm-eval's ``_encode_pair``
    splits them (see the module doc's tokens; an empty context stays empty here)."""
    kept = [context.rstrip() for context in contexts]
    tails = [
        [context[len(head):] + continuation for continuation in conts]
        for context, head, conts in zip(contexts, kept, continuations)
    ]
    heads = encode_texts(kept)
    wholes = iter(encode_texts([head + tail for head, conts in zip(kept, tails) for tail in conts]))
    return [(head, [next(wholes)[len(head):] for _ in conts]) for head, conts in zip(heads, tails)]


def fit_window(
    prompt: list[int], response: list[int], window: int, min_prompt: int = 1
) -> tuple[list[int], list[int]]:
    """``prompt`` and ``response`` cut to at most ``window`` tokens together: the prompt keeps at
    least its last ``min_prompt`` tokens (all when shorter), the response what that leaves (cut
    on the right), and the prompt every token the response does not need (cut on the left).
    ``min_prompt = 1`` is lm-eval's window for a continuation that fits."""
    keep_response = min(len(response), window - min(len(prompt), min_prompt))
    keep_prompt = min(len(prompt), window - keep_response)
    return prompt[len(prompt) - keep_prompt :], response[:keep_response]


def unconditional_requests(
    unconditional: str, choices: Sequence[Sequence[str]], target_delimiter: str, block_size: int
) -> list[tuple[list[int], list[list[int]]]]:
    """Each example's answers scored after the ``unconditional`` context instead of its own: that
    context's ids (``[<|endoftext|>]`` for lm-eval's empty one) and each answer's ids after it."""
    pairs = encode_pairs([unconditional] * len(choices), [[target_delimiter + c for c in cs] for cs in choices])
    out = []
    for i, (head, continuations) in enumerate(pairs):
        head = head or [EOT_ID]
        if len(head) + max(map(len, continuations)) - 1 > block_size:
            raise ValueError(f"example {i}: an answer after the unconditional context {unconditional!r} "
                             f"does not fit block_size={block_size}")
        out.append((head, continuations))
    return out


def _fit(context: list[int], longest: int, block_size: int, least: int, i: int) -> list[int]:
    """``context`` cut on the left so that it and a continuation of ``longest`` tokens fit the model's
    window (it reads context + continuation[:-1]), keeping at least ``least`` tokens."""
    room = block_size + 1 - longest
    if room < least:
        raise ValueError(
            f"example {i}: an answer of {longest} tokens does not fit block_size={block_size} "
            "even without any context"
        )
    return context[len(context) - min(room, len(context)):]


def encode_requests(
    contexts: Sequence[str],
    choices: Sequence[Sequence[str]],
    labels: Sequence[int],
    target_delimiter: str,
    block_size: int,
    unconditional: str | None = None,
) -> list[Request]:
    """Token ids of every (context, answers) example, as lm-eval's ``_encode_pair`` makes them.

    ``choices[i]`` are example ``i``'s answers as ``answer_choices`` gives them; each is scored
    as the continuation ``target_delimiter + answer``. The context is cut on the left to fit
    ``block_size`` together with the longest continuation (see the module doc). ``unconditional``
    (a value of ``UNCONDITIONAL_CONTEXTS``) adds each answer's ids after that context.
    """
    pairs = encode_pairs(contexts, [[target_delimiter + choice for choice in answers] for answers in choices])
    extra = (unconditional_requests(unconditional, choices, target_delimiter, block_size)
             if unconditional is not None else [None] * len(pairs))
    requests = []
    for i, ((head, continuations), answers, label, free) in enumerate(zip(pairs, choices, labels, extra)):
        if not all(continuations):
            raise ValueError(f"example {i}: an answer of {list(answers)} encodes to no token at all")
        context = head or [EOT_ID]  # empty context: lm-eval's end-of-text prefix token
        kept = _fit(context, max(len(c) for c in continuations), block_size, 1, i)
        requests.append(
            Request(
                context=kept,
                continuations=continuations,
                choice_chars=[len(choice) for choice in answers],
                label=int(label),
                truncated=len(kept) < len(context),
                index=i,
                answers=list(answers),
                unconditional=free,
            )
        )
    return requests


def encode_multiple_input(
    contexts: Sequence[Sequence[str]],
    choices: Sequence[Sequence[str]],
    continuations: Sequence[str],
    labels: Sequence[int],
    target_delimiter: str,
    block_size: int,
) -> list[Request]:
    """Token ids of every multiple-input example (see the module doc): ``contexts[i]`` are example
    ``i``'s contexts, one per choice (``choices[i]``, which ``acc_norm`` counts as lm-eval does),
    each followed by ``target_delimiter + continuations[i]``. Each (context, continuation) pair is
    tokenized as lm-eval's ``_encode_pair`` does; the contexts' common token prefix is shared, cut
    on the left to fit ``block_size`` with the longest row."""
    flat = [context for options in contexts for context in options]
    tails = [[target_delimiter + cont] for options, cont in zip(contexts, continuations) for _ in options]
    pairs = iter(encode_pairs(flat, tails))
    requests = []
    for i, (options, answers, label) in enumerate(zip(contexts, choices, labels)):
        encoded = [next(pairs) for _ in options]
        heads = [head for head, _ in encoded]
        if not all(heads) or not all(cont for _, (cont,) in encoded):
            raise ValueError(f"example {i}: a context of {list(options)} or its continuation encodes to no token")
        common = next((j for j, ids in enumerate(zip(*heads)) if len(set(ids)) > 1), min(map(len, heads)))
        shared = heads[0][:common]
        rows = [head[common:] + cont for head, (cont,) in encoded]
        # an answer whose own context is empty is scored from the shared context's last token
        kept = _fit(shared, max(map(len, rows)), block_size, int(min(map(len, heads)) == common), i)
        requests.append(
            Request(
                context=kept,
                continuations=rows,
                choice_chars=[len(choice) for choice in answers],
                label=int(label),
                truncated=len(kept) < len(shared),
                index=i,
                answers=list(answers),
                scored_from=[len(head) - common for head in heads],
            )
        )
    return requests
