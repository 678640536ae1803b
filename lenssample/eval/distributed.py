"""Sharded sweeps with ``torch.distributed``: each process evaluates items ``rank::world_size`` of every task and
appends its own ``records.rankR.jsonl``; after a barrier, rank 0 builds the summary from all records. Because every
item is evaluated alone (batch 1) and the summary depends only on the set of records, the merged result is the one
a single process gives.

Launch with ``torchrun`` (``gloo`` on CPU, ``nccl`` on GPU; each rank then uses ``cuda:LOCAL_RANK``)::

    torchrun --nproc-per-node 2 -m lenssample eval evals/configs/default.toml

or from Python with :func:`spawn_sweep` (``torch.multiprocessing.spawn``, a file rendezvous, gloo).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lenssample.eval.config import load_config
from lenssample.eval.runs import load_by_name, run_sweep
from lenssample.validation import check_int


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` when not launched by it)."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def _load_on(device: str | None, name: str) -> tuple[Any, Any]:
    model, tokenizer = load_by_name(name)
    return (model if device is None else model.to(device)), tokenizer


def run_distributed(config, *, progress: bool = True, on_record=None) -> dict[str, Any] | None:
    """Run a sweep in this process as one rank of a torchrun job (or alone when ``WORLD_SIZE`` is unset)."""
    rank, world, local_rank = env_world()
    if world == 1:
        return run_sweep(config, progress=progress, on_record=on_record)
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = f"cuda:{local_rank}" if cuda else None
    if cuda:
        torch.cuda.set_device(local_rank)
    try:
        return run_sweep(config, rank=rank, world_size=world, loader=functools.partial(_load_on, device),
                         progress=progress and rank == 0, on_record=on_record, barrier=dist.barrier)  # fmt: skip
    finally:
        dist.destroy_process_group()


def _worker(
    rank: int, world: int, rendezvous: str, config_path: str, out: str | None, threads: int | None
) -> None:
    if threads:
        torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        config = load_config(config_path, out=out)
        run_sweep(config, rank=rank, world_size=world, progress=False, barrier=dist.barrier)
    finally:
        dist.destroy_process_group()


def spawn_sweep(
    config_path: str | Path, world_size: int, *, out: str | Path | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Run a sweep in ``world_size`` spawned CPU processes (gloo) and return the merged summary."""
    check_int(world_size, field="world_size", low=1)
    config = load_config(config_path, out=out)
    with tempfile.TemporaryDirectory() as tmp:
        rendezvous = str(Path(tmp) / "rendezvous")
        args = (world_size, rendezvous, str(config_path), None if out is None else str(out), threads)
        torch.multiprocessing.spawn(_worker, args=args, nprocs=world_size, join=True)
    return json.loads((config.out / "summary.json").read_text(encoding="utf-8"))
