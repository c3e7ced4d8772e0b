"""gptlab's generative and perplexity scoring against lm-evaluation-harness itself (``hf`` backend).

One small random GPT-2 (gpt-nano's shape, seeded, larger init so greedy choices are not near ties)
is exported as a Hugging Face directory; lm-eval (local task YAMLs over the same files,
``bench/lmeval_peer.py``) and gptlab (``init_from`` that directory) evaluate it on the first lines
of the shared LAMBADA, TriviaQA and WikiText-2 files. LAMBADA runs in ``make test``; the others
are marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from gptlab.cli.train import train
from gptlab.data.tokenizer import GPT2_VOCAB_SIZE, get_tokenizer
from gptlab.model.gpt import GPT
from gptlab.report.predictions import read_predictions
from gptlab.tasks.spec import GenerationSpec, TaskSpec
from test_train import make_cfg

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _peer():
    name = "bench_lmeval_peer"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / "lmeval_peer.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


SOURCES = {
    "lambada": "lambada/test.jsonl",
    "triviaqa": "triviaqa/validation_subset.jsonl",
    "wikitext2": "wikitext2/test.nonempty-crlf.raw",
}
LINES = {"lambada": 60, "triviaqa": 24, "wikitext2": 40}


@pytest.fixture(scope="module")
def setup_dirs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """The first lines of each shared file, the exported model and lm-eval's task YAMLs."""
    root = tmp_path_factory.mktemp("lmeval")
    files = {}
    for name, relative in SOURCES.items():
        source = shared_data / relative
        files[name] = root / "data" / name / Path(relative).name
        files[name].parent.mkdir(parents=True)
        with open(source, "rb") as f:
            files[name].write_bytes(b"".join(f.readline() for _ in range(LINES[name])))
    model = reference_model()
    files["lambada"].write_text(with_greedy_targets(model, files["lambada"].read_text()))
    return {
        "root": root,
        "model": _peer().export_model(model, root / "hf"),
        **{f"data_{name}": path for name, path in files.items()},
    }


def frequent_tokens(model_dir: Path, questions: Path) -> list[str]:
    """The two token strings the reference model (transformers' own greedy ``generate``) writes
    most often after its first two tokens: extra stop strings that do occur, so that generations
    stop at different places (a random model rarely writes a newline, period or comma)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    hf, tokenizer = GPT2LMHeadModel.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    counts: dict[str, int] = {}
    for line in questions.read_text().splitlines():
        ids = tokenizer(json.loads(line)["context"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = hf.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        for token in out[0, ids.size(1) + 2:].tolist():
            text = tokenizer.decode([token])
            if text.strip() and "\ufffd" not in text:
                counts[text] = counts.get(text, 0) + 1
    return sorted(counts, key=lambda t: -counts[t])[:2]


def reference_model() -> GPT:
    torch.manual_seed(0)
    model = GPT.from_name("gpt-nano").eval()
    with torch.no_grad():  # wide logits (no near ties), varied by position (no one-token loops)
        model.wte.weight.mul_(3)
        model.wpe.weight.mul_(10)
    return model


def with_greedy_targets(model: GPT, lines: str) -> str:
    """LAMBADA lines, every other one ending in the model's greedy next word instead of its own
    (where that is one token: a space and a word), so that ``acc`` sees both outcomes."""
    encoding = get_tokenizer()
    out = []
    for i, line in enumerate(lines.splitlines()):
        text = json.loads(line)["text"]
        context = " ".join(text.split(" ")[:-1])
        if i % 2 == 0:
            ids = torch.tensor([encoding.encode_ordinary(context)[-model.config.block_size:]])
            with torch.no_grad():
                word = encoding.decode([int(model.logits(model.hidden_states(ids))[0, -1, :GPT2_VOCAB_SIZE].argmax())])
            if word.startswith(" ") and word[1:].isalpha():
                text = context + word
        out.append(json.dumps({"text": text}) + "\n")
    return "".join(out)


def _composed_task(root: Path, task: str):
    return make_cfg(root / "compose", f"task={task}").task


def gptlab_run(
    dirs: dict[str, Path], tmp_path: Path, task: str, *overrides: str, generation: dict | None = None
) -> tuple[dict[str, float], list[dict]]:
    data = dirs[f"data_{task}"]
    cfg = make_cfg(
        tmp_path, "regime=zero_shot", f"task={task}", "model=gpt-nano", f"model.init_from={dirs['model']}",
        f"task.data_dir={data.parent}", "regime.batch_size=8", "regime.global_batch_size=8", *overrides,
    )
    if generation is not None:
        cfg.task.generation = generation
    metrics = train(cfg)
    return metrics, read_predictions(tmp_path / "run")


def lmeval_run(dirs: dict[str, Path], task: str, triviaqa: dict | None = None) -> tuple[dict[str, float], list[dict]]:
    """lm-eval on ``task``'s file; ``triviaqa``: the generation settings of the TriviaQA task."""
    generation = GenerationSpec.from_mapping("triviaqa", triviaqa)
    tasks = _peer().write_tasks(dirs["root"] / "tasks" / task, {task: dirs[f"data_{task}"]}, generation)
    out = _peer().run_lmeval(dirs["model"], tasks, [task], batch_size=4)
    name = f"gptlab_{task}"
    results = {key.split(",")[0]: value for key, value in out["results"][name].items() if "," in key}
    return results, sorted(out["samples"][name], key=lambda s: s["doc_id"])


