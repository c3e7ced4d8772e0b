"""Autoregressive sampling from a ``GPT``: greedy, temperature, top-k and nucleus (top-p).

Context policy past ``block_size`` (the same with and without the KV cache, so both give the
same tokens): every next token is predicted from the last ``block_size`` tokens at positions
0..block_size-1, like nanoGPT. Positions are learned absolute embeddings, so once the window
slides every cached key sits at the wrong position; the cached path then re-prefills the window
each step. The cache therefore saves work up to ``block_size`` tokens and costs nothing beyond.
"""

from __future__ import annotations

import math

import torch

from gptlab.data.tokenizer import GPT2_VOCAB_SIZE
from gptlab.model.gpt import GPT
from gptlab.model.kv_cache import KVCache


def step_logits(weight: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The (vocabulary, rows) logits ``W @ h^T`` of a decoding step's few hidden states (rows, C).

    The same dot products as the LM head's ``h @ W^T``, in the layout BLAS runs fastest for a few
    rows (1.6x faster at 16 rows, 10x at 2, on 2 cores). One row is computed as two: a single column
    takes BLAS's matrix-vector path, 5x slower than two columns."""
    if hidden.size(0) == 1:
        return torch.mm(weight, hidden.repeat(2, 1).t())[:, :1]
    return torch.mm(weight, hidden.t())


# Packing a (vocabulary, C) head into oneDNN's layout costs about as much as two or three of its
# steps and halves every step after it (2 cores, gpt-micro: 3.5 ms once, then 1.5 ms instead of 3 ms
# a step at 16 rows); a loop that ends within this many steps never packs.
PACK_AFTER_STEPS = 2
PACK_ROWS_HINT = 16  # the row count oneDNN lays the weight out for; steps of 1-64 rows all gain


class StepHead:
    """The LM head of a decoding loop: the (rows, vocabulary) logits of each step's hidden states.

    On a CPU in fp32 with oneDNN, once ``PACK_AFTER_STEPS`` steps have run, the weight is packed
    into oneDNN's layout for skinny products (the packed linear that ``torch.compile`` freezing
    uses) and the later steps run on the packed copy, which lives as long as the head. Elsewhere (a
    GPU, bf16, autocast) every step is ``step_logits``. Either way the logits equal the LM head's
    up to float rounding."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self._packable = (
            weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        )
        self._packed: torch.Tensor | None = None
        self._steps = 0

    @property
    def packed(self) -> bool:
        """Whether the steps now run on the packed weight."""
        return self._packed is not None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._packable and hidden.dtype == torch.float32 and not torch.is_autocast_enabled("cpu"):
            if self._packed is None and self._steps >= PACK_AFTER_STEPS:
                self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, PACK_ROWS_HINT)
            self._steps += 1
            if self._packed is not None:
                return torch.ops.mkldnn._linear_pointwise(hidden, self._packed, None, "none", [None], "")
        return step_logits(self.weight, hidden).t()


def _check_args(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    stop_token: int | None,
    vocab_limit: int | None,
) -> int:
    """Raise ``ValueError`` on a bad argument; return the number of sampleable ids."""
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must have shape (B, T) with T >= 1, got {tuple(idx.shape)}")
    if idx.dtype != torch.long:
        raise ValueError(f"idx must hold token ids (torch.long), got {idx.dtype}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature={temperature} must be a finite number >= 0 (0 = greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (None disables it)")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p} must be in (0, 1] (None disables it)")
    vocab_size = model.config.vocab_size
    limit = vocab_size if vocab_limit is None else vocab_limit
    if not 1 <= limit <= vocab_size:
        raise ValueError(f"vocab_limit={vocab_limit} must be in [1, {vocab_size}] (the model's vocab)")
    if stop_token is not None and not 0 <= stop_token < limit:
        raise ValueError(f"stop_token={stop_token} can never be generated: valid ids are [0, {limit})")
    return limit


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row, shape (B, 1), from next-token ``logits`` (B, V)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p: drop a token once the mass before
        # it already does. The first token has nothing before it, so at least one survives.
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    stop_token: int | None = None,
    vocab_limit: int | None = GPT2_VOCAB_SIZE,
) -> torch.Tensor:
    """Continue the prompts ``idx`` (B, T) by up to ``max_new_tokens`` tokens; returns (B, T + n).

    ``temperature=0`` is greedy (top-k/top-p then have no effect). Only ids below
    ``vocab_limit`` are sampled (None = the whole embedding). With ``stop_token``, a row that has
    produced it keeps emitting it, and generation ends once every row has, so ``n`` may be
    smaller than ``max_new_tokens``. The model runs in eval mode; its mode is restored after.
    """
    limit = _check_args(model, idx, max_new_tokens, temperature, top_k, top_p, stop_token, vocab_limit)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _generate(
                model, idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator,
                stop_token, limit,
            )
    finally:
        model.train(was_training)


def _generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    use_cache: bool,
    generator: torch.Generator | None,
    stop_token: int | None,
    limit: int,
) -> torch.Tensor:
    block_size = model.config.block_size
    out = idx
    cache: KVCache | None = model.new_cache() if use_cache else None
    pending = idx  # tokens of `out` the cache has not seen yet
    head = StepHead(model.output_embedding[:limit])
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        if cache is None:
            hidden = model.hidden_states(out[:, -block_size:])
        else:
            if cache.length + pending.size(1) > block_size:
                # The window slid: rebuild the cache on the last block_size tokens (module doc).
                cache, pending = model.new_cache(), out[:, -block_size:]
            hidden = model.hidden_states(pending, cache=cache)
        # Only the last position is needed; skip the LM head on the rest.
        logits = head(hidden[:, -1])
        nxt = sample_next(logits, temperature, top_k, top_p, generator)
        if stop_token is not None:
            nxt = nxt.masked_fill(done[:, None], stop_token)
            done |= nxt[:, 0] == stop_token
        out = torch.cat([out, nxt], dim=1)
        pending = nxt
        if stop_token is not None and bool(done.all()):
            break
    return out
