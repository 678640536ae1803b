"""``lenssample lens "text"``: the logit-lens (or tuned-lens) heatmap of a text, as PNG, SVG, PDF or HTML."""

from __future__ import annotations

import argparse

from lenssample.cli import COMMANDS
from lenssample.cli.common import add_model_args, check_positive, lens_from_args, load

OUT_SUFFIXES = (".png", ".svg", ".pdf", ".html", ".htm")
# Columns shown when no window is asked for, and the most an explicit window may ask for, per output kind: a PNG
# cell needs ~0.7 inch to stay readable, a browser scrolls.
DEFAULT_COLUMNS = {"text": 8, "image": 24, "html": 200}
MAX_COLUMNS = {"text": 40, "image": 120, "html": 2000}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lens", help=COMMANDS["lens"])
    parser.add_argument("text", help="the text to look at")
    add_model_args(parser)
    parser.add_argument("--stat", default="prob", help="colour by prob (default), rank, kl, entropy or xent")
    parser.add_argument(
        "--out", default=None, help="FILE.png, .svg, .pdf or .html (default: print a text table)"
    )
    parser.add_argument("--layers", default=None, help="comma-separated layer numbers (default: all)")
    parser.add_argument("--last", type=int, default=None, help="show only the last N positions")
    parser.add_argument(
        "--start", type=int, default=None, help="first position shown (negative: from the end)"
    )
    parser.add_argument("--end", type=int, default=None, help="one past the last position shown")
    parser.add_argument("--top-k", type=int, default=5, help="top tokens per cell in the HTML tooltips")
    parser.add_argument("--window", type=int, default=None, metavar="N", help="read the text in windows of N tokens, "
                        "each adding N/2 new positions (texts longer than the model's positions; every position "
                        "then sees at least N/2 tokens of context); default: the whole text at once")  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.analysis.trajectory import trajectory
    from lenssample.plotting.figures import get_statistic, plot_trajectory
    from lenssample.plotting.html import trajectory_html
    from lenssample.plotting.text import text_table
    from lenssample.validation import check_output_file

    # Every check that needs no model first, so bad input fails before the model loads.
    if not args.text:
        raise ValueError("text is empty; pass some text to look at")
    get_statistic(args.stat)
    if args.out is not None:
        check_output_file(args.out, suffixes=OUT_SUFFIXES, field="--out")
    if args.last is not None and (args.start is not None or args.end is not None):
        raise ValueError("--last cannot be combined with --start/--end; pass one way of choosing positions")
    if args.last is not None:
        check_positive(args.last, "--last")
    check_positive(args.top_k, "--top-k")
    if args.window is not None:
        check_positive(args.window, "--window", low=2)
    try:
        parts = None if args.layers is None else args.layers.split(",")
        if parts is not None and len(parts) > 1 and not all(part.strip() for part in parts):
            raise ValueError("an empty item")  # "1,,2": a number left out, not a list of two
        layers = None if parts is None else [int(part) for part in parts if part.strip()]
    except ValueError as err:
        raise ValueError(
            f"--layers {args.layers!r}: pass comma-separated layer numbers, e.g. --layers 0,10,20,30"
        ) from err
    model, tokenizer = load(args)
    ids = tokenizer(args.text, return_tensors="pt").input_ids[0]
    kind = "text" if args.out is None else "html" if args.out.lower().endswith((".html", ".htm")) else "image"
    positions = choose_positions(args, len(ids), kind)
    traj = trajectory(model, tokenizer, ids, lens=lens_from_args(args, model), layers=layers, positions=positions,
                      top_k=args.top_k, window=args.window)  # fmt: skip
    if kind == "text":
        print(text_table(traj, args.stat))
        return 0
    draw = trajectory_html if kind == "html" else plot_trajectory
    draw(traj, stat=args.stat, path=args.out, max_positions=len(positions))
    print(f"wrote {args.out} (positions {positions[0]}..{positions[-1]} of {len(ids)} tokens)")
    return 0


def choose_positions(args: argparse.Namespace, seq: int, kind: str) -> list[int]:
    """The positions to show: ``--last N``, ``--start/--end``, or by default the last few (long texts)."""
    if args.last is not None:
        positions = list(range(max(0, seq - args.last), seq))
    elif args.start is not None or args.end is not None:
        positions = list(range(*slice(args.start, args.end).indices(seq)[:2]))
    else:
        positions = list(range(max(0, seq - DEFAULT_COLUMNS[kind]), seq))
    if not positions:
        raise ValueError(
            f"--start {args.start} --end {args.end} selects no position of the text's {seq} tokens; "
            f"pick a range inside 0..{seq}"
        )
    if len(positions) > MAX_COLUMNS[kind]:
        raise ValueError(
            f"{len(positions)} positions are too many for {kind} output (at most {MAX_COLUMNS[kind]}); "
            "pass a smaller window with --last or --start/--end, or write .html"
        )
    return positions
