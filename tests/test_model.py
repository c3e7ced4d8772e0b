"""Backbone shape, size registry and causality."""

from __future__ import annotations

import pytest
import torch

from gptlab import GPT, GPTConfig
from gptlab.model.gpt import attention_mask_for
from gptlab.model.logit_buffer import LogitBuffer
from gptlab.model.loss import CHUNK_BYTES, linear_cross_entropy
from gptlab.resources import group_choices


def meta_params(name: str, **overrides) -> int:
    with torch.device("meta"):
        return GPT.from_name(name, **overrides).num_params()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_gpt2_sizes_match_released_parameter_counts(name: str, expected: int) -> None:
    assert meta_params(name, vocab_size=50257) == expected


@pytest.mark.parametrize(
    "name, paper",
    [
        ("gpt3-small", 125e6),
        ("gpt3-medium", 350e6),
        ("gpt3-large", 760e6),
        ("gpt3-xl", 1.3e9),
        ("gpt3-2.7b", 2.7e9),
        ("gpt3-6.7b", 6.7e9),
        ("gpt3-13b", 13.0e9),
        ("gpt3-175b", 175.0e9),
    ],
)
def test_gpt3_sizes_within_3_percent_of_paper(name: str, paper: float) -> None:
    n = meta_params(name, vocab_size=50257)
    assert abs(n - paper) / paper < 0.03, f"{name}: {n:,} vs paper {paper:,.0f}"


def test_gpt1_within_1_percent_of_117m_at_its_vocab() -> None:
    n = meta_params("gpt1", vocab_size=40478, block_size=512)
    assert abs(n - 117e6) / 117e6 < 0.01, n


def test_registry_lists_every_size_and_rejects_unknown_names() -> None:
    choices = group_choices("model")
    for name in ("gpt-nano", "gpt-micro", "gpt-mini", "gpt1", "gpt2-xl", "gpt3-175b"):
        assert name in choices
    with pytest.raises(ValueError, match="valid choices: .*gpt-nano"):
        GPTConfig.from_name("gpt-4")


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="norm='mid'"):
        GPTConfig(norm="mid")
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(n_embd=50, n_head=3)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)


def test_residual_projections_use_scaled_init() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=16, vocab_size=512))
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in model.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.h])
    assert proj.std().item() == pytest.approx(0.02 / 4.0, rel=0.05)  # 0.02 / sqrt(2 * 8)
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)


def test_post_ln_has_no_final_norm_and_pre_ln_has_one() -> None:
    post = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=64, norm="post"))
    pre = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=64, norm="pre"))
    assert isinstance(post.ln_f, torch.nn.Identity)
    assert isinstance(pre.ln_f, torch.nn.LayerNorm)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("attention", ["dense", "alternating"])
def test_changing_token_t_never_changes_earlier_outputs(norm: str, attention: str) -> None:
    torch.manual_seed(0)
    config = GPTConfig(
        n_layer=4, n_head=2, n_embd=32, block_size=24, vocab_size=128,
        norm=norm, attention=attention, local_window=5,
    )
    model = GPT(config).eval()
    idx = torch.randint(0, 128, (2, 24))
    base = model(idx)
    for t in (0, 7, 15, 23):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 128
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t]), f"position < {t} changed"
        assert not torch.allclose(out[:, t], base[:, t])


