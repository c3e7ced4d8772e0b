"""Cross-entropy through the LM head without materialising the full logits.

With GPT-2's 50k-token vocabulary the logits of a batch dwarf everything else a small model
computes: 2048 tokens make a 400 MB fp32 tensor, and autograd would keep it plus the
log-softmax output of the same size. Here the head and the loss run over row chunks, and the
gradients are formed in the same pass (softmax minus one-hot), so no chunk's logits outlive it.
"""

from __future__ import annotations

import torch

# Rows per chunk: keeps a chunk's fp32 logits near 64 MB at a 50k vocabulary.
CHUNK_ROWS = 320


def _chunks(n: int, size: int) -> range:
    return range(0, n, size)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n = hidden.size(0)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in _chunks(n, CHUNK_ROWS):
            h = hidden[start : start + CHUNK_ROWS]
            t = targets[start : start + CHUNK_ROWS]
            rows = torch.arange(t.numel(), device=t.device)
            logits = (h @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits[rows, t]).sum()
            # d(mean loss)/d(logits) = (softmax - onehot) / n, computed in place over the logits
            probs = logits.sub_(lse[:, None]).exp_()
            probs[rows, t] -= 1.0
            probs.div_(n)
            grad_hidden[start : start + CHUNK_ROWS] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
            grad_weight.addmm_(probs.t(), h.float())
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / n

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (rows of ``hidden``: (N, C))."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(hidden, weight, targets)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in _chunks(hidden.size(0), CHUNK_ROWS):
        logits = (hidden[start : start + CHUNK_ROWS] @ weight.t()).float()
        total += torch.nn.functional.cross_entropy(logits, targets[start : start + CHUNK_ROWS], reduction="sum")
    return total / hidden.size(0)