def test_lambada_acc_and_perplexity_equal_lm_eval(setup_dirs: dict[str, Path], tmp_path: Path) -> None:
    ours, predictions = gptlab_run(setup_dirs, tmp_path, "lambada", f"task.files.test={setup_dirs['data_lambada'].name}")
    theirs, samples = lmeval_run(setup_dirs, "lambada")
    assert len(predictions) == len(samples) == LINES["lambada"]
    assert 0 < sum(p["correct"] for p in predictions) < len(predictions), "the check needs both outcomes"
    for prediction, sample in zip(predictions, samples):
        loglik, is_greedy = sample["resps"][0][0]
        assert prediction["target_loglikelihood"] == pytest.approx(float(loglik), rel=1e-5, abs=1e-5)
        assert prediction["acc"] == float(is_greedy)
    assert ours["val/acc"] == theirs["acc"]
    assert ours["val/perplexity"] == pytest.approx(theirs["perplexity"], rel=1e-6)


@pytest.mark.slow
def test_triviaqa_generations_equal_lm_eval(setup_dirs: dict[str, Path], tmp_path: Path) -> None:
    task = TaskSpec.from_config(_composed_task(setup_dirs["root"], "triviaqa"))  # lm-eval's matching rules
    until = [*task.generation_spec.until, *frequent_tokens(setup_dirs["model"], setup_dirs["data_triviaqa"])]
    generation = {**task.generation, "until": until, "max_gen_toks": 24}
    ours, predictions = gptlab_run(
        setup_dirs, tmp_path, "triviaqa", f"task.files.validation={setup_dirs['data_triviaqa'].name}",
        "task.carve=null", "task.eval_splits=[validation]",  # lm-eval's triviaqa: the whole file
        generation=generation,
    )
    theirs, samples = lmeval_run(setup_dirs, "triviaqa", generation)
    assert len(predictions) == len(samples) == LINES["triviaqa"]
    assert [p["generation"] for p in predictions] == [s["resps"][0][0] for s in samples]
    lengths = {len(p["generation"]) for p in predictions}
    assert len(lengths) > 3, f"generations should stop at different places, got lengths {lengths}"
    assert [p["generation"].strip() for p in predictions] == [s["filtered_resps"][0] for s in samples]
    assert ours["val/exact_match"] == theirs["exact_match"]


@pytest.mark.slow
def test_wikitext_rolling_perplexity_equals_lm_eval(setup_dirs: dict[str, Path], tmp_path: Path) -> None:
    name = setup_dirs["data_wikitext2"].name
    ours, _ = gptlab_run(setup_dirs, tmp_path, "wikitext2", f"task.files.train={name}", f"task.files.validation={name}")
    theirs, _ = lmeval_run(setup_dirs, "wikitext2")
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours[f"val/{metric}"] == pytest.approx(theirs[metric], rel=1e-6), metric
    assert math.isfinite(ours["val/ppl"])
