"""Compare lenses layer by layer on held-out text: cross-entropy, KL to the final layer, agreement, entropy.

For every position ``t`` of the evaluation windows that has a next token, and every layer ``l``:

- ``cross_entropy``: ``-log q_l(x_{t+1})``, the lens as a next-token predictor;
- ``kl``: ``KL(p_L || q_l)`` in nats, where ``p_L`` is the model's own distribution (the lens at ``L``);
- ``agreement``: whether ``argmax q_l == argmax p_L`` (top-1 agreement with the final layer);
- ``entropy``: ``H(q_l)`` in nats.

All lenses see the same residual streams from one pass of the model per batch of windows, and all layers of one
lens are projected in one matrix product per chunk of positions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lenssample.lens.base import Lens, as_lens
from lenssample.lens.passes import DEFAULT_CHUNK_BYTES, check_chunk_bytes, lens_pass
from lenssample.stats import entropy, kl_divergence, log_probs

METRICS = ("kl", "agreement", "cross_entropy", "entropy")


@dataclass
class LensComparison:
    """Per-layer metrics of several lenses on the same positions.

    Attributes:
        layers: the layers evaluated, ``0..L``.
        positions: how many positions were averaged.
        metrics: ``{lens name: {metric: [value per layer]}}`` with metrics from :data:`METRICS`.
    """

    layers: list[int]
    positions: int
    metrics: dict[str, dict[str, list[float]]]

    def save_json(self, path: str | Path, **extra: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**extra, **asdict(self)}, indent=1) + "\n")
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> LensComparison:
        """A comparison written by :meth:`save_json` (its other entries are ignored)."""
        data = json.loads(Path(path).read_text())
        return cls(layers=data["layers"], positions=data["positions"], metrics=data["metrics"])

    @classmethod
    def pooled(cls, parts: Sequence[LensComparison]) -> LensComparison:
        """The position-weighted mean of comparisons of the same lenses and layers on different positions: what one
        comparison over all their positions would give."""
        weights = [part.positions for part in parts]
        metrics = {name: {m: np.average([part.metrics[name][m] for part in parts], axis=0, weights=weights).tolist()
                          for m in values} for name, values in parts[0].metrics.items()}  # fmt: skip
        return cls(layers=list(parts[0].layers), positions=sum(weights), metrics=metrics)

    def kl_ratio(self, name: str, baseline: str = "logit") -> list[float | None]:
        """Per layer, the fraction of ``baseline``'s KL that lens ``name`` leaves (``None`` where the baseline's KL
        is 0, at the last layer)."""
        kls, base = self.metrics[name]["kl"], self.metrics[baseline]["kl"]
        return [v / b if b > 1e-9 else None for v, b in zip(kls, base)]

    def markdown(self, metrics: Sequence[str] = METRICS, baseline: str | None = "logit",
                 extra: dict[str, Sequence[str]] | None = None) -> str:  # fmt: skip
        """A markdown table: one row per layer, one column per (lens, metric), then the ``extra`` columns
        (``{header: a cell per layer}``).

        With a ``baseline`` lens among the compared ones (default ``"logit"``), a ``NAME kl / BASELINE`` column per
        other lens follows the KL columns: the fraction of the baseline's KL that is left (``-`` where the
        baseline's KL is 0, at the last layer).
        """
        ratio_names = (
            [n for n in self.metrics if n != baseline] if baseline in self.metrics and "kl" in metrics else []
        )
        columns = []  # (header, value per layer or None, format)
        for metric in metrics:
            fmt = "{:.3f}" if metric == "agreement" else "{:.2f}"
            columns += [(f"{name} {metric}", values[metric], fmt) for name, values in self.metrics.items()]
            if metric == "kl":
                columns += [
                    (f"{n} kl / {baseline}", self.kl_ratio(n, baseline), "{:.3f}") for n in ratio_names
                ]
        columns += [(header, cells, "{}") for header, cells in (extra or {}).items()]
        rows = [[str(layer)] + ["-" if v[i] is None else fmt.format(v[i]) for _, v, fmt in columns]
                for i, layer in enumerate(self.layers)]  # fmt: skip
        header = ["layer", *(title for title, _, _ in columns)]
        lines = ["| " + " | ".join(cells) + " |" for cells in [header, *rows]]
        return "\n".join([lines[0], "|" + "---|" * len(header), *lines[1:]])


@torch.no_grad()
def compare_lenses(model: nn.Module, lenses: dict[str, Lens], windows: Sequence[torch.Tensor], *,
                   max_positions: int = 1024, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> LensComparison:  # fmt: skip
    """Evaluate ``lenses`` on every layer over ``max_positions`` predicting positions of ``windows``.

    When ``windows`` hold more positions than that, whole windows evenly spaced over the list are used (see
    :func:`spread_windows`), so a sample of held-out text covers all of its documents, not only the first one.
    ``lenses``: ``{name: lens}``, each built for ``model``; ``windows``: 1-D token-id tensors (e.g. from
    :func:`lenssample.data.windows.token_windows` on held-out text), each giving ``len - 1`` positions.
    """
    check_chunk_bytes(max_chunk_bytes)
    if not lenses:
        raise ValueError("lenses is empty; pass at least one {name: lens}")
    lenses = {name: as_lens(model, lens) for name, lens in lenses.items()}
    first = next(iter(lenses.values()))
    num_layers = first.num_layers
    layers = list(range(num_layers + 1))
    device = first.parts.unembed.weight.device
    sums = {name: {m: torch.zeros(num_layers + 1, dtype=torch.float64) for m in METRICS} for name in lenses}
    seen = 0
    windows = [w for w in windows if w.numel() >= 2]
    if not windows:
        raise ValueError("windows holds no window of at least 2 tokens; pass more held-out text")
    windows = spread_windows(windows, max_positions)
    for window in windows:
        if seen >= max_positions:
            break
        ids = window[None].to(device)
        take = min(ids.shape[1] - 1, max_positions - seen)
        select = torch.zeros_like(ids, dtype=torch.bool)
        select[0, :take] = True
        passed = lens_pass(model, ids, layers, select=select)  # one model pass serves every lens
        targets = ids[0, 1 : take + 1]
        seen += take
        for name, lens in lenses.items():
            for chunk in passed.chunks(lens, max_chunk_bytes=max_chunk_bytes):
                _accumulate(sums[name], chunk.logits, targets[chunk.start : chunk.stop])
    metrics = {name: {m: (values / seen).tolist() for m, values in per.items()} for name, per in sums.items()}
    return LensComparison(layers=layers, positions=seen, metrics=metrics)


def spread_windows(windows: Sequence[torch.Tensor], max_positions: int) -> list[torch.Tensor]:
    """The fewest evenly spaced windows (in list order) that together hold ``max_positions`` predicting positions.

    Windows cut from documents in order (:func:`~lenssample.data.windows.token_windows`) are grouped by document; taking
    the first ones would evaluate on the first document only. All windows are returned when they hold fewer.
    """
    sizes = [w.numel() - 1 for w in windows]
    if sum(sizes) <= max_positions:
        return list(windows)
    count = max(1, min(len(windows), max_positions // max(1, max(sizes))))
    while True:
        picks = [int(i * len(windows) / count) for i in range(count)]
        if count == len(windows) or sum(sizes[i] for i in picks) >= max_positions:
            return [windows[i] for i in picks]
        count += 1


def _accumulate(sums: dict[str, torch.Tensor], logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Add the metric sums over positions of ``logits: [n, L+1, vocab]`` (last slice = the final layer)."""
    log_q = log_probs(logits)
    log_p = log_q[:, -1:]
    sums["kl"] += kl_divergence(log_p, log_q).sum(0).double().cpu()
    sums["agreement"] += (log_q.argmax(-1) == log_p.argmax(-1)).sum(0).double().cpu()
    index = targets[:, None, None].expand(-1, log_q.shape[1], 1)
    sums["cross_entropy"] += (-log_q.gather(-1, index).squeeze(-1)).sum(0).double().cpu()
    sums["entropy"] += entropy(log_q).sum(0).double().cpu()
