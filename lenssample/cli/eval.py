"""``lenssample eval CONFIG.toml``: run an evaluation sweep (resumable), write the summary, tables and plots.

Under ``torchrun --nproc-per-node N -m lenssample eval CONFIG.toml`` the items are sharded across the processes.
"""

from __future__ import annotations

import argparse

from lenssample.cli import COMMANDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help=COMMANDS["eval"])
    parser.add_argument("config", help="the sweep file (see evals/configs/default.toml)")
    parser.add_argument("--out", default=None, help="results folder (default: the config's 'out')")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help="evaluate only these of the config's models (one stage; the summary covers all)")  # fmt: skip
    parser.add_argument("--lenses", nargs="+", default=None, metavar="LENS",
                        help="evaluate only these of the config's lenses (one stage; the summary covers all)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.cli.common import check_model_name
    from lenssample.eval.config import load_config
    from lenssample.eval.distributed import env_world, run_distributed
    from lenssample.eval.report import markdown
    from lenssample.eval.tasks import build_task

    config = load_config(args.config, out=args.out).staged(args.models, args.lenses)
    for spec in config.tasks:  # every task is validated before a model loads
        build_task(spec)
    for model in config.run_models:  # a model that cannot be found fails now, not after the others ran
        if not model.startswith("factory:"):
            check_model_name(model, field="models entry")
    stage = "".join(f" --{key} {' '.join(names)}" for key, names in (("models", args.models), ("lenses", args.lenses))
                    if names)  # fmt: skip
    args.resume_hint = (
        f"every finished item is kept in {config.out}; rerun `lenssample eval {args.config}"
        f"{' --out ' + args.out if args.out else ''}{stage}` to resume"
    )
    summary = run_distributed(config, progress=not args.no_progress)
    if summary is not None and env_world()[0] == 0:
        print(markdown(summary))
        print(f"records, summary.json, summary.md and plots in {config.out}")
    return 0