def test_local_band_limits_what_sparse_layers_see() -> None:
    mask = attention_mask_for(6, 0, None, window=2, device=torch.device("cpu"))[0, 0]
    expected = torch.tensor(
        [[j <= i and i - j < 2 for j in range(6)] for i in range(6)], dtype=torch.bool
    )
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("cached", [False, True], ids=["full", "kv-cache"])
def test_gpt3_layers_alternate_dense_and_banded_exactly(cached: bool) -> None:
    """GPT-3's ``attention="alternating"``: layers 0, 2, 4, ... are dense and layers 1, 3, ... see
    only the last ``local_window`` positions, their own included (query q sees keys q-w+1..q).

    Checked by behaviour, one block at a time: nudge the block's input at key position j and see
    whether its output at query q moves. Every (q, j) pair is checked, so an alternation shifted by
    one layer, or a band one position too wide or too narrow, fails. ``cached``: the sequence is
    decoded one token at a time through a KV cache, as in generation.
    """
    window, T, n_embd = 3, 8, 32
    config = GPTConfig.from_name(
        "gpt3-small", n_layer=4, n_head=2, n_embd=n_embd, block_size=T, vocab_size=64,
        local_window=window,
    )
    assert config.attention == "alternating"  # the shipped GPT-3 sizes use it
    torch.manual_seed(0)
    model = GPT(config).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, T, n_embd, generator=gen)
    nudge = torch.randn(n_embd, generator=gen)

    def outputs(block, i: int, inputs: torch.Tensor) -> torch.Tensor:
        """The block's output at every position (T, n_embd): in one pass, or decoded token by token."""
        with torch.no_grad():
            if not cached:
                return block(inputs, None, None, i)[0]
            cache = model.new_cache()
            return torch.cat([block(inputs[:, t : t + 1], None, cache, i) for t in range(T)], 1)[0]

    for i, block in enumerate(model.h):
        banded = i % 2 == 1
        kind = f"banded (window {window})" if banded else "dense"
        base = outputs(block, i, x)
        for j in range(T):
            changed = x.clone()
            changed[0, j] += nudge
            out = outputs(block, i, changed)
            for q in range(j, T):
                sees = not torch.equal(out[q], base[q])
                expected = q - j < window if banded else True
                assert sees == expected, (
                    f"layer {i} should be {kind}, but its query {q} "
                    f"{'sees' if sees else 'does not see'} key {j}"
                )
            assert torch.equal(out[:j], base[:j])  # and never a later key (causal)


def test_padding_mask_hides_pad_tokens_from_real_ones() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=64)).eval()
    idx = torch.randint(0, 64, (1, 8))
    # left padding: three pad positions whose content must not matter
    padded_a = torch.cat([torch.full((1, 3), 5), idx], dim=1)
    padded_b = torch.cat([torch.full((1, 3), 9), idx], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 8)], dim=1).long()
    pos = torch.cat([torch.zeros(1, 3), torch.arange(8)[None]], dim=1).long()
    out_a = model(padded_a, attention_mask=mask, position_ids=pos)[:, 3:]
    out_b = model(padded_b, attention_mask=mask, position_ids=pos)[:, 3:]
    plain = model(idx)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_a, plain, rtol=0, atol=1e-5)
    assert not torch.isnan(model(padded_a, attention_mask=mask)).any()


def test_lm_loss_skips_ignored_positions() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=32))
    idx = torch.randint(0, 32, (2, 8))
    targets = torch.randint(0, 32, (2, 8))
    hidden = model.hidden_states(idx)
    partial = targets.clone()
    partial[:, :4] = -100
    expected = torch.nn.functional.cross_entropy(
        model(idx)[:, 4:].reshape(-1, 32), targets[:, 4:].reshape(-1)
    )
    torch.testing.assert_close(model.lm_loss(hidden, partial), expected)


