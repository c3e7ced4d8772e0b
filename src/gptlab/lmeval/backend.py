"""``GptlabLM``: gptlab's scorers behind lm-evaluation-harness's ``LM`` interface (``--model gptlab``).

* ``loglikelihood``: the requests that share a context (the answers of one question) are scored as
  one prefix-shared example (``gptlab.lit.incontext.continuation_scores``): the context runs through
  the model once, every answer continues from its KV cache. Tokens are split as lm-eval's
  ``_encode_pair`` splits them, and the window is lm-eval's (the last ``max_length + 1`` tokens of
  context + answer): a question whose answers would not all fit uncut is scored answer by answer,
  each with the context lm-eval would give it.
* ``loglikelihood_rolling``: lm-eval's rolling windows (``gptlab.data.rolling``), batched.
* ``generate_until``: batched greedy decoding from the KV cache (``gptlab.model.greedy``), the
  context cut to ``max_length - max_gen_toks`` tokens on the left, the text cut at the first stop
  string, as lm-eval's ``hf`` backend does. Only greedy decoding (``do_sample: false``) is supported.

The model is read with its shape from its source (``gptlab.model.build.load_pretrained``): a gptlab checkpoint of
any size and architecture (GPT-1's post-LN, GPT-3's alternating attention), a Hugging Face GPT-2
directory or a Hub id.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import lm_eval.models  # noqa: F401  (registers lm-eval's own backends: see below)
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from gptlab.data.incontext import collate, left_padded, scoring_batches
from gptlab.data.prompts import Request, encode_pairs
from gptlab.data.rolling import collate_windows, rolling_windows
from gptlab.data.tokenizer import EOT_ID, encode_texts, get_tokenizer
from gptlab.heap import frozen_heap
from gptlab.lit.incontext import continuation_scores
from gptlab.lit.rolling import window_loglikelihoods
from gptlab.model.build import load_pretrained
from gptlab.model.greedy import greedy_until
from gptlab.model.logit_buffer import LogitBuffer
from gptlab.tasks.answers import answer_end, cut_answer
from gptlab.tasks.spec import GenerationSpec

log = logging.getLogger(__name__)
# lm-eval's default max_gen_toks for generate_until requests that do not set it
DEFAULT_MAX_GEN_TOKS = 256


def _positive_int(name: str, value: Any) -> int:
    """``value`` (lm-eval passes command-line values as strings) as a positive int, else an error naming ``name``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(value).strip() != str(number):
        raise ValueError(f"{name}={value!r}: expected a positive integer (the gptlab backend has no 'auto')")
    return number


