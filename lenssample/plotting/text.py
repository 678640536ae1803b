"""Text pictures: the lens's view of a text as a table of top-1 tokens per layer (rows) and position (columns)."""

from __future__ import annotations

from lenssample.analysis.trajectory import Trajectory
from lenssample.plotting.figures import Statistic, get_statistic


def text_table(traj: Trajectory, statistic: Statistic | str = "prob", width: int = 12) -> str:
    """Top-1 token and the chosen statistic per layer (rows, final on top) and position (columns)."""
    statistic = get_statistic(statistic) if isinstance(statistic, str) else statistic
    values = statistic.values(traj)
    cell = width + 7
    lines = [
        "layer".rjust(6) + "".join(t.rjust(cell) for t in traj.input_tokens),
        "next".rjust(6)
        + "".join((t + ("*" if m else "")).rjust(cell) for t, m in zip(traj.next_tokens, traj.matches)),
    ]
    for r in sorted(range(len(traj.layers)), key=lambda i: -traj.layers[i]):
        cells = [
            f"{traj.top_tokens[r, c]} {statistic.fmt.format(values[r, c])}".rjust(cell)
            for c in range(len(traj.positions))
        ]
        lines.append(str(traj.layers[r]).rjust(6) + "".join(cells))
    lines.append(f"({statistic.label}; * = the final layer predicts the next token)")
    return "\n".join(lines)
