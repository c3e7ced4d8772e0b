"""Hugging Face GPT-2 import/export and ``build_gpt``, against a tiny random ``GPT2LMHeadModel``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptlab.model.build import build_gpt
from gptlab.model.checkpoint import load_gpt_checkpoint
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.model.hf import CONV1D, GPT2_VOCAB_SIZE, export_hf_gpt2, load_hf_gpt2
from gptlab.model.registry import model_config

transformers = pytest.importorskip("transformers")

V = GPT2_VOCAB_SIZE
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=64)
ATOL = 1e-5


def perturb_(module: torch.nn.Module, seed: int) -> None:
    """Make every tensor distinctive: HF starts LayerNorms at 1/0 and biases at 0, which would
    hide a swapped or untransposed tensor."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=V,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    perturb_(model, seed=1)
    return model


@pytest.fixture(params=["eager", "sdpa"])
def hf_reference(hf_model, request):
    """``hf_model`` computing attention each way HF can: our masks must agree with both."""
    if not hasattr(hf_model, "set_attn_implementation"):
        pytest.skip("this transformers cannot switch attention implementation")
    hf_model.set_attn_implementation(request.param)
    yield hf_model
    hf_model.set_attn_implementation("eager")


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(out)
    assert (out / "model.safetensors").is_file()
    return out


@pytest.fixture(scope="module")
def imported(hf_dir) -> GPT:
    return load_hf_gpt2(str(hf_dir)).eval()


def hf_logits(model, ids, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, **kwargs).logits


def ours_logits(model: GPT, ids, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kwargs)[..., :V]


def assert_same_weights(model: GPT, ref: GPT) -> None:
    """Bitwise equal tensors; wte only over GPT-2's rows (the special rows are each model's init)."""
    got, want = model.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        a, b = (got[name][:V], want[name][:V]) if name == "wte.weight" else (got[name], want[name])
        assert torch.equal(a, b), name


def random_ids(batch: int = 2, length: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_import_config_and_padded_vocab(imported: GPT, hf_model) -> None:
    cfg = imported.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (2, 2, 32, 64)
    assert (cfg.norm, cfg.attention, cfg.bias, cfg.vocab_size) == ("pre", "dense", True, 50304)
    wte = imported.wte.weight.detach()
    assert torch.equal(wte[:V], hf_model.transformer.wte.weight.detach())
    # The special-token rows keep the model's own N(0, 0.02) init: neither zeros nor copies.
    special = wte[V:]
    assert special.abs().sum() > 0
    assert 0.01 < special.std().item() < 0.03


def test_import_logits_match_hf(imported: GPT, hf_reference) -> None:
    ids = random_ids()
    diff = (ours_logits(imported, ids) - hf_logits(hf_reference, ids)).abs().max().item()
    assert diff <= ATOL, diff


def test_import_logits_match_hf_with_right_padding(imported: GPT, hf_reference) -> None:
    ids = random_ids(seed=1)
    mask = torch.ones_like(ids)
    mask[0, 15:] = 0  # row 0 is a shorter sequence padded on the right
    ours = ours_logits(imported, ids, attention_mask=mask)
    theirs = hf_logits(hf_reference, ids, attention_mask=mask)
    real = mask.bool()
    diff = (ours[real] - theirs[real]).abs().max().item()
    assert diff <= ATOL, diff
    # Padding on the right cannot change earlier positions: row 0 equals its unpadded prefix.
    alone = ours_logits(imported, ids[:1, :15])
    assert (ours[0, :15] - alone[0]).abs().max().item() <= ATOL


def test_import_logits_match_hf_with_left_padding(imported: GPT, hf_reference) -> None:
    ids = random_ids(seed=2)
    mask = torch.ones_like(ids)
    mask[0, :9] = 0  # row 0 is a shorter sequence padded on the left
    # Real tokens count positions from 0; pads get a valid dummy position (HF's convention).
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    ours = ours_logits(imported, ids, attention_mask=mask, position_ids=position_ids)
    theirs = hf_logits(hf_reference, ids, attention_mask=mask, position_ids=position_ids)
    real = mask.bool()
    diff = (ours[real] - theirs[real]).abs().max().item()
    assert diff <= ATOL, diff
    # The padded row must behave like the unpadded sequence on its own.
    alone = ours_logits(imported, ids[:1, 9:])
    assert (ours[0, 9:] - alone[0]).abs().max().item() <= ATOL


def test_pytorch_model_bin_with_bare_keys_and_mask_buffers(imported: GPT, hf_model, tmp_path) -> None:
    # Shaped like the original openai "gpt2" pytorch_model.bin: GPT2Model keys (no "transformer."),
    # the causal-mask buffers saved too, and no lm_head.
    state = {k.removeprefix("transformer."): v.clone() for k, v in hf_model.state_dict().items()}
    del state["lm_head.weight"]
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64, dtype=torch.bool))
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(hf_model.config.to_dict()))
    assert_same_weights(load_hf_gpt2(str(tmp_path)), imported)