# lm-eval lists its own backends (hf, vllm, ...) only when a model is looked up in an empty registry:
# registered first, gptlab would leave `--model hf` unknown. lm_eval.models registers them lazily
# (names only), before gptlab.
@register_model("gptlab")
class GptlabLM(LM):
    """lm-eval's ``LM`` backed by gptlab (see the module doc). ``pretrained``: a gptlab checkpoint,
    an HF GPT-2 directory or a Hub id; ``batch_size``: examples (questions, documents, prompts)
    per forward; ``max_length``: the window (default the model's context); ``device``: where to run."""

    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = 16,
        max_length: int | str | None = None,
        device: str | None = None,
        max_batch_size: int | str | None = None,  # lm-eval's CLI always passes it; only for batch_size=auto
    ) -> None:
        super().__init__()
        self.batch_size = _positive_int("batch_size", batch_size)
        self.model = load_pretrained(str(pretrained)).eval()
        context = self.model.config.block_size
        self.max_length = context if max_length is None else _positive_int("max_length", max_length)
        if self.max_length > context:
            raise ValueError(f"max_length={self.max_length}: the model's context is {context} tokens")
        self._device = torch.device(device or "cpu")
        if self._device.type == "cuda" and not torch.cuda.is_available():
            # lm-eval's CLI passes --device cuda unless told otherwise, as its hf backend falls back
            log.warning("device=%s: no CUDA device here, running on the CPU", device)
            self._device = torch.device("cpu")
        self.model.to(self._device)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return "gpt2"

    def _run(self, batch: dict[str, Any]) -> dict[str, Any]:
        return move_data_to_device(batch, self._device)

    # ------------------------------------------------------------------ loglikelihood

    @frozen_heap()
    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [request.args for request in requests]
        by_context: dict[str, list[int]] = defaultdict(list)
        for i, (context, _) in enumerate(pairs):
            by_context[context].append(i)
        contexts = list(by_context)
        encoded = encode_pairs(contexts, [[pairs[i][1] for i in by_context[c]] for c in contexts])
        grouped: list[Request] = []
        owners: list[list[int]] = []  # the request index of each continuation of each grouped request
        for context, (head, tails) in zip(contexts, encoded):
            ids = head or [EOT_ID]  # lm-eval's empty context: its end-of-text token
            members = by_context[context]
            if len(ids) + max(map(len, tails)) <= self.max_length + 1:
                grouped.append(Request(ids, list(tails), [1] * len(tails), 0, False))
                owners.append(members)
                continue
            for i, tail in zip(members, tails):  # lm-eval's window per answer: its own cut context
                room = self.max_length + 1 - len(tail)
                if room < 1:
                    raise ValueError(f"a continuation of {len(tail)} tokens does not fit max_length={self.max_length}")
                grouped.append(Request(ids[-room:], [tail], [1], 0, True))
                owners.append([i])
        results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        logits = LogitBuffer()  # one for the call, freed with it
        with torch.no_grad():
            for batch in scoring_batches(grouped, self.batch_size, self.max_length):
                loglik, greedy = continuation_scores(
                    self.model, self._run(collate([grouped[j] for j in batch])), greedy=True, logits=logits
                )
                order = [i for j in batch for i in owners[j]]
                for i, ll, is_greedy in zip(order, loglik.tolist(), greedy.tolist()):
                    results[i] = (ll, bool(is_greedy))
        for request, answer in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", request.args, answer)
        return results

    # ------------------------------------------------------------------ rolling

    @frozen_heap()
    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        texts = [request.args[0] for request in requests]
        tokens = encode_texts(texts)
        windows = [w for i, (text, ids) in enumerate(zip(texts, tokens)) for w in rolling_windows(i, text, ids, self.max_length)]
        totals = torch.zeros(len(texts), dtype=torch.float64)
        logits = LogitBuffer()
        with torch.no_grad():
            for start in range(0, len(windows), self.batch_size):
                batch = self._run(collate_windows(windows[start : start + self.batch_size]))
                totals.index_add_(0, batch["index"].cpu(), window_loglikelihoods(self.model, batch, logits).cpu())
        results = totals.tolist()
        for request, answer in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, answer)
        return results

    # ------------------------------------------------------------------ generation

    @frozen_heap()
    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        results: list[str] = [""] * len(requests)
        by_settings: dict[tuple[tuple[str, ...], int], list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            rules = self._rules(request.args[1])
            by_settings[rules.until, rules.max_gen_toks].append(i)
        decode = get_tokenizer().decode
        for (until, max_gen_toks), members in by_settings.items():
            rules = GenerationSpec(until=until, max_gen_toks=max_gen_toks)
            room = self.max_length - rules.max_gen_toks
            if room < 1:
                raise ValueError(f"max_gen_toks={rules.max_gen_toks} leaves no room for a prompt in max_length={self.max_length}")
            prompts = [ids[-room:] or [EOT_ID] for ids in encode_texts([requests[i].args[0] for i in members])]
            order = sorted(range(len(members)), key=lambda j: -len(prompts[j]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                ids, mask = left_padded([prompts[j] for j in chunk])
                rows = greedy_until(self.model, ids.to(self._device), mask.to(self._device), rules.max_gen_toks,
                                    lambda text: answer_end(text, rules))
                for j, row in zip(chunk, rows):
                    results[members[j]] = cut_answer(decode(row), rules)
        for request, answer in zip(requests, results):
            self.cache_hook.add_partial("generate_until", request.args, answer)
        return results

    @staticmethod
    def _rules(kwargs: dict[str, Any]) -> GenerationSpec:
        """The decoding settings of one request's ``gen_kwargs`` (greedy only)."""
        kwargs = dict(kwargs)
        if kwargs.pop("do_sample", False) or float(kwargs.pop("temperature", 0.0) or 0.0) > 0:
            raise ValueError("generate_until: the gptlab backend decodes greedily (do_sample: false, temperature: 0)")
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen_toks = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        if unknown := sorted(set(kwargs) - {"top_p", "top_k"}):
            raise ValueError(f"generate_until: unsupported generation argument(s) {unknown}")
        return GenerationSpec(until=tuple(until), max_gen_toks=max_gen_toks)
