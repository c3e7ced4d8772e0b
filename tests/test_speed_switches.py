"""The speed and memory switches: ``compile``, ``activation_checkpointing``, the LM loss under autocast."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import gptlab.cli  # noqa: F401  (registers the resolvers the configs use)
from gptlab.cli.train import build_all
from gptlab.model.gpt import GPT
from gptlab.model.loss import linear_cross_entropy, unfused_linear_cross_entropy


def loss_and_grads(model: GPT, idx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = model.lm_loss(model.hidden_states(idx), idx)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_activation_checkpointing_recomputes_the_same_loss_and_gradients(tiny_gpt) -> None:
    model = tiny_gpt().train()
    idx = torch.randint(0, 64, (3, 16))
    loss, grads = loss_and_grads(model, idx)
    model.activation_checkpointing = True
    recomputed_loss, recomputed_grads = loss_and_grads(model, idx)
    assert torch.equal(loss, recomputed_loss)
    for a, b in zip(grads, recomputed_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 7, 1000])  # fewer rows than one chunk, and several chunks
def test_chunked_loss_under_bf16_autocast_matches_the_full_logits_loss(rows: int) -> None:
    torch.manual_seed(rows)
    hidden = torch.randn(rows, 32, requires_grad=True)
    weight = torch.randn(50304, 32, requires_grad=True)
    targets = torch.randint(0, 50304, (rows,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = linear_cross_entropy(hidden, weight, targets)
    chunked_grads = torch.autograd.grad(chunked, (hidden, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        full = unfused_linear_cross_entropy(hidden, weight, targets)
    full_grads = torch.autograd.grad(full, (hidden, weight))
    # both round the same bf16 logits; they differ only in the order of fp32 sums
    torch.testing.assert_close(chunked, full, rtol=1e-4, atol=1e-4)
    for a, b in zip(chunked_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-4)


@pytest.fixture
def compose_run(tmp_path: Path, compose_config):
    """``compose_run(*overrides)``: a fast debug run writing under ``tmp_path``."""
    return functools.partial(
        compose_config, "debug=fast", f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}"
    )


@pytest.mark.parametrize("compile_flag", [False, True])
def test_build_all_applies_compile_and_activation_checkpointing(
    compose_run, monkeypatch: pytest.MonkeyPatch, compile_flag: bool
) -> None:
    compiled: list[GPT] = []
    monkeypatch.setattr(GPT, "compile_training", lambda self: compiled.append(self))
    cfg = compose_run(f"compile={compile_flag}", "activation_checkpointing=true")
    _, module, _ = build_all(cfg)
    assert module.model.activation_checkpointing
    assert compiled == ([module.model] if compile_flag else [])


def test_scoring_regimes_never_compile(compose_run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GPT, "compile_training", lambda self: pytest.fail("compiled a scoring run"))
    build_all(compose_run("compile=true", "regime=zero_shot", "task=demo_topic"))


def test_gpu_profiles_compile_and_the_cpu_profile_does_not(compose_config) -> None:
    gpu = compose_config("hardware=gpu-bf16")
    cpu = compose_config("hardware=cpu")
    assert gpu.compile and gpu.float32_matmul_precision == "high"
    assert not cpu.compile and cpu.float32_matmul_precision == "highest"
