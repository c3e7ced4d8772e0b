"""GPT-1 task heads (section 3.3): one linear layer on top of the backbone's hidden states.

Every fine-tuning batch holds S sequences per example (B, S, T): one for classification,
entailment and NER, both orderings for similarity, one per answer for multiple choice. A head
reads the hidden state at each sequence's ``[extract]`` token, never "the last non-pad token",
so what it pools does not depend on how the batch was padded.

A kind's ``head`` entry (``gptlab.tasks.kinds``) names its shape in ``HEAD_SHAPES``:

==============  ====================================================  ==================
shape           what the linear layer reads                           scores
==============  ====================================================  ==================
``pooled``      the ``[extract]`` state of the one sequence           (B, num_labels)
``pooled_sum``  the sum of the ``[extract]`` states of all sequences  (B, num_labels)
``per_choice``  each sequence's ``[extract]`` state, one score each   (B, S)
``per_token``   every position of the one sequence                    (B, T, num_labels)
==============  ====================================================  ==================
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlab.model.gpt import INIT_STD

HEAD_SHAPES = ("pooled", "pooled_sum", "per_choice", "per_token")


def pool_at(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, S, T, C) read at one position per sequence ``index`` (B, S) -> (B, S, C)."""
    B, S, _, C = hidden.shape
    return hidden.gather(2, index.view(B, S, 1, 1).expand(B, S, 1, C)).squeeze(2)


class TaskHead(nn.Module):
    """Dropout and one linear layer, arranged as ``shape`` (see the module doc).

    ``forward`` returns scores whose last dimension is what the loss normalises over; a
    ``per_choice`` head puts padded answer slots at -inf.
    """

    def __init__(
        self, shape: str, n_embd: int, num_labels: int, dropout: float = 0.1, regression: bool = False
    ) -> None:
        super().__init__()
        if shape not in HEAD_SHAPES:
            raise ValueError(f"no task head of shape {shape!r}; valid shapes: {', '.join(HEAD_SHAPES)}")
        if regression and num_labels != 1:
            raise ValueError(f"a regression head has one output, not num_labels={num_labels}")
        self.shape, self.regression = shape, regression
        self.dropout = nn.Dropout(dropout)
        # Each (context, answer) sequence is scored on its own, so any number of answers fits.
        self.linear = nn.Linear(n_embd, 1 if shape == "per_choice" else num_labels)
        nn.init.normal_(self.linear.weight, std=INIT_STD)  # the backbone's init, as in GPT-1's code
        nn.init.zeros_(self.linear.bias)

    def forward(
        self, hidden: torch.Tensor, extract_index: torch.Tensor, sequence_mask: torch.Tensor
    ) -> torch.Tensor:
        """Scores from hidden states (B, S, T, C), extract positions (B, S) and real-sequence mask (B, S)."""
        if self.shape == "per_token":
            return self.linear(self.dropout(hidden[:, 0]))
        pooled = pool_at(hidden, extract_index)
        if self.shape == "per_choice":
            scores = self.linear(self.dropout(pooled)).squeeze(-1)
            return scores.masked_fill(~sequence_mask, float("-inf"))
        if self.shape == "pooled_sum":
            # No inherent order between the two texts: add both orderings' features (GPT-1 §3.3).
            pooled = pooled.sum(dim=1, keepdim=True)
        return self.linear(self.dropout(pooled[:, 0]))

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """MSE for regression, else cross-entropy over the last dimension (labels -100 ignored)."""
        if self.regression:
            # fp32: a bf16 label would already be off by up to 0.016 on STS-B's 0-5 scale
            return F.mse_loss(scores.squeeze(-1).float(), labels.float())
        return F.cross_entropy(scores.flatten(0, -2), labels.flatten())

    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        """The predicted value (regression) or class/answer/tag index for each score row."""
        return scores.squeeze(-1) if self.regression else scores.argmax(-1)
