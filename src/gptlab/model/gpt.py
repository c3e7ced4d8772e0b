"""The GPT backbone: one decoder-only transformer for GPT-1, GPT-2 and GPT-3.

The three papers differ in a handful of switches, so they are one module here:

* GPT-1 puts LayerNorm *after* each residual add (``norm="post"``) and has no final LayerNorm.
* GPT-2/3 normalise the input of each sub-block (``norm="pre"``) and add a final LayerNorm;
  the residual projections start with std 0.02/sqrt(2*n_layer) so the residual stream does not
  grow with depth.
* GPT-3 alternates dense layers with locally banded sparse ones (``attention="alternating"``).

Input and output embeddings are tied, as in all three papers, unless ``tie_embeddings=False``.
The vocabulary is padded to 50304 (a multiple of 64, which is faster) and the padding rows hold
GPT-1's task tokens, so importing GPT-2 never resizes it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gptlab.bounds import POSITIVE as POSITIVE_BOUND
from gptlab.bounds import Bound, check_fields
from gptlab.model.kv_cache import KVCache
from gptlab.model.logit_buffer import LogitBuffer
from gptlab.model.loss import linear_cross_entropy, unfused_linear_cross_entropy

# the std of the weights' normal init (GPT-1/2's code); the residual projections' is scaled by depth
INIT_STD = 0.02
NORMS = ("pre", "post")
ATTENTIONS = ("dense", "alternating")


POSITIVE = POSITIVE_BOUND.metadata


@dataclass
class GPTConfig:
    """Shape and switches of one backbone. Sizes live in ``conf/model/*.yaml``; each field's bound
    (its metadata) is checked here and by the config schema (``gptlab.schema``)."""

    name: str = "custom"
    n_layer: int = field(default=12, metadata=POSITIVE)
    n_head: int = field(default=12, metadata=POSITIVE)
    n_embd: int = field(default=768, metadata=POSITIVE)
    block_size: int = field(default=1024, metadata=POSITIVE)
    vocab_size: int = field(default=50304, metadata=POSITIVE)
    dropout: float = field(default=0.0, metadata=Bound(ge=0, lt=1).metadata)
    bias: bool = True
    # GPT-1/2/3 tie the LM head to the token embedding. Untied, the head has its own matrix: with
    # Adam, the head moves every token's row each step, rows of tokens absent from the batch all
    # the same way, which in a short run collapses the input rows of rare tokens into one vector
    tie_embeddings: bool = True
    norm: str = field(default="pre", metadata=Bound(choices=NORMS).metadata)
    attention: str = field(default="dense", metadata=Bound(choices=ATTENTIONS).metadata)
    local_window: int = field(default=256, metadata=POSITIVE)
    layer_norm_eps: float = field(default=1e-5, metadata=POSITIVE)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        """Build from a mapping, ignoring keys that are not config fields (e.g. ``_target_``)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPTConfig:
        """The registered size ``name`` (a file in ``conf/model``), with ``overrides`` applied."""
        from gptlab.model.registry import model_config

        return cls.from_dict({**model_config(name), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def attention_mask_for(
    q_len: int,
    past: int,
    key_valid: torch.Tensor | None,
    window: int | None,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean mask (True = may attend) of shape (B|1, 1, q_len, past+q_len), or None when plain causal.

    Queries sit at absolute positions past..past+q_len-1. A query always sees itself, so a row
    that is all padding never becomes a softmax over nothing (NaN). ``key_valid`` is (B, keys), 1
    for real tokens, or (B, q_len, keys) for packed sequences: which keys each query may see.
    """
    if key_valid is None and window is None and past == 0:
        return None  # SDPA's is_causal fast path
    if q_len == 1 and window is None and (key_valid is None or key_valid.dim() == 2):  # one decoding step: the last position sees every valid key
        if key_valid is None:
            return None  # (SDPA without a mask; is_causal is off for one query)
        allowed = key_valid.bool().clone()
        allowed[:, -1] = True
        return allowed[:, None, None, :]
    k_len = past + q_len
    q_pos = torch.arange(past, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed = allowed & (q_pos - k_pos < window)
    allowed = allowed[None, None]
    if key_valid is not None:
        per_query = key_valid[:, None] if key_valid.dim() == 3 else key_valid[:, None, None, :]
        allowed = allowed & per_query.bool()
        allowed = allowed | (q_pos == k_pos)[None, None]
    return allowed


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, window: int | None) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.window = window  # None = dense; else a local band of this many positions
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_valid: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            k, v = cache.append(layer, k, v)
            # This layer's own past: cache.length counts layer 0, which already holds these T.
            past = k.size(2) - T
        mask = attention_mask_for(T, past, key_valid, self.window, x.device)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and T > 1,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2's GELU is the tanh approximation; keeping it makes imported weights exact.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, window: int | None) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, window)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, key_valid: torch.Tensor | None, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        if self.pre_norm:  # GPT-2/3
            x = x + self.attn(self.ln_1(x), key_valid, cache, layer)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, key_valid, cache, layer))  # GPT-1
        return self.ln_2(x + self.mlp(x))


class GPT(nn.Module):
    """Decoder-only transformer. ``forward`` gives logits; task heads read ``hidden_states``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        # tied, the LM head is wte itself (output_embedding)
        self.lm_head = (
            None if config.tie_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)
        )
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(
            Block(config, self._window_of(i)) for i in range(config.n_layer)
        )
        # GPT-1 normalises after every block already, so only pre-LN needs a final LayerNorm.
        self.ln_f = (
            nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
            if config.norm == "pre"
            else nn.Identity()
        )
        # Recompute each block's activations in the backward pass instead of keeping them: memory
        # for compute, for sizes whose activations do not fit (a run-time switch, not a shape).
        self.activation_checkpointing = False
        # see compile_training; the chunks' logits reuse one buffer from step to step (LogitBuffer)
        self._cross_entropy = functools.partial(linear_cross_entropy, logits=LogitBuffer())
        self.apply(self._init_weights)
        residual_std = INIT_STD / math.sqrt(2 * config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=residual_std)

    def _window_of(self, layer: int) -> int | None:
        # GPT-3 section 2.1: "alternating dense and locally banded sparse attention patterns".
        if self.config.attention == "alternating" and layer % 2 == 1:
            return self.config.local_window
        return None

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @classmethod
    def for_loading(cls, config: GPTConfig) -> GPT:
        """A model of ``config`` with allocated, uninitialised tensors, for a caller that loads all of
        them: built on the meta device, it skips a random init (GPT-2 small 1.2 s, medium 3.7 s)."""
        with torch.device("meta"):
            model = cls(config)
        return model.to_empty(device="cpu")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPT:
        """A randomly initialised model of the registered size ``name`` (e.g. ``"gpt2"``)."""
        return cls(GPTConfig.from_name(name, **overrides))

    @property
    def output_embedding(self) -> torch.Tensor:
        """The LM head's (vocab_size, n_embd) matrix: wte's when the embeddings are tied."""
        return self.wte.weight if self.lm_head is None else self.lm_head.weight

    def num_params(self, exclude_position_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # a tied head counted once
        return n - self.wpe.weight.numel() if exclude_position_embeddings else n

    def compile_training(self, **options: Any) -> None:
        """``torch.compile`` the training path: every transformer block, in place, and the LM loss.

        Per block, not the whole module: the blocks share one compiled graph, task heads stay
        eager, and state-dict keys keep their names (no ``_orig_mod.``), so checkpoints of a
        compiled run load anywhere. The loss switches from the chunked CPU kernel to the plain
        full-logits form, which the compiler fuses better on a GPU (and which needs the memory
        for the full logits: meant for GPUs).
        """
        for block in self.h:
            block.compile(**options)
        self._cross_entropy = torch.compile(unfused_linear_cross_entropy, **options)

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache; ``capacity``: the most positions it will hold (buffers allocated once)."""
        return KVCache(self.config.n_layer, capacity)

    def hidden_states(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, T, n_embd) for token ids ``idx`` (B, T).

        ``attention_mask`` (B, T): 1 for real tokens, 0 for padding. With a ``cache``, ``idx``
        continues the cached positions and the cache is extended in place. ``segment_ids`` (B, T),
        for several examples packed in one row: a token attends only to tokens of its own id (0
        marks padding); give each example's ``position_ids`` from 0, and no mask or cache.
        """
        B, T = idx.shape
        if segment_ids is not None:
            if attention_mask is not None or cache is not None:
                raise ValueError("segment_ids replaces attention_mask and takes no cache")
            same = segment_ids[:, :, None] == segment_ids[:, None, :]
            attention_mask = same & (segment_ids != 0)[:, None, :]
        past = cache.length if cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(
                f"sequence of {past + T} tokens exceeds the model's block_size={self.config.block_size}"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=idx.device)[None]
        key_valid = attention_mask
        if cache is not None:
            if attention_mask is not None or cache.key_mask is not None:
                new = attention_mask if attention_mask is not None else idx.new_ones(B, T)
                old = cache.key_mask if cache.key_mask is not None else idx.new_ones(B, past)
                cache.key_mask = torch.cat([old.to(new.dtype), new], dim=1)
                key_valid = cache.key_mask
        x = self.drop(self.wte(idx) + self.wpe(position_ids))
        for i, block in enumerate(self.h):
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, key_valid, cache, i, use_reentrant=False)
            else:
                x = block(x, key_valid, cache, i)
        return self.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM logits from hidden states through the LM head."""
        return F.linear(hidden, self.output_embedding)

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        return self.logits(self.hidden_states(idx, attention_mask, position_ids, cache))

    def lm_loss(self, hidden: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean next-token cross-entropy; the LM head runs only on positions that have a target."""
        hidden = hidden.reshape(-1, hidden.size(-1))
        targets = targets.reshape(-1)
        keep = targets != ignore_index
        if not bool(keep.all()):
            hidden, targets = hidden[keep], targets[keep]
        return self._cross_entropy(hidden, self.output_embedding, targets)
