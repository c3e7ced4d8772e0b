"""In-context evaluation batches of a generation task (kind ``generation``): GPT-2/GPT-3's LAMBADA,
TriviaQA and other tasks scored by what the model writes or by its target's likelihood.

Contexts, demonstrations and the few-shot sampler are the choice tasks' (``gptlab.data.incontext``,
``gptlab.data.prompts``); a demonstration shows its example's first target. Each example becomes
two requests, as lm-evaluation-harness builds them:

* a **prompt** to continue (``generate_until``): the context encoded whole and, when longer than
  ``block_size - generation.max_gen_toks`` tokens, cut on the left to that length;
* its first **target** as a continuation (``loglikelihood``): ``target_delimiter + target``,
  encoded as a choice answer is; a target longer than the window keeps its first
  ``block_size`` tokens after one context token (``gptlab.data.prompts.fit_window``), where
  lm-eval has no rule.

Which of them a run scores follows the task's metrics (``gptlab.tasks.metrics``: ``exact_match``
and ``f1`` generate, ``acc`` and ``perplexity`` score the target). A batch carries both, on top of
the choice contract (one answer per example):

=================  ============  ==============================================================
key                tensor        meaning
=================  ============  ==============================================================
``prompt_ids``     long (B, P)   each example's prompt, **left**-padded with ``FILL_ID``
``prompt_mask``    long (B, P)   1 on prompt tokens, 0 on padding
``targets``        list (B,)     each example's accepted answers (target, then aliases)
=================  ============  ==============================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader

from gptlab.data.incontext import InContextDataModule, collate, left_padded, scoring_batches
from gptlab.data.labeled import IndexedExamples
from gptlab.data.prompts import Request, encode_pairs, fit_window
from gptlab.data.tokenizer import EOT_ID, encode_texts
from gptlab.tasks.metrics import METRIC_FAMILIES, check_metric_names, generation_needs


@dataclass
class GenerationRequest:
    """One generation example, tokenized (see the module doc)."""

    index: int  # position in its split
    prompt: list[int]
    targets: list[str]
    target: Request  # targets[0] as the continuation of the context
    truncated: bool  # cut to fit: the prompt (generating), else the context or the target (fit_window)


def collate_generation(requests: Sequence[GenerationRequest]) -> dict[str, Any]:
    """Requests -> one batch (the module doc's keys on top of ``gptlab.data.incontext.collate``)."""
    batch = collate([r.target for r in requests])
    prompt_ids, prompt_mask = left_padded([r.prompt for r in requests])
    batch.update(prompt_ids=prompt_ids, prompt_mask=prompt_mask, targets=[r.targets for r in requests])
    return batch


class GenerativeDataModule(InContextDataModule):
    """Generation and target-scoring batches of a generation task, ``k`` demonstrations per example.

    Everything else (``spec``, ``prompt``, ``eval_splits``, ``truncated``, demonstrations) as
    ``InContextDataModule``; ``generates`` says whether the task's metrics need generations.
    """

    SCORER = "generate"

    def check_task(self) -> None:
        super().check_task()
        spec = self.spec
        check_metric_names(spec)
        if not spec.metrics:
            family = METRIC_FAMILIES[spec.task_kind.metrics]
            raise ValueError(
                f"task {spec.name!r}: metrics is empty; a generation task names some of {', '.join(family)}"
            )
        self.rules = spec.generation_spec
        self.generates = generation_needs(spec)[0]
        if (self.generates or self.rules.samples) and self.rules.max_gen_toks >= self.block_size:
            raise ValueError(
                f"task {spec.name!r}: task.generation.max_gen_toks={self.rules.max_gen_toks} leaves no room "
                f"for a prompt in block_size={self.block_size} (prompts keep block_size - max_gen_toks tokens)"
            )

    def encode(self, examples: list[dict[str, Any]], contexts: list[str]) -> list[GenerationRequest]:
        answers = [ex["targets"][0] for ex in examples]
        pairs = encode_pairs(contexts, [[self.prompt.target_delimiter + answer] for answer in answers])
        room = self.block_size - self.rules.max_gen_toks
        prompts = encode_texts(contexts)  # whole, as lm-eval's generate_until
        requests = []
        for i, (example, answer, prompt, (context, (target,))) in enumerate(zip(examples, answers, prompts, pairs)):
            # an empty context: the end-of-text token, as for scoring choices
            prompt, context = prompt or [EOT_ID], context or [EOT_ID]
            kept_context, kept_target = fit_window(context, target, self.block_size + 1)
            scored = Request(
                context=kept_context, continuations=[kept_target], choice_chars=[len(answer)], label=0,
                truncated=len(kept_context) < len(context) or len(kept_target) < len(target),
                index=i, answers=[answer],
            )
            truncated = len(prompt) > room if self.generates else scored.truncated
            requests.append(GenerationRequest(i, prompt[-room:], example["targets"], scored, truncated))
        return requests

    def val_dataloader(self) -> list[DataLoader]:
        rank, world_size = self.rank_world()
        loaders = []
        for split in self.eval_splits:
            data = self.requests(split)
            batches = scoring_batches([r.target for r in data], self.batch_size, self.block_size, rank, world_size)
            loaders.append(
                DataLoader(
                    IndexedExamples(data),
                    sampler=batches,
                    batch_size=None,
                    collate_fn=collate_generation,
                    num_workers=self.num_workers,
                    persistent_workers=self.num_workers > 0,
                )
            )
        return loaders
