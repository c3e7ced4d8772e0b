"""CPU model FLOPs utilisation of gptlab's training step against this machine's measured fp32 matmul peak.

The peak is a 4096x4096 fp32 matmul (best of 3, ``measured_cpu_peak_flops``); the step's achieved
FLOP/s is ``flops_per_token`` x tokens/s for gpt-mini at context 256, batch 8 (the formula the
ThroughputLogger reports as ``perf/mfu``). The two are measured alternately, so both see the same
machine load. Target: MFU >= 50% of the measured peak.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import common
from gptlab.lit.throughput import flops_per_token, measured_cpu_peak_flops
from gptlab.model.gpt import GPT

TARGET = 0.50
STEPS_PER_SAMPLE = 1


def main(argv: Sequence[str] | None = None) -> common.Report:
    args = common.parse_args(__doc__.splitlines()[0], argv, warmup=2, pairs=9)
    common.setup_torch()
    config, batch_size = common.bench_config(args.quick)
    peak_size, peak_repeats = (256, 2) if args.quick else (4096, 3)
    model = GPT(config).train()
    optimizer = common.adamw(model)
    x, y = common.token_windows(batch_size, config.block_size)[0]
    flops_per_step = flops_per_token(config, config.block_size, model.num_params()) * x.numel()

    def achieved() -> float:
        start = time.perf_counter()
        for _ in range(STEPS_PER_SAMPLE):
            common.gptlab_train_step(model, optimizer, x, y)
        return STEPS_PER_SAMPLE * flops_per_step / (time.perf_counter() - start)

    def peak() -> float:
        # The cached function's undecorated body: a fresh measurement at this moment's load.
        return measured_cpu_peak_flops.__wrapped__(peak_size, peak_repeats)

    print(f"mfu: {common.shape(config, batch_size)}")
    pairs = common.alternate(peak, achieved, args.pairs, warmup=args.warmup, names=("peak FLOP/s", "step FLOP/s"))
    target = common.Target("MFU (achieved / peak FLOP/s)", pairs.ratio, TARGET)
    report = common.Report(
        key="mfu",
        title="CPU MFU of the training step (gpt-mini, context 256, batch 8)",
        headers=("", "value"),
        rows=[
            (
                f"fp32 matmul peak, {peak_size}² best of {peak_repeats} (median over pairs)",
                f"{pairs.median_a / 1e9:.1f} GFLOP/s",
            ),
            ("fp32 matmul peak, best sample", f"{max(pairs.a) / 1e9:.1f} GFLOP/s"),
            ("training step achieved (median)", f"{pairs.median_b / 1e9:.1f} GFLOP/s"),
            ("training FLOPs per token (6N + 12·L·d·T)", f"{flops_per_step / x.numel() / 1e6:.1f} M"),
            ("tokens/s (median)", f"{pairs.median_b / (flops_per_step / x.numel()):,.0f}"),
            ("MFU per pair (min–max)", pairs.spread()),
            ("MFU against the best peak sample", f"{pairs.median_b / max(pairs.a):.1%}"),
        ],
        loads=pairs.loads,
        targets=[target],
        notes=[
            f"{len(pairs.a)} alternating pairs (peak sample, step sample) after {args.warmup} warm-up pairs; "
            "a step sample "
            f"is {STEPS_PER_SAMPLE} step(s) (forward, fused LM-head loss, backward, AdamW) of {batch_size}x"
            f"{config.block_size} tokens.",
            "FLOPs: `gptlab.lit.throughput.flops_per_token` (6 x all parameters incl. the tied 50304-row head, "
            "plus attention's 12·L·d·T), the figure the training run logs as `perf/mfu`.",
        ],
    )
    if not target.met or args.quick:
        profile = common.torch_profile(lambda: common.gptlab_train_step(model, optimizer, x, y))
        report.notes.append(
            f"Profile of one step (target {'met' if target.met else 'missed'}): matmul ops are "
            f"{100 * profile.matmul_share:.0f}% of the self CPU time. The rest runs far below the matmul "
            f"peak and bounds the MFU; its largest ops: {profile.others}."
        )
        report.profiles.append(("Top ops of one training step (self CPU time):", profile.table))
    report.publish("mfu.py", args)
    return report


if __name__ == "__main__":
    main()
