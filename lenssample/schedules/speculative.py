"""Lossless self-speculative decoding: draft with part of the model, verify with all of it.

A cycle: the draft (:mod:`~lenssample.schedules.drafts`) proposes ``k`` tokens after the last emitted one; one verify
pass gives the full model's distribution at each drafted position; the acceptance rule keeps a prefix of the draft
and adds the full model's own token where it first disagrees.

With sampling, :func:`~lenssample.schedules.rejection.rejection_sample` keeps each token distributed exactly as the
full model's (processed) distribution.

Cache surgery uses the model's own ``DynamicCache`` (per-layer ``crop``) and block stubs swapped into the block
list inside a context manager that restores the model in ``finally`` (:mod:`lenssample.model.surgery`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from lenssample.decoding.outputs import Trace
from lenssample.model.surgery import crop_to
from lenssample.schedules.base import Row, RowRun, Schedule, register_schedule
from lenssample.schedules.drafts import DRAFTS, Draft, LayerDraft, Proposal, SkipDraft
from lenssample.schedules.rejection import Verdict, rejection_sample, verify_greedy
from lenssample.strategies.base import FinalLayer, Strategy
from lenssample.validation import check_bool, check_int, check_number


def predicted_speedup(draft: Draft, acceptance: float, k: int, num_layers: int, lens_cost: float) -> float:
    """Tokens per block-equivalent of a cycle, relative to plain decoding (``L + lens_cost`` per token).

    Decoding is memory bound, so a pass over ``k`` positions costs about as much as a pass over one; a lens
    projection costs ``lens_cost`` block-equivalents. Drafting pays only when this exceeds 1.
    """
    draft_blocks, verify_blocks = draft.costs(num_layers)
    cycle = k * (draft_blocks + lens_cost) + verify_blocks + lens_cost
    # Expected tokens per cycle when each draft token is accepted with probability `acceptance`.
    tokens = sum(acceptance**i for i in range(k + 1 if draft.bonus else k))
    return tokens * (num_layers + lens_cost) / cycle


def best_k(
    draft: Draft, acceptance: float, max_k: int, num_layers: int, lens_cost: float
) -> tuple[int, float]:
    """The ``k`` in ``1..max_k`` with the largest :func:`predicted_speedup` (the first on ties), and that speed-up."""
    speed = {k: predicted_speedup(draft, acceptance, k, num_layers, lens_cost) for k in range(1, max_k + 1)}
    k = max(speed, key=speed.get)
    return k, speed[k]


@dataclass
class SpeculativeTrace(Trace):
    """:class:`Trace` plus speculative counts (``info``: ``drafted``, ``accepted``, ``emitted`` per cycle, ``-1``
    after a row's last cycle).

    Counts over all rows: draft tokens ``drafted`` and ``accepted``; ``accept_histogram[n]`` cycles that accepted
    ``n`` draft tokens (plain steps excluded); ``plain_steps`` decoded without drafting (when drafting cannot pay).
    """

    drafted: int = 0
    accepted: int = 0
    accept_histogram: list[int] = field(default_factory=list)
    plain_steps: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def to_dict(self) -> dict:
        extra = ("drafted", "accepted", "acceptance_rate", "accept_histogram", "plain_steps")
        return {**super().to_dict(), **{key: getattr(self, key) for key in extra}}


@register_schedule
@dataclass(frozen=True, kw_only=True)
class SelfSpeculative(Schedule):
    """Self-speculative decoding (lossless): greedy output equals greedy full-model decoding token for token.

    Args:
        draft: :class:`~lenssample.schedules.drafts.LayerDraft` or :class:`~lenssample.schedules.drafts.SkipDraft`;
            in a spec ``draft=layer,layer=20`` (or ``draft_layer=20``) and ``draft=skip,skip=15,25`` (or ``skip=``).
        k: draft tokens per cycle (the start value when ``adaptive``).
        adaptive: re-pick ``k`` in ``1..max_k`` before every cycle from a running estimate of the acceptance rate
            (the ``k`` maximising :func:`predicted_speedup`), and decode plainly when no ``k`` is predicted to pay,
            probing with one short cycle every ``probe_every`` plain steps.
        max_k: upper bound for adaptive ``k``.
        prior_acceptance: acceptance estimate before anything is observed (weight of 4 draft tokens).
        lens_cost: cost of one lens projection in blocks, for the cost model (default measured on the default model
            on CPU: a 49152 x 576 projection takes about two blocks' time).
        probe_every: plain steps between probes when drafting does not pay.
    """

    name: ClassVar[str] = "speculative"
    nested: ClassVar[dict] = {"draft": DRAFTS}
    example: ClassVar[str] = "speculative:draft_layer=20,k=4  or  speculative:skip=10,12,14"
    trace_class: ClassVar[type[Trace]] = SpeculativeTrace
    draft: Draft
    k: int = 4
    adaptive: bool = False
    max_k: int = 8
    prior_acceptance: float = 0.5
    lens_cost: float = 2.0
    probe_every: int = 16

    @classmethod
    def from_params(cls, **params: Any) -> SelfSpeculative:
        # Shorter spellings of the draft: draft_layer=E, or skip=... without draft=.
        if "draft_layer" in params:
            params["draft"] = LayerDraft(layer=params.pop("draft_layer"))
        elif "skip" in params and "draft" not in params:
            params["draft"] = "skip"
        return super().from_params(**params)  # type: ignore[return-value]

    def __post_init__(self) -> None:
        if not isinstance(self.draft, Draft):
            raise TypeError(
                f"draft must be LayerDraft(layer=...) or SkipDraft(skip=(...)), got {type(self.draft).__name__}"
            )
        for name in ("k", "max_k", "probe_every"):
            check_int(getattr(self, name), field=name, owner=self.name, low=1)
        check_bool(self.adaptive, field="adaptive", owner=self.name)
        check_number(self.prior_acceptance, field="prior_acceptance", owner=self.name, low=0.0, high=1.0)
        check_number(self.lens_cost, field="lens_cost", owner=self.name, low=0.0,
                     fix="It is the cost of a lens projection in blocks.")  # fmt: skip

    def check_model(self, num_layers: int) -> None:
        self.draft.check(num_layers)

    def teacher_forced(self) -> Strategy:
        return FinalLayer()  # lossless: every token follows the full model's distribution

    def decode_row(self, row: Row, state: Any) -> RowRun:
        return _RowDecoder(self, row).run()

    def trace_fields(self, runs: list[RowRun]) -> dict[str, Any]:
        cycles = [(d, a) for r in runs for d, a in zip(r.info["drafted"], r.info["accepted"]) if d > 0]
        histogram = [0] * (max(self.max_k, self.k) + 1)
        for _, accepted in cycles:
            histogram[int(accepted)] += 1
        drafted, accepted = int(sum(d for d, _ in cycles)), int(sum(a for _, a in cycles))
        plain = sum(1 for r in runs for d in r.info["drafted"] if d == 0)
        return dict(drafted=drafted, accepted=accepted, accept_histogram=histogram, plain_steps=plain)


class _RowDecoder:
    """Decodes one row (batch 1) for :class:`SelfSpeculative`."""

    PRIOR_WEIGHT = 4.0

    def __init__(self, spec: SelfSpeculative, row: Row) -> None:
        self.spec, self.row, self.emitter = spec, row, row.emitter
        self.num_layers = row.parts.num_layers
        self.info: dict[str, list[float]] = {"drafted": [], "accepted": [], "emitted": []}
        self.blocks, self.plain_run = 0.0, 0
        self.seen_accepted, self.seen_trials = spec.prior_acceptance * self.PRIOR_WEIGHT, self.PRIOR_WEIGHT

    def _choose_k(self) -> int:
        spec = self.spec
        if not spec.adaptive:
            return spec.k
        acceptance = self.seen_accepted / self.seen_trials
        best, speed = best_k(spec.draft, acceptance, spec.max_k, self.num_layers, spec.lens_cost)
        if speed > 1.0:
            self.plain_run = 0
            return best
        self.plain_run += 1
        return 1 if self.plain_run % spec.probe_every == 0 else 0

    def _record(self, drafted: int, accepted: int, emitted: int) -> None:
        for key, value in zip(self.info, (drafted, accepted, emitted)):
            self.info[key].append(value)
        if drafted:
            self.seen_accepted += accepted
            # A rejection is one more trial; accepting all k leaves the next token's fate unobserved.
            self.seen_trials += accepted + (1 if accepted < drafted else 0)

    def _plain_step(self, ids: list[int], length: int, cache: Any) -> tuple[int, Any]:
        """One full-depth step over ``ids`` at position ``length``; emits and returns the picked token."""
        out = self.row.run(ids, length, self.num_layers, cache)
        self.blocks += self.num_layers
        logits = self.row.logits(out.hidden[:, -1, 0], self.num_layers)
        token = self.row.picker.pick(self.row.picker.process(self.emitter.sequences, logits))
        self._record(0, 0, 1)
        self.emitter.emit(token)
        return int(token[0]), out.cache

    def _verdict(self, proposal: Proposal, target_logits: torch.Tensor) -> Verdict:
        """Process the target logits ``[fed, vocab]`` with each position's prefix, then verify."""
        picker, drafts = self.row.picker, proposal.tokens
        target = torch.cat([
            picker.process(self.emitter.with_tokens(drafts[:i]), target_logits[i : i + 1])
            for i in range(target_logits.shape[0])
        ])  # fmt: skip
        tokens = torch.tensor(drafts, dtype=torch.long, device=target.device)
        if not picker.do_sample:
            return verify_greedy(tokens, target)
        target_probs = torch.softmax(target.float(), dim=-1)
        return rejection_sample(tokens, proposal.probs, target_probs, generator=picker.generator)

    def run(self) -> RowRun:
        prompt = self.emitter.sequences[0].tolist()
        last, cache = self._plain_step(prompt, 0, None)
        length = len(prompt)  # positions held by every cache layer; `last` is emitted, not yet in the cache
        draft = self.spec.draft
        draft_blocks, verify_blocks = draft.costs(self.num_layers)
        while not self.emitter.done:
            k = min(self._choose_k(), self.emitter.remaining)
            if k == 0:
                last, cache = self._plain_step([last], length, cache)
                length += 1
                continue
            proposal = draft.propose(self.row, k, cache, length, last)
            target = draft.verify(self.row, proposal, cache, length, last)  # [fed, vocab]
            self.blocks += k * draft_blocks + verify_blocks
            verdict = self._verdict(proposal, target)
            new = proposal.tokens[: verdict.accepted]
            new += [verdict.next_token] if verdict.next_token is not None else []
            self._record(k, verdict.accepted, self.emitter.emit_many(new))
            length += min(verdict.accepted + 1, target.shape[0])  # positions now valid in every layer
            crop_to(cache, length)
            last = new[-1]
        return RowRun(info=self.info, blocks=self.blocks)


__all__ = ["LayerDraft", "SelfSpeculative", "SkipDraft", "SpeculativeTrace", "predicted_speedup"]
