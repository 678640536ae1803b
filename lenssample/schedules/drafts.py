"""Drafts of self-speculative decoding: proposers behind one interface (:meth:`Draft.propose`, :meth:`Draft.verify`).

Both draft from the model itself (no second model):

- :class:`LayerDraft` (LayerSkip, Elhoushi et al. 2024, arXiv 2404.16710): the first ``E`` blocks and a lens at layer
  ``E`` (logit lens, or a tuned lens when one is passed) draft ``k`` tokens one at a time. The verify pass runs only
  blocks ``E..L-1`` over the ``k`` drafted positions, starting from the draft's own layer-``E`` hidden states; the
  keys and values the draft wrote for blocks ``0..E-1`` are kept (the shared cache), so no block runs twice for a
  position. A cycle costs ``k*E + (L - E)`` blocks; the verify pass yields the full model's prediction at each of
  the ``k`` positions, so there is no bonus token when all ``k`` are accepted (the last draft token never went
  through the model; LayerSkip departs here too).
- :class:`SkipDraft` (Draft & Verify, Zhang et al. 2023, arXiv 2309.08168; SWIFT, Xia et al. 2024, arXiv
  2410.06916): the full stack with some blocks skipped drafts through the model's own head; the verify pass runs
  the whole model over the last accepted token and the ``k`` drafts (their draft keys/values are wrong after the
  first skipped block, so they are dropped), which also yields a bonus token when all are accepted. A cycle costs
  ``k*(L - |skip|) + L`` blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lenssample.model.adapters import ModelParts
from lenssample.model.surgery import ReplayedBlock, SkippedBlock, crop_to, replaced_blocks
from lenssample.schedules.base import Row
from lenssample.specs import Registry, Spec
from lenssample.validation import check_int, is_int

DRAFTS = Registry("draft")
"""Every draft kind by name."""


@dataclass
class Proposal:
    """``k`` drafted tokens, the draft's processed distributions (when sampling: ``[k, vocab]``) and its hidden
    states at the draft layer (``[k, d_model]``)."""

    tokens: list[int]
    probs: torch.Tensor | None
    hidden: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class Draft(Spec):
    """Base class of drafts: ``propose`` ``k`` tokens after ``last``, then ``verify`` them with the full model."""

    registry: ClassVar[Registry] = DRAFTS
    bonus: ClassVar[bool] = False

    def check(self, num_layers: int) -> None:
        """Validate against a model of ``num_layers`` blocks."""

    def costs(self, num_layers: int) -> tuple[float, float]:
        """Blocks per draft step and per verify pass."""
        raise NotImplementedError

    def exit_layer(self, num_layers: int) -> int:
        """The layer whose lens the draft reads."""
        return num_layers

    def drafting(self, parts: ModelParts) -> Any:
        """Context in which draft steps run (the model as the draft sees it)."""
        return nullcontext()

    def propose(self, row: Row, k: int, cache: Any, length: int, last: int) -> Proposal:
        """``k`` draft steps from ``last`` (emitted, not yet in the cache, at position ``length``)."""
        layer = self.exit_layer(row.parts.num_layers)
        tokens, probs, hidden = [], [], []
        with self.drafting(row.parts):
            for i in range(k):
                out = row.run([last if i == 0 else tokens[-1]], length + i, layer, cache)
                hidden.append(out.hidden[0, -1, 0])
                logits = row.logits(out.hidden[:, -1, 0], layer)
                processed = row.picker.process(row.emitter.with_tokens(tokens), logits)
                tokens.append(int(row.picker.pick(processed)[0]))
                if row.picker.do_sample:
                    probs.append(torch.softmax(processed[0].float(), dim=-1))
        return Proposal(tokens, torch.stack(probs) if probs else None, torch.stack(hidden))

    def verify(self, row: Row, proposal: Proposal, cache: Any, length: int, last: int) -> torch.Tensor:
        """The full model's logits ``[fed, vocab]`` at the positions fed by the verify pass (``last`` first)."""
        raise NotImplementedError


