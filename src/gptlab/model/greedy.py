"""Batched greedy decoding until a stop condition: lm-evaluation-harness's ``generate_until``.

Prompts arrive left-padded (every one ends in the last column, its tokens at positions 0, 1, ...),
run through the model once, and then every step feeds one token per unfinished row through the
KV cache. A row is finished when ``answer_end`` finds its answer's end in its decoded text (a stop
string, or the end of the first word) or after ``max_new_tokens`` tokens; finished rows leave the
batch, so the remaining steps cost only what the unfinished rows need. Only GPT-2's 50257 text
tokens are candidates, as in ``gptlab.lit.incontext``.

A row's tokens depend on its own prompt only: padding is masked and positions are the row's own,
so the generations are the same for any batch size (up to float rounding on exact ties).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gptlab.data.tokenizer import GPT2_VOCAB_SIZE, get_tokenizer
from gptlab.model.generate import StepHead
from gptlab.model.gpt import GPT


def greedy_until(
    model: GPT,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    answer_end: Callable[[str], int | None],
) -> list[list[int]]:
    """The greedy continuation tokens of each left-padded prompt (B, T), each at most
    ``max_new_tokens`` long and ended by the first token after which ``answer_end(decoded text)``
    is not None. The model reads the prompt and all but the last new token: ``T + max_new_tokens - 1``
    must fit its ``block_size``."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    batch, width = prompt_ids.shape
    if width + max_new_tokens > model.config.block_size + 1:
        raise ValueError(
            f"prompts of {width} tokens and {max_new_tokens} new tokens do not fit "
            f"block_size={model.config.block_size}; cut the prompts to block_size - max_new_tokens"
        )
    decode = get_tokenizer().decode
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            padded = not bool(prompt_mask.all())
            positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
            cache = model.new_cache(capacity=width + max_new_tokens - 1)
            hidden = model.hidden_states(
                prompt_ids, prompt_mask if padded else None, positions if padded else None, cache
            )[:, -1]
            next_position = positions[:, -1] + 1
            rows = torch.arange(batch, device=prompt_ids.device)  # batch row of each unfinished row
            out: list[list[int]] = [[] for _ in range(batch)]
            head = StepHead(model.output_embedding[:GPT2_VOCAB_SIZE].float())
            for step in range(max_new_tokens):
                with torch.autocast(device_type=hidden.device.type, enabled=False):
                    chosen = head(hidden.float()).max(1).indices  # (first maximum, as argmax)
                going = []
                for slot, (row, token) in enumerate(zip(rows.tolist(), chosen.tolist())):
                    out[row].append(token)
                    if answer_end(decode(out[row])) is None:
                        going.append(slot)
                if not going or step == max_new_tokens - 1:
                    break
                if len(going) < len(rows):
                    keep = torch.tensor(going, device=rows.device)
                    rows, chosen, next_position = rows[keep], chosen[keep], next_position[keep]
                    cache.select(keep)
                hidden = model.hidden_states(chosen[:, None], None, next_position[:, None], cache)[:, -1]
                next_position = next_position + 1
            return out
    finally:
        model.train(was_training)
