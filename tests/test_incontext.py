"""In-context evaluation: prefix-shared scoring equals plain scoring, the DataModule, metrics, chance
levels, every bad input, and end-to-end Hydra runs of regime=zero_shot/one_shot/few_shot."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
import types
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from test_train import make_cfg

from gptlab.cli.train import result_rows, train
from gptlab.data.demo_tasks import TRAIN_SIZES
from gptlab.data.incontext import InContextDataModule, collate
from gptlab.data.prompts import Request
from gptlab.data.tokenizer import GPT2_VOCAB_SIZE, get_tokenizer
from gptlab.lit import head_scores, incontext
from gptlab.lit.head_scores import token_scores
from gptlab.lit.incontext import InContextModule, choice_loglikelihoods, shared_states
from gptlab.model.checkpoint import CONFIG_KEY
from gptlab.model.gpt import GPT
from gptlab.model.logit_buffer import LogitBuffer
from gptlab.report.predictions import read_predictions
from gptlab.report.results import read_results
from gptlab.schema import ConfigError, check_across_nodes, validate_config
from gptlab.tasks.chance import chance_levels, majority_label
from gptlab.tasks.spec import TaskSpec


@pytest.fixture
def tiny_gpt(tiny_gpt):
    """conftest's tiny model at this file's shape: context 64, GPT-2's padded vocabulary, eval mode."""
    return functools.partial(tiny_gpt, block_size=64, vocab_size=50304, eval_mode=True)


def reference_loglikelihood(model: GPT, context: list[int], continuation: list[int]) -> float:
    """The plain way, as lm-eval: one forward over (context + continuation)[:-1], log_softmax over
    GPT-2's tokens, gather each continuation token."""
    with torch.no_grad():
        logits = model(torch.tensor([(context + continuation)[:-1]]))[0, :, :GPT2_VOCAB_SIZE]
    logprobs = logits.double().log_softmax(-1)
    start = len(context) - 1  # position t predicts token t + 1
    return sum(float(logprobs[start + i, token]) for i, token in enumerate(continuation))


SMALL_VOCAB = 1024  # random token ids need no 50k-row LM head: the scoring tests run on this one


