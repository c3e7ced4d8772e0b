"""Partial scoring (kind multiple_input, WinoGrande) and unconditional normalisation
(``acc_mutual_info``): prefix-shared scores equal each sequence scored alone, the logged metrics
equal an independent count over the per-example output, and bad settings are refused."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from test_incontext import incontext_cfg, reference_loglikelihood, saved_checkpoint, toy, validate  # noqa: F401

from gptlab.cli.train import train
from gptlab.data.incontext import InContextDataModule, collate
from gptlab.data.prompts import encode_multiple_input, encode_pairs, encode_requests
from gptlab.data.tokenizer import EOT_ID, get_tokenizer
from gptlab.lit.incontext import InContextModule, choice_loglikelihoods, unconditional_loglikelihoods
from gptlab.report.predictions import read_predictions


@pytest.fixture
def tiny_gpt(tiny_gpt):
    return functools.partial(tiny_gpt, block_size=64, vocab_size=50304, eval_mode=True)


# contexts of one example each: a shared beginning; nothing in common; one context a token prefix
# of the other (that answer has no context of its own and is scored from the shared one)
EXAMPLES = [
    (["The trophy did not fit in the case because the trophy", "The trophy did not fit in the case because the case"],
     "was too big."),
    (["Sarah said hello", "Maria said hello"], "and left."),
    (["He painted the fence", "He painted the fence red"], "before noon."),
]


def lm_eval_pair(context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair`` (the empty context becomes its end-of-text token)."""
    ((head, (tail,)),) = encode_pairs([context], [[continuation]])
    return head or [EOT_ID], tail


def test_multiple_input_scores_equal_each_context_scored_alone(tiny_gpt) -> None:
    model = tiny_gpt()
    contexts = [options for options, _ in EXAMPLES]
    requests = encode_multiple_input(contexts, contexts, [c for _, c in EXAMPLES], [0] * len(EXAMPLES), " ", 64)
    assert [len(r.context) for r in requests][1] == 0  # the second example shares no token
    assert 0 in requests[2].scored_from  # the third's first context is all shared
    expected = [
        reference_loglikelihood(model, *lm_eval_pair(context, " " + continuation))
        for options, continuation in EXAMPLES for context in options
    ]
    with torch.no_grad():
        got = choice_loglikelihoods(model, collate(requests)).tolist()
    assert got == pytest.approx(expected, abs=1e-4)


def test_multiple_input_contexts_are_cut_on_the_left_to_fit(tiny_gpt) -> None:
    options, continuation = EXAMPLES[0]
    long = [" ".join(["word"] * 80) + " " + option for option in options]
    (request,) = encode_multiple_input([long], [options], [continuation], [1], " ", 64)
    assert request.truncated
    assert all(len(request.context) + len(row) == 65 for row in request.continuations)  # same row length here


@pytest.mark.parametrize("variant, context", [("lm-eval", ""), ("gpt3", "Answer:")])
def test_unconditional_scores_equal_the_answer_scored_after_the_unconditional_context(
    tiny_gpt, variant: str, context: str
) -> None:
    model = tiny_gpt()
    choices = [["a dog", "two cats", "the sun"], ["yes", "no"]]
    requests = encode_requests(["Which one?", "Is it?"], choices, [0, 1], " ", 64, unconditional=context)
    expected = [reference_loglikelihood(model, *lm_eval_pair(context, " " + c)) for cs in choices for c in cs]
    with torch.no_grad():
        got = unconditional_loglikelihoods(model, collate(requests)).tolist()
    assert got == pytest.approx(expected, abs=1e-4)
    if variant == "gpt3":
        assert requests[0].unconditional[0] == get_tokenizer().encode_ordinary("Answer:")


def test_acc_mutual_info_equals_a_count_over_the_per_example_scores(toy, tiny_gpt) -> None:
    dm = InContextDataModule(toy, block_size=64, batch_size=3, k=1, mutual_info="lm-eval")
    module = InContextModule(tiny_gpt())
    metrics = validate(module, dm)
    records = module.predictions.records["validation"]
    picks = [max(range(2), key=lambda i: r["loglikelihoods"][i] - r["unconditional_loglikelihoods"][i]) for r in records]
    gold = [["no", "yes"].index(r["gold"]) for r in records]
    assert metrics["val/acc_mutual_info"] == pytest.approx(sum(p == g for p, g in zip(picks, gold)) / len(records))
    assert [r["chosen_mutual_info"] for r in records] == [["no", "yes"][p] for p in picks]


def test_winogrande_runs_zero_and_few_shot(tmp_path: Path, shared_data: Path) -> None:
    ckpt = saved_checkpoint(tmp_path / "nano.ckpt")
    for k in (0, 2):
        run = tmp_path / f"k{k}"
        cfg = incontext_cfg(run, "regime=few_shot", f"regime.k={k}", "task=winogrande", f"model.init_from={ckpt}",
                            f"paths.data_dir={shared_data}", "+trainer.limit_val_batches=1")
        metrics = train(cfg)
        predictions = read_predictions(run / "run")
        assert len(predictions) == 32 and all(len(p["loglikelihoods"]) == 2 for p in predictions)
        assert metrics["val/acc"] == pytest.approx(sum(p["correct"] for p in predictions) / 32)


def test_bad_mutual_info_settings_are_refused(toy, tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(ValueError, match=r"mutual_info='gpt-3'; valid: null \(off\), lm-eval .*gpt3"):
        InContextDataModule(toy, block_size=64, batch_size=3, mutual_info="gpt-3")
    winogrande = incontext_cfg(tmp_path, "regime=zero_shot", "task=winogrande", f"paths.data_dir={shared_data}",
                               "regime.mutual_info=lm-eval")
    with pytest.raises(Exception, match="kind multiple_input.*no answers to score unconditionally"):
        train(winogrande)
