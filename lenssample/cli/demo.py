"""``lenssample demo``: the main job of the README: a logit-lens table and lens-decoded generations."""

from __future__ import annotations

import argparse
import time

from lenssample.cli.common import add_model_args, load

DEMO_PROMPT = "The capital of France is"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="show the logit lens and lens decoders on the default model")
    add_model_args(parser)
    parser.add_argument("--prompt", default=DEMO_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.set_defaults(func=run)


def demo_strategies(num_layers: int) -> list:
    """The strategies the demo compares: the model itself and lens decoders reading intermediate layers."""
    from lenssample.strategies.base import FinalLayer, SingleLayer
    from lenssample.strategies.dola import DoLa
    from lenssample.strategies.ensemble import LayerWindow

    return [FinalLayer(), DoLa(layers="high"), LayerWindow(), SingleLayer(layer=num_layers - 2)]


def run(args: argparse.Namespace) -> int:
    from lenssample.adapters import model_parts
    from lenssample.decoding.api import generate
    from lenssample.lens.table import lens_table

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: must be >= 1")
    start = time.perf_counter()
    model, tokenizer = load(args)
    num_layers = model_parts(model).num_layers
    print(
        f"model: {model.config.model_type}, {num_layers} layers (loaded in {time.perf_counter() - start:.1f} s)\n"
    )
    print(f"Logit lens on {args.prompt!r}: top-1 token and its probability, per layer (rows) and position:\n")
    print(lens_table(model, tokenizer, args.prompt))
    print()
    for strategy in demo_strategies(num_layers):
        start = time.perf_counter()
        out = generate(
            model, args.prompt, tokenizer=tokenizer, strategy=strategy, max_new_tokens=args.max_new_tokens
        )
        elapsed = time.perf_counter() - start
        per_token = 1000 * elapsed / out.new_tokens.shape[1]
        print(f"[{strategy.to_dict()}] ({per_token:.0f} ms/token)")
        print(f"  {args.prompt}{out.texts(tokenizer)[0]!r}\n")
    show_tuned_lens(args, model, tokenizer, num_layers)
    return 0


def show_tuned_lens(args: argparse.Namespace, model, tokenizer, num_layers: int) -> None:
    """When a tuned lens was trained for this model (``lenssample train-lens``), decode through it too."""
    from lenssample.decoding.api import generate
    from lenssample.lens.table import lens_table
    from lenssample.lens.tuned import TunedLens, default_lens_path
    from lenssample.strategies.base import SingleLayer

    path = default_lens_path(args.model)
    if not path.is_dir():
        print(
            f"(no tuned lens at {path}; `lenssample train-lens` trains one in minutes and the demo uses it)"
        )
        return
    lens = TunedLens.load(path, model)
    print(f"Tuned lens ({path}) on {args.prompt!r}:\n")
    print(lens_table(model, tokenizer, args.prompt, lens=lens))
    print()
    strategy = SingleLayer(layer=num_layers * 3 // 4)
    out = generate(
        model,
        args.prompt,
        tokenizer=tokenizer,
        strategy=strategy,
        lens=lens,
        max_new_tokens=args.max_new_tokens,
    )
    print(f"[{strategy.to_dict()} through the tuned lens]")
    print(f"  {args.prompt}{out.texts(tokenizer)[0]!r}\n")
