"""Prompts as lm-evaluation-harness v0.4 builds them: templates, demonstrations, token ids, window."""

from __future__ import annotations

import random

import pytest

from gptlab.data.prompts import (
    FewShotSampler,
    answer_choices,
    check_template,
    encode_requests,
    fewshot_contexts,
    render,
)
from gptlab.data.tokenizer import EOT_ID, get_tokenizer
from gptlab.tasks.spec import PromptSpec, TaskSpec

SENTIMENT = PromptSpec(
    name="qa", template="{text}\nQuestion: positive or negative?\nAnswer:", choices=["negative", "positive"]
)
POOL = [{"text": f"review {i}", "label": i % 2} for i in range(12)]


def encode(text: str) -> list[int]:
    return get_tokenizer().encode_ordinary(text)


# ----------------------------------------------------------------------------- templates


def test_template_renders_fields_and_filters() -> None:
    prompt = PromptSpec(name="p", template="{text_a}|{text_b:sentence}|{text_a:strip}")
    assert render(prompt, {"text_a": " a b ", "text_b": " no period "}) == " a b |no period.|a b"
    assert render(prompt, {"text_a": "x", "text_b": "has one. "}) == "x|has one.|x"


def test_answers_are_verbalizers_or_the_examples_own_with_the_choice_prefix() -> None:
    assert answer_choices(SENTIMENT, {"text": "t", "label": 1}) == ["negative", "positive"]
    copa = PromptSpec(name="c", template="{context}", choice_prefix=" ")
    assert answer_choices(copa, {"context": "c", "choices": ["a", "b c"], "label": 0}) == [" a", " b c"]


def test_a_template_field_the_examples_lack_is_named_with_the_available_fields() -> None:
    prompt = PromptSpec(name="p", template="{sentence} and {text}")
    with pytest.raises(ValueError, match=r"field\(s\) \['sentence'\].*available fields: \['label', 'text'\]"):
        check_template("t", prompt, {"text": "x", "label": 0}, "'validation'")


def test_bad_prompt_specs_are_refused_naming_the_key() -> None:
    good = {"template": "{text}", "choices": ["a", "b"]}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['verbalizers'\]"):
        PromptSpec.from_mapping("t", "p", {**good, "verbalizers": ["a"]})
    with pytest.raises(ValueError, match="unknown template filter 'upper'; valid filters: strip, sentence"):
        PromptSpec.from_mapping("t", "p", {**good, "template": "{text:upper}"})
    with pytest.raises(ValueError, match="needs a template string"):
        PromptSpec.from_mapping("t", "p", {"choices": ["a"]})
    with pytest.raises(ValueError, match="not a format string"):
        PromptSpec.from_mapping("t", "p", {"template": "{text"})


def test_named_prompts_and_their_errors() -> None:
    spec = TaskSpec(
        name="t",
        kind="classification",
        format="demo",
        prompt={"name": "lm-eval", **dict(template="{text}", choices=["a", "b"])},
        prompts={"very": {"template": "{text} very", "choices": ["a", "b"]}},
    )
    assert spec.prompt_spec().name == spec.prompt_spec("lm-eval").name == "lm-eval"
    assert spec.prompt_spec("very").template == "{text} very"
    with pytest.raises(ValueError, match="no prompt named 'gpt3'; valid prompts: lm-eval, very"):
        spec.prompt_spec("gpt3")
    bare = TaskSpec(name="t", kind="classification", format="demo")
    with pytest.raises(ValueError, match="task 't' has no prompt"):
        bare.prompt_spec()
    with pytest.raises(ValueError, match=r"prompt 'x': unknown key\(s\) \['choice'\]"):
        TaskSpec(name="t", kind="classification", format="demo", prompts={"x": {"template": "{text}", "choice": []}})


# ----------------------------------------------------------------------------- contexts


def test_zero_shot_context_is_the_rendered_example() -> None:
    doc = {"text": "great film", "label": 1}
    assert fewshot_contexts(SENTIMENT, [doc], POOL, 0, 1234, False) == [render(SENTIMENT, doc)]


