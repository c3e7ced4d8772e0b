"""Every bench/ script runs end to end at toy sizes (``--quick --no-write``) and prints its ratio.

No timing is asserted: benchmarks are measured by ``make bench``, never by the test suite.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from pathlib import Path

import pytest
import torch

from gptlab.data.prompts import Request
from gptlab.data.tokenizer import GPT2_VOCAB_SIZE
from gptlab.model.gpt import GPT, GPTConfig

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = (
    "lm_step", "lightning_overhead", "tokenize_cache", "mfu", "finetune_sst2", "finetune_memory", "incontext_scoring",
    "greedy_generation", "generative_eval", "suite_eval", "lmeval_backend", "token_shards",
)
# Scripts that read the real benchmark files.
SHARED_DATA = (
    "tokenize_cache", "finetune_sst2", "incontext_scoring", "greedy_generation", "generative_eval", "suite_eval",
    "lmeval_backend",
)
# Quick runs of over ten seconds (incontext_scoring scores every ARC-Easy answer both ways,
# finetune_memory fine-tunes both sides, generative_eval, suite_eval and lmeval_backend run
# lm-eval, token_shards writes corpora and builds each in a fresh process): make test-slow runs
# them, so make test stays within ten minutes.
SLOW = (
    "incontext_scoring", "finetune_memory", "greedy_generation", "generative_eval", "suite_eval", "lmeval_backend",
    "token_shards",
)


@pytest.fixture
def bench_script(monkeypatch):
    """Loads ``bench/<name>.py`` as a module (the scripts import their sibling ``common``)."""
    monkeypatch.syspath_prepend(str(BENCH))
    threads = torch.get_num_threads()
    levels = {name: logger.level for name, logger in _loggers()}

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        # registered while it runs, as an import would: dataclasses look their module up there
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
        return module

    yield load
    torch.set_num_threads(threads)  # the scripts pin 2 threads
    # the scripts quieten loggers ("gptlab" among them): later tests read their warnings with caplog
    for name, logger in _loggers():
        logger.setLevel(levels.get(name, logging.NOTSET))


def _loggers() -> list[tuple[str, logging.Logger]]:
    loggers = logging.root.manager.loggerDict.items()
    return [(name, logger) for name, logger in loggers if isinstance(logger, logging.Logger)]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SCRIPTS])
def test_quick_run_prints_its_ratio(name, bench_script, capsys, monkeypatch, request):
    if name in SHARED_DATA:
        monkeypatch.setenv("GPTLAB_SHARED_DATA", str(request.getfixturevalue("shared_data")))
    benchmarks = BENCH.parent / "BENCHMARKS.md"
    before = benchmarks.read_bytes() if benchmarks.exists() else None

    report = bench_script(name).main(["--quick", "--no-write"])

    out = capsys.readouterr().out
    assert re.search(r"ratio .+ = \d+\.\d+ \(target >= ", out), out[-2000:]
    # a ratio is positive; an upper-bounded figure (an accuracy gap) may be exactly 0
    assert report.targets and all(t.value >= 0 if t.at_most else t.value > 0 for t in report.targets)
    assert (benchmarks.read_bytes() if benchmarks.exists() else None) == before  # --no-write wrote nothing
    if name == "incontext_scoring":  # its second target: both ways of scoring give the same log-likelihoods
        speed, same = report.targets
        assert (speed.at_most, same.at_most, same.bound) == (False, True, 1e-4)
        assert same.met, same.line()


def test_incontext_scoring_sides_match_a_plain_forward(bench_script):
    """Both sides of incontext_scoring give every answer the log-likelihood that one plain forward of
    (context + answer) gives it, whatever the batching (uneven contexts, answers of 1 to 6 tokens)."""
    script = bench_script("incontext_scoring")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt-nano", n_layer=2, n_head=2, n_embd=16, block_size=32)).eval()
    gen = torch.Generator().manual_seed(0)

    def tokens(n: int) -> list[int]:
        return torch.randint(0, GPT2_VOCAB_SIZE, (n,), generator=gen).tolist()

    shapes = [(12, [1, 3, 2]), (20, [4, 1]), (5, [2, 2, 6, 1]), (1, [3])]  # (context, answer lengths)
    requests = [
        Request(tokens(c), [tokens(n) for n in answers], [1] * len(answers), label=0, truncated=False)
        for c, answers in shapes
    ]
    expected = []
    with torch.no_grad():
        for r in requests:
            for answer in r.continuations:
                whole = torch.tensor(r.context + answer)
                logprobs = model(whole[None, :-1])[0, len(r.context) - 1 :, :GPT2_VOCAB_SIZE].log_softmax(-1)
                expected.append(float(logprobs.gather(1, whole[len(r.context) :, None]).sum()))
    expected = torch.tensor(expected)

    shared = script.score_shared(model, script.shared_batches(requests, batch_size=2, block_size=32), len(expected))
    separate = script.score_separate(model, script.separate_batches(requests, rows_per_batch=3), len(expected))

    torch.testing.assert_close(shared, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(separate, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_sft_throughput_quick_run_checks_the_loss(bench_script, monkeypatch, shared_data):
    """sft_throughput's quick run: both sides give one padded batch the same loss (the same masking),
    and every side trains at a positive rate; the 2x target is left to the real run."""
    monkeypatch.setenv("GPTLAB_SHARED_DATA", str(shared_data))
    benchmarks = BENCH.parent / "BENCHMARKS.md"
    before = benchmarks.read_bytes() if benchmarks.exists() else None

    report = bench_script("sft_throughput").main(["--quick", "--no-write"])

    speed, same_loss = report.targets
    assert same_loss.met, same_loss.line()
    assert speed.value > 0
    examples_per_s = next(row for row in report.rows if row[0].startswith("examples/s"))
    assert len(examples_per_s) == 4 and all(float(v.replace(",", "")) > 0 for v in examples_per_s[1:])
    assert (benchmarks.read_bytes() if benchmarks.exists() else None) == before  # --no-write wrote nothing
