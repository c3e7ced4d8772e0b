"""Every bench/ script runs end to end at toy sizes (``--quick --no-write``) and prints its ratio.

No timing is asserted: benchmarks are measured by ``make bench``, never by the test suite.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = ("lm_step", "lightning_overhead", "tokenize_cache", "mfu", "finetune_sst2", "finetune_memory")
# Scripts that read the real benchmark files.
SHARED_DATA = ("tokenize_cache", "finetune_sst2")


@pytest.fixture
def bench_script(monkeypatch):
    """Loads ``bench/<name>.py`` as a module (the scripts import their sibling ``common``)."""
    monkeypatch.syspath_prepend(str(BENCH))
    threads = torch.get_num_threads()

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
    torch.set_num_threads(threads)  # the scripts pin 2 threads


@pytest.mark.parametrize("name", SCRIPTS)
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
