"""Lossless self-speculative decoding: draft with part of the model, verify with all of it.

Two kinds of draft, both from the model itself (no second model):

- :class:`LayerDraft` (LayerSkip, Elhoushi et al. 2024, arXiv 2404.16710): the first ``E`` blocks and a lens at layer
  ``E`` (logit lens, or a tuned lens when one is passed) draft ``k`` tokens one at a time. The verify pass runs only
  blocks ``E..L-1`` over the ``k`` drafted positions, starting from the draft's own layer-``E`` hidden states; the
  keys and values the draft wrote for blocks ``0..E-1`` are kept (the shared cache), so no block runs twice for a
  position. Cost of a cycle: ``k*E + (L - E)`` blocks. The verify pass yields the full model's prediction at each
  of the ``k`` positions, so a cycle emits ``min(accepted + 1, k)`` tokens: there is no bonus token when all ``k``
  are accepted, because the last draft token never went through the model (LayerSkip departs here too; getting a
  bonus would cost one more draft step, i.e. the same as starting the next cycle).
- :class:`SkipDraft` (Draft & Verify, Zhang et al. 2023, arXiv 2309.08168; SWIFT, Xia et al. 2024, arXiv
  2410.06916): the full stack with some blocks skipped drafts ``k`` tokens through the model's own head; the
  verify pass runs the whole model over the last accepted token and the ``k`` drafts (their draft keys/values are
  wrong after the first skipped block, so they are dropped). A cycle emits ``accepted + 1`` tokens (a bonus when
  all are accepted) for ``k*(L - |skip|) + L`` blocks.

Acceptance rule (greedy): accept the longest prefix of the draft equal to the full model's argmax, then emit the
full model's token at the first disagreement. With sampling, :func:`~lenssample.decoding.rejection.rejection_sample`
keeps each token distributed exactly as the full model's (processed) distribution.

Cache surgery uses the model's own ``DynamicCache`` (per-layer ``crop``) and block stubs swapped into the block list
inside a context manager that restores the model in ``finally``; the model's ``forward`` builds masks and position
embeddings as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from lenssample.adapters import ModelParts, model_parts
from lenssample.decoding.loop import Prompt
from lenssample.decoding.outputs import GenerateOutput, Trace
from lenssample.decoding.rejection import Verdict, rejection_sample, verify_greedy
from lenssample.decoding.sampling import TokenPicker
from lenssample.decoding.schedule import RowWriter, Schedule, decode_rows
from lenssample.lens.base import Lens
from lenssample.lens.capture import run_layers


# --------------------------------------------------------------------------------------------------- cache surgery
def crop_to(cache: Any, length: int, layers: range | None = None) -> None:
    """Crop the cache layers (all, or ``layers``) to at most ``length`` positions."""
    for index in layers if layers is not None else range(len(cache.layers)):
        layer = cache.layers[index]
        excess = layer.get_seq_length() - length
        if excess > 0:
            layer.crop(-excess)


class _Replay(nn.Module):
    """Stands in for block ``index`` during a verify pass: writes the draft's keys/values back, runs nothing.

    The last stub (block ``E - 1``) returns the draft's layer-``E`` hidden states, which the real blocks ``E..L-1``
    then continue from.
    """

    def __init__(
        self, cache_layer: Any, keys: torch.Tensor, values: torch.Tensor, output: torch.Tensor | None
    ):
        super().__init__()
        self.cache_layer, self.keys, self.values, self.output = cache_layer, keys, values, output

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.cache_layer.update(self.keys, self.values)
        return hidden_states if self.output is None else self.output


class _Skip(nn.Module):
    """Stands in for a skipped block: the identity (its cache layer is left untouched)."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


@contextmanager
def replaced_blocks(parts: ModelParts, stubs: dict[int, nn.Module]) -> Iterator[None]:
    """Swap ``stubs`` into the block list (block index -> module); the real blocks are restored in ``finally``."""
    saved = {index: parts.blocks[index] for index in stubs}
    try:
        for index, stub in stubs.items():
            parts.blocks[index] = stub
        yield
    finally:
        for index, block in saved.items():
            parts.blocks[index] = block


# ---------------------------------------------------------------------------------------------------------- drafts
@dataclass(frozen=True, kw_only=True)
class LayerDraft:
    """Draft with the first ``layer`` blocks and the lens at ``layer`` (shared cache; see the module docstring)."""

    layer: int
    bonus: ClassVar[bool] = False

    def check(self, num_layers: int) -> None:
        if (
            isinstance(self.layer, bool)
            or not isinstance(self.layer, int)
            or not 1 <= self.layer < num_layers
        ):
            raise ValueError(
                f"LayerDraft(layer={self.layer!r}): the draft layer must be an integer in 1..{num_layers - 1} for "
                f"this {num_layers}-layer model (layer {num_layers} would be the model itself)"
            )

    def costs(self, num_layers: int) -> tuple[float, float]:
        """Blocks per draft step and per verify pass."""
        return float(self.layer), float(num_layers - self.layer)

    def describe(self) -> str:
        return f"layer {self.layer}"