@pytest.mark.parametrize("tie", [True, False])
def test_adam_moves_an_absent_tokens_input_row_only_when_the_head_is_tied(tie: bool) -> None:
    """Why tie_embeddings exists: the LM head's gradient reaches every token's row each step, and
    Adam turns even a tiny one into a full step, so a tied embedding moves the input row of a token
    that never occurs; an untied one leaves it where it started."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=32, tie_embeddings=tie))
    assert (model.lm_head is None) == tie and (model.output_embedding is model.wte.weight) == tie
    absent = 31
    before = model.wte.weight[absent].detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        idx = torch.randint(0, absent, (4, 8))  # token 31 never occurs, as input or target
        model.lm_loss(model.hidden_states(idx[:, :-1]), idx[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()
    moved = (model.wte.weight[absent] - before).abs().max().item()
    assert moved > 0.04 if tie else moved == 0.0  # 5 steps of ~lr each when tied


def test_a_cache_with_a_capacity_decodes_as_a_growing_one(tiny_gpt) -> None:
    """Buffers allocated once (``new_cache(capacity)``, or ``take(rows, room)`` from a growing cache)
    give the states that concatenation gives, through left-padded prompts, dropped rows and repeated
    rows; a full cache refuses more."""
    model = tiny_gpt(eval_mode=True)
    ids = torch.randint(0, 64, (3, 5))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    states = []
    for cache, room in ((model.new_cache(), None), (model.new_cache(capacity=9), None), (model.new_cache(), 2)):
        with torch.no_grad():
            out = [model.hidden_states(ids, mask, positions, cache)]
            step = torch.randint(0, 64, (3, 1), generator=torch.Generator().manual_seed(0))
            out.append(model.hidden_states(step, None, positions[:, -1:] + 1, cache))
            cache.select(torch.tensor([2, 0]))
            cache = cache.take(torch.tensor([0, 1, 1]), room=room)
            out.append(model.hidden_states(step[[2, 0, 0]], None, positions[[2, 0, 0], -1:] + 2, cache))
        states.append(out)
        assert cache.length == 7
        if room is not None:  # 6 positions taken, 1 appended in place
            assert cache.capacity == 8 and cache.keys[0].shape[2] == 8
    for growing, *allocated in zip(*states):
        for other in allocated:
            torch.testing.assert_close(other, growing, rtol=0, atol=1e-6)
    full = model.new_cache(capacity=4)
    with pytest.raises(ValueError, match="5 positions exceed its capacity of 4"):
        model.hidden_states(ids, cache=full)


@pytest.mark.parametrize("buffered", [False, True], ids=["new-logits", "logit-buffer"])
def test_fused_loss_and_gradients_equal_cross_entropy_over_several_chunks(buffered: bool) -> None:
    """fp32, 1000 rows of a 50304-token head (four chunks of at most 333 rows), logits far from 0: the hand-written
    softmax gives torch's cross-entropy and its gradients, with the chunks' logits in new tensors
    or in a LogitBuffer (used twice: the second call reuses the first's tensor)."""
    torch.manual_seed(0)
    hidden = (torch.randn(1000, 16) * 4).requires_grad_()
    weight = torch.randn(50304, 16).requires_grad_()
    targets = torch.randint(0, 50304, (1000,))
    buffer = LogitBuffer() if buffered else None
    if buffer is not None:  # the tensor the chunks must write into, NaN until they do
        held = buffer.get(CHUNK_BYTES["cpu"] // (4 * 50304), 50304, hidden.device).fill_(float("nan"))
    for _ in range(2 if buffered else 1):
        fused = linear_cross_entropy(hidden, weight, targets, buffer)
        fused_grads = torch.autograd.grad(fused, (hidden, weight))
        with torch.no_grad():  # the forward-only path
            torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets, buffer), fused, rtol=1e-6, atol=0)
    reference = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets)
    reference_grads = torch.autograd.grad(reference, (hidden, weight))
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    for a, b in zip(fused_grads, reference_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    if buffer is not None:
        assert not held.isnan().any()


def test_a_logit_buffer_keeps_its_tensor_on_the_cpu_only() -> None:
    """On the CPU one tensor serves every call of the same shape; elsewhere (here the meta device,
    standing in for a GPU's caching allocator) each call gets a new one."""
    buffer = LogitBuffer()
    cpu = torch.device("cpu")
    kept = buffer.get(4, 8, cpu)
    assert buffer.get(4, 8, cpu) is kept and buffer.get(2, 8, cpu).shape == (2, 8)
    meta = torch.device("meta")
    assert buffer.get(4, 8, meta) is not buffer.get(4, 8, meta)
    assert buffer.get(4, 8, meta).shape == (4, 8)
