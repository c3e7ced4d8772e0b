"""GPU pre-training throughput and MFU of gptlab's gpt2 (124M): bf16 autocast, torch.compile, SDPA
flash attention, fused AdamW, on whatever CUDA device is present (the figure in BENCHMARKS.md was
taken on one H100).

Each variant is one way of running the same training step (forward, backward, AdamW) of the same
model on the same random token windows; tokens/s is timed with CUDA events over ``--steps``
steps after ``--warmup`` steps (compilation happens in the warm-up), and MFU is
``flops_per_token`` (6N + 12·L·d·T, the figure the ThroughputLogger reports) × tokens/s over the
device's dense bf16 peak from Lightning's table. ``lightning`` runs the real ``LMModule`` under a
``Trainer(precision="bf16-mixed")``, the path ``gptlab hardware=gpu-bf16 compile=true`` takes.

Needs only torch and lightning (no Hydra, datasets or tokenizer files), so it runs on a bare GPU
machine with ``PYTHONPATH=src``. It prints a table; BENCHMARKS.md's GPU section quotes it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from gptlab.lit.throughput import device_peak_flops, flops_per_token
from gptlab.model.gpt import GPT, GPTConfig

# conf/model/gpt2.yaml, without the OmegaConf dependency; dropout 0 as in nanoGPT's throughput runs
GPT2 = dict(name="gpt2", n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, dropout=0.0)


def batches(n: int, batch_size: int, block: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` distinct random (x, y) windows, so no step re-reads a cached batch."""
    out = []
    for _ in range(n):
        ids = torch.randint(0, 50257, (batch_size, block + 1), device=device)
        out.append((ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))
    return out


def plain_step(model: GPT, compiled: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimizer step of ``LMModule.training_step``'s computation, outside Lightning."""
    if compiled:
        model.compile_training()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), fused=True)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model.lm_loss(model.hidden_states(x), y)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_plain(step: Callable, data: list, warmup: int, steps: int) -> float:
    """Seconds per step, CUDA-event timed, after ``warmup`` steps."""
    for i in range(warmup):
        step(*data[i % len(data)])
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(steps):
        step(*data[i % len(data)])
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / steps


def profile_table(step: Callable, data: list, rows: int = 12) -> str:
    """The CUDA kernels that take the most device time over 5 steps (run after warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(5):
            step(*data[i % len(data)])
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)


def time_lightning(model: GPT, data: list, warmup: int, steps: int) -> float:
    """Seconds per step of ``LMModule`` under a bf16-mixed Lightning Trainer, after ``warmup`` steps."""
    import lightning.pytorch as pl

    from gptlab.lit.lm import LMModule

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.start = 0.0
            self.elapsed = 0.0

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if batch_idx == warmup:
                torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, module) -> None:
            torch.cuda.synchronize()
            self.elapsed = time.perf_counter() - self.start

    cpu_data = [(x.cpu(), y.cpu()) for x, y in data]
    loader = torch.utils.data.DataLoader(
        [cpu_data[i % len(cpu_data)] for i in range(warmup + steps)],
        batch_size=None,
        pin_memory=True,
    )
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=warmup + steps,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(LMModule(model, warmup_steps=10), train_dataloaders=loader)
    return timer.elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument(
        "--variants",
        default="eager,compiled,lightning",
        help="comma list of: eager, compiled (GPT.compile_training), lightning (compiled, under a Trainer)",
    )
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of each plain variant")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda")
    peak = device_peak_flops(device, torch.bfloat16)
    data = batches(4, args.batch_size, GPT2["block_size"], device)
    tokens = args.batch_size * GPT2["block_size"]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 peak {peak / 1e12:.0f} TFLOP/s")
    print(f"gpt2, batch {args.batch_size} x {GPT2['block_size']} tokens, {args.warmup} warm-up + {args.steps} timed steps")
    print("| variant | step (ms) | tokens/s | MFU | peak memory (GiB) |\n|---|---|---|---|---|")
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        torch.cuda.reset_peak_memory_stats()
        model = GPT(GPTConfig(**GPT2)).to(device)
        fpt = flops_per_token(model.config, GPT2["block_size"], model.num_params())
        if variant == "lightning":
            model.compile_training()
            seconds = time_lightning(model, data, args.warmup, args.steps)
        else:
            step = plain_step(model, compiled=variant == "compiled")
            seconds = time_plain(step, data, args.warmup, args.steps)
            if args.profile:
                print(profile_table(step, data))
        rate = tokens / seconds
        mfu = rate * fpt / peak if peak else float("nan")
        memory = torch.cuda.max_memory_allocated() / 2**30
        print(f"| {variant} | {seconds * 1e3:.1f} | {rate:,.0f} | {mfu:.1%} | {memory:.1f} |", flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
