"""What every ``bench/*.py`` script shares: the alternating timing loop, the machine line, the
BENCHMARKS.md section writer, the benchmark model size and the profile summaries.

The rule all scripts follow: gptlab and its peer run in the same process, alternating, after
warm-up, and a figure is the median over at least 5 pairs of the pair's ratio. Absolute times from different
runs (or machines, or load) are never compared, because this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from gptlab.atomic import write_atomic
from gptlab.lit.base import FUSED_ADAMW_DEVICES, param_groups
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.resources import config_dir

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
THREADS = 2
DEFAULT_PAIRS = 7  # odd, so a median is one measured pair, not the mean of two
MIN_PAIRS = 5
QUICK_PAIRS = 2
HEADER = """# Benchmarks

Latest figures of the `bench/` scripts; `make bench` reruns them all, `python bench/<name>.py` one.
Each script measures gptlab and its peer in the same process, alternating (the side that goes first
swaps every pair), after warm-up, with `torch.set_num_threads(2)` on both sides. It reports each
side's median and, as the figure, the median over the pairs of the ratio of the pair's two
measurements: a pair runs back to back, so both of its sides see the same machine load. The machine
is shared with other work, so the load average is recorded; an oversubscribed run (load above the
CPU count) slows parallel element-wise work far more than large matmuls, so compare ratios taken at
a low load, and never absolute times from different runs.
"""
# Self-CPU-time ops that are matrix multiplies (what a matmul peak can be compared with).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")


# ----------------------------------------------------------------------------- command line


def evaluation_config(overrides: Sequence[str], output_dir: Path, cache_dir: Path, batch_size: int) -> Any:
    """gptlab's ``train`` config composed with ``overrides`` as a timed evaluation runs it: writing
    into ``output_dir`` (cache ``cache_dir``), CSV logger, no progress bar, ``batch_size`` examples
    per step."""
    from hydra import compose, initialize_config_dir

    quiet = [
        f"paths.output_dir={output_dir}",
        f"paths.cache_dir={cache_dir}",
        "logger=csv",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        f"regime.batch_size={batch_size}",
        f"regime.global_batch_size={batch_size}",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, *quiet])


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    warmup: int = 1,
    pairs: int = DEFAULT_PAIRS,
    min_pairs: int = MIN_PAIRS,
    quick_pairs: int = QUICK_PAIRS,
) -> argparse.Namespace:
    """``--quick``, ``--no-write``, ``--pairs`` (default ``pairs``, ``quick_pairs`` if quick);
    ``args.warmup``: ``warmup``, 0 if quick. ``min_pairs`` is lowered below ``MIN_PAIRS`` only by a
    script whose measurement is deterministic enough and slow, with the reason in its report."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few pairs: checks the script runs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--pairs", type=int, default=None, help=f"alternating pairs (default {pairs})")
    args = parser.parse_args(argv)
    args.default_pairs = quick_pairs if args.quick else pairs
    if args.pairs is None:
        args.pairs = args.default_pairs
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    if args.pairs < min_pairs and not (args.quick or args.no_write):
        parser.error(f"a figure for BENCHMARKS.md needs --pairs >= {min_pairs} (or pass --no-write)")
    args.warmup = 0 if args.quick else warmup
    return args


