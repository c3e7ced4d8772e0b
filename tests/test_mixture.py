"""Mixtures of corpora: the weighted pattern, the mixed stream's guarantees, the datamodule, the task."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlab.data.stream import PATTERN_LENGTH, MixtureSampler, mixture_pattern
from gptlab.data.text import TextDataModule
from gptlab.data.tokenizer import get_tokenizer
from gptlab.tasks.spec import TaskSpec


@pytest.mark.parametrize("weights", [[0.7, 0.3], [1, 1, 1], [5, 0.0001], [0.2, 0.5, 0.3]])
def test_the_pattern_deals_the_weights_into_its_slots(weights):
    slots, ranks, counts = mixture_pattern(weights, seed=3)
    assert len(slots) == PATTERN_LENGTH == counts.sum() and counts.min() >= 1
    shares = np.asarray(weights) / sum(weights)
    assert np.all(np.abs(counts - shares * PATTERN_LENGTH) <= max(1, len(weights)))
    assert Counter(slots.tolist()) == dict(enumerate(counts.tolist()))
    for source, count in enumerate(counts):  # ranks number each source's slots in order
        assert ranks[slots == source].tolist() == list(range(count))
    assert np.array_equal(mixture_pattern(weights, seed=3)[0], slots)
    assert not np.array_equal(mixture_pattern(weights, seed=4)[0], slots) or len(set(slots.tolist())) == 1


def mixed(**kwargs) -> list[int]:
    args = {"num_windows": [7, 3], "weights": [0.6, 0.4], "seed": 5, "start": 0, "length": 3000} | kwargs
    return list(MixtureSampler(**args))


def test_each_source_reads_each_of_its_windows_once_per_its_own_epoch():
    stream = mixed()
    first = [w for w in stream if w < 7]
    second = [w - 7 for w in stream if w >= 7]
    assert abs(len(first) / len(stream) - 0.6) < 0.002
    for windows, n in ((first, 7), (second, 3)):
        epochs = [windows[i : i + n] for i in range(0, len(windows) - n + 1, n)]
        assert all(sorted(epoch) == list(range(n)) for epoch in epochs)
        assert len({tuple(e) for e in epochs}) > 1  # a new order each epoch
    assert stream == mixed() and stream != mixed(seed=6)


@pytest.mark.parametrize("k", [0, 1, 999, 1000, 2345])
def test_a_mixed_stream_resumed_at_k_is_the_tail_of_the_stream(k):
    full = mixed()
    assert mixed(resume=k) == full[k:]
    assert mixed(start=k, length=3000 - k) == full[k:]


def test_ddp_ranks_partition_the_mixed_stream():
    full = mixed(start=10, length=1200)
    ranks = [mixed(start=10, length=1200, rank=r, world_size=4) for r in range(4)]
    assert [ranks[i % 4][i // 4] for i in range(1200)] == full


# ----------------------------------------------------------------------------- the datamodule


def corpus(folder: Path, word: str, count: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text": f"{word} {i} " + f"{word} " * (i % 9)}) for i in range(count)]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return {"name": f"{word}_corpus", "kind": "lm", "format": "jsonl", "data_dir": str(folder),
            "files": {"train": "train.jsonl"}, "val_fraction": 0.2}  # fmt: skip


def mixture_task(tmp_path: Path, weights=(0.25, 0.75)) -> dict:
    return {
        "name": "mix", "kind": "lm", "format": "mixture",
        "mixture": {
            "apples": {"task": corpus(tmp_path / "a", "apple", 300), "weight": weights[0]},
            "pears": {"task": corpus(tmp_path / "p", "pear", 60), "weight": weights[1]},
        },
    }  # fmt: skip


def make_dm(tmp_path: Path, task: dict, **kwargs) -> TextDataModule:
    return TextDataModule(task, block_size=8, batch_size=4, cache_dir=str(tmp_path / "cache"), num_proc=1, **kwargs)


def test_a_mixture_draws_its_windows_from_each_source_by_weight(tmp_path):
    dm = make_dm(tmp_path, mixture_task(tmp_path), val_windows=6)
    dm.setup()
    assert dm.num_train_tokens > 0 and dm.num_val_tokens > 0
    loader = dm.train_dataloader()
    tokens = torch.cat([x.flatten() for x, _ in loader])
    text = get_tokenizer().decode(tokens.tolist())
    apples, pears = text.count("apple"), text.count("pear")
    assert apples and pears and abs(pears / (apples + pears) - 0.75) < 0.1
    val = [x for x, _ in dm.val_dataloader()]
    val_text = get_tokenizer().decode(torch.cat([x.flatten() for x in val]).tolist())
    assert "apple" in val_text and "pear" in val_text and sum(len(x) for x in val) == 6


def test_a_mixed_stream_resumes_where_the_checkpoint_was(tmp_path):
    task = mixture_task(tmp_path)
    dm = make_dm(tmp_path, task)
    dm.setup()
    full = list(dm.train_dataloader().sampler)
    other = make_dm(tmp_path, task, seed=99)
    other.setup()
    other.load_state_dict({"seed": 1234, "start_sample": 0, "position": 40})
    assert list(other.train_dataloader().sampler) == full[40:]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weight": 0}, r"mixture\.apples\.weight=0 must be a positive number"),
        ({"weight": "lots"}, r"mixture\.apples\.weight='lots' must be a positive number"),
        ({"task": None}, r"mixture\.apples\.task=None must be a task's node"),
        ({"extra": 1}, r"mixture\.apples=.* must have exactly the keys task and weight"),
        ({"task": {"name": "x", "kind": "classification", "format": "jsonl"}}, r"mixes corpora \(kind 'lm'\)"),
        ({"task": {"name": "x", "kind": "lm", "format": "jsonl", "colour": 1}}, r"mixture\.apples\.task: .*unknown key"),
    ],
)
def test_a_malformed_mixture_names_the_key(tmp_path, change, message):
    task = mixture_task(tmp_path)
    task["mixture"]["apples"] = {**task["mixture"]["apples"], **change}
    with pytest.raises(ValueError, match=message):
        TaskSpec.from_config(task)


def test_a_mixture_key_on_another_format_and_rolling_perplexity_of_a_mixture_are_refused(tmp_path):
    task = mixture_task(tmp_path)
    with pytest.raises(ValueError, match="mixture is read only by format 'mixture', not 'jsonl'"):
        TaskSpec.from_config({**task["mixture"]["apples"]["task"], "mixture": task["mixture"]})
    from gptlab.data.rolling import validation_documents

    with pytest.raises(ValueError, match="is a mixture of corpora.*apples, pears"):
        validation_documents(TaskSpec.from_config(task))


def test_a_resumed_fit_continues_a_mixed_stream_exactly(tmp_path):
    from test_text_data import fit  # the Lightning fit that records its batches

    task = mixture_task(tmp_path)
    first = fit(make_dm(tmp_path, task), tmp_path / "ckpt", max_steps=9)
    (ckpt,) = (tmp_path / "ckpt").glob("*step=6.ckpt")
    resumed = fit(make_dm(tmp_path, task), tmp_path / "ckpt2", ckpt_path=ckpt, max_steps=9)
    assert len(resumed.batches) == 3
    assert all(a.equal(b) for a, b in zip(first.batches[6:], resumed.batches, strict=True))
