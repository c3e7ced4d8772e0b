"""Hugging Face GPT-2 checkpoints in and out of the gptlab backbone.

GPT-2's module names are the same as ours (``wte``, ``h.0.attn.c_attn``, ...), so the mapping is
one-to-one except for two things:

* HF stores ``c_attn``/``c_proj``/``c_fc`` as ``Conv1D`` whose weight is (in, out), the transpose
  of ``nn.Linear``'s (out, in).
* HF's vocabulary has 50257 rows; ours is padded to a multiple of 64 and the extra rows are
  gptlab's special tokens, so they keep their own initialisation on import and are dropped on
  export (a GPT-2 tokenizer never produces them).

Only ``torch``/``safetensors`` are used here: ``transformers`` is a dev extra, and
``huggingface_hub`` (the ``hub`` extra) is imported only when a Hub id has to be downloaded.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gptlab.data.tokenizer import (
    ENCODER_JSON_SHA256,
    EOT,
    EOT_ID,
    GPT2_VOCAB_SIZE,
    VOCAB_BPE_SHA256,
    bpe_files_dir,
    read_verified,
)
from gptlab.model.checkpoint import CheckpointError
from gptlab.model.gpt import GPT, INIT_STD, GPTConfig

# Modules HF implements as Conv1D; every other tensor has the same layout in both.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers that old HF checkpoints saved alongside the weights; we build masks on the fly.
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # leading dot: not "c_attn.bias"
# All three are GELU's tanh approximation, which is what our MLP computes.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# "owner/name" or "name": anything else that is not on disk must have been meant as a path.
_HUB_ID = re.compile(r"[\w][\w.-]*(/[\w][\w.-]*)?")


def looks_like_path(path_or_id: str) -> bool:
    """True when ``path_or_id`` cannot be a Hub id, so a missing file is the user's real error."""
    if path_or_id.endswith(".ckpt") or path_or_id.startswith(("/", ".", "~")):
        return True
    has_sep = os.sep in path_or_id or (os.altsep is not None and os.altsep in path_or_id)
    # A Hub id "owner/name" also contains "/"; it only counts as a path when it is no valid id.
    return has_sep and _HUB_ID.fullmatch(path_or_id) is None


def resolve_hf_dir(path_or_id: str) -> Path:
    """A local directory holding the checkpoint: ``path_or_id`` itself, or a Hub download."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if looks_like_path(path_or_id):
        raise FileNotFoundError(f"no such Hugging Face checkpoint directory: {path}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ImportError(
            f"{path_or_id!r} is not a local directory, and downloading it from the Hugging Face Hub "
            "needs huggingface_hub: pip install 'gptlab[hub]'"
        ) from err
    try:
        # Only what we read: a repo like "gpt2" also carries TF/Flax/ONNX weights.
        for weights in ("model.safetensors*", "pytorch_model.bin*"):
            local = Path(snapshot_download(path_or_id, allow_patterns=["config.json", weights]))
            if _weight_files(local):
                break
    except Exception as err:  # offline, no network, unknown/gated repo: all mean "cannot get it"
        raise OSError(
            f"cannot load {path_or_id!r}: it is not a local directory, and fetching it from the "
            f"Hugging Face Hub failed (the Hub is unreachable or offline, e.g. HF_HUB_OFFLINE=1, "
            f"or no such repository): {type(err).__name__}: {err}"
        ) from err
    return local


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of an HF checkpoint directory, safetensors first, shards resolved."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (directory / single).is_file():
            return [directory / single]
        if (directory / index).is_file():
            weight_map = json.loads((directory / index).read_text())["weight_map"]
            return [directory / name for name in sorted(set(weight_map.values()))]
    return []


def read_hf_gpt2(path_or_id: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The raw ``config.json`` and HF-named tensors of a GPT-2 checkpoint (directory or Hub id)."""
    directory = resolve_hf_dir(path_or_id)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a Hugging Face checkpoint")
    files = _weight_files(directory)
    if not files:
        raise FileNotFoundError(f"{directory} holds neither model.safetensors nor pytorch_model.bin")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(_read_weight_file(file))
    return json.loads(config_file.read_text()), state


