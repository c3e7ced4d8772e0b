"""BackboneModule: gradient clipping under bf16-mixed with the fused AdamW it uses on CUDA, and under
FSDP; AdamW's weight-decay groups."""

from __future__ import annotations

from unittest import mock

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy

from gptlab.lit.base import param_groups
from gptlab.lit.lm import LMModule
from gptlab.model.gpt import GPT


class GradNormProbe(pl.Callback):
    """Records the total gradient norm each optimizer step used (read after the step, so after
    Lightning's clipping, which runs inside the step's closure)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        def record(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
            grads = [p.grad.flatten() for group in optimizer.param_groups for p in group["params"]]
            self.norms.append(float(torch.cat(grads).norm()))

        trainer.optimizers[0].register_step_post_hook(record)


class FusedAdamWLM(LMModule):
    """The optimizer gptlab picks on CUDA (fused AdamW), here on the CPU, where torch has it too."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3, fused=True)


def fit_with_clip(model: GPT, clip: float, precision: str) -> GradNormProbe:
    ids = torch.randint(0, 64, (4, 4, 17))  # drawn after tiny_gpt() seeded torch: the same every run
    loader = torch.utils.data.DataLoader([(x[:, :-1], x[:, 1:]) for x in ids], batch_size=None)
    probe = GradNormProbe()
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=len(loader),
        gradient_clip_val=clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    trainer.fit(FusedAdamWLM(model), train_dataloaders=loader)
    return probe


def test_bf16_mixed_clips_the_gradients_of_a_fused_adamw(tiny_gpt) -> None:
    # Lightning's own mixed-precision clipping raises for a fused optimizer
    unclipped = fit_with_clip(tiny_gpt(), 0.0, "bf16-mixed").norms
    clip = min(unclipped) / 4  # every step's gradient is larger than this
    clipped = fit_with_clip(tiny_gpt(), clip, "bf16-mixed").norms
    assert len(clipped) == len(unclipped) == 4
    assert all(abs(norm - clip) <= 1e-3 * clip for norm in clipped)


def test_adamw_is_fused_on_the_cpu_and_steps_like_the_for_loop_adamw(tiny_gpt) -> None:
    module = LMModule(tiny_gpt(n_layer=1, n_embd=16, block_size=8))
    reference = LMModule(GPT(module.model.config))
    reference.load_state_dict(module.state_dict())
    # eps well above float noise: the key bias has a zero gradient up to rounding, and Adam would
    # blow its rounding noise up to full steps that differ between any two implementations.
    fused = module.adamw(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-4)
    loop = torch.optim.AdamW(
        param_groups(reference, 0.1), lr=1e-2, betas=(0.9, 0.95), eps=1e-4, foreach=False, fused=False
    )
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    x = torch.randint(0, 64, (2, 8))
    for _ in range(3):
        for m, optimizer in ((module, fused), (reference, loop)):
            m.model.lm_loss(m.model.hidden_states(x), x).backward()
            optimizer.step()
            optimizer.zero_grad()
    for (name, a), b in zip(module.named_parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (name, float((a - b).abs().max()))


def test_weight_decay_groups_survive_fsdp_flattening_the_parameters(tiny_gpt) -> None:
    module = LMModule(tiny_gpt(n_embd=16, block_size=8))
    decayed = {name for name, p in module.named_parameters() if p.dim() >= 2}
    assert decayed and len(decayed) < len(list(module.parameters()))
    # FSDP (use_orig_params) builds the optimizer when every parameter is a 1-D view of its shard
    for p in module.parameters():
        p.data = p.data.flatten()
    names = {id(p): name for name, p in module.named_parameters()}
    decay, no_decay = param_groups(module, 0.1)
    assert {names[id(p)] for p in decay["params"]} == decayed
    assert {names[id(p)] for p in no_decay["params"]} == set(names.values()) - decayed
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


def test_under_fsdp_the_norm_is_clipped_by_the_root_module_over_all_shards(tiny_gpt) -> None:
    module = LMModule(tiny_gpt(n_layer=1, n_embd=16, block_size=8))
    strategy = FSDPStrategy()
    root = mock.Mock()
    strategy.model = root  # the FSDP-wrapped module, which alone sees every rank's shard
    trainer = mock.Mock(strategy=strategy)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    with mock.patch.object(LMModule, "trainer", trainer), mock.patch.object(LMModule, "clip_gradients") as local:
        module.configure_gradient_clipping(optimizer, 0.5, "norm")
        root.clip_grad_norm_.assert_called_once_with(0.5)
        module.configure_gradient_clipping(optimizer, 0.5, "value")  # element-wise: local is exact
        local.assert_called_once_with(optimizer, 0.5, "value")
        assert root.clip_grad_norm_.call_count == 1
