"""Task heads: extract-token pooling, order-free similarity, answer-equivariant multiple choice."""

from __future__ import annotations

import pytest
import torch

from gptlab.model.gpt import GPT
from gptlab.model.heads import TaskHead, pool_at
from gptlab.tasks.kinds import KINDS

C = 32


@pytest.fixture(scope="module")
def model(tiny_gpt) -> GPT:
    return tiny_gpt(n_embd=C, eval_mode=True)


def hidden_of(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    B, S, T = ids.shape
    return model.hidden_states(ids.view(B * S, T)).view(B, S, T, -1)


def head(kind: str, num_labels: int = 3, regression: bool = False) -> TaskHead:
    """The head of task kind ``kind``, by the shape its record names."""
    torch.manual_seed(1)
    return TaskHead(KINDS[kind].head, C, num_labels, dropout=0.1, regression=regression).eval()


def test_pooling_reads_the_extract_position(model: GPT) -> None:
    ids = torch.randint(0, 64, (2, 1, 10))
    extract = torch.tensor([[5], [7]])
    pooled = pool_at(hidden_of(model, ids), extract)
    later = ids.clone()
    later[:, :, 8:] = (later[:, :, 8:] + 1) % 64  # tokens after the extract token
    assert torch.allclose(pool_at(hidden_of(model, later), extract), pooled, atol=1e-6)
    hidden = hidden_of(model, ids)
    assert torch.equal(pooled[1, 0], hidden[1, 0, 7])
    assert not torch.allclose(pool_at(hidden, extract - 1), pooled)


def test_classification_scores_one_row_per_example(model: GPT) -> None:
    ids = torch.randint(0, 64, (4, 1, 9))
    extract = torch.full((4, 1), 8)
    scores = head("classification")(hidden_of(model, ids), extract, torch.ones(4, 1, dtype=torch.bool))
    assert scores.shape == (4, 3)


def test_similarity_is_the_same_with_the_texts_swapped(model: GPT) -> None:
    ids = torch.randint(0, 64, (3, 2, 12))
    extract = torch.tensor([[11, 9], [10, 11], [8, 8]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    for sim in (head("similarity", 2), head("similarity", 1, regression=True)):
        scores = sim(hidden_of(model, ids), extract, mask)
        swapped = sim(hidden_of(model, ids.flip(1)), extract.flip(1), mask)
        assert torch.allclose(scores, swapped, atol=1e-6)
    assert scores.shape == (3, 1) and sim.predict(scores).shape == (3,)


def test_multiple_choice_is_equivariant_over_answers_and_masks_padding(model: GPT) -> None:
    mc = head("multiple_choice")
    ids = torch.randint(0, 64, (2, 5, 10))
    extract = torch.randint(3, 10, (2, 5))
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])  # example 2: three answers
    scores = mc(hidden_of(model, ids), extract, mask)
    assert scores.shape == (2, 5) and torch.isneginf(scores[1, 3:]).all() and scores[0].isfinite().all()
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted = mc(hidden_of(model, ids[:, perm]), extract[:, perm], mask[:, perm])
    assert torch.allclose(permuted, scores[:, perm], atol=1e-6)
    assert torch.equal(mc.predict(permuted), perm.argsort()[mc.predict(scores)])
    # A padded slot never wins and takes no probability, whatever its (garbage) contents.
    assert mc.predict(scores)[1] < 3
    labels = torch.tensor([4, 2])
    train_scores = scores.detach().requires_grad_()
    mc.loss(train_scores, labels).backward()
    assert train_scores.grad.isfinite().all() and (train_scores.grad[1, 3:] == 0).all()


def test_ner_scores_every_token(model: GPT) -> None:
    ids = torch.randint(0, 64, (2, 1, 7))
    ner = head("ner", 5)
    scores = ner(hidden_of(model, ids), torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.bool))
    assert scores.shape == (2, 7, 5)
    labels = torch.full((2, 7), -100)
    labels[:, 0] = 1
    expected = torch.nn.functional.cross_entropy(scores[:, 0], labels[:, 0])
    assert torch.allclose(ner.loss(scores, labels), expected)


def test_regression_loss_is_mse() -> None:
    reg = head("similarity", 1, regression=True)
    scores, labels = torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 2.5])
    assert reg.loss(scores, labels).item() == pytest.approx((1 + 0.25) / 2)


def test_bad_head_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="no task head of shape 'lm'; valid shapes: pooled, pooled_sum"):
        TaskHead("lm", C, 2)
    with pytest.raises(ValueError, match="regression head has one output"):
        TaskHead("pooled_sum", C, 2, regression=True)
