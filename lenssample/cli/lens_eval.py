"""``lenssample lens-eval``: logit lens vs tuned lens (and other saved lenses), per layer, on held-out text."""

from __future__ import annotations

import argparse

from lenssample.cli import COMMANDS
from lenssample.cli.common import add_data_arg, add_model_args, check_positive, load, texts_from_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lens-eval", help=COMMANDS["lens-eval"])
    add_model_args(parser, lens=False)
    parser.add_argument("--lens", required=True, help="folder of a saved tuned lens")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                        help="another saved lens to add as a column (repeatable), e.g. closed-form=lenses/ridge")  # fmt: skip
    add_data_arg(parser, "held-out", "mixed")
    parser.add_argument("--positions", type=int, default=1024, help="positions to average over")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--out", default="evals/results/tuned_lens_eval.json", help="JSON results")
    parser.add_argument("--plot", default=None, help="PNG plot (default: next to --out, .png)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.analysis.lens_eval import compare_lenses
    from lenssample.data.windows import token_windows
    from lenssample.lens.base import LogitLens
    from lenssample.lens.tuned import TunedLens
    from lenssample.model.loading import DEFAULT_MODEL
    from lenssample.plotting.figures import IMAGE_SUFFIXES, plot_layer_curves
    from lenssample.validation import check_output_file

    check_positive(args.positions, "--positions")
    check_positive(args.seq_len, "--seq-len", low=8)  # token_windows' shortest window
    compare = [spec.partition("=") for spec in args.compare]
    for spec, (name, sep, folder) in zip(args.compare, compare):
        if not sep or not name or not folder:
            raise ValueError(f"--compare {spec!r}: write NAME=DIR, e.g. closed-form=lenses/ridge")
    out = check_output_file(args.out, suffixes=(".json",), field="--out")  # before any work
    plot = check_output_file(args.plot or out.with_suffix(".png"), suffixes=IMAGE_SUFFIXES, field="--plot")
    texts = texts_from_arg(args.data, "heldout")
    model, tokenizer = load(args)
    lenses = {"logit": LogitLens(model), "tuned": TunedLens.load(args.lens, model, verify=args.verify)}
    lenses.update((name, TunedLens.load(folder, model, verify=args.verify)) for name, _, folder in compare)
    windows = token_windows(texts, tokenizer, seq_len=args.seq_len)
    result = compare_lenses(model, lenses, windows, max_positions=args.positions)
    result.save_json(args.out, model=str(getattr(model.config, "_name_or_path", "")), data=args.data,
                     lens=str(args.lens), training=lenses["tuned"].training_info)  # fmt: skip
    title = f"{args.model or DEFAULT_MODEL} ({model.config.model_type}), {result.positions} held-out positions of {args.data}"
    plot_layer_curves(
        result.metrics, layers=result.layers, metrics=("kl", "agreement"), path=plot, title=title
    )
    table = result.markdown()
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nresults: {out} (table: {out.with_suffix('.md')})\nplot: {plot}")
    return 0
