"""``lenssample train-lens``: train a tuned lens for a model on real text and save it."""

from __future__ import annotations

import argparse
import json
import shutil

from lenssample.cli import COMMANDS
from lenssample.cli.common import (
    add_data_arg,
    add_dataclass_args,
    add_model_args,
    dataclass_from_args,
    load,
    texts_from_arg,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from lenssample.lens.train import TrainConfig

    parser = subparsers.add_parser("train-lens", help=COMMANDS["train-lens"])
    add_model_args(parser, lens=False)
    add_data_arg(parser, "train", "mixed")
    parser.add_argument("--out", default=None,
                        help="output folder (default: ~/.cache/lenssample/lenses/<model>, used by demo)")  # fmt: skip
    add_dataclass_args(parser, TrainConfig)  # the recipe: --steps, --lr, --placement, ...
    parser.add_argument("--checkpoint-dir", default=None,
                        help="resumable checkpoints (default: OUT.checkpoints, removed on success)")  # fmt: skip
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints and start over")
    parser.add_argument("--save-closed-form", default=None, metavar="DIR",
                        help="also save the closed-form starting lens (a baseline)")  # fmt: skip
    parser.add_argument("--half", action="store_true", help="store the lens in float16 (half the size)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from lenssample.lens.checkpoints import closed_form_lens
    from lenssample.lens.train import TrainConfig, train_tuned_lens
    from lenssample.lens.tuned import default_lens_path
    from lenssample.validation import check_output_folder

    config = dataclass_from_args(args, TrainConfig)  # validated before the model loads
    out = check_output_folder(args.out or default_lens_path(args.model), field="--out")  # before any work
    checkpoints = check_output_folder(args.checkpoint_dir or out.with_name(out.name + ".checkpoints"),
                                      field="--checkpoint-dir")  # fmt: skip
    if args.save_closed_form:
        check_output_folder(args.save_closed_form, field="--save-closed-form")
    args.resume_hint = f"checkpoints are in {checkpoints}; rerun the command (without --no-resume) to resume"
    texts = texts_from_arg(args.data, "train")
    model, tokenizer = load(args)
    lens = train_tuned_lens(model, texts, config, tokenizer=tokenizer, checkpoint_dir=checkpoints,
                            resume=not args.no_resume)  # fmt: skip
    lens.training_info["data"] = args.data  # which corpus (or file) the lens was trained on
    lens.save(out, dtype=torch.float16 if args.half else torch.float32)
    if args.save_closed_form:
        closed_form_lens(checkpoints, model).save(args.save_closed_form)
    if not args.checkpoint_dir:
        shutil.rmtree(checkpoints, ignore_errors=True)
    info = lens.training_info
    print(f"saved tuned lens to {out}")
    print(
        json.dumps(
            {k: info[k] for k in ("train_tokens", "steps", "wall_seconds", "cpu_seconds", "peak_rss_mb")}
        )
    )
    print("held-out KL(final || lens) per layer: logit lens / closed form / tuned")
    kls = zip(info["heldout_kl_logit"], info["heldout_kl_closed_form"], info["heldout_kl_tuned"])
    for layer, values in enumerate(kls):
        print(f"  {layer:3d}  " + "  ".join(f"{v:8.3f}" for v in values))
    return 0
