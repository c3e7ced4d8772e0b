"""``gptlab-sample``: print text sampled from a gptlab checkpoint.

    gptlab-sample runs/demo --prompt "Once upon a time" --num-samples 2 --temperature 0.8
    gptlab-sample runs/sft --task alpaca --instruction "Name three primary colours."

With ``--task`` the prompt is the task's template (``conf/task/<name>.yaml``, the one its
fine-tuning used) filled with ``--instruction`` (the example's ``context``) and ``--input``, and
each sample stops at ``<|endoftext|>``, which a fine-tuned model learned to write after an answer;
only the answer is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from gptlab.data.tokenizer import EOT, EOT_ID, get_tokenizer
from gptlab.lit.checkpoint_io import CHECKPOINT_DIR
from gptlab.model.checkpoint import load_gpt_checkpoint
from gptlab.model.generate import generate
from gptlab.model.gpt import GPT

RULE = "-" * 80
LAST_CHECKPOINT = Path(CHECKPOINT_DIR) / "last.ckpt"


def encode_prompt(prompt: str) -> list[int]:
    """GPT-2 ids of ``prompt``; an empty prompt starts a fresh document (``<|endoftext|>``)."""
    if not prompt:
        return [EOT_ID]
    # "<|endoftext|>" written in a prompt means the document separator the model was trained
    # on; gptlab's fine-tuning tokens are not GPT-2 tokens, so their text stays plain text.
    return get_tokenizer().encode(prompt, allowed_special={EOT}, disallowed_special=())


def sample_text(
    model: GPT,
    prompt: str,
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int,
    use_cache: bool = True,
    stop_token: int | None = None,
) -> list[str]:
    """``num_samples`` continuations of ``prompt``, each returned as prompt + generated text.

    The samples are drawn as one batch on the model's device; ``seed`` makes them reproducible.
    With ``stop_token``, a sample ends once it wrote it (the token's text stays in the sample).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be >= 1")
    device = next(model.parameters()).device
    prompt_ids = torch.tensor(encode_prompt(prompt), dtype=torch.long, device=device)
    idx = prompt_ids.expand(num_samples, -1)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(
        model,
        idx,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        use_cache=use_cache,
        generator=generator,
        stop_token=stop_token,
    )
    tokenizer = get_tokenizer()
    # Decode only the new ids and prepend the prompt as typed, so an empty prompt does not
    # print its implicit <|endoftext|>.
    return [prompt + tokenizer.decode(row.tolist()) for row in out[:, prompt_ids.numel():]]


def task_prompt(task: str, instruction: str, input_text: str = "", prompt: str | None = None) -> str:
    """The context task ``task``'s template (``prompt``: a named one) writes for an instruction
    (the example's ``context`` field) and its optional input, as fine-tuning rendered it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    from gptlab.data.prompts import check_template, render
    from gptlab.resources import config_dir
    from gptlab.tasks.spec import TaskSpec

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            node = compose(config_name="train", overrides=[f"task={task}"]).task
        except MissingConfigException:
            names = sorted(p.stem for p in (config_dir() / "task").glob("*.yaml"))
            raise ValueError(f"--task {task}: no such task; valid tasks: {', '.join(names)}") from None
    spec = TaskSpec.from_config(node)
    template = spec.prompt_spec(prompt)
    example = {"context": instruction, "input": input_text}
    check_template(spec.name, template, example, "--instruction/--input")
    return render(template, example)


def resolve_checkpoint(path: Path) -> Path:
    """``path`` itself, or ``<path>/checkpoints/last.ckpt`` when ``path`` is a run directory."""
    if path.is_dir():
        last = path / LAST_CHECKPOINT
        if not last.is_file():
            raise FileNotFoundError(f"{path} is a directory without a checkpoint: {last} not found")
        return last
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (nor a run directory holding {path / LAST_CHECKPOINT})"
        )
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptlab-sample", description="Sample text from a gptlab checkpoint."
    )
    parser.add_argument(
        "checkpoint", type=Path, help=f"a gptlab .ckpt file, or a run directory (uses {LAST_CHECKPOINT})"
    )
    parser.add_argument(
        "--prompt",
        default="\n",
        help="text to continue (default: %(default)r); an empty string starts from <|endoftext|>",
    )
    parser.add_argument(
        "--task", default=None, help="a generation task (e.g. alpaca) whose template wraps --instruction; "
        "samples stop at <|endoftext|>",
    )
    parser.add_argument("--instruction", default=None, help="with --task: the instruction (or question)")
    parser.add_argument("--input", default="", help="with --task: the instruction's input, if any")
    parser.add_argument("--template", default=None, help="with --task: a named template of the task")
    parser.add_argument("--num-samples", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="default: %(default)s")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    parser.add_argument(
        "--top-k", type=int, default=200, help="keep the k likeliest ids; 0 disables it (default: %(default)s)"
    )
    parser.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus mass; 1.0 disables it (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=1337, help="default: %(default)s")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole context every step")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        model = load_gpt_checkpoint(resolve_checkpoint(args.checkpoint))
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    prompt = args.prompt
    if (args.task is None) != (args.instruction is None):
        parser.error("--task and --instruction go together")
    try:
        if args.task is not None:
            prompt = task_prompt(args.task, args.instruction, args.input, args.template)
        samples = sample_text(
            model.to(device),
            prompt,
            num_samples=args.num_samples,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k or None,
            top_p=args.top_p,
            seed=args.seed,
            use_cache=not args.no_cache,
            stop_token=EOT_ID if args.task is not None else None,
        )
    except ValueError as err:  # bad sampling arguments or task, reported like argparse's own errors
        parser.error(str(err))
    for i, text in enumerate(samples):
        if i:
            print(RULE)
        print(text[len(prompt):].split(EOT)[0].strip() if args.task is not None else text)


if __name__ == "__main__":
    main()
