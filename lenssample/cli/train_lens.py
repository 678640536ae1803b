"""``lenssample train-lens``: train a tuned lens for a model on real text and save it."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lenssample.cli.common import add_model_args, load, texts_from_arg

DEFAULT_TRAIN_DATA = "mixed"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-lens", help="train a tuned lens (CPU, minutes) and save it")
    add_model_args(parser)
    parser.add_argument(
        "--data",
        default=DEFAULT_TRAIN_DATA,
        help="a packaged corpus (train split): 'books' (public-domain novels), 'wikipedia' or 'mixed' (both); "
        f"or a UTF-8 text file (default: {DEFAULT_TRAIN_DATA})",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: ~/.cache/lenssample/lenses/<model>, used by demo)",
    )
    parser.add_argument(
        "--steps", type=int, default=250, help="KL fine-tuning steps after the closed-form fit"
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument(
        "--batch-positions", type=int, default=32, help="positions per step (all layers each)"
    )
    parser.add_argument("--max-tokens", type=int, default=32768, help="training tokens run through the model")
    parser.add_argument(
        "--cache-positions", type=int, default=8192, help="positions kept (all layers) for the KL fine-tuning"
    )
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--placement",
        choices=("after-norm", "before-norm"),
        default="after-norm",
        help="translate the final-normed state (default) or the raw residual stream (the tuned-lens paper)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="resumable checkpoints (default: OUT.checkpoints, removed on success)",
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints and start over")
    parser.add_argument(
        "--save-closed-form",
        default=None,
        metavar="DIR",
        help="also save the closed-form starting lens (a baseline)",
    )
    parser.add_argument("--half", action="store_true", help="store the lens in float16 (half the size)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from lenssample.lens.train import closed_form_lens, train_tuned_lens
    from lenssample.lens.tuned import default_lens_path

    for name in ("steps", "batch_positions", "max_tokens", "cache_positions", "seq_len", "checkpoint_every"):
        minimum = 0 if name == "steps" else 1
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= {minimum}")
    texts = texts_from_arg(args.data, "train")  # checked before the model loads
    out = Path(args.out) if args.out else default_lens_path(args.model)
    checkpoints = (
        Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.name + ".checkpoints")
    )
    model, tokenizer = load(args)
    lens = train_tuned_lens(
        model,
        texts,
        tokenizer=tokenizer,
        steps=args.steps,
        lr=args.lr,
        batch_positions=args.batch_positions,
        max_tokens=args.max_tokens,
        cache_positions=args.cache_positions,
        seq_len=args.seq_len,
        seed=args.seed,
        placement=args.placement.replace("-", "_"),
        checkpoint_dir=checkpoints,
        checkpoint_every=args.checkpoint_every,
        resume=not args.no_resume,
    )
    lens.training_info["data"] = args.data  # which corpus (or file) the lens was trained on
    lens.save(out, dtype=torch.float16 if args.half else torch.float32)
    if args.save_closed_form:
        closed_form_lens(checkpoints, model).save(args.save_closed_form)
    if not args.checkpoint_dir:
        shutil.rmtree(checkpoints, ignore_errors=True)
    info = lens.training_info
    summary = {k: info[k] for k in ("train_tokens", "steps", "wall_seconds", "cpu_seconds", "peak_rss_mb")}
    print(f"saved tuned lens to {out}")
    print(json.dumps(summary))
    print("held-out KL(final || lens) per layer: logit lens / closed form / tuned")
    for layer, values in enumerate(
        zip(info["heldout_kl_logit"], info["heldout_kl_closed_form"], info["heldout_kl_tuned"])
    ):
        print(f"  {layer:3d}  " + "  ".join(f"{v:8.3f}" for v in values))
    return 0
