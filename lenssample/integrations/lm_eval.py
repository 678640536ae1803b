"""An lm-evaluation-harness model that scores and generates through any lenssample strategy and lens.

    import lm_eval
    from lenssample.integrations.lm_eval import LensSampleLM
    lm = LensSampleLM(model, tokenizer, strategy=strategy_from_name("layer", layer=24))
    lm_eval.simple_evaluate(model=lm, tasks=["my_local_task"], task_manager=lm_eval.tasks.TaskManager(...))

The three request types map onto lenssample's evaluation functions:

- ``loglikelihood(context, continuation)``: the strategy's summed log-probability of the continuation's tokens and
  whether each was the strategy's top token. Tokenisation follows lm-eval's ``TemplateLM._encode_pair``: trailing
  spaces of the context move to the continuation, the pair is encoded whole and split after the context's tokens;
  an empty context gets the prefix token (BOS, else EOS).
- ``loglikelihood_rolling(text)``: the text's total log-likelihood over rolling windows of ``max_length`` tokens
  (:mod:`lenssample.eval.perplexity`); a token the strategy excludes (``-inf``) is charged ``floor_log_prob`` so the
  harness never receives ``-inf``.
- ``generate_until(context, {"until": [...], "max_gen_toks": n})``: greedy :func:`lenssample.generate`, cut at the
  first stop string.

Requires ``lm-eval`` (``make setup`` installs it); this module imports it at import time.
"""

from __future__ import annotations

from typing import Any

import torch
from lm_eval.api.model import LM
from tqdm.auto import tqdm

from lenssample.api import generate
from lenssample.eval.perplexity import DEFAULT_FLOOR_LOG_PROB, rolling_windows, window_records
from lenssample.lens.base import Lens
from lenssample.scoring import target_scores
from lenssample.strategies.base import Strategy, as_strategy
from lenssample.validation import check_int, check_tokenizer


class LensSampleLM(LM):
    """lm-eval ``LM`` backed by a lenssample strategy.

    Args:
        model: a supported Hugging Face causal LM.
        tokenizer: its tokenizer (``encode``/``decode``).
        strategy: any registered strategy (default :class:`~lenssample.FinalLayer`).
        lens: the lens the strategy reads through (default the logit lens).
        max_length: the longest input fed at once (rolling windows; longer contexts keep their last tokens).
        max_gen_toks: default generation length when a request does not give one.
        floor_log_prob: charge for excluded tokens in ``loglikelihood_rolling``.
        excluded_value: replaces ``-inf`` in ``loglikelihood`` sums (DoLa's ``-1000``); ``None`` keeps ``-inf``.
    """

    def __init__(self, model: Any, tokenizer: Any, *, strategy: Strategy | None = None,
                 lens: Lens | None = None, max_length: int = 2048, max_gen_toks: int = 256,
                 floor_log_prob: float = DEFAULT_FLOOR_LOG_PROB, excluded_value: float | None = -1000.0,
                 progress: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.max_length = check_int(max_length, field="max_length", low=2)
        check_tokenizer(model, tokenizer)
        self.model, self.tokenizer = model, tokenizer
        self.strategy = as_strategy(strategy)
        self.lens, self.max_gen_toks = lens, max_gen_toks
        self.floor_log_prob, self.excluded_value, self.progress = floor_log_prob, excluded_value, progress

    @property
    def prefix_token_id(self) -> int:
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self.tokenizer, name, None)
            if isinstance(value, int):
                return value
        raise ValueError(
            "the tokenizer has neither a BOS nor an EOS token id; an empty context cannot be scored"
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.prefix_token_id], self._encode(continuation)
        whole, head = self._encode(context + continuation), self._encode(context)
        return whole[: len(head)], whole[len(head) :]

    def _requests(self, requests: list[Any], desc: str, disable_tqdm: bool) -> Any:
        return tqdm(requests, desc=desc, disable=disable_tqdm or not self.progress)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        results = []
        for request in self._requests(requests, "loglikelihood", disable_tqdm):
            context, continuation = request.args
            context_ids, cont_ids = self._encode_pair(context, continuation)
            if not cont_ids:
                raise ValueError(f"continuation {continuation!r} has no tokens")
            full = (context_ids + cont_ids)[-(self.max_length + 1) :]
            inputs, targets = torch.tensor([full[:-1]]), torch.tensor([full[1:]])
            select = torch.zeros_like(inputs, dtype=torch.bool)
            select[0, -len(cont_ids) :] = True
            scores = target_scores(self.model, inputs, targets, select, self.strategy, lens=self.lens,
                                   excluded_value=self.excluded_value)  # fmt: skip
            total = float(scores.values[select].double().sum())
            results.append((total, bool(scores.greedy[select].all())))
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        results = []
        for request in self._requests(requests, "loglikelihood_rolling", disable_tqdm):
            (text,) = request.args
            tokens = self._encode(text)
            if not tokens:
                results.append(0.0)
                continue
            windows = rolling_windows(tokens, window=self.max_length, prefix_token_id=self.prefix_token_id)
            records = window_records(self.model, windows, self.strategy, lens=self.lens,
                                     floor_log_prob=self.floor_log_prob)  # fmt: skip
            results.append(-sum(r["nll"] for r in records))
        return results

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        results = []
        for request in self._requests(requests, "generate_until", disable_tqdm):
            context, gen_kwargs = request.args
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            ids = self._encode(context)[-self.max_length :] or [self.prefix_token_id]
            out = generate(
                self.model,
                torch.tensor([ids]),
                strategy=self.strategy,
                lens=self.lens,
                max_new_tokens=max_new,
            )
            text = self.tokenizer.decode(out.new_tokens[0].tolist(), skip_special_tokens=True)
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            results.append(text)
        return results