def shared_data_dir() -> Path:
    """The real benchmark files: ``../shared/data`` beside the checkout, or ``$GPTLAB_SHARED_DATA``."""
    root = Path(os.environ.get("GPTLAB_SHARED_DATA") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        raise SystemExit(f"shared data folder {root} is missing (set GPTLAB_SHARED_DATA to its location)")
    return root


def setup_torch(seed: int = 0) -> None:
    """The same threads for both sides of every benchmark."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- timing


def wall(fn: Callable[[], Any]) -> Callable[[], float]:
    """``fn`` as a measurement: it returns the seconds one call took."""

    def timed() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return timed


@dataclass
class Pairs:
    """Measurements of side ``a`` and side ``b``, one of each per pair."""

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)  # 1-minute load average before and after each pair

    @property
    def median_a(self) -> float:
        return statistics.median(self.a)

    @property
    def median_b(self) -> float:
        return statistics.median(self.b)

    def pair_ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.a, self.b)]

    @property
    def ratio(self) -> float:
        """The median over pairs of b/a (with times: how many times faster ``a`` is than ``b``).

        Per pair, because the two calls of a pair ran back to back under the same load; a ratio of
        the two medians mixes samples taken minutes apart, under whatever load the machine had then.
        """
        return statistics.median(self.pair_ratios())

    @property
    def ratio_of_medians(self) -> float:
        return self.median_b / self.median_a

    def spread(self) -> str:
        """The range of the per-pair ratios and the ratio of the medians, to show how noisy the run was."""
        ratios = self.pair_ratios()
        return f"{min(ratios):.2f}–{max(ratios):.2f} (ratio of the medians {self.ratio_of_medians:.2f})"


def alternate(
    a: Callable[[], float],
    b: Callable[[], float],
    pairs: int,
    warmup: int = 1,
    names: tuple[str, str] = ("a", "b"),
) -> Pairs:
    """Call ``a`` and ``b`` ``warmup`` times each (discarded), then ``pairs`` times each, alternating.

    The side that goes first swaps every pair, so a slow drift of the machine (or a cache that the
    first call warms for the second) does not favour one side. Each call returns its measurement.
    """
    for _ in range(warmup):
        a()
        b()
    result = Pairs(loads=[load_average()])
    for i in range(pairs):
        if i % 2 == 0:
            result.a.append(a())
            result.b.append(b())
        else:
            result.b.append(b())
            result.a.append(a())
        result.loads.append(load_average())
        print(f"  pair {i + 1}/{pairs}: {names[0]} {result.a[-1]:.4g}, {names[1]} {result.b[-1]:.4g}", flush=True)
    return result


# ----------------------------------------------------------------------------- the benchmark model


def bench_config(quick: bool) -> tuple[GPTConfig, int]:
    """The benchmark size: gpt-mini at context 256, batch 8, dropout 0. ``quick``: a toy size."""
    if quick:
        return GPTConfig.from_name("gpt-mini", n_layer=2, n_head=2, n_embd=32, block_size=32, dropout=0.0), 2
    return GPTConfig.from_name("gpt-mini", dropout=0.0), 8


def pretrain_settings() -> dict[str, Any]:
    """The LMModule arguments gptlab pre-trains with (``conf/regime/pretrain.yaml``)."""
    module = OmegaConf.to_container(OmegaConf.load(config_dir() / "regime" / "pretrain.yaml"))["regime"]["module"]
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in module.items() if k not in ("_target_", "model")}


def adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW as LMModule builds it on the CPU (same groups, fused, settings from the pre-train regime)."""
    hp = pretrain_settings()
    return torch.optim.AdamW(
        param_groups(model, hp["weight_decay"]),
        lr=hp["lr"],
        betas=hp["betas"],
        eps=hp["eps"],
        fused=next(model.parameters()).device.type in FUSED_ADAMW_DEVICES,
    )


def shape(config: GPTConfig, batch_size: int) -> str:
    return (
        f"{config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, "
        f"context {config.block_size}, batch {batch_size}"
    )


def token_windows(
    batch_size: int, block_size: int, count: int = 1, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches ``(x, y)`` of random GPT-2 token ids (a step's cost does not depend on them)."""
    gen = torch.Generator().manual_seed(seed)
    windows = torch.randint(0, 50257, (count, batch_size, block_size + 1), generator=gen)
    return [(w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in windows]


def gptlab_train_step(model: GPT, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step as LMModule takes it: backbone, fused LM-head loss, backward, AdamW."""
    loss = model.lm_loss(model.hidden_states(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- profiles


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class OpProfile:
    """Where one call's self CPU time went, by torch op."""

    table: str  # markdown, top ops
    matmul_share: float  # of the self CPU time, in MATMUL_OPS
    others: str  # the largest non-matmul ops with their shares, for a one-line summary


def torch_profile(fn: Callable[[], Any], top: int = 8) -> OpProfile:
    """The top ``top`` torch ops of one call of ``fn`` by self CPU time."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = [
        (f"`{e.key}`", f"{e.self_cpu_time_total / 1e3:.1f}", f"{100 * e.self_cpu_time_total / total:.1f}%", e.count)
        for e in events[:top]
    ]
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / total
    largest_others = [e for e in events if e.key not in MATMUL_OPS][:4]
    others = ", ".join(f"`{e.key}` {100 * e.self_cpu_time_total / total:.0f}%" for e in largest_others)
    return OpProfile(_table(("op", "self CPU ms", "share", "calls"), rows), matmul, others)


def _package_of(file: str, name: str) -> str:
    """Who owns a cProfile entry: the installed package, gptlab, or torch's C ops for built-ins."""
    if file == "~":  # a C function or method: torch's ops dominate these
        return "torch (C ops)" if "torch" in name or "Tensor" in name else "Python built-ins"
    parts = Path(file).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if "gptlab" in parts:
        return "gptlab"
    return "Python stdlib/other"


@dataclass
class FunctionProfile:
    """Where one call's time went, by Python function (cProfile own time)."""

    table: str  # markdown, top functions
    by_package: str  # own time summed by package, for a one-line summary
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = field(repr=False, default_factory=dict)

    def cumulative(self, name: str, file_suffix: str = "") -> float:
        """Seconds spent inside function ``name`` (callees included), over all its definitions."""
        return sum(
            s[3] for (file, _, fn), s in self.stats.items() if fn == name and file.endswith(file_suffix)
        )


def python_profile(fn: Callable[[], Any], top: int = 8) -> FunctionProfile:
    """The top ``top`` functions of one call of ``fn`` by own time, and own time per package."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
    total = sum(s[2] for s in stats.values())
    ranked = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    rows = []
    for (file, line, name), (_, calls, tottime, _, _) in ranked:
        where = name if file == "~" else f"{name} ({Path(file).name}:{line})"
        rows.append((f"`{where}`", f"{tottime * 1e3:.1f}", f"{100 * tottime / total:.1f}%", calls))
    packages: dict[str, float] = {}
    for (file, _, name), (_, _, tottime, _, _) in stats.items():
        owner = _package_of(file, name)
        packages[owner] = packages.get(owner, 0.0) + tottime
    by_package = ", ".join(
        f"{owner} {100 * t / total:.0f}%" for owner, t in sorted(packages.items(), key=lambda kv: -kv[1])[:6]
    )
    return FunctionProfile(_table(("function", "own ms", "share", "calls"), rows), by_package, stats)


# ----------------------------------------------------------------------------- reporting


def _cpu_model() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(isa)})" if isa else model


def machine() -> str:
    """One line: CPU model, cores, OS, Python, torch and its threads."""
    return (
        f"{_cpu_model()}, {os.cpu_count()} logical CPUs; {platform.platform()}; "
        f"Python {platform.python_version()}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


@dataclass
class Target:
    """A figure and its target: a ratio ``value >= bound``, or with ``at_most`` a quantity ``value <= bound``
    (e.g. an accuracy gap in points, or a memory in MiB); ``fmt`` formats the value (``".1e"`` for a
    figure far below 0.01, such as a numerical difference)."""

    what: str
    value: float
    bound: float
    at_most: bool = False
    fmt: str = ".2f"

    @property
    def met(self) -> bool:
        return self.value <= self.bound if self.at_most else self.value >= self.bound

    def line(self) -> str:
        verdict = "met" if self.met else "MISSED"
        relation = "<=" if self.at_most else ">="
        kind = "" if self.at_most else "ratio "
        return f"{kind}{self.what} = {self.value:{self.fmt}} (target {relation} {self.bound:g}): {verdict}"


@dataclass
class Report:
    """One script's section of BENCHMARKS.md; ``publish`` prints it and (unless told not to) writes it."""

    key: str
    title: str
    headers: Sequence[str]
    rows: list[Sequence[Any]]
    targets: list[Target]
    notes: list[str] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)  # (caption, markdown table)
    loads: list[float] = field(default_factory=list)  # 1-minute load averages seen while measuring

    def markdown(self, command: str) -> str:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        loads = self.loads or [load_average()]
        parts = [
            f"## {self.title}",
            f"- command: `{command}`\n- date: {when}\n- machine: {machine()}\n"
            f"- 1-minute load average while measuring: {min(loads):.1f}–{max(loads):.1f}"
            + (
                f" (oversubscribed at times: more runnable work than the {os.cpu_count()} CPUs, so both sides "
                "ran slower than on an idle machine, and a side's second thread often found no free core)"
                if max(loads) > (os.cpu_count() or 1)
                else ""
            ),
            _table(self.headers, self.rows),
            "\n".join(f"**{'met' if t.met else 'missed'}**: {t.line()}" + "  " for t in self.targets).rstrip(),
        ]
        if self.notes:
            parts.append("\n".join(f"- {n}" for n in self.notes))
        for caption, table in self.profiles:
            parts += [caption, table]
        return "\n\n".join(parts)

    def publish(self, script: str, args: argparse.Namespace, options: Sequence[str] = ()) -> str:
        """``options``: the script's own command-line options of this run, for the command line shown."""
        extra = [*options, *([f"--pairs {args.pairs}"] if args.pairs != args.default_pairs else [])]
        command = " ".join(["python", f"bench/{script}", *(["--quick"] if args.quick else []), *extra])
        text = self.markdown(command)
        print("\n" + text + "\n", flush=True)
        if not args.no_write:
            write_section(self.key, text)
            print(f"updated {BENCHMARKS_MD.relative_to(REPO)} section {self.key!r}")
        return text


def write_section(key: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace section ``key`` of ``path`` (between its markers), or append it; the preamble is
    rewritten from ``HEADER``; atomic."""
    begin, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    text = HEADER + "\n" + text[text.find("<!-- bench:"):] if "<!-- bench:" in text else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_atomic(path, text.encode())