@DRAFTS.register
@dataclass(frozen=True, kw_only=True)
class LayerDraft(Draft):
    """Draft with the first ``layer`` blocks and the lens at ``layer`` (shared cache; see the module docstring)."""

    name: ClassVar[str] = "layer"
    layer: int

    def __post_init__(self) -> None:  # what needs no model is refused at once; the model's depth at check()
        check_int(self.layer, field="layer", owner="LayerDraft", low=1, fix="Pass a draft layer, e.g. layer=12.")

    def check(self, num_layers: int) -> None:
        if not is_int(self.layer) or not 1 <= self.layer < num_layers:
            raise ValueError(
                f"LayerDraft(layer={self.layer!r}): the draft layer must be an integer in 1..{num_layers - 1} for "
                f"this {num_layers}-layer model (layer {num_layers} would be the model itself)"
            )

    def costs(self, num_layers: int) -> tuple[float, float]:
        return float(self.layer), float(num_layers - self.layer)

    def exit_layer(self, num_layers: int) -> int:
        return self.layer

    def verify(self, row: Row, proposal: Proposal, cache: Any, length: int, last: int) -> torch.Tensor:
        # Blocks E..L-1 over the k drafted positions, from the draft's own layer-E states. Blocks 0..E-1 already
        # hold these positions' keys/values: take them out so that every layer holds `length` positions when the
        # model sizes its attention mask, and let stubs put them back in place of running the blocks.
        E = self.layer
        stubs = {}
        for index in range(E):
            layer, output = cache.layers[index], proposal.hidden[None] if index == E - 1 else None
            keys, values = layer.keys[:, :, length:], layer.values[:, :, length:]
            stubs[index] = ReplayedBlock(layer, keys, values, output)
        crop_to(cache, length, range(E))
        with replaced_blocks(row.parts, stubs):
            out = row.run([last, *proposal.tokens[:-1]], length, row.parts.num_layers, cache, keep=None)
        return row.logits(out.hidden[0, :, 0], row.parts.num_layers)


@DRAFTS.register
@dataclass(frozen=True, kw_only=True)
class SkipDraft(Draft):
    """Draft with the full stack minus the blocks ``skip`` (0-based block indices), through the model's own head."""

    name: ClassVar[str] = "skip"
    skip: tuple[int, ...]
    bonus: ClassVar[bool] = True

    def __post_init__(self) -> None:
        skip = (self.skip,) if is_int(self.skip) else self.skip
        if not isinstance(skip, (tuple, list)) or not skip or not all(is_int(b) and b >= 1 for b in skip):
            raise ValueError(
                f"SkipDraft(skip={self.skip!r}): pass one or more block indices >= 1 (block 0 always runs), "
                "e.g. skip=(15, 25)"
            )
        object.__setattr__(self, "skip", tuple(sorted(set(skip))))

    def check(self, num_layers: int) -> None:
        bad = [b for b in self.skip if not is_int(b) or not 1 <= b < num_layers]
        if bad or not self.skip or len(self.skip) >= num_layers - 1:
            raise ValueError(
                f"SkipDraft(skip={self.skip!r}): pass one or more block indices in 1..{num_layers - 1} (block 0 "
                "sizes the attention mask from its cache, so it always runs), leaving at least two blocks"
            )

    def costs(self, num_layers: int) -> tuple[float, float]:
        return float(num_layers - len(self.skip)), float(num_layers)

    @contextmanager
    def drafting(self, parts: ModelParts) -> Iterator[None]:
        with replaced_blocks(parts, {index: SkippedBlock() for index in self.skip}):
            yield

    def verify(self, row: Row, proposal: Proposal, cache: Any, length: int, last: int) -> torch.Tensor:
        # The drafts' keys/values are wrong after the first skipped block: drop them and verify with every block
        # over the last token and all k drafts (which also yields a bonus token when all are accepted).
        crop_to(cache, length)
        out = row.run([last, *proposal.tokens], length, row.parts.num_layers, cache, keep=None)
        return row.logits(out.hidden[0, :, 0], row.parts.num_layers)