def test_sharded_safetensors_checkpoint_loads(imported: GPT, hf_model, tmp_path) -> None:
    hf_model.save_pretrained(tmp_path, max_shard_size="1MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert_same_weights(load_hf_gpt2(str(tmp_path)), imported)


def test_export_then_import_is_exact(imported: GPT, tmp_path) -> None:
    out = export_hf_gpt2(imported, tmp_path / "export")
    tensors = load_file(out / "model.safetensors")
    assert "lm_head.weight" not in tensors and "transformer.wte.weight" in tensors
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D is (in, out)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == V
    assert_same_weights(load_hf_gpt2(str(out)), imported)


@pytest.mark.parametrize("tie", [True, False])
def test_export_loads_in_transformers_with_same_logits(tie: bool, tmp_path) -> None:
    torch.manual_seed(3)
    model = GPT(GPTConfig(name="tiny", tie_embeddings=tie, **TINY)).eval()
    perturb_(model, seed=4)
    out = export_hf_gpt2(model, tmp_path / "export")
    hf, info = transformers.GPT2LMHeadModel.from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    hf.eval()
    # tied on load, or the exported head
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) == tie
    ids = random_ids(seed=5)
    diff = (ours_logits(model, ids) - hf_logits(hf, ids)).abs().max().item()
    assert diff <= ATOL, diff
    if not tie:  # and back: the head's GPT-2 rows as exported, its padding rows from the new model
        back = load_hf_gpt2(str(out))
        assert not back.config.tie_embeddings
        assert torch.equal(back.lm_head.weight[:V], model.lm_head.weight[:V])


@pytest.mark.parametrize(
    "overrides", [dict(norm="post"), dict(attention="alternating"), dict(bias=False)]
)
def test_export_refuses_what_gpt2_cannot_represent(overrides, tmp_path) -> None:
    model = GPT(GPTConfig(**{**TINY, **overrides}))
    with pytest.raises(ValueError, match="cannot export"):
        export_hf_gpt2(model, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_shape_mismatch_names_tensor_and_both_shapes(hf_dir) -> None:
    with pytest.raises(ValueError) as err:
        load_hf_gpt2(str(hf_dir), block_size=32)
    message = str(err.value)
    assert "'wpe.weight'" in message and "(64, 32)" in message and "(32, 32)" in message


def test_missing_tensor_is_named(hf_dir, tmp_path) -> None:
    tensors = load_file(hf_dir / "model.safetensors")
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    with pytest.raises(ValueError, match=r"'h\.1\.mlp\.c_fc\.weight'.*missing"):
        load_hf_gpt2(str(tmp_path))


def test_unknown_hub_id_offline_names_the_id(monkeypatch) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"'gptlab-tests/no-such-model'.*Hub.*offline"):
        load_hf_gpt2("gptlab-tests/no-such-model")