@dataclass(frozen=True, kw_only=True)
class SkipDraft:
    """Draft with the full stack minus the blocks ``skip`` (0-based block indices), through the model's own head."""

    skip: tuple[int, ...]
    bonus: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.skip, int):
            object.__setattr__(self, "skip", (self.skip,))
        object.__setattr__(self, "skip", tuple(sorted(set(self.skip))))

    def check(self, num_layers: int) -> None:
        bad = [
            b for b in self.skip if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b < num_layers
        ]
        if bad or not self.skip or len(self.skip) >= num_layers - 1:
            raise ValueError(
                f"SkipDraft(skip={self.skip!r}): pass one or more block indices in 1..{num_layers - 1} (block 0 "
                "sizes the attention mask from its cache, so it always runs), leaving at least two blocks"
            )

    def costs(self, num_layers: int) -> tuple[float, float]:
        return float(num_layers - len(self.skip)), float(num_layers)

    def describe(self) -> str:
        return f"skip {list(self.skip)}"


Draft = LayerDraft | SkipDraft


# ------------------------------------------------------------------------------------------------------ cost model
def expected_tokens(acceptance: float, k: int, bonus: bool) -> float:
    """Expected tokens emitted per cycle when each draft token is accepted with probability ``acceptance``."""
    terms = k + 1 if bonus else k
    return sum(acceptance**i for i in range(terms))


def predicted_speedup(draft: Draft, acceptance: float, k: int, num_layers: int, lens_cost: float) -> float:
    """Tokens per block-equivalent of a cycle, relative to plain decoding (``L + lens_cost`` per token).

    Decoding is memory bound, so a pass over ``k`` positions costs about as much as a pass over one; a lens
    projection costs ``lens_cost`` block-equivalents. Drafting pays only when this exceeds 1.
    """
    draft_blocks, verify_blocks = draft.costs(num_layers)
    cycle = k * (draft_blocks + lens_cost) + verify_blocks + lens_cost
    return expected_tokens(acceptance, k, draft.bonus) * (num_layers + lens_cost) / cycle


# ------------------------------------------------------------------------------------------------------- the trace
@dataclass
class SpeculativeTrace(Trace):
    """:class:`Trace` plus speculative counts (``info``: ``drafted``, ``accepted``, ``emitted`` per cycle, ``-1``
    after a row's last cycle).

    Attributes:
        drafted: draft tokens proposed, all rows.
        accepted: draft tokens accepted, all rows.
        accept_histogram: ``accept_histogram[n]`` cycles that accepted ``n`` draft tokens (plain steps excluded).
        plain_steps: steps decoded without drafting (fallback when drafting cannot pay).
    """

    drafted: int = 0
    accepted: int = 0
    accept_histogram: list[int] = field(default_factory=list)
    plain_steps: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(
            drafted=self.drafted,
            accepted=self.accepted,
            acceptance_rate=self.acceptance_rate,
            accept_histogram=self.accept_histogram,
            plain_steps=self.plain_steps,
        )
        return out