def random_requests(lengths: list[tuple[int, list[int]]], seed: int = 0) -> list[Request]:
    """Requests with contexts of the given lengths and answers of the given token counts."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(0, SMALL_VOCAB, (n,), generator=g).tolist()  # noqa: E731
    return [
        Request(ids(n), [ids(m) for m in answers], choice_chars=[3] * len(answers), label=0, truncated=False)
        for n, answers in lengths
    ]


def scores(model: GPT, requests: list[Request], batch_size: int) -> list[float]:
    out = []
    with torch.no_grad():
        for i in range(0, len(requests), batch_size):
            out += choice_loglikelihoods(model, collate(requests[i : i + batch_size])).tolist()
    return out


CASES = {
    "ragged": [(5, [1, 3, 2]), (11, [4, 1]), (2, [2, 2, 5, 1]), (9, [1])],  # left padding, cache, 1-4 answers
    "one-token-answers": [(7, [1, 1]), (3, [1, 1, 1])],  # no cache at all
    "equal-contexts": [(6, [2, 3]), (6, [3, 1])],  # no padding: the plain causal path
}
MODELS = {
    "gpt2": {},
    "gpt1-post-ln": {"norm": "post"},
    "gpt3-alternating": {"attention": "alternating", "local_window": 4},
}


@pytest.mark.parametrize("model_kind", list(MODELS))
@pytest.mark.parametrize("case", list(CASES))
def test_prefix_sharing_equals_scoring_each_sequence_separately(case: str, model_kind: str, tiny_gpt) -> None:
    model = tiny_gpt(vocab_size=SMALL_VOCAB, **MODELS[model_kind])
    requests = random_requests(CASES[case])
    expected = [reference_loglikelihood(model, r.context, c) for r in requests for c in r.continuations]
    got = scores(model, requests, batch_size=len(requests))
    assert got == pytest.approx(expected, abs=1e-4)


def test_shared_states_are_equal_exactly_where_answers_agree_so_far() -> None:
    example = torch.tensor([0, 0, 0, 1])
    answers = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 9, 7], [5, 6, 7]])
    ids = shared_states(example, answers).tolist()
    same = lambda a, b: ids[a[0]][a[1]] == ids[b[0]][b[1]]  # noqa: E731  ((row, position), (row, position))
    assert same((0, 0), (1, 0)) and same((0, 0), (2, 0)) and not same((0, 0), (3, 0))  # one context's answers
    assert same((0, 1), (1, 1)) and same((0, 1), (2, 1)) and not same((0, 1), (3, 1))  # all after token 5
    assert same((0, 2), (1, 2)) and not same((0, 2), (2, 2))  # after 5 6, not after 5 9
    assert len({i for row in ids for i in row}) == 2 + 2 + 3  # no id repeats across positions


def test_answers_that_agree_so_far_share_lm_head_rows_and_score_as_alone(tiny_gpt, monkeypatch) -> None:
    model = tiny_gpt(vocab_size=SMALL_VOCAB)
    # 10 tokens, 4 states: before every first token, after 5, after 5 6, after 5 6 8
    answers = [[5, 6, 7], [5, 6, 8, 9], [5, 11], [12]]
    requests = [
        Request(list(range(20, 29)), answers, choice_chars=[3] * 4, label=0, truncated=False),
        Request([30, 31], [[5, 6]], choice_chars=[3], label=0, truncated=False),  # a context of its own: 2 more
    ]
    head_rows = []

    def counted(model, hidden, *args, **kwargs):
        head_rows.append(hidden.size(0))
        return token_scores(model, hidden, *args, **kwargs)

    monkeypatch.setattr(incontext, "token_scores", counted)
    expected = [reference_loglikelihood(model, r.context, c) for r in requests for c in r.continuations]
    assert scores(model, requests, batch_size=2) == pytest.approx(expected, abs=1e-4)
    assert head_rows == [6]


def _grouping_cost(lengths: list[int], groups: list[list[int]], per_group: int) -> int:
    return sum(per_group + lengths[group[0]] * len(group) for group in groups)


@pytest.mark.parametrize("per_group", [0, 3, 8, 1000])
def test_length_groups_are_the_cheapest_cut_of_the_answers_longest_first(monkeypatch, per_group) -> None:
    monkeypatch.setattr(incontext, "GROUP_COST_TOKENS", per_group)
    lengths = [3, 10, 0, 5, 6, 2, 10, 1, 5]
    groups = incontext.length_groups(lengths)
    order = [i for group in groups for i in group]
    assert sorted(order) == [i for i, n in enumerate(lengths) if n]  # each answer once, the empty one runs no step
    assert [lengths[i] for i in order] == sorted(filter(None, lengths), reverse=True)
    # every cut of the longest-first order, enumerated
    ranked = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: -lengths[i])
    cheapest = min(
        _grouping_cost(lengths, [ranked[a:b] for a, b in zip((0, *cuts), (*cuts, len(ranked)))], per_group)
        for k in range(len(ranked))
        for cuts in itertools.combinations(range(1, len(ranked)), k)
    )
    assert _grouping_cost(lengths, groups, per_group) == cheapest
    if per_group == 0:  # padding only: one group per length
        assert groups == [[1, 6], [4], [3, 8], [0], [5], [7]]
    if per_group == 1000:
        assert len(groups) == 1


def test_targets_that_share_a_state_score_as_if_it_were_repeated(tiny_gpt, monkeypatch) -> None:
    model = tiny_gpt(vocab_size=SMALL_VOCAB)
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(20, model.config.n_embd, generator=g)
    states = torch.randint(0, 20, (60,), generator=g)
    targets = torch.randint(0, SMALL_VOCAB, (60,), generator=g)
    with torch.no_grad():
        targets[::2] = model.logits(hidden[states]).argmax(-1)[::2]
        monkeypatch.setattr(head_scores, "LOGIT_CHUNK", 7)  # three chunks of states
        logprobs, greedy = token_scores(model, hidden, targets, greedy=True, states=states)
        repeated, repeated_greedy = token_scores(model, hidden[states], targets, greedy=True)
    torch.testing.assert_close(logprobs, repeated, atol=1e-6, rtol=0)
    assert torch.equal(greedy, repeated_greedy) and 25 < int(greedy.sum()) < 60


def test_scores_do_not_depend_on_the_batch_size(tiny_gpt) -> None:
    model = tiny_gpt(vocab_size=SMALL_VOCAB)
    requests = random_requests([(n, [1 + n % 3, 2]) for n in range(1, 14)], seed=3)
    one = scores(model, requests, batch_size=1)
    assert scores(model, requests, batch_size=5) == pytest.approx(one, abs=1e-5)
    assert scores(model, requests, batch_size=len(requests)) == pytest.approx(one, abs=1e-5)


@pytest.mark.parametrize("block_tokens", [None, 8, 5, 1], ids=["one-block", "tie-in-a-block", "tie-across-blocks", "a-token-a-block"])
def test_is_greedy_is_the_argmax_with_ties_settled_by_the_first_maximum(tiny_gpt, monkeypatch, block_tokens) -> None:
    """token_scores' greedy flag equals lm-eval's rule, ``logits.argmax(-1) == target``, computed here
    by plain argmax, and its scores log_softmax's: on random states whose targets are half their
    argmax, half not, and on a tie of tokens 3 and 7 for the maximum (only 3, the first, is greedy),
    whether the vocabulary is one block or blocks of ``block_tokens`` (3 and 7 in one block or two)."""
    model = tiny_gpt(vocab_size=SMALL_VOCAB)
    g = torch.Generator().manual_seed(0)
    if block_tokens is not None:
        monkeypatch.setattr(head_scores, "HEAD_BLOCK", 64 * block_tokens)  # 64 states
    with torch.no_grad():
        model.output_embedding[7] = model.output_embedding[3] = 1.0
        hidden = torch.randn(64, model.config.n_embd, generator=g)
        hidden[:3] = 1.0  # rows 0-2: tokens 3 and 7 share the largest logit
        logits = hidden @ model.output_embedding.T
        targets = torch.randint(0, SMALL_VOCAB, (64,), generator=g)
        targets[::2] = logits.argmax(-1)[::2]
        targets[:3] = torch.tensor([3, 7, 5])
        logprobs, greedy = token_scores(model, hidden, targets, greedy=True)
    assert greedy is not None
    assert greedy.tolist() == (logits.argmax(-1) == targets).tolist()
    assert greedy[:3].tolist() == [True, False, False]
    assert 20 < int(greedy.sum()) <= 33  # both verdicts occur
    expected = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(logprobs, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("greedy", [False, True])
def test_a_logit_far_above_its_first_blocks_maximum_scores_as_log_softmax(tiny_gpt, monkeypatch, greedy) -> None:
    """The exponentials of a state are summed relative to its first block's maximum; a logit more
    than 88 above it overflows that sum, and the state's normaliser is computed again whole."""
    model = tiny_gpt(vocab_size=SMALL_VOCAB)
    monkeypatch.setattr(head_scores, "HEAD_BLOCK", 8 * 100)  # 8 states: blocks of 100 tokens
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        hidden = torch.randn(8, model.config.n_embd, generator=g)
        model.output_embedding[900] = hidden[0] * (150 / hidden[0].square().sum())  # state 0: logit 150 at 900
        logits = hidden @ model.output_embedding.T
        targets = torch.randint(0, SMALL_VOCAB, (8,), generator=g)
        targets[:2] = torch.tensor([900, 5])
        logprobs, is_argmax = token_scores(model, hidden, targets, greedy=greedy)
    assert logits[0, 900] - logits[0, :100].max() > 89  # exp(logit - first block's maximum) is inf
    if greedy:
        assert is_argmax.tolist() == (logits.argmax(-1) == targets).tolist() and bool(is_argmax[0])
    expected = logits.double().log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(logprobs.double(), expected, atol=1e-4, rtol=0)  # fp32's step at 150: 1.5e-5


