"""``lenssample doctor [LENS ...]``: hash-check every cached model and lens against its manifest.

One line per item: ``ok``, ``rebuilt`` (a damaged converted model, converted again from its wheel's GGUF file),
``unchecked`` (a lens saved before lenssample wrote manifests) or ``damaged`` (with the fix). Exit status 0 when
everything is usable, 2 when something is damaged and cannot be rebuilt.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lenssample.cli import COMMANDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help=COMMANDS["doctor"], description=__doc__)
    parser.add_argument("lenses", nargs="*", metavar="LENS", help="more tuned-lens folders to check")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.model.loading import cache_root, cached_model_source, ensure_converted
    from lenssample.model.manifest import MANIFEST, folder_problem

    def folders(kind: str) -> list[Path]:
        where = cache_root() / kind  # hidden entries are locks and unfinished writes
        return sorted(p for p in where.glob("[!.]*") if p.is_dir()) if where.is_dir() else []

    damaged = 0
    for folder in folders("models"):
        try:
            problem = ensure_converted(folder, cached_model_source(folder), verify=True)
            print(f"ok         {folder}" if problem is None else f"rebuilt    {folder} (was: {problem})")
        except Exception as err:  # noqa: BLE001 - reported, and the other items still checked
            damaged += 1
            print(f"damaged    {folder}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    lenses = folders("lenses") + [Path(lens) for lens in args.lenses]
    for folder in lenses:
        if folder.is_dir() and not (folder / MANIFEST).is_file():
            print(f"unchecked  {folder} (no {MANIFEST}: saved before lenssample wrote manifests)")
        elif problem := folder_problem(folder, full=True):
            damaged += 1
            print(f"damaged    {folder}: {problem}; train it again (lenssample train-lens --out {folder})")
        else:
            print(f"ok         {folder}")
    if not folders("models") and not lenses:
        print(f"nothing cached in {cache_root()}")
    return 2 if damaged else 0
