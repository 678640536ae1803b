"""Pictures: logit-lens heatmaps, decoding traces and per-layer lens curves (matplotlib, headless).

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, so no global state and no display is
ever needed) and rendered with the Agg canvas. Every function returns the figure and, given ``path``, also saves it
(``.png``, ``.svg`` or ``.pdf``; PNGs at ``dpi``); ``title`` replaces the default title.

* :func:`plot_trajectory`: rows = layers (embedding at the bottom, final layer on top), columns = positions, each
  cell the lens's top-1 token, coloured by a statistic of :class:`~lenssample.analysis.trajectory.Trajectory`.
* :func:`plot_trace`: the per-token decisions a strategy recorded in a generation's trace (chosen layer, accepted
  draft tokens, ...) under the generated tokens.
* :func:`plot_layer_curves`: per-layer curves (KL to the final layer, top-1 agreement, ...) of several lenses.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from lenssample.analysis.trajectory import Trajectory, readable_token
from lenssample.validation import (
    check_choice,
    check_int,
    check_output_file,
    check_output_folder,
    did_you_mean,
)

IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


@dataclass(frozen=True, kw_only=True)
class Statistic:
    """How one :class:`Trajectory` statistic (``name``, as ``--stat`` gives it) is shown: the ``Trajectory``
    attribute holding it (``[n_layers, n_positions]``), its colour-bar label, its colormap (every map is oriented so
    that bright = confident / close to the final layer), on a ``log`` scale or not (ranks), and ``fmt``, the format
    of the value in tooltips and text tables."""

    name: str
    attr: str
    label: str
    cmap: str
    log: bool = False
    fmt: str = "{:.2f}"

    def values(self, traj: Trajectory) -> np.ndarray:
        return np.asarray(getattr(traj, self.attr), dtype=float)

    def norm(self, values: np.ndarray) -> Normalize:
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 1.0
        if self.log:
            return LogNorm(vmin=1.0, vmax=max(top, 10.0))
        if self.name == "prob":
            return Normalize(vmin=0.0, vmax=1.0)
        return Normalize(vmin=0.0, vmax=max(top, 1e-6))


STATISTICS: dict[str, Statistic] = {
    s.name: s
    for s in (
        Statistic(name="prob", attr="top_probs", label="probability of the top-1 token", cmap="viridis"),
        Statistic(
            name="rank",
            attr="final_rank",
            label="rank of the final layer's top-1 token (1 = top)",
            cmap="viridis_r",
            log=True,
            fmt="{:.0f}",
        ),  # fmt: skip
        Statistic(name="kl", attr="kl", label="KL(final ‖ layer) [nats]", cmap="viridis_r"),
        Statistic(name="entropy", attr="entropy", label="entropy [nats]", cmap="viridis_r"),
        Statistic(name="xent", attr="xent", label="cross-entropy of the next token [nats]", cmap="viridis_r"),
    )
}


def get_statistic(name: str) -> Statistic:
    """The :class:`Statistic` called ``name``; unknown names raise with a suggestion."""
    if name in STATISTICS:
        return STATISTICS[name]
    raise ValueError(
        f"stat={name!r} is not known; choose one of {', '.join(STATISTICS)}.{did_you_mean(name, STATISTICS)}"
    )


def save_figure(fig: Figure, path: str | os.PathLike | None, *, dpi: int = 100) -> Figure:
    """Write ``fig`` to ``path`` (``.png``, ``.svg`` or ``.pdf``; nothing when ``None``); returns the figure."""
    if path is not None:
        FigureCanvasAgg(fig)
        fig.savefig(check_output_file(path, suffixes=IMAGE_SUFFIXES), dpi=dpi)
    return fig


def output_folder(path: str | os.PathLike | None = None, *, field: str = "--out") -> Path:
    """A folder to write pictures into, made ready before any work: ``path`` (created with its parents if missing)
    or, when ``None``, a new temporary folder (so that a script run without arguments overwrites nothing).

    Raises ``ValueError`` naming ``field`` when ``path`` is a file or cannot be created or written."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="lenssample-"))
    out = check_output_folder(path, field=field)
    out.mkdir(parents=True, exist_ok=True)
    return out