def test_a_logit_buffer_is_reused_across_calls_and_changes_no_score(tiny_gpt, monkeypatch) -> None:
    model = tiny_gpt(vocab_size=SMALL_VOCAB)
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(300, model.config.n_embd, generator=g)
    targets = torch.randint(0, SMALL_VOCAB, (300,), generator=g)
    monkeypatch.setattr(head_scores, "HEAD_BLOCK", 300 * 342)  # 300 states: blocks of 342, 342, 340 tokens
    buffer = LogitBuffer()
    held = buffer.get(1, head_scores.HEAD_BLOCK, hidden.device).fill_(float("nan"))  # NaN until written
    with torch.no_grad():
        for n in (100, 300, 120):
            alone = token_scores(model, hidden[:n], targets[:n], greedy=True)
            logprobs, greedy = token_scores(model, hidden[:n], targets[:n], greedy=True, logits=buffer)
            assert torch.equal(logprobs, alone[0]) and torch.equal(greedy, alone[1])
    assert not held.isnan().any()  # every call wrote into the one tensor, the 300 states' blocks all of it
    assert buffer.get(1, head_scores.HEAD_BLOCK, hidden.device).data_ptr() == held.data_ptr()


# ----------------------------------------------------------------------------- a small real task


def write_task(tmp_path: Path, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A classification task read from JSON lines files in ``tmp_path`` by the real reader."""
    files = {}
    for split, rows in splits.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[split] = f"{split}.jsonl"
    return {
        "name": "toy",
        "kind": "classification",
        "format": "jsonl",
        "data_dir": str(tmp_path),
        "files": files,
        "fields": {"text": "sentence", "label": "label"},
        "labels": ["no", "yes"],
        "metrics": ["acc", "f1"],
        "eval_splits": ["validation"] if "validation" in files else list(files)[-1:],
        "train_split": "train",
        "prompt": {"name": "qa", "template": "{text}\nQuestion: yes or no?\nAnswer:", "choices": ["no", "yes"]},
    }


N_EVAL = 8
WORDS = "the a film was good bad long short quite very plot acting music scene end".split()


def sentences(n: int, seed: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        words = [WORDS[j] for j in torch.randint(0, len(WORDS), (3 + i % 9,), generator=g)]
        out.append({"sentence": " ".join(words), "label": int(torch.randint(0, 2, (), generator=g))})
    return out


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, Any]:
    return write_task(tmp_path, {"train": sentences(30, 0), "validation": sentences(N_EVAL, 1)})


def validate(module: pl.LightningModule, datamodule: pl.LightningDataModule) -> dict[str, float]:
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return {k: float(v) for k, v in trainer.validate(module, datamodule=datamodule, verbose=False)[0].items()}


def test_logged_metrics_equal_an_independent_count_of_plain_scores(toy: dict[str, Any], tiny_gpt) -> None:
    dm = InContextDataModule(toy, block_size=64, batch_size=4, k=2, fewshot_seed=3)
    model = tiny_gpt()
    metrics = validate(InContextModule(model), dm)
    assert set(metrics) == {"val/acc", "val/f1", "val/acc_norm", "val/n_truncated"}
    acc = acc_norm = tp = fp = fn = 0
    for r in dm.requests("validation"):
        ll = [reference_loglikelihood(model, r.context, c) for c in r.continuations]
        pick = max(range(len(ll)), key=lambda i: (ll[i], -i))
        pick_norm = max(range(len(ll)), key=lambda i: (ll[i] / r.choice_chars[i], -i))
        acc += pick == r.label
        acc_norm += pick_norm == r.label
        tp, fp, fn = tp + (pick == 1 == r.label), fp + (pick == 1 != r.label), fn + (pick == 0 != r.label)
    n = len(dm.requests("validation"))
    assert metrics["val/acc"] == pytest.approx(acc / n)
    assert metrics["val/acc_norm"] == pytest.approx(acc_norm / n)
    assert metrics["val/f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    assert [r.choice_chars for r in dm.requests("validation")] == [[2, 3]] * n  # len("no"), len("yes")


def test_truncated_contexts_are_counted(toy: dict[str, Any], tiny_gpt) -> None:
    block = 14
    dm = InContextDataModule(toy, block_size=block, batch_size=4, k=1)
    dm.setup()
    # independent count: the model would read context + longest answer[:-1], more than the window
    encode = get_tokenizer().encode_ordinary
    expected = 0
    for text, request in zip(contexts_of(dm), dm.requests("validation")):
        longest = max(map(len, request.continuations))
        assert len(request.context) + longest - 1 <= block
        expected += len(encode(text.rstrip())) + longest - 1 > block
    assert expected > 0 and dm.truncated == {"validation": expected}
    assert validate(InContextModule(tiny_gpt(block_size=block)), dm)["val/n_truncated"] == expected


def contexts_of(dm: InContextDataModule) -> list[str]:
    """The validation contexts as text: the task read again, the demonstrations drawn again."""
    from gptlab.data.sources import load_task
    from gptlab.data.prompts import fewshot_contexts

    _, data = load_task(dm.spec)
    return fewshot_contexts(dm.prompt, data["validation"], data["train"], dm.k, dm.fewshot_seed, False)


def test_demonstrations_come_from_the_full_training_split_whatever_train_limit(toy: dict[str, Any]) -> None:
    full = InContextDataModule(toy, block_size=64, batch_size=4, k=3)
    limited = InContextDataModule({**toy, "train_limit": 5}, block_size=64, batch_size=4, k=3)
    full.setup(), limited.setup()
    assert limited.num_train_examples == full.num_train_examples == 30
    assert [r.context for r in limited.requests("validation")] == [r.context for r in full.requests("validation")]
    zero = InContextDataModule(toy, block_size=64, batch_size=4, k=0)
    zero.setup()
    assert zero.num_train_examples == 0


def test_without_a_training_split_demonstrations_come_from_the_eval_split_without_the_example(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = write_task(tmp_path, {"validation": sentences(6, 2)})
    dm = InContextDataModule(task, block_size=256, batch_size=4, k=5)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert "no 'train' split: demonstrations come from its 'validation' split" in caplog.text
    for example, request in zip(sentences(6, 2), dm.requests("validation")):
        # 5 demonstrations out of the 5 other examples: every one but the evaluated example
        text = get_tokenizer().decode(request.context)
        assert text.count("\nAnswer:") == 6 and text.count(example["sentence"] + "\n") == 1
    error = r"regime.k=6: task 'toy' has only 5 demonstration examples in its 'validation' split besides the evaluated"
    with pytest.raises(ValueError, match=error):
        InContextDataModule(task, block_size=256, batch_size=4, k=6).setup()


def test_eval_batches_are_sharded_over_ranks_without_duplicates(toy: dict[str, Any]) -> None:
    dm = InContextDataModule(toy, block_size=64, batch_size=3, k=1)
    dm.setup()
    seen = []
    for rank in range(2):
        dm.trainer = types.SimpleNamespace(global_rank=rank, world_size=2)  # what the module reads
        seen += [i for batch in dm.val_dataloader()[0].sampler for i in batch]
    assert sorted(seen) == list(range(N_EVAL))


def test_bad_inputs_before_scoring(toy: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"regime.k=31: task 'toy' has only 30 demonstration examples in its 'train' split$"):
        InContextDataModule(toy, block_size=64, batch_size=4, k=31).setup()
    missing = {**toy, "prompt": {**toy["prompt"], "template": "{sentence}\nAnswer:"}}
    with pytest.raises(ValueError, match=r"reads field\(s\) \['sentence'\].*available fields: \['label', 'text'\]"):
        InContextDataModule(missing, block_size=64, batch_size=4).setup()
    with pytest.raises(ValueError, match="no prompt named 'gpt3'; valid prompts: qa"):
        InContextDataModule(toy, block_size=64, batch_size=4, prompt="gpt3")
    with pytest.raises(ValueError, match=r"3 choices \['a', 'b', 'c'\] for 2 labels"):
        three = {**toy, "prompt": {**toy["prompt"], "choices": ["a", "b", "c"]}}
        InContextDataModule(three, block_size=64, batch_size=4)
    with pytest.raises(ValueError, match="task 'toy' has no prompt"):
        InContextDataModule({**toy, "prompt": None}, block_size=64, batch_size=4)
    with pytest.raises(ValueError, match=r"InContextDataModule: k=-1: must be >= 0"):
        InContextDataModule(toy, block_size=64, batch_size=4, k=-1)


# ----------------------------------------------------------------------------- chance levels


def test_chance_levels_by_hand() -> None:
    spec = TaskSpec(name="t", kind="similarity", format="demo", labels=["no", "yes"], metrics=["acc", "f1"])
    train = [{"label": y} for y in (0, 1, 1, 0, 1)]  # majority: yes (1)
    evaluation = [{"label": y} for y in (1, 0, 1, 1)]
    # always "yes": 3 of 4 right; F1 = 2·(3/4)·1 / (3/4 + 1) = 6/7
    assert chance_levels(spec, train, evaluation) == pytest.approx({"acc": 0.75, "acc_norm": 0.75, "f1": 6 / 7})
    negative = [{"label": y} for y in (0, 0, 1)]
    assert chance_levels(spec, negative, evaluation)["f1"] == 0.0  # "no" never finds a positive
    assert majority_label([{"label": y} for y in (2, 0, 2, 0, 1)]) == 0  # a tie goes to the smaller id
    mc = TaskSpec(name="m", kind="multiple_choice", format="demo", metrics=["acc"])
    examples = [{"choices": ["a"] * n, "label": 0} for n in (2, 4, 5)]
    uniform = (1 / 2 + 1 / 4 + 1 / 5) / 3
    assert chance_levels(mc, None, examples) == pytest.approx({"acc": uniform, "acc_norm": uniform})
    sts = TaskSpec(name="s", kind="similarity", format="demo", regression=True, metrics=["pearson"])
    assert chance_levels(sts, [{"label": 1.0}], [{"label": 2.0}]) == {"pearson": None, "acc": None, "acc_norm": None}


def test_finetune_rows_carry_the_chance_level_computed_when_the_data_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(tmp_path, "regime=finetune", "task=demo_nextsent", "task.train_limit=40")
    datamodule = instantiate(cfg.regime.datamodule, _convert_="partial")
    datamodule.setup("fit")
    assert datamodule.num_train_examples == 40  # chance comes from the full split, not the subset

    def read_again(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the task was read a second time to compute chance levels")

    monkeypatch.setattr("gptlab.data.sources.read_split", read_again)
    trainer = types.SimpleNamespace(val_dataloaders=[types.SimpleNamespace(dataset=[0] * 160)])
    rows = {r.metric: r for r in result_rows(cfg, {"val/acc": 0.6, "val/loss": 0.7}, datamodule, trainer)}
    assert rows["acc"].chance == 0.5 and rows["loss"].chance is None  # balanced labels
    assert rows["acc"].k is None and rows["acc"].prompt is None


# ----------------------------------------------------------------------------- the Hydra app


def incontext_cfg(tmp_path: Path, *overrides: str):
    return make_cfg(tmp_path, "regime.batch_size=32", "regime.global_batch_size=32", *overrides)


def saved_checkpoint(path: Path) -> Path:
    """A gptlab checkpoint of a seeded gpt-nano, as a pre-training run would write it."""
    torch.manual_seed(11)
    model = GPT.from_name("gpt-nano")
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, CONFIG_KEY: model.config.to_dict()}, path)
    return path


@pytest.mark.parametrize(
    "regime, task, k, prompt, n_choices",
    [
        ("zero_shot", "demo_topic", 0, "topic", 4),
        ("one_shot", "demo_continuation", 1, "continuation", 4),
        ("few_shot", "demo_topic", 3, "statement", 4),
    ],
)
def test_hydra_incontext_run_writes_result_rows(
    regime: str, task: str, k: int, prompt: str, n_choices: int, tmp_path: Path
) -> None:
    ckpt = saved_checkpoint(tmp_path / "nano.ckpt")
    overrides = [f"regime={regime}", f"task={task}", f"model.init_from={ckpt}", "+trainer.limit_val_batches=1"]
    if regime == "few_shot":
        overrides += [f"regime.k={k}", f"regime.prompt={prompt}"]
    metrics = train(incontext_cfg(tmp_path, *overrides))
    assert set(metrics) == {"val/acc", "val/acc_norm", "val/n_truncated"}
    rows = read_results(tmp_path / "run" / "results.jsonl")
    assert {r["metric"] for r in rows} == {"acc", "acc_norm", "n_truncated", "top_answer_share"}
    for row in rows:
        keys = (row["task"], row["regime"], row["k"], row["fewshot_seed"], row["prompt"])
        assert keys == (task, regime, k, 1234, prompt)
        assert (row["init"], row["split"], row["n_eval"]) == (str(ckpt), "validation", 160)
        assert row["n_train_examples"] == (TRAIN_SIZES[task] if k else 0)
        assert row["chance"] == (None if row["metric"] in ("n_truncated", "top_answer_share") else pytest.approx(1 / n_choices))
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was trained
    predictions = read_predictions(tmp_path / "run")  # the examples of the one batch scored
    assert len(predictions) == 32 and all(len(p["loglikelihoods"]) == n_choices for p in predictions)
    assert metrics["val/acc"] == pytest.approx(sum(p["correct"] for p in predictions) / 32)
    assert all(p["correct"] == (p["chosen"] == p["gold"]) and (p["task"], p["k"]) == (task, k) for p in predictions)
    # the share of the examples given the most common answer
    (share,) = [r["value"] for r in rows if r["metric"] == "top_answer_share"]
    assert share == max(Counter(p["chosen"] for p in predictions).values()) / 32


def test_hydra_few_shot_on_real_copa(tmp_path: Path, shared_data: Path) -> None:
    cfg = incontext_cfg(
        tmp_path,
        "regime=few_shot",
        "regime.k=2",
        "task=copa",
        f"paths.data_dir={shared_data}",
        "+trainer.limit_val_batches=1",
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["val/acc"] <= 1.0 and metrics["val/n_truncated"] == 0
    rows = read_results(tmp_path / "run" / "results.jsonl")
    acc = next(r for r in rows if r["metric"] == "acc")
    keys = (acc["k"], acc["prompt"], acc["n_eval"], acc["n_train_examples"], acc["chance"])
    assert keys == (2, "lm-eval", 500, 500, 0.5)


def test_zero_shot_on_a_language_modelling_task_reports_perplexity(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = incontext_cfg(tmp_path, "regime=zero_shot", "task=demo_corpus")
    with caplog.at_level(logging.INFO, logger="gptlab"):
        metrics = train(cfg)
    assert "builds regime.perplexity's DataModule and module" in caplog.text
    assert metrics["val/ppl"] == pytest.approx(torch.tensor(metrics["val/loss"]).exp().item(), rel=1e-5)
    rows = read_results(tmp_path / "run" / "results.jsonl")
    keys = {(r["metric"], r["regime"], r["k"], r["chance"]) for r in rows}
    names = ("loss", "ppl", "word_perplexity", "byte_perplexity", "bits_per_byte")
    assert keys == {(name, "zero_shot", 0, None) for name in names}


@pytest.mark.parametrize(
    "overrides, error",
    [
        (["regime=zero_shot", "task=stsb"], "task 'stsb' is not supported in context: it is a regression task"),
        (["regime=few_shot", "task=conll2003"], "task 'conll2003' is not evaluated in context: NER has a tag for every word"),
        (["regime=one_shot", "task=demo_corpus"], "language-modelling task.*only regime=zero_shot runs it"),
        (["regime=few_shot", "task=sst2", "regime.prompt=gpt2"], "no prompt named 'gpt2'; valid prompts: lm-eval, gpt1-very"),
        (["regime=few_shot", "regime.fit=true"], "never train"),
    ],
)
def test_unsupported_runs_are_refused_before_anything_is_built(
    overrides: list[str], error: str, tmp_path: Path
) -> None:
    cfg = incontext_cfg(tmp_path, "task=demo_topic", *overrides)
    problems = check_across_nodes(cfg)
    assert len(problems) == 1 and re.search(error, problems[0]), problems
    with pytest.raises(ConfigError, match=error):
        validate_config(cfg)


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    cfg = incontext_cfg(tmp_path, "regime=zero_shot", "task=demo_topic", f"model.init_from={tmp_path / 'nope.ckpt'}")
    with pytest.raises(InstantiationException, match=r"init_from='.*nope.ckpt': no such file or directory"):
        train(cfg)


@pytest.mark.slow
def test_ddp_cpu_scores_every_example_once_and_syncs_the_metrics(tmp_path: Path) -> None:
    """Two gloo processes log the single-process metrics (rank 0 writes the rows)."""
    import subprocess
    import sys

    def run(name: str, *overrides: str) -> dict[str, float]:
        run_dir = tmp_path / name
        args = [
            f"hydra.run.dir={run_dir}",
            "callbacks.progress_bar=null",
            "regime=few_shot",
            "regime.k=2",
            "task=demo_topic",
            "regime.global_batch_size=16",
            "regime.batch_size=8",
        ]
        subprocess.run(
            [sys.executable, "-m", "gptlab", *args, *overrides],
            check=True, capture_output=True, timeout=600,
        )
        return {r["metric"]: r["value"] for r in read_results(run_dir / "results.jsonl")}

    single, ddp = run("single"), run("ddp", "hardware=ddp-cpu")
    assert set(ddp) == {"acc", "acc_norm", "n_truncated", "top_answer_share"}  # the last from the gathered answers
    assert ddp == pytest.approx(single, abs=1e-6)