# ------------------------------------------------------------------------------------------------------- the loop
@dataclass(frozen=True, kw_only=True)
class SelfSpeculative(Schedule):
    """Self-speculative decoding (lossless): greedy output equals greedy full-model decoding token for token.

    Args:
        draft: :class:`LayerDraft` or :class:`SkipDraft`.
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
    draft: LayerDraft | SkipDraft
    k: int = 4
    adaptive: bool = False
    max_k: int = 8
    prior_acceptance: float = 0.5
    lens_cost: float = 2.0
    probe_every: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.draft, (LayerDraft, SkipDraft)):
            raise TypeError(
                f"draft must be LayerDraft(layer=...) or SkipDraft(skip=(...)), got {type(self.draft).__name__}"
            )
        for name in ("k", "max_k", "probe_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if not 0.0 <= float(self.prior_acceptance) <= 1.0:
            raise ValueError(f"prior_acceptance={self.prior_acceptance!r} must be in [0, 1]")
        if not float(self.lens_cost) >= 0.0:
            raise ValueError(f"lens_cost={self.lens_cost!r} must be >= 0 (blocks per lens projection)")

    def check_model(self, num_layers: int) -> None:
        self.draft.check(num_layers)

    def to_dict(self) -> dict:
        draft = (
            {"layer": self.draft.layer}
            if isinstance(self.draft, LayerDraft)
            else {"skip": list(self.draft.skip)}
        )
        return {
            "name": self.name,
            "draft": draft,
            "k": self.k,
            "adaptive": self.adaptive,
            "max_k": self.max_k,
        }

    def decode(
        self,
        model: nn.Module,
        prompt: Prompt,
        *,
        lens: Lens,
        picker: TokenPicker,
        max_new_tokens: int,
        eos_token_ids: torch.Tensor | None = None,
        pad_token_id: int | None = None,
        stopping_criteria: Any = None,
        streamer: Any = None,
        **_: Any,
    ) -> GenerateOutput:
        parts = model_parts(model)
        self.check_model(parts.num_layers)
        num_layers = parts.num_layers
        totals = {"blocks": 0.0}

        def decode_row(writer: RowWriter) -> dict[str, list[float]]:
            with torch.inference_mode():
                return _RowDecoder(self, model, parts, lens, picker, writer, totals).run()

        def summary(traces: list[dict[str, list[float]]]) -> dict:
            cycles = [
                (d, a) for t in traces for d, a in zip(t.get("drafted", []), t.get("accepted", [])) if d > 0
            ]
            hist = [0] * (max(self.max_k, self.k) + 1)
            for _, a in cycles:
                hist[int(a)] += 1
            return {
                "drafted": int(sum(d for d, _ in cycles)),
                "accepted": int(sum(a for _, a in cycles)),
                "accept_histogram": hist,
                "plain_steps": int(sum(1 for t in traces for d in t.get("drafted", []) if d == 0)),
            }

        return decode_rows(
            prompt,
            decode_row,
            max_new_tokens=max_new_tokens,
            eos_token_ids=eos_token_ids,
            pad_token_id=pad_token_id,
            stopping_criteria=stopping_criteria,
            streamer=streamer,
            layers=(num_layers,),
            blocks=lambda _traces, tokens: totals["blocks"] / max(tokens, 1),
            trace_cls=SpeculativeTrace,
            trace_kwargs=summary,
        )


class _RowDecoder:
    """Decodes one row (batch 1) for :class:`SelfSpeculative`."""

    def __init__(
        self, spec: SelfSpeculative, model, parts: ModelParts, lens: Lens, picker: TokenPicker, writer, totals
    ):
        self.spec, self.model, self.parts, self.lens, self.picker, self.writer = (
            spec,
            model,
            parts,
            lens,
            picker,
            writer,
        )
        self.totals = totals
        self.num_layers = parts.num_layers
        self.device = writer.prompt_ids.device
        self.trace: dict[str, list[float]] = {"drafted": [], "accepted": [], "emitted": []}
        weight = 4.0
        self.seen_accepted = spec.prior_acceptance * weight
        self.seen_trials = weight
        self.plain_run = 0

    # -- helpers
    def _logits(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden: [positions, d_model]`` -> ``[positions, vocab]`` lens logits of ``layer``."""
        return self.lens(hidden[:, None, :], (layer,))[:, 0]

    def _pick(self, processed: torch.Tensor) -> int:
        return int(self.picker.pick(processed[None])[0])

    def _run(self, ids: list[int], start: int, layer: int, cache: Any, keep: int | None = 1):
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + len(ids), device=self.device)[None]
        return run_layers(self.model, input_ids, (layer,), position_ids=positions, cache=cache, keep=keep)

    def _choose_k(self) -> int:
        spec = self.spec
        if not spec.adaptive:
            return spec.k
        acceptance = self.seen_accepted / self.seen_trials
        speed = {
            k: predicted_speedup(spec.draft, acceptance, k, self.num_layers, spec.lens_cost)
            for k in range(1, spec.max_k + 1)
        }
        best = max(speed, key=speed.get)
        if speed[best] > 1.0:
            self.plain_run = 0
            return best
        self.plain_run += 1
        return 1 if self.plain_run % spec.probe_every == 0 else 0

    def _record(self, drafted: int, accepted: int, emitted: int) -> None:
        self.trace["drafted"].append(drafted)
        self.trace["accepted"].append(accepted)
        self.trace["emitted"].append(emitted)
        if drafted:
            self.seen_accepted += accepted
            # A rejection is one more trial; accepting all k leaves the next token's fate unobserved.
            self.seen_trials += accepted + (1 if accepted < drafted else 0)

    def _emit(self, tokens: list[int]) -> int:
        emitted = 0
        for token in tokens:
            emitted += 1
            if self.writer.emit(token):
                break
        return emitted

    # -- the loop
    def run(self) -> dict[str, list[float]]:
        writer, L = self.writer, self.num_layers
        prompt_ids = writer.prompt_ids[0].tolist()
        out = self._run(prompt_ids, 0, L, None)
        self.totals["blocks"] += L
        cache = out.cache
        token = self._pick(self.picker.process(writer.sequence(), self._logits(out.hidden[:, -1, 0], L))[0])
        self._record(0, 0, 1)
        if writer.emit(token):
            return self.trace
        length = len(prompt_ids)  # positions held by every cache layer
        last = token  # emitted, not yet in the cache
        while not writer.done:
            k = min(self._choose_k(), writer.remaining)
            if k == 0:
                out = self._run([last], length, L, cache)
                self.totals["blocks"] += L
                logits = self.picker.process(writer.sequence(), self._logits(out.hidden[:, -1, 0], L))
                last = self._pick(logits[0])
                length += 1
                self._record(0, 0, 1)
                writer.emit(last)
                continue
            if isinstance(self.spec.draft, LayerDraft):
                length, last = self._layer_cycle(k, cache, length, last)
            else:
                length, last = self._skip_cycle(k, cache, length, last)
        return self.trace

    def _draft(self, k: int, cache: Any, length: int, last: int, layer: int):
        """``k`` draft steps from ``last``; returns (draft tokens, draft probs or None, layer hidden [k, d])."""
        drafts: list[int] = []
        probs, hidden = [], []
        for i in range(k):
            out = self._run([last if i == 0 else drafts[-1]], length + i, layer, cache)
            hidden.append(out.hidden[0, -1, 0])
            processed = self.picker.process(
                self.writer.sequence(drafts), self._logits(out.hidden[:, -1, 0], layer)
            )
            drafts.append(self._pick(processed[0]))
            if self.picker.do_sample:
                probs.append(torch.softmax(processed[0].float(), dim=-1))
        return drafts, (torch.stack(probs) if probs else None), torch.stack(hidden)

    def _verdict(self, drafts: list[int], draft_probs, final_logits: torch.Tensor) -> Verdict:
        """Process the target logits ``[k (+1), vocab]`` with each position's prefix, then verify."""
        rows = [
            self.picker.process(self.writer.sequence(drafts[:i]), final_logits[i : i + 1])[0]
            for i in range(final_logits.shape[0])
        ]
        target = torch.stack(rows)
        tokens = torch.tensor(drafts, dtype=torch.long, device=target.device)
        if not self.picker.do_sample:
            return verify_greedy(tokens, target)
        return rejection_sample(
            tokens, draft_probs, torch.softmax(target.float(), dim=-1), generator=self.picker.generator
        )

    def _layer_cycle(self, k: int, cache: Any, length: int, last: int) -> tuple[int, int]:
        E, L = self.spec.draft.layer, self.num_layers
        drafts, draft_probs, hidden = self._draft(k, cache, length, last, E)
        self.totals["blocks"] += k * E + (L - E)
        # Verify: blocks E..L-1 over the k drafted positions, from the draft's own layer-E states. Blocks 0..E-1
        # already hold these positions' keys/values: take them out so that every layer holds `length` positions
        # when the model sizes its attention mask, and let stubs put them back in place of running the blocks.
        stubs = {}
        for index in range(E):
            layer = cache.layers[index]
            keys, values = layer.keys[:, :, length:], layer.values[:, :, length:]
            stubs[index] = _Replay(layer, keys, values, hidden[None] if index == E - 1 else None)
        crop_to(cache, length, range(E))
        with replaced_blocks(self.parts, stubs):
            out = self._run([last, *drafts[:-1]], length, L, cache, keep=None)
        verdict = self._verdict(drafts, draft_probs, self._logits(out.hidden[0, :, 0], L))
        new = drafts[: verdict.accepted] + ([verdict.next_token] if verdict.next_token is not None else [])
        emitted = self._emit(new)
        self._record(k, verdict.accepted, emitted)
        length += min(verdict.accepted + 1, k)  # positions last, d_1..d_accepted are now valid in every layer
        crop_to(cache, length)
        return length, new[-1]

    def _skip_cycle(self, k: int, cache: Any, length: int, last: int) -> tuple[int, int]:
        L = self.num_layers
        skip = self.spec.draft.skip
        with replaced_blocks(self.parts, {index: _Skip() for index in skip}):
            drafts, draft_probs, _ = self._draft(k, cache, length, last, L)
        # The drafts' keys/values are wrong after the first skipped block: drop them and verify with every block
        # over the last token and all k drafts (which also yields a bonus token when all are accepted).
        crop_to(cache, length)
        out = self._run([last, *drafts], length, L, cache, keep=None)
        self.totals["blocks"] += k * (L - len(skip)) + L
        verdict = self._verdict(drafts, draft_probs, self._logits(out.hidden[0, :, 0], L))
        new = drafts[: verdict.accepted] + [verdict.next_token]
        emitted = self._emit(new)
        self._record(k, verdict.accepted, emitted)
        length += verdict.accepted + 1
        crop_to(cache, length)
        return length, new[-1]
