"""Sampling: KV-cache equivalence, the crop policy past block_size, filters, and gptlab-sample."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from gptlab.cli.sample import RULE, main, sample_text, task_prompt
from gptlab.data.tokenizer import EOT_ID
from gptlab.model.generate import GPT2_VOCAB_SIZE, PACK_AFTER_STEPS, StepHead, generate
from gptlab.model.gpt import GPT

BLOCK = 32
SMALL_VOCAB = 256  # for tests of the sampling filters, which do not need GPT-2's vocabulary


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine their barriers dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_gpt(tiny_gpt):
    """conftest's tiny model at this file's shape: context BLOCK, GPT-2's vocabulary padded to
    50304 (so the gptlab special tokens exist above it), in eval mode."""
    return functools.partial(tiny_gpt, block_size=BLOCK, vocab_size=50304, eval_mode=True)


def prompts(batch: int = 2, length: int = 5, high: int = GPT2_VOCAB_SIZE, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, high, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rows", [1, 2, 16])
def test_step_head_logits_are_the_lm_heads_before_and_after_packing(rows: int) -> None:
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(1000, 64, generator=generator)
    head = StepHead(weight)
    for step in range(PACK_AFTER_STEPS + 2):
        hidden = torch.randn(rows, 64, generator=generator)
        logits = head(hidden)
        assert logits.shape == (rows, 1000)
        torch.testing.assert_close(logits, torch.nn.functional.linear(hidden, weight), atol=1e-5, rtol=0)
        assert head.packed == (torch.backends.mkldnn.is_available() and step >= PACK_AFTER_STEPS)


def test_a_bf16_step_head_never_packs() -> None:
    weight = torch.randn(1000, 64).bfloat16()
    head = StepHead(weight)
    for _ in range(PACK_AFTER_STEPS + 2):
        hidden = torch.randn(3, 64).bfloat16()
        torch.testing.assert_close(head(hidden), torch.nn.functional.linear(hidden, weight))
    assert not head.packed


CONFIGS = {
    "gpt2": {},
    "gpt1-post-norm": {"norm": "post"},
    "gpt3-banded": {"attention": "alternating", "local_window": 4},
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_incremental_logits_match_full_forward(overrides: dict, tiny_gpt) -> None:
    model = tiny_gpt(**overrides)
    seq = prompts(length=BLOCK)
    cache = model.new_cache()
    with torch.inference_mode():
        step_logits = [model(seq[:, :6], cache=cache)[:, -1]]  # prefill, then one token a step
        step_logits += [model(seq[:, t : t + 1], cache=cache)[:, -1] for t in range(6, BLOCK)]
        full = model(seq)
    for t, logits in enumerate(step_logits, start=5):
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("prompt_len", [5, BLOCK + 8], ids=["short-prompt", "prompt-past-block"])
def test_greedy_is_identical_with_and_without_cache_past_block_size(
    overrides: dict, prompt_len: int, tiny_gpt
) -> None:
    # 2 * BLOCK new tokens: the window slides for the last ~BLOCK steps, where the cached path
    # re-prefills; both paths then read exactly the last BLOCK tokens (the documented policy).
    model = tiny_gpt(**overrides)
    idx = prompts(length=prompt_len)
    cached = generate(model, idx, 2 * BLOCK, temperature=0)
    uncached = generate(model, idx, 2 * BLOCK, temperature=0, use_cache=False)
    assert cached.shape == (2, prompt_len + 2 * BLOCK)
    assert torch.equal(cached[:, :prompt_len], idx)
    assert torch.equal(cached, uncached)


def test_uncached_path_crops_like_nanogpt(tiny_gpt) -> None:
    model = tiny_gpt()
    idx = prompts(length=BLOCK + 3)
    out = generate(model, idx, 1, temperature=0, use_cache=False)
    with torch.inference_mode():
        expected = model(idx[:, -BLOCK:])[:, -1, :GPT2_VOCAB_SIZE].argmax(-1)
    assert torch.equal(out[:, -1], expected)


def test_eval_mode_during_generation_and_mode_restored(tiny_gpt) -> None:
    model = tiny_gpt(dropout=0.5).train()
    idx = prompts()
    # Active dropout would make the two greedy runs disagree.
    assert torch.equal(
        generate(model, idx, 10, temperature=0), generate(model, idx, 10, temperature=0)
    )
    assert model.training
    model.eval()
    generate(model, idx, 2)
    assert not model.training


def test_sampling_is_reproducible_with_a_seed(tiny_gpt) -> None:
    model = tiny_gpt(vocab_size=SMALL_VOCAB)
    idx = prompts(high=SMALL_VOCAB)

    def run(seed: int, **kwargs) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(model, idx, 20, temperature=1.0, generator=gen, vocab_limit=None, **kwargs)

    assert torch.equal(run(7), run(7))
    assert torch.equal(run(7, top_k=50, top_p=0.9), run(7, top_k=50, top_p=0.9))
    assert not torch.equal(run(7), run(8))


def test_top_k_one_and_tiny_top_p_are_greedy(tiny_gpt) -> None:
    model = tiny_gpt(vocab_size=SMALL_VOCAB)
    idx = prompts(high=SMALL_VOCAB)
    kwargs = dict(vocab_limit=None, generator=torch.Generator().manual_seed(0))
    greedy = generate(model, idx, 12, temperature=0, vocab_limit=None)
    assert torch.equal(generate(model, idx, 12, temperature=1.0, top_k=1, **kwargs), greedy)
    assert torch.equal(generate(model, idx, 12, temperature=1.0, top_p=1e-9, **kwargs), greedy)


def test_generated_ids_stay_below_vocab_limit(tiny_gpt) -> None:
    model = tiny_gpt(vocab_size=16)
    idx = prompts(batch=4, high=8)
    gen = torch.Generator().manual_seed(0)
    # A hot temperature makes the 16 ids near-uniform, so without the limit half would be >= 8.
    unlimited = generate(model, idx, 100, temperature=5.0, generator=gen, vocab_limit=None)
    assert (unlimited >= 8).any()
    limited = generate(model, idx, 100, temperature=5.0, generator=gen, vocab_limit=8)
    assert limited.max() < 8


def test_default_vocab_limit_excludes_gptlab_special_tokens(tiny_gpt) -> None:
    model = tiny_gpt()
    with torch.no_grad():  # make the special-token rows the most likely continuation
        model.wte.weight[GPT2_VOCAB_SIZE:] = model.wte.weight[:GPT2_VOCAB_SIZE].sum(0) * 10
    idx = prompts()
    assert (generate(model, idx, 5, temperature=0, vocab_limit=None)[:, 5:] >= GPT2_VOCAB_SIZE).any()
    assert generate(model, idx, 5, temperature=0).max() < GPT2_VOCAB_SIZE


def test_stop_token_ends_generation(tiny_gpt) -> None:
    model = tiny_gpt()
    idx = prompts(batch=1)
    free = generate(model, idx, 10, temperature=0)
    stop = int(free[0, 5 + 2])  # the third generated token
    first = int((free[0, 5:] == stop).nonzero()[0])
    out = generate(model, idx, 10, temperature=0, stop_token=stop)
    assert out.shape[1] == 5 + first + 1
    assert torch.equal(out, free[:, : out.shape[1]])


def test_finished_rows_keep_emitting_stop_token(tiny_gpt) -> None:
    model = tiny_gpt()
    idx = prompts(batch=2)
    free = generate(model, idx, 10, temperature=0)
    stop = int(free[0, 5 + 2])
    out = generate(model, idx, 10, temperature=0, stop_token=stop)
    for row in out[:, 5:]:
        hits = (row == stop).nonzero()
        if len(hits):
            assert (row[int(hits[0]) :] == stop).all()


def test_zero_new_tokens_returns_the_prompt(tiny_gpt) -> None:
    model = tiny_gpt()
    idx = prompts()
    assert torch.equal(generate(model, idx, 0), idx)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"vocab_limit": 0}, "vocab_limit"),
        ({"vocab_limit": 60000}, "vocab_limit"),
        ({"stop_token": GPT2_VOCAB_SIZE}, "stop_token"),
        ({"idx": torch.zeros(2, 0, dtype=torch.long)}, "idx"),
        ({"idx": torch.zeros(4, dtype=torch.long)}, "idx"),
        ({"idx": torch.zeros(1, 3)}, "idx"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, message: str, tiny_gpt) -> None:
    args = {"idx": prompts(), "max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(tiny_gpt(), **args)


def save_tiny_checkpoint(model: GPT, path: Path) -> GPT:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {"model." + k: v for k, v in model.state_dict().items()},
            "gptlab_model_config": model.config.to_dict(),
        },
        path,
    )
    return model


def test_sample_text_greedy_is_cache_independent_and_keeps_the_prompt(tiny_gpt) -> None:
    model = tiny_gpt()
    kwargs = dict(num_samples=2, max_new_tokens=8, temperature=0, top_k=None, top_p=None, seed=0)
    cached = sample_text(model, "Hello", **kwargs)
    assert cached == sample_text(model, "Hello", use_cache=False, **kwargs)
    assert len(cached) == 2 and all(text.startswith("Hello") for text in cached)
    assert not sample_text(model, "", **kwargs)[0].startswith("<|endoftext|>")


def test_cli_samples_from_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_gpt) -> None:
    save_tiny_checkpoint(tiny_gpt(), tmp_path / "run" / "checkpoints" / "last.ckpt")
    args = [str(tmp_path / "run"), "--prompt", "Hello", "--num-samples", "3", "--max-new-tokens", "6"]
    main([*args, "--device", "cpu"])
    first = capsys.readouterr().out
    assert first.count(RULE) == 2
    assert first.count("Hello") >= 3
    main([*args, "--device", "cpu", "--no-cache"])  # same seed, same text
    assert capsys.readouterr().out == first


def test_cli_samples_from_a_checkpoint_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_gpt) -> None:
    ckpt = tmp_path / "model.ckpt"
    save_tiny_checkpoint(tiny_gpt(), ckpt)
    main([str(ckpt), "--prompt", "", "--num-samples", "1", "--max-new-tokens", "4", "--top-k", "0"])
    out = capsys.readouterr().out
    assert RULE not in out and out.strip()


def test_cli_reports_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        main([str(missing)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(SystemExit):
        main([str(run_dir)])
    err = capsys.readouterr().err
    assert str(run_dir) in err and str(run_dir / "checkpoints" / "last.ckpt") in err


def test_cli_reports_bad_sampling_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_gpt) -> None:
    ckpt = tmp_path / "model.ckpt"
    save_tiny_checkpoint(tiny_gpt(), ckpt)
    with pytest.raises(SystemExit):
        main([str(ckpt), "--top-p", "0"])
    assert "top_p" in capsys.readouterr().err


def test_task_prompt_wraps_an_instruction_in_the_task_template() -> None:
    plain = task_prompt("alpaca", "Name three colours.")
    assert plain.endswith("### Instruction:\nName three colours.\n\n### Response:\n") and "### Input:" not in plain
    assert "### Input:\nred, green\n\n### Response:\n" in task_prompt("alpaca", "Sort these.", "red, green")
    with pytest.raises(ValueError, match=r"--task nope: no such task; valid tasks: .*alpaca"):
        task_prompt("nope", "x")


def test_cli_task_samples_print_the_answer_up_to_end_of_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_gpt
) -> None:
    model = tiny_gpt(vocab_size=50304, block_size=256)
    with torch.no_grad():  # every state becomes v, and <|endoftext|> the likeliest next token by far
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(torch.linspace(-1, 1, model.config.n_embd))
        model.wte.weight[EOT_ID] = 100 * model.ln_f.bias
    ckpt = tmp_path / "model.ckpt"
    save_tiny_checkpoint(model, ckpt)
    main([str(ckpt), "--task", "alpaca", "--instruction", "Say hi.", "--num-samples", "2", "--temperature", "0"])
    assert capsys.readouterr().out.split() == [RULE]  # two empty answers: each stopped at once
    main([str(ckpt), "--prompt", "Say hi.", "--num-samples", "1", "--max-new-tokens", "3", "--temperature", "0"])
    assert capsys.readouterr().out.strip() == "Say hi." + "<|endoftext|>" * 3  # no stop without --task
    with pytest.raises(SystemExit):
        main([str(ckpt), "--task", "alpaca"])
    assert "--task and --instruction go together" in capsys.readouterr().err