def _read_weight_file(file: Path) -> dict[str, torch.Tensor]:
    """One weight file's tensors; never runs code from it. A bad file is a ``CheckpointError`` naming it."""
    try:
        if file.suffix == ".safetensors":
            return load_file(file)
        # weights_only: a .bin is a pickle, and we never run code from a downloaded file
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise several types for corrupt or unsafe files
        raise CheckpointError(f"cannot read weights {file}: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"weights {file} hold a {type(state).__name__}, not a dict of tensors")
    return state


def gpt_config_from_hf(hf: dict[str, Any], name: str = "hf-gpt2", **overrides: Any) -> GPTConfig:
    """The ``GPTConfig`` of HF GPT-2 config ``hf``; refuses variants our backbone cannot compute."""
    unsupported = []
    if hf.get("model_type", "gpt2") != "gpt2":
        unsupported.append(f"model_type={hf['model_type']!r}")
    if hf.get("activation_function", "gelu_new") not in TANH_GELUS:
        unsupported.append(f"activation_function={hf['activation_function']!r}")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        unsupported.append(f"n_inner={hf['n_inner']}")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("non-standard attention scaling")
    if hf.get("add_cross_attention", False):
        unsupported.append("add_cross_attention=true")
    if unsupported:
        raise ValueError(f"unsupported GPT-2 variant for gptlab's backbone: {', '.join(unsupported)}")
    valid = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown GPTConfig field(s) {unknown}; valid fields: {sorted(valid)}")
    vocab = hf_vocab_size(hf)
    config = GPTConfig(
        name=name,
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
        vocab_size=-(-vocab // 64) * 64,
        # gptlab has one rate for embedding, attention and residual dropout; GPT-2 sets all to 0.1.
        dropout=hf.get("resid_pdrop", 0.1),
        bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", True),
        norm="pre",
        attention="dense",
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    )
    config = GPTConfig.from_dict({**config.to_dict(), **overrides})
    if config.norm != "pre" or config.attention != "dense":
        raise ValueError(
            f"GPT-2 weights are pre-LN with dense attention; cannot load them as "
            f"norm={config.norm!r}, attention={config.attention!r}"
        )
    return config


def hf_vocab_size(hf: dict[str, Any]) -> int:
    """The rows of an HF GPT-2 checkpoint's embedding (``config.json``'s ``vocab_size``, GPT-2's if unset)."""
    return hf.get("vocab_size", GPT2_VOCAB_SIZE)


def hf_to_gptlab_state(hf_state: dict[str, torch.Tensor], model: GPT) -> dict[str, torch.Tensor]:
    """``hf_state`` renamed and laid out for ``model``; the padding rows of the embedding (and of an
    untied head) come from ``model``."""
    state = {}
    for key, tensor in hf_state.items():
        # GPT2LMHeadModel prefixes "transformer."; GPT2Model (and the original gpt2 .bin) does not.
        name = key.removeprefix("transformer.")
        if (name == "lm_head.weight" and model.lm_head is None) or name.endswith(HF_BUFFERS):
            continue  # a tied head is wte; masks are built on the fly
        state[name] = tensor.t() if name.endswith(CONV1D) else tensor
    for name, ours in (("wte.weight", model.wte.weight), ("lm_head.weight", model.output_embedding)):
        theirs = state.get(name)  # an untied head only: a tied model's state has no lm_head.weight
        if theirs is not None and theirs.size(1) == ours.size(1) and theirs.size(0) < ours.size(0):
            state[name] = torch.cat([theirs.to(ours.dtype), ours.detach()[theirs.size(0) :].cpu()])
    return state


def load_matching_state(model: GPT, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``, first checking that it has exactly the model's tensors and shapes.

    Checked up front so that a wrong ``init_from`` fails with the tensor's name before any training,
    not with a shape error deep inside ``load_state_dict`` or, worse, a silently partial load.
    """
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise ValueError(
                f"{source}: tensor {name!r} of shape {tuple(tensor.shape)} in model "
                f"{model.config.name!r} is missing from the checkpoint"
            )
        if state[name].shape != tensor.shape:
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(state[name].shape)} in the checkpoint "
                f"but {tuple(tensor.shape)} in model {model.config.name!r}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ValueError(
            f"{source}: the checkpoint has tensor(s) that model {model.config.name!r} lacks, "
            f"e.g. {extra[0]!r} of shape {tuple(state[extra[0]].shape)} ({len(extra)} in all)"
        )
    model.load_state_dict(state)


def load_hf_gpt2(path_or_id: str, **overrides: Any) -> GPT:
    """A gptlab ``GPT`` holding a Hugging Face GPT-2 checkpoint.

    ``path_or_id``: a directory with ``config.json`` and ``model.safetensors`` (preferred) or
    ``pytorch_model.bin``, else a Hub id such as ``"gpt2"``. ``overrides`` are ``GPTConfig`` fields
    (e.g. ``dropout``); ones that change a tensor's shape fail with that tensor's name.
    """
    path_or_id = os.fspath(path_or_id)
    hf_config, hf_state = read_hf_gpt2(path_or_id)
    name = Path(path_or_id.rstrip("/\\")).name or path_or_id
    model = GPT.for_loading(gpt_config_from_hf(hf_config, name=name, **overrides))
    with torch.no_grad():  # the padding rows (gptlab's special tokens) are not in the file: init them
        for weight in {id(w): w for w in (model.wte.weight, model.output_embedding)}.values():
            weight[hf_vocab_size(hf_config) :].normal_(0.0, INIT_STD)
    load_matching_state(model, hf_to_gptlab_state(hf_state, model), path_or_id)
    return model


def export_hf_gpt2(model: GPT, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a ``GPT2LMHeadModel`` checkpoint (config.json + model.safetensors)."""
    config = model.config
    if config.norm != "pre" or config.attention != "dense" or not config.bias:
        raise ValueError(
            f"cannot export model {config.name!r} (norm={config.norm!r}, "
            f"attention={config.attention!r}, bias={config.bias}) as GPT-2: "
            "GPT2LMHeadModel is pre-LN, dense, with biases"
        )
    if config.vocab_size < GPT2_VOCAB_SIZE:
        raise ValueError(
            f"cannot export model {config.name!r} as GPT-2: vocab_size={config.vocab_size} is smaller "
            f"than GPT-2's {GPT2_VOCAB_SIZE} tokens"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name in ("wte.weight", "lm_head.weight"):
            tensor = tensor[:GPT2_VOCAB_SIZE]  # the padding rows are gptlab-only special tokens
        elif name.endswith(CONV1D):
            tensor = tensor.t()
        # Own contiguous copies: safetensors refuses views and tensors that share memory.
        key = name if name == "lm_head.weight" else f"transformer.{name}"
        tensors[key] = tensor.detach().cpu().contiguous().clone()
    # A tied model has no lm_head.weight: tie_word_embeddings makes transformers tie it to wte on load.
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    dtype = str(model.wte.weight.dtype).removeprefix("torch.")
    hf_config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": GPT2_VOCAB_SIZE,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": INIT_STD,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "bos_token_id": EOT_ID,
        "eos_token_id": EOT_ID,
        "tie_word_embeddings": config.tie_embeddings,
        "use_cache": True,
        "dtype": dtype,
    }
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return out


def export_hf_tokenizer(out_dir: str | os.PathLike[str]) -> Path:
    """Write GPT-2's tokenizer (``tokenizer.json``, ``tokenizer_config.json``) into ``out_dir``, built
    offline with the ``tokenizers`` library from the same BPE files gptlab reads, so that
    ``AutoTokenizer.from_pretrained(out_dir)`` (lm-evaluation-harness's ``hf`` backend) gives
    gptlab's ids. Decoding keeps spaces as written (``clean_up_tokenization_spaces: false``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe_dir = bpe_files_dir()
    vocab = json.loads(read_verified(bpe_dir / "encoder.json", ENCODER_JSON_SHA256))
    merges_text = read_verified(bpe_dir / "vocab.bpe", VOCAB_BPE_SHA256).decode("utf-8")
    merges = [tuple(line.split(" ")) for line in merges_text.split("\n")[1:] if line]  # line 1: #version
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([EOT])
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
