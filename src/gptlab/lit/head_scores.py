"""The LM head's log-probabilities of chosen tokens: ``log p(target | state)`` for many states,
without keeping a (states, vocabulary) tensor.

The logits are computed (states, vocabulary) in blocks that stay in the CPU's cache between the
matmul that writes them and the log-sum-exp that reads them; a state's exponentials are summed
relative to its first block's maximum, which ``addmm`` subtracts as it writes each later block.
The blocks hold the logits in base 2 (through states scaled by log2 e), for ``exp2``.
In-context scoring (``gptlab.lit.incontext``), rolling perplexity (``gptlab.lit.rolling``) and the
lm-eval backend score through here.

Log-probabilities are taken over GPT-2's 50257 text tokens only: gptlab's special tokens in the
padded rows of the vocabulary never occur in a prompt, and leaving them out makes an imported GPT-2
score exactly as Hugging Face's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from gptlab.data.tokenizer import GPT2_VOCAB_SIZE
from gptlab.model.gpt import GPT
from gptlab.model.logit_buffer import LogitBuffer

# states per pass over the vocabulary: bounds the (states, vocabulary) logits of a GPU's single block
LOGIT_CHUNK = 2048
# logits (states x vocabulary columns) per block on a CPU, 4 MB: a block stays in the cache from
# the matmul that writes it to the log-sum-exp that reads it. A chunk's whole logits (up to 400 MB)
# went out to memory and back four times: 20-35% more time a state on 2 cores. A state's logits are
# one contiguous row of the block, so its reductions read memory in order: a (vocabulary, states)
# block, reduced down its columns, took 2x the time a state (greedy) while this machine ran slow.
HEAD_BLOCK = 1 << 20
# exponentials in base 2: 2 ** (x * LOG2E) == e ** x. On the CPU, torch's exp of a float tensor
# goes through MKL's vector math: 0.41-0.55 ns an element on 2 cores of an AMD EPYC, exp2's
# vectorised kernel (SLEEF, within 1 ulp) 0.15-0.17 ns. The head: 102 -> 86-91 us a state (772 states).
LOG2E = math.log2(math.e)
# rows whose log-sum-exp overflowed its reference, computed again whole this many at a time
OVERFLOW_CHUNK = 64


def token_scores(
    model: GPT,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    greedy: bool = False,
    logits: LogitBuffer | None = None,
    states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target | state) for targets (M,), in fp32, and with ``greedy`` whether each target is
    its state's argmax (else None: the choice path never needs it). ``hidden`` (S, C) holds the
    states and ``states`` (M,) the row of ``hidden`` each target follows (default: target i follows
    row i), so a state that several targets follow goes through the LM head once. ``logits``: the
    evaluation's ``LogitBuffer``."""
    if states is None:
        states = torch.arange(targets.numel(), device=targets.device)
    norm = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)
    is_argmax = torch.empty(targets.shape, dtype=torch.bool, device=hidden.device) if greedy else None
    # fp32 whatever the trainer's precision: the sums compare answers that differ in the 3rd digit
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        weight = model.output_embedding[:GPT2_VOCAB_SIZE].float()
        hidden = hidden.float()
        on_cpu = hidden.device.type == "cpu"
        for start in range(0, hidden.size(0), LOGIT_CHUNK):
            rows = hidden[start : start + LOGIT_CHUNK]
            size = HEAD_BLOCK if on_cpu else weight.size(0) * rows.size(0)  # a GPU: one block
            # every block's logits go to one buffer: the evaluation's, kept between calls, else this call's own
            buffer = torch.empty(size, device=hidden.device) if logits is None else logits.get(1, size, hidden.device)
            # the targets that follow this chunk's states (all of them when there is one chunk)
            picked = slice(None) if rows.size(0) == hidden.size(0) else (
                ((states >= start) & (states < start + rows.size(0))).nonzero().squeeze(1)
            )
            picks = (states[picked] - start, targets[picked]) if greedy else None
            norm[start : start + rows.size(0)], chunk_argmax = _log_normalisers(weight, rows, buffer.view(-1), picks)
            if is_argmax is not None:
                is_argmax[picked] = chunk_argmax
        # the target's own logit, one dot product each: the blocks need not find it
        chosen = torch.linalg.vecdot(weight[targets], hidden[states])
    return chosen - norm[states], is_argmax


