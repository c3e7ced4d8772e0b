"""Cross-entropy through the LM head without materialising the full logits.

With GPT-2's 50k-token vocabulary the logits of a batch dwarf everything else a small model
computes: 2048 tokens make a 400 MB fp32 tensor, and autograd would keep it plus the
log-softmax output of the same size. Here the head and the loss run over row chunks, and the
gradients are formed in the same pass (softmax minus one-hot), so no chunk's logits outlive it.
In fp32 the chunks' logits go to the caller's ``LogitBuffer`` (its model's), kept between steps.
"""

from __future__ import annotations

import torch

from gptlab.model.logit_buffer import LogitBuffer

# Bytes of fp32 logits one chunk may hold: ~64 MB keeps a CPU's working set small (320 rows at
# GPT-2's vocabulary); a GPU wants far larger matmuls to keep its tensor cores busy.
CHUNK_BYTES = {"cpu": 64 * 2**20, "cuda": 2**30}


def _chunk_rows(hidden: torch.Tensor, weight: torch.Tensor) -> int:
    budget = CHUNK_BYTES.get(hidden.device.type, CHUNK_BYTES["cpu"])
    return max(1, budget // (4 * weight.size(0)))


def _chunk_buffer(
    hidden: torch.Tensor, weight: torch.Tensor, rows_per_chunk: int, logits: LogitBuffer | None
) -> torch.Tensor | None:
    """The tensor that every chunk's fp32 logits are written into, from ``logits``, for an fp32
    matmul; None without a buffer or under autocast (a new tensor per chunk: the low-precision
    matmul's result is cast after)."""
    fp32 = hidden.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled(hidden.device.type)
    return logits.get(rows_per_chunk, weight.size(0), hidden.device) if logits is not None and fp32 else None


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, buffer: torch.Tensor | None) -> torch.Tensor:
    """The fp32 logits of hidden rows ``h``, written into ``buffer`` when there is one."""
    return (h @ weight.t()).float() if buffer is None else torch.mm(h, weight.t(), out=buffer[: h.size(0)])


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, logits: LogitBuffer | None
    ) -> torch.Tensor:
        n, rows_per_chunk = hidden.size(0), _chunk_rows(hidden, weight)
        buffer = _chunk_buffer(hidden, weight, rows_per_chunk, logits)
        # Under autocast the weight gradient is a tensor-core matmul too; in fp32 (CPU) it
        # accumulates in place, without a vocabulary-sized temporary per chunk.
        autocast = torch.is_autocast_enabled(hidden.device.type)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, n, rows_per_chunk):
            h = hidden[start : start + rows_per_chunk]
            t = targets[start : start + rows_per_chunk]
            rows = torch.arange(t.numel(), device=t.device)
            chunk = _chunk_logits(h, weight, buffer)
            # loss = log(sum(exp(logits - max))) + max - logits[target]. Written out rather than
            # torch.logsumexp, which on the CPU makes a temporary and costs ~4x these passes.
            peak = chunk.amax(dim=-1, keepdim=True)
            target_logits = chunk[rows, t]
            exps = chunk.sub_(peak).exp_()
            sums = exps.sum(dim=-1, keepdim=True)
            total += (sums.log() + peak - target_logits[:, None]).sum()
            # d(mean loss)/d(logits) = (softmax - onehot) / n, computed in place over the logits
            probs = exps.div_(sums * n)
            probs[rows, t] -= 1.0 / n
            grad_hidden[start : start + rows_per_chunk] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
            if autocast:
                grad_weight += probs.t() @ h
            else:
                grad_weight.addmm_(probs.t(), h.float())
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / n

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_output, grad_weight * grad_output, None, None


# A hand-fused kernel already: torch.compile traces the model around it, not through it.
@torch.compiler.disable
def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, logits: LogitBuffer | None = None
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` (rows of ``hidden``: (N, C));
    ``logits``: where the chunks' fp32 logits go (default: new tensors)."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(hidden, weight, targets, logits)
    total = hidden.new_zeros((), dtype=torch.float32)
    rows_per_chunk = _chunk_rows(hidden, weight)
    buffer = _chunk_buffer(hidden, weight, rows_per_chunk, logits)
    for start in range(0, hidden.size(0), rows_per_chunk):
        chunk = _chunk_logits(hidden[start : start + rows_per_chunk], weight, buffer)
        total += torch.nn.functional.cross_entropy(chunk, targets[start : start + rows_per_chunk], reduction="sum")
    return total / hidden.size(0)


def unfused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The same loss through the full logits, for ``torch.compile`` to fuse: on a GPU the compiler's
    kernels beat the chunk loop, and the memory for the full logits is there."""
    return torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden, weight).float(), targets)
