"""``lenssample demo``: the main job of the README: a logit-lens table and lens-decoded generations."""

from __future__ import annotations

import argparse
import time

from lenssample.cli import COMMANDS
from lenssample.cli.common import add_model_args, check_positive, load
from lenssample.decoding.settings import DEFAULT_MAX_NEW_TOKENS

DEMO_PROMPT = "The capital of France is"
DEMO_STRATEGIES = ("final", "dola:layers=high", "window", "layer:layer=-3")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help=COMMANDS["demo"])
    add_model_args(parser, lens=False)
    parser.add_argument("--prompt", default=DEMO_PROMPT)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                        help=f"tokens per generation (default: {DEFAULT_MAX_NEW_TOKENS}, as for generate)")  # fmt: skip
    parser.set_defaults(func=run)


def show(model, tokenizer, prompt: str, max_new_tokens: int, lens=None, strategies=DEMO_STRATEGIES) -> None:
    """The lens table of ``prompt`` (last 6 positions; every ~L/8 layers and the final one) and one generation per
    strategy, with its speed."""
    from lenssample.analysis.trajectory import trajectory
    from lenssample.api import DOLA_REPETITION_PENALTY, generate
    from lenssample.plotting.text import text_table

    num_layers = model.config.num_hidden_layers
    layers = sorted(set(range(0, num_layers, max(1, num_layers // 8))) | {num_layers})
    ids = tokenizer(prompt, return_tensors="pt").input_ids[0]
    traj = trajectory(
        model, tokenizer, ids, lens=lens, layers=layers, positions=range(max(0, len(ids) - 6), len(ids))
    )
    print(text_table(traj, "prob") + "\n")  # the layout of `lenssample lens TEXT`
    for spec in strategies:
        # DoLa with its authors' generation setting (the others decode plainly)
        penalty = DOLA_REPETITION_PENALTY if spec.startswith("dola") else None
        start = time.perf_counter()
        out = generate(model, prompt, spec, tokenizer=tokenizer, lens=lens, max_new_tokens=max_new_tokens,
                       repetition_penalty=penalty)  # fmt: skip
        per_token = 1000 * (time.perf_counter() - start) / out.new_tokens.shape[1]
        print(f"{spec:<18} ({per_token:3.0f} ms/token)  {prompt}{out.texts(tokenizer)[0]!r}")
    print()


def run(args: argparse.Namespace) -> int:
    from lenssample.lens.tuned import TunedLens, default_lens_path

    check_positive(args.max_new_tokens, "--max-new-tokens")
    if not args.prompt:
        raise ValueError("--prompt is empty; pass some text")
    start = time.perf_counter()
    model, tokenizer = load(args)
    num_layers = model.config.num_hidden_layers
    print(
        f"model: {model.config.model_type}, {num_layers} layers (loaded in {time.perf_counter() - start:.1f} s)\n"
    )
    print(
        f"Logit lens on {args.prompt!r}: each layer's top-1 token and its probability at the last positions:\n"
    )
    show(model, tokenizer, args.prompt, args.max_new_tokens)
    path = default_lens_path(args.model)
    if not path.is_dir():
        print(
            f"(no tuned lens at {path}; `lenssample train-lens` trains one in minutes and the demo uses it)"
        )
        return 0
    print(f"Tuned lens ({path}) on {args.prompt!r}:\n")
    show(model, tokenizer, args.prompt, args.max_new_tokens, lens=TunedLens.load(path, model, verify=args.verify),
         strategies=(f"layer:layer={num_layers * 3 // 4}",))  # fmt: skip
    return 0
