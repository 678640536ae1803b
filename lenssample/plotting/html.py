"""A self-contained HTML logit-lens heatmap: hover a cell to see the lens's top tokens and their probabilities.

One file with inline CSS and a few lines of inline JavaScript (to switch the colouring statistic); it loads nothing
from the network and holds no URL. Every token is HTML-escaped, and ``/`` is written as ``&#47;`` so that token text
can never form ``//`` in the file.
"""

from __future__ import annotations

import html
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex

from lenssample.analysis.trajectory import Trajectory
from lenssample.plotting.figures import STATISTICS, get_statistic, last_columns, layer_label, text_color
from lenssample.validation import check_output_file

_CSS = """
body { font-family: system-ui, sans-serif; font-size: 13px; margin: 16px; }
table { border-collapse: collapse; }
td, th { padding: 2px 5px; text-align: center; white-space: pre; font-family: ui-monospace, monospace; }
td.cell { position: relative; border: 1px solid #fff; min-width: 60px; cursor: default; }
td.cell .tip { display: none; position: absolute; left: 50%; top: 100%; z-index: 10; background: #fff;
  color: #111; border: 1px solid #888; box-shadow: 2px 2px 6px rgba(0,0,0,.25); padding: 4px; text-align: left; }
td.cell:hover .tip { display: block; }
td.cell:hover { outline: 2px solid #e33; }
.tip table td { padding: 0 4px; text-align: left; }
th.layer { text-align: right; color: #555; }
th.next { color: #555; font-weight: normal; }
th.match { color: #1a7f37; font-weight: bold; }
th.input { color: #111; font-weight: normal; }
.note { color: #555; margin: 6px 0; }
"""

# Switches every cell's colours to those precomputed for the chosen statistic (data-<stat>="background text").
_JS = """
function colourBy(stat) {
  document.querySelectorAll('td.cell').forEach(function (cell) {
    var colours = cell.getAttribute('data-' + stat).split(' ');
    cell.style.background = colours[0];
    cell.style.color = colours[1];
  });
  document.querySelectorAll('.legend').forEach(function (el) {
    el.style.display = el.getAttribute('data-stat') === stat ? 'inline' : 'none';
  });
}
"""


def escape(text: str) -> str:
    """HTML-escape ``text`` (quotes included) and write ``/`` as an entity, so no URL can form."""
    return html.escape(str(text), quote=True).replace("/", "&#47;")


def trajectory_html(traj: Trajectory, *, stat: str = "prob", max_positions: int = 200, title: str | None = None,
                    path: str | os.PathLike | None = None) -> str:  # fmt: skip
    """Render a trajectory as one self-contained HTML page; returns its text.

    Rows are layers (final layer on top, embedding at the bottom), columns positions; each cell shows the lens's
    top-1 token, coloured by ``stat`` (switchable in the page), and on hover the top-k tokens with their
    probabilities and the cell's statistics. ``stat`` is the initial colouring; window ``traj`` first to choose
    columns (at most ``max_positions``, the last ones). ``path``: also write the page there (``.html``).
    """
    get_statistic(stat)
    traj = last_columns(traj, max_positions)
    out_path = check_output_file(path, suffixes=(".html", ".htm")) if path is not None else None
    n_layers, n_cols = traj.top_probs.shape
    colours, legends = {}, []
    for name, statistic in STATISTICS.items():
        values = statistic.values(traj)
        norm = statistic.norm(values)
        cmap = colormaps[statistic.cmap]
        colours[name] = np.empty(values.shape, dtype=object)
        for index, value in np.ndenumerate(values):
            rgba = cmap(norm(value)) if np.isfinite(value) else None
            colours[name][index] = "#dddddd #000" if rgba is None else f"{to_hex(rgba)} {text_color(rgba)}"
        display = "inline" if name == stat else "none"
        legends.append(
            f'<span class="legend" data-stat="{name}" style="display:{display}">{escape(statistic.label)}: '
            f"bright = {'high' if statistic.cmap == 'viridis' else 'low'}, range "
            f"{statistic.fmt.format(norm.vmin)} to {statistic.fmt.format(norm.vmax)}</span>"
        )

    heading = title or f"{traj.lens_name}: top-1 token per layer and position"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(heading)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_JS}</script>",
        "</head><body>",
        f"<h3>{escape(heading)}</h3>",
        f'<div class="note">positions {traj.positions[0]}–{traj.positions[-1]} of {len(traj.input_ids)} tokens; '
        'hover a cell for its top tokens. Colour by: <select onchange="colourBy(this.value)">',
    ]
    parts.extend(
        f'<option value="{name}"{" selected" if name == stat else ""}>{name}</option>' for name in STATISTICS
    )
    parts += ["</select> " + " ".join(legends) + "</div>", "<table>", '<tr><th class="layer">next</th>']
    for token, match in zip(traj.next_tokens, traj.matches):
        parts.append(
            f'<th class="{"match" if match else "next"}">{escape(token)}{" ✓" if match else ""}</th>'
        )
    parts.append("</tr>")
    for r in sorted(range(n_layers), key=lambda i: -traj.layers[i]):  # final layer on top
        parts.append(f'<tr><th class="layer">{layer_label(traj.layers[r], traj.num_layers)}</th>')
        parts.extend(_cell(traj, r, c, colours, stat) for c in range(n_cols))
        parts.append("</tr>")
    parts.append('<tr><th class="layer">input</th>')
    parts.extend(f'<th class="input">{escape(token)}</th>' for token in traj.input_tokens)
    parts += [
        "</tr></table>",
        '<div class="note">✓ = the final layer\'s top-1 token is the actual next token. KL, entropy and '
        "cross-entropy in nats; rank 1 = the final layer's top token is this layer's top token.</div>",
        "</body></html>",
    ]
    text = "\n".join(parts)
    if out_path is not None:
        out_path.write_text(text, encoding="utf-8")
    return text


def _cell(traj: Trajectory, r: int, c: int, colours: dict[str, np.ndarray], stat: str) -> str:
    data = " ".join(f'data-{name}="{colours[name][r, c]}"' for name in STATISTICS)
    background, foreground = colours[stat][r, c].split(" ")
    rows = "".join(
        f"<tr><td>{escape(token)}</td><td>{prob:.3f}</td></tr>"
        for token, prob in zip(traj.topk_tokens[r, c], traj.topk_probs[r, c])
    )
    xent = traj.xent[r, c]
    stats = (
        f"layer {traj.layers[r]}, position {traj.positions[c]}<br>p(top-1) {traj.top_probs[r, c]:.3f} · "
        f"final's rank {int(traj.final_rank[r, c])} · KL {traj.kl[r, c]:.2f} · entropy {traj.entropy[r, c]:.2f}"
        + (f" · xent {xent:.2f}" if np.isfinite(xent) else "")
    )
    return (
        f'<td class="cell" {data} style="background:{background};color:{foreground}">'
        f"{escape(traj.top_tokens[r, c])}"
        f'<div class="tip">{stats}<table>{rows}</table></div></td>'
    )