def _log_normalisers(
    weight: torch.Tensor,
    rows: torch.Tensor,
    buffer: torch.Tensor,
    picks: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logsumexp of each row's logits (``rows @ weight.T``), and with ``picks`` (rows (M,), tokens
    (M,)) whether each token is its row's argmax (its first maximum, as lm-eval's ``is_greedy``
    takes it; else None). The logits are computed (rows, vocabulary) in blocks of at most
    ``buffer.numel()``, which each overwrites.

    A row's exponentials are summed relative to one reference, its first block's maximum, which the
    matmul subtracts as it writes each later block: no pass looks for a running maximum or rescales
    to it. A row whose sum overflows (a logit 88 above its reference) is computed again whole.
    Equal to log_softmax's normaliser to ~1e-6."""
    total = torch.zeros(rows.size(0), device=rows.device)
    shift = None
    # the logits in base 2, through states scaled once: no pass over a block scales it
    scaled = rows * LOG2E
    if picks is not None:
        # a token is its row's first maximum when it reaches the row's maximum, every block before
        # its own stays below that, and it is the first maximum of its own block
        picked_rows, tokens = picks
        value = torch.empty(tokens.shape, device=rows.device)
        before = torch.empty(tokens.shape, device=rows.device)
        first_in_block = torch.empty(tokens.shape, dtype=torch.bool, device=rows.device)
        top = torch.full((rows.size(0),), float("-inf"), device=rows.device)
    for begin, part, out in _logit_blocks(weight, scaled, buffer):
        if shift is None:
            block = torch.mm(scaled, part.t(), out=out)
            shift = block.amax(1, keepdim=True).neg_()
            block.add_(shift)
        else:
            block = torch.addmm(shift, scaled, part.t(), out=out)
        if picks is not None:
            inside = ((tokens >= begin) & (tokens < begin + part.size(0))).nonzero().squeeze(1)
            row, token = picked_rows[inside], tokens[inside] - begin
            value[inside], before[inside] = block[row, token], top[row]
            first_in_block[inside] = block.index_select(0, row).argmax(1) == token
            top = torch.maximum(top, block.amax(1))
        total.add_(block.exp2_().sum(1))
    normaliser = total.log_().sub_(shift.squeeze(1), alpha=1 / LOG2E)
    overflowed = normaliser.isinf().nonzero().squeeze(1)
    for again in overflowed.split(OVERFLOW_CHUNK):
        normaliser[again] = torch.logsumexp(rows[again] @ weight.t(), -1)
    if picks is None:
        return normaliser, None
    return normaliser, (value == top[picked_rows]) & (before < value) & first_in_block


def _logit_blocks(
    weight: torch.Tensor, rows: torch.Tensor, buffer: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(first token, its block's rows of ``weight``, the block's place in ``buffer``) for blocks of
    vocabulary whose (rows, tokens) logits fit ``buffer``."""
    n = rows.size(0)
    per_block = max(1, buffer.numel() // n)
    for begin in range(0, weight.size(0), per_block):
        part = weight[begin : begin + per_block]
        yield begin, part, buffer[: part.size(0) * n].view(n, part.size(0))


def token_logprobs(
    model: GPT, hidden: torch.Tensor, targets: torch.Tensor, logits: LogitBuffer | None = None
) -> torch.Tensor:
    """log p(target | state) for hidden states (M, C) and their next tokens (M,), in fp32."""
    return token_scores(model, hidden, targets, logits=logits)[0]