def test_few_shot_context_joins_demonstrations_with_their_gold_answer() -> None:
    doc = {"text": "great film", "label": 1}
    [context] = fewshot_contexts(SENTIMENT, [doc], POOL, 2, 7, same_split=False)
    a, b = random.Random(7).sample(POOL, 2)
    shot = "{}\nQuestion: positive or negative?\nAnswer: {}"
    expected = (
        shot.format(a["text"], ["negative", "positive"][a["label"]])
        + "\n\n"
        + shot.format(b["text"], ["negative", "positive"][b["label"]])
        + "\n\n"
        + "great film\nQuestion: positive or negative?\nAnswer:"
    )
    assert context == expected


def lm_eval_draws(pool: list, docs: list, k: int, seed: int, same_split: bool) -> list[list]:
    """lm-eval's ContextSampler.get_context, written out: one generator, docs in order."""
    rnd = random.Random(seed)
    out = []
    for doc in docs:
        fewshotex = rnd.sample(pool, k + 1 if same_split else k)
        out.append([x for x in fewshotex if x != doc][:k])
    return out


@pytest.mark.parametrize("same_split", [True, False])
def test_sampler_reproduces_lm_evals_draw_order(same_split: bool) -> None:
    docs = POOL if same_split else [{"text": f"dev {i}", "label": 0} for i in range(8)]
    sampler = FewShotSampler(POOL, seed=1234, same_split=same_split)
    assert [sampler.draw(doc, 3) for doc in docs] == lm_eval_draws(POOL, docs, 3, 1234, same_split)


def test_sampler_never_includes_the_evaluated_example_and_is_deterministic_per_seed() -> None:
    pool = POOL[:4]  # k + 1 = 4 draws: the evaluated example is drawn every time and must go
    sampler = FewShotSampler(pool, seed=0, same_split=True)
    for doc in pool:
        demos = sampler.draw(doc, 3)
        assert len(demos) == 3 and doc not in demos
    first = fewshot_contexts(SENTIMENT, POOL, POOL, 3, 99, True)
    assert first == fewshot_contexts(SENTIMENT, POOL, POOL, 3, 99, True)
    assert first != fewshot_contexts(SENTIMENT, POOL, POOL, 3, 100, True)


def test_zero_shot_does_not_advance_the_sampler() -> None:
    sampler = FewShotSampler(POOL, seed=5, same_split=False)
    assert sampler.draw(POOL[0], 0) == []
    assert sampler.draw(POOL[0], 2) == random.Random(5).sample(POOL, 2)


# ----------------------------------------------------------------------------- tokens


def test_trailing_whitespace_moves_from_the_context_to_the_continuation() -> None:
    [request] = encode_requests(["Answer: \n"], [["yes", "no"]], [0], " ", 64)
    context = encode("Answer:")
    assert request.context == context
    assert request.continuations == [encode(f"Answer: \n {a}")[len(context):] for a in ("yes", "no")]
    assert request.choice_chars == [3, 2]


def test_continuation_tokens_are_the_whole_encodings_tail_after_the_contexts_tokens() -> None:
    # "The cat" + "s are": the whole encodes as "The", " cats", " are", so lm-eval's continuation is
    # whole[len(encode("The cat")):] = [" are"] and the "s" falls between the two.
    [request] = encode_requests(["The cat"], [["s are"]], [0], "", 64)
    whole, context = encode("The cats are"), encode("The cat")
    assert whole[: len(context)] != context
    assert request.context == context and request.continuations == [whole[len(context):]]


def test_an_empty_context_is_the_end_of_text_token() -> None:
    requests = encode_requests(["", "  "], [["hello world"], ["hi"]], [0, 0], " ", 64)
    assert requests[0].context == [EOT_ID]
    assert requests[0].continuations == [encode(" hello world")]
    assert requests[1].context == [EOT_ID] and requests[1].continuations == [encode("   hi")]


def test_long_contexts_are_cut_on_the_left_to_fit_the_longest_answer() -> None:
    context = " ".join(f"w{i}" for i in range(40))
    short, long_ = "a", "b c d e f"
    [request, fits] = encode_requests([context, "tiny"], [[short, long_], [short]], [1, 0], " ", 16)
    longest = max(len(c) for c in request.continuations)
    assert len(request.context) + longest - 1 == 16  # the model reads context + answer[:-1]
    assert request.context == encode(context)[-len(request.context):]
    assert request.truncated and not fits.truncated
    with pytest.raises(ValueError, match="does not fit block_size=2"):
        encode_requests(["x"], [["one two three four"]], [0], " ", 2)