def plain(text: str) -> str:
    """Text safe for matplotlib: a ``$`` would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def text_color(rgba: Sequence[float]) -> str:
    """Black or white (``#000``, ``#fff``), whichever reads better on the background colour ``rgba``."""
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "#000" if luminance > 0.5 else "#fff"


def layer_label(layer: int, num_layers: int) -> str:
    return f"emb {layer}" if layer == 0 else f"final {layer}" if layer == num_layers else str(layer)


def last_columns(traj: Trajectory, max_positions: int) -> Trajectory:
    """``traj`` (checked to be a :class:`Trajectory`) cut to its last ``max_positions`` columns."""
    if not isinstance(traj, Trajectory):
        raise TypeError(f"traj must be a lenssample Trajectory, got {type(traj).__name__}")
    check_int(max_positions, field="max_positions", low=1)
    return traj.last(max_positions) if len(traj.positions) > max_positions else traj


def plot_trajectory(traj: Trajectory, *, stat: str = "prob", max_positions: int = 24,
                    title: str | None = None, path: str | os.PathLike | None = None,
                    dpi: int = 100) -> Figure:  # fmt: skip
    """A logit-lens heatmap: the top-1 token of every layer (rows) at every position (columns).

    The final layer is on top and the embedding (layer 0) at the bottom. The bottom axis shows each column's input
    token, the top axis the actual next token, marked ✓ (green) where the final layer's prediction matches it.

    Window ``traj`` first (``traj.window(start, end)``, ``traj.last(n)``) to choose columns; at most
    ``max_positions`` (the last ones) are drawn, so that cells stay readable. ``stat`` colours by ``prob``, ``rank``,
    ``kl``, ``entropy`` or ``xent`` (see :mod:`lenssample.analysis.trajectory`).
    """
    statistic = get_statistic(stat)
    traj = last_columns(traj, max_positions)
    order = np.argsort(traj.layers)  # embedding at the bottom (row 0 with origin="lower")
    layers = [traj.layers[i] for i in order]
    values = statistic.values(traj)[order]
    tokens = traj.top_tokens[order]
    n_rows, n_cols = values.shape

    fig = Figure(figsize=(2.2 + 0.72 * n_cols, 2.4 + 0.24 * n_rows), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps[statistic.cmap].with_extremes(bad="#dddddd")
    norm = statistic.norm(values)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, origin="lower", aspect="auto")
    fontsize = 7 if n_rows <= 40 else 5
    for r in range(n_rows):
        for c in range(n_cols):
            value = values[r, c]
            color = text_color(cmap(norm(value))) if np.isfinite(value) else "black"
            ax.text(c, r, plain(tokens[r, c]), ha="center", va="center", fontsize=fontsize, color=color)

    ax.set_yticks(range(n_rows), [layer_label(layer, traj.num_layers) for layer in layers], fontsize=fontsize)
    ax.set_xticks(range(n_cols), [plain(t) for t in traj.input_tokens], rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="layer", xlabel="input token (position)")
    top = ax.secondary_xaxis("top")
    marked = [plain(t) + (" ✓" if m else "") for t, m in zip(traj.next_tokens, traj.matches)]
    top.set_xticks(range(n_cols), marked, rotation=45, ha="left", fontsize=8)
    for label, match in zip(top.get_xticklabels(), traj.matches):
        label.set(color="#1a7f37" if match else "#444444", fontweight="bold" if match else "normal")
    top.set_xlabel("actual next token (✓ = final layer predicts it)", fontsize=8)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(statistic.label, fontsize=8)
    shown = f"positions {traj.positions[0]}–{traj.positions[-1]} of {len(traj.input_ids)} tokens"
    title = title or f"{traj.lens_name}: top-1 token per layer, colour = {statistic.label} ({shown})"
    fig.suptitle(plain(title), fontsize=10)
    return save_figure(fig, path, dpi=dpi)


def plot_trace(trace_or_output: Any, tokenizer: Any = None, *, tokens: Sequence[str] | None = None,
               row: int = 0, keys: Sequence[str] | None = None, num_layers: int | None = None,
               max_steps: int = 96, title: str | None = None, path: str | os.PathLike | None = None,
               dpi: int = 100) -> Figure:  # fmt: skip
    """The per-token decisions of a generation: one panel per ``trace.info`` key, under the generated tokens.

    Keys naming a layer (``premature_layer``, ``exit_layer``, ...) are drawn as the chosen layer per step with the
    final layer marked; other keys (``accepted`` draft tokens, counts) as bars.

    ``trace_or_output``: a :class:`~lenssample.decoding.outputs.GenerateOutput` (steps labelled with its tokens,
    decoded with ``tokenizer``) or a :class:`~lenssample.decoding.outputs.Trace`; ``tokens`` gives the step labels
    directly. ``keys``: the ``trace.info`` keys to plot (default all); ``num_layers``: ``L`` for the layer axis
    (default the deepest layer in ``trace.layers``); at most ``max_steps`` (first) steps are drawn.
    """
    trace = getattr(trace_or_output, "trace", trace_or_output)
    info = getattr(trace, "info", None)
    if not isinstance(info, Mapping):
        raise TypeError(
            f"trace_or_output must be a lenssample GenerateOutput or Trace, got {type(trace_or_output).__name__}"
        )
    if not info:
        raise ValueError(
            "the trace records no per-token decisions (trace.info is empty): the strategy reads fixed layers; "
            "generate with a strategy that chooses layers or drafts (DoLa, early exit, self-speculative)"
        )
    keys = list(info) if keys is None else [check_choice(key, info, field="keys") for key in keys]
    if not keys:
        raise ValueError("keys is empty; pass at least one trace.info key, or None for all")
    series = {key: _to_numpy(info[key]) for key in keys}
    batch = next(iter(series.values())).shape[0]
    check_int(row, field="row", low=0, high=batch - 1, fix=f"The trace has {batch} rows.")
    series = {key: value[row, :max_steps] for key, value in series.items()}
    steps = max(len(v) for v in series.values())
    if tokens is None and tokenizer is not None and hasattr(trace_or_output, "new_tokens"):
        tokens = [readable_token(tokenizer, t, 12) for t in trace_or_output.new_tokens[row].tolist()]
    tokens = list(tokens)[:steps] if tokens is not None else None
    if num_layers is None:
        num_layers = max(trace.layers) if getattr(trace, "layers", None) else None

    width = min(24.0, 2.5 + 0.3 * steps)
    # The title is wrapped to the figure's width (a short generation makes a narrow figure): ~11 characters of
    # 10-point text per inch.
    title_lines = textwrap.wrap(plain(title or f"decoding trace: {', '.join(keys)} per step"), int(width * 11))
    size = (width, 1.2 + 2.0 * len(keys) + (1.0 if tokens else 0.3) + 0.18 * (len(title_lines) - 1))
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(steps)
    for ax, key in zip(axes, keys):
        y = series[key]
        if "layer" in key:
            ax.plot(x[: len(y)], y, marker="o", markersize=4, drawstyle="steps-mid", color="#3b6ea5")
            if num_layers is not None:
                ax.axhline(num_layers, color="#999999", linestyle="--", linewidth=0.8)
                ax.set_ylim(-0.5, num_layers + 1)
                ax.text(steps - 0.5, num_layers, f"final {num_layers}", fontsize=7, ha="right", va="bottom")
            ax.set_ylabel("layer")
        else:
            ax.bar(x[: len(y)], y, color="#d08c2c", width=0.8)
            finite = y[np.isfinite(y)]
            if finite.size and np.allclose(finite, np.round(finite)):
                ax.yaxis.get_major_locator().set_params(integer=True)
            ax.set_ylabel("count")
        ax.set_title(key.replace("_", " "), fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3)
    if tokens and len(tokens) == steps:
        axes[-1].set_xticks(x, [plain(t) for t in tokens], rotation=90, fontsize=8)
        axes[-1].set_xlabel("generated token")
    else:
        axes[-1].set_xticks(x, [str(i) for i in x], fontsize=7)
        axes[-1].set_xlabel("step")
        if tokens:  # steps are not tokens (e.g. draft-verify rounds): show the text as a caption instead
            caption = "".join(tokens).replace("␣", " ")
            fig.supxlabel(plain(textwrap.shorten(caption, 200)), fontsize=8)
    fig.suptitle("\n".join(title_lines), fontsize=10)
    return save_figure(fig, path, dpi=dpi)


def _to_numpy(value: Any) -> np.ndarray:
    array = np.asarray(
        value.detach().float().cpu().numpy() if hasattr(value, "detach") else value, dtype=float
    )
    array = array[None] if array.ndim == 1 else array
    if array.ndim != 2:
        raise ValueError(f"trace.info values must be [batch, steps]; got shape {array.shape}")
    return array


# Values at or below this are not drawn on a log axis of plot_layer_curves (KL below 1e-6 nats is float noise).
LOG_FLOOR = 1e-6

METRIC_LABELS = {
    "kl": "KL(final ‖ lens) [nats]",
    "top1": "top-1 agreement with the final layer",
    "agreement": "top-1 agreement with the final layer",
    "xent": "cross-entropy of the next token [nats]",
    "entropy": "entropy [nats]",
}


def plot_layer_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], *,
                      layers: Sequence[int] | None = None, metrics: Sequence[str] | None = None,
                      log_y: Sequence[str] = ("kl",), title: str | None = None,
                      path: str | os.PathLike | None = None, dpi: int = 100) -> Figure:  # fmt: skip
    """Per-layer curves of several lenses, one panel per metric.

    ``curves``: ``{lens name: {metric: [n_layers] values}}``, e.g. ``{"logit": {"kl": [...], "top1": [...]},
    "tuned": {...}}`` (``Trajectory.layer_summary()`` gives one lens's dict; it may hold its own ``"layers"``, else
    ``layers``, else ``0..n-1``). ``metrics``: which to draw, in order (default all); ``log_y``: those drawn on a log
    scale (when none is negative; values at or below ``LOG_FLOOR``, 1e-6, e.g. the final layer's KL with itself, are
    left out there).
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves is empty; pass {lens name: {metric: per-layer values}}")
    if metrics is None:
        metrics = list(dict.fromkeys(m for c in curves.values() for m in c if m != "layers"))
    if not metrics:
        raise ValueError("curves hold no metric; pass e.g. {'logit': {'kl': [...], 'top1': [...]}}")
    fig = Figure(figsize=(0.5 + 4.6 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        positive = True
        for name, curve in curves.items():
            if metric not in curve:
                continue
            y = np.asarray(curve[metric], dtype=float)
            x = np.asarray(curve.get("layers", layers if layers is not None else range(len(y))), dtype=float)
            if x.shape != y.shape:
                raise ValueError(
                    f"curves[{name!r}][{metric!r}] has {y.size} values but {x.size} layers; pass one value per layer"
                )
            finite = y[np.isfinite(y)]
            positive &= bool(np.all(finite >= 0) and np.any(finite > 0))
            ax.plot(x, y, marker="o", markersize=3, label=plain(name))
        if metric in log_y and positive:
            # Values at or below LOG_FLOOR (the final layer's KL with itself: 0, or float noise around it) are left
            # out: on a log axis they would drop the curve to the bottom of the plot.
            for line in ax.get_lines():
                y = np.asarray(line.get_ydata(), dtype=float)
                line.set_ydata(np.where(y > LOG_FLOOR, y, np.nan))
            ax.set_yscale("log")
            ax.relim()
            ax.autoscale_view()
        ax.set_xlabel("layer")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(plain(title), fontsize=10)
    return save_figure(fig, path, dpi=dpi)


def plot_bars(values: Mapping[str, float], *, ylabel: str = "", title: str | None = None,
              log_ratio: float = 100.0, path: str | os.PathLike | None = None, dpi: int = 110) -> Figure:  # fmt: skip
    """One bar per name (e.g. a metric per strategy). The axis is logarithmic when all values are positive and the
    largest is at least ``log_ratio`` times the smallest (a perplexity of 14 next to 2.9e6 stays visible), each bar
    labelled with its value."""
    if not isinstance(values, Mapping) or not values:
        raise ValueError("values is empty; pass {name: value}")
    wrong = {name: v for name, v in values.items() if isinstance(v, bool) or not hasattr(v, "__float__")}
    if wrong:
        name, value = next(iter(wrong.items()))
        raise ValueError(f"values[{name!r}]={value!r} is not a number; pass {{name: number}}")
    names = [plain(str(name)) for name in values]
    heights = np.asarray([float(v) for v in values.values()], dtype=float)
    finite = heights[np.isfinite(heights)]
    log = bool(finite.size and np.all(finite > 0) and finite.max() >= log_ratio * finite.min())
    fig = Figure(figsize=(max(4.0, 1.2 * len(names)), 3.2), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(names, heights, color="tab:blue")
    if log:
        ax.set_yscale("log")
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in heights], fontsize=7)
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    if title:
        ax.set_title(plain(title))
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return save_figure(fig, path, dpi=dpi)