def test_missing_local_directory_is_not_sent_to_the_hub(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        load_hf_gpt2(str(tmp_path / "no-such-dir"))


# ---------------------------------------------------------------- GPT-1 (post-LN) vs OpenAIGPT


def openai_gpt_to_gptlab_state(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``OpenAIGPTModel``'s tensors under gptlab's names, written out here (gptlab imports no GPT-1).

    The blocks use GPT-2's names (``attn.c_attn``, ``attn.c_proj``, ``ln_1``, ``mlp.c_fc``,
    ``mlp.c_proj``, ``ln_2``) and ``Conv1D`` layout (in, out); only the embeddings are renamed.
    """
    renamed = {"tokens_embed.weight": "wte.weight", "positions_embed.weight": "wpe.weight"}
    state = {}
    for key, tensor in hf_state.items():
        name = renamed.get(key, key)
        state[name] = tensor.t() if name.endswith(CONV1D) else tensor
    return state


def unit_scale_(module: torch.nn.Module, seed: int) -> None:
    """Random weights that give every pre-activation a scale of about 1.

    At the usual 0.02 init the GELU inputs are ~0.1, where GELU's exact and tanh forms agree to
    ~1e-5, so a wrong activation would pass; LayerNorms and biases are made non-trivial too, so
    a swapped or untransposed tensor shows.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if ".ln_" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.dim() == 1:  # biases
                p.copy_(0.2 * noise)
            elif name.endswith("_embed.weight"):
                p.copy_(noise)
            else:  # Conv1D weight, (in, out): unit-variance outputs for unit-variance inputs
                p.copy_(noise / p.shape[0] ** 0.5)


def test_gpt1_post_ln_matches_transformers_openai_gpt() -> None:
    """GPT-1's layout (post-LN, no final LayerNorm, tanh GELU) computes what OpenAIGPTModel does."""
    n_layer, n_head, n_embd, n_positions, vocab = 3, 4, 32, 16, 96
    hf_config = transformers.OpenAIGPTConfig(
        vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        afn="gelu",  # OpenAIGPT's "gelu" is gelu_new, GELU's tanh approximation (as GPT-1's code)
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
    )
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(hf_config).eval()
    unit_scale_(hf, seed=11)
    model = GPT(GPTConfig(
        name="tiny-gpt1", n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=n_positions,
        vocab_size=vocab, dropout=0.0, bias=True, norm="post", attention="dense", layer_norm_eps=1e-5,
    )).eval()
    state = openai_gpt_to_gptlab_state(hf.transformer.state_dict())
    assert state.keys() == model.state_dict().keys()  # the mapping covers every tensor, both ways
    model.load_state_dict(state)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.tokens_embed.weight.data_ptr()

    # Each block's output, to name the first layer that differs rather than only the last.
    ours_per_layer: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, a, out: ours_per_layer.append(out)) for b in model.h]
    ids = torch.randint(0, vocab, (3, n_positions), generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        ref = hf.transformer(input_ids=ids, output_hidden_states=True)
        ref_logits = hf(input_ids=ids).logits
        hidden = model.hidden_states(ids)
        logits = model(ids)
    for hook in hooks:
        hook.remove()
    assert len(ref.hidden_states) == n_layer + 1  # embeddings, then one per block
    for i, (got, want) in enumerate(zip(ours_per_layer, ref.hidden_states[1:])):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=lambda m, i=i: f"block {i}: {m}")
    # Post-LN ends on block n_layer-1's ln_2: no final LayerNorm on top (GPT-1 has none either).
    torch.testing.assert_close(hidden, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- build_gpt


def nano(**overrides):
    return {**model_config("gpt-nano"), **overrides}


def write_gptlab_ckpt(model: GPT, path: Path) -> Path:
    state = {"model." + k: v for k, v in model.state_dict().items()}
    state["head.weight"] = torch.zeros(2, 2)  # a task head: not part of the backbone
    torch.save({"state_dict": state, "gptlab_model_config": model.config.to_dict()}, path)
    return path


def test_load_gpt_checkpoint_reads_every_tensor_and_names_a_missing_one(tmp_path) -> None:
    """The loaders skip random init (``GPT.for_loading``): every tensor must come from the file."""
    torch.manual_seed(7)
    trained = GPT(GPTConfig.from_dict(nano(dropout=0.0)))
    model = load_gpt_checkpoint(write_gptlab_ckpt(trained, tmp_path / "last.ckpt"))
    ref = trained.state_dict()
    assert all(torch.equal(model.state_dict()[k], ref[k]) for k in ref)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    del checkpoint["state_dict"]["model.h.0.ln_1.bias"]
    torch.save(checkpoint, tmp_path / "partial.ckpt")
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"h\.0\.ln_1\.bias"'):
        load_gpt_checkpoint(tmp_path / "partial.ckpt")


def test_an_untied_heads_special_rows_get_the_init_on_import(tmp_path) -> None:
    """GPT-2's file has no rows for gptlab's special tokens: on import they are N(0, 0.02) in the
    LM head as in the embedding, not the uninitialised memory a loader-built model starts with."""
    torch.manual_seed(8)
    source = GPT(GPTConfig.from_dict(nano(dropout=0.0, tie_embeddings=False)))
    model = load_hf_gpt2(str(export_hf_gpt2(source, tmp_path / "untied")))
    for weight, theirs in ((model.wte.weight, source.wte.weight), (model.lm_head.weight, source.lm_head.weight)):
        assert torch.equal(weight[:V], theirs[:V])
        special = weight.detach()[V:]
        assert special.isfinite().all() and 0.01 < special.std().item() < 0.03 and special.mean().abs() < 0.01


def test_build_random_init_from_yaml() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gptlab.resources import config_dir

    model = instantiate(OmegaConf.load(config_dir() / "model" / "gpt-nano.yaml"))
    assert isinstance(model, GPT)
    assert model.config == GPTConfig.from_dict(model_config("gpt-nano"))
    assert model.wte.weight.shape == (50304, 48)


def test_build_rejects_unknown_config_key() -> None:
    with pytest.raises(ValueError, match=r"n_layers.*valid fields.*n_layer"):
        build_gpt(**nano(n_layers=4))


def test_build_from_hf_dir_keeps_config_dropout(hf_dir, imported: GPT) -> None:
    model = build_gpt(init_from=str(hf_dir), name="tiny", dropout=0.2, **TINY)
    assert model.config.dropout == 0.2 and model.h[0].mlp.dropout.p == 0.2
    assert_same_weights(model, imported)


def test_build_from_gptlab_ckpt(tmp_path) -> None:
    torch.manual_seed(6)
    trained = GPT(GPTConfig.from_dict(nano(dropout=0.0)))
    path = write_gptlab_ckpt(trained, tmp_path / "last.ckpt")
    model = build_gpt(init_from=str(path), **nano(dropout=0.1))
    assert model.config.dropout == 0.1
    ref = trained.state_dict()
    got = model.state_dict()
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_build_hf_shape_mismatch_fails_before_training(hf_dir) -> None:
    with pytest.raises(ValueError) as err:
        build_gpt(init_from=str(hf_dir), **nano())
    message = str(err.value)
    assert message.startswith(f"init_from={str(hf_dir)!r}: tensor 'wte.weight'")
    assert "(50257, 32) in the checkpoint but (50304, 48) in model 'gpt-nano'" in message


def test_build_ckpt_shape_mismatch_names_tensor(tmp_path) -> None:
    wider = GPT(GPTConfig.from_dict(nano(n_head=4, n_embd=64)))
    path = write_gptlab_ckpt(wider, tmp_path / "wide.ckpt")
    with pytest.raises(ValueError, match=r"'wte\.weight' has shape \(50304, 64\) in the checkpoint "
                       r"but \(50304, 48\) in model 'gpt-nano'"):
        build_gpt(init_from=str(path), **nano())


def test_build_refuses_other_architecture(hf_dir) -> None:
    with pytest.raises(ValueError, match="norm='pre' but model 'tiny' has norm='post'"):
        build_gpt(init_from=str(hf_dir), name="tiny", norm="post", **TINY)
    with pytest.raises(ValueError, match="tie_embeddings=True but model 'tiny' has tie_embeddings=False"):
        build_gpt(init_from=str(hf_dir), name="tiny", tie_embeddings=False, **TINY)


@pytest.mark.parametrize("missing", ["runs/nowhere/last.ckpt", "last.ckpt", "./runs/hf-export"])
def test_build_missing_path_raises_file_not_found(missing, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=missing.removeprefix("./")):
        build_gpt(init_from=missing, **nano())
