"""A tuned-lens training run's checkpoints: written atomically, locked against a second run, read back to resume.

``data.safetensors`` holds the sampled residual streams and the closed-form fit (written once), ``state.safetensors``
the translators, AdamW moments, step and the sampler's RNG state; both carry the run's fingerprint in their
metadata (see :mod:`lenssample.lens.train`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lenssample.lens.tuned import TunedLens


def save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def lock_checkpoints(folder: Path) -> FileLock:
    """Hold ``folder``'s lock for this run (refused at once while another run holds it: two runs writing the same
    checkpoints would overwrite each other's)."""
    lock = FileLock(folder / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(
            f"checkpoint_dir={str(folder)!r} is in use by another training run; wait for it to finish or pass "
            "another checkpoint_dir (--checkpoint-dir)"
        ) from None
    return lock


def read_checkpoint(path: Path, fingerprint: str | None = None) -> dict[str, Any] | None:
    """The tensors of a checkpoint file (with this run's ``fingerprint``, unless ``None``), its metadata under
    ``"metadata"``; ``None`` when there is no file."""
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if fingerprint is not None and metadata.get("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint {str(path)!r} belongs to a run with other settings, model or data; pass a new "
            "checkpoint_dir (--checkpoint-dir), or resume=False (--no-resume) to start over"
        )
    return {**load_file(str(path)), "metadata": metadata}


@torch.no_grad()
def set_translators(lens: TunedLens, weight: torch.Tensor, bias: torch.Tensor) -> TunedLens:
    lens.weight.copy_(weight)
    lens.bias.copy_(bias)
    return lens


def state_tensors(
    lens: TunedLens, optimizer: torch.optim.Optimizer, generator: torch.Generator, step: int
) -> dict[str, torch.Tensor]:
    tensors = {
        "weight": lens.weight.detach().cpu(),
        "bias": lens.bias.detach().cpu(),
        "rng": generator.get_state(),
        "step": torch.tensor([step], dtype=torch.int64),
    }
    for name, param in (("weight", lens.weight), ("bias", lens.bias)):
        state = optimizer.state.get(param, {})
        if state:
            tensors[f"adam.{name}.step"] = (
                torch.as_tensor(state["step"], dtype=torch.float32).reshape(1).cpu()
            )
            tensors[f"adam.{name}.exp_avg"] = state["exp_avg"].detach().cpu()
            tensors[f"adam.{name}.exp_avg_sq"] = state["exp_avg_sq"].detach().cpu()
    return tensors


def load_state(state: dict[str, torch.Tensor], lens: TunedLens, optimizer: torch.optim.Optimizer,
                generator: torch.Generator) -> int:  # fmt: skip
    device = lens.weight.device
    set_translators(lens, state["weight"], state["bias"])
    for name, param in (("weight", lens.weight), ("bias", lens.bias)):
        if f"adam.{name}.step" in state:
            optimizer.state[param] = {
                "step": state[f"adam.{name}.step"].reshape(()),
                "exp_avg": state[f"adam.{name}.exp_avg"].to(device),
                "exp_avg_sq": state[f"adam.{name}.exp_avg_sq"].to(device),
            }
    generator.set_state(state["rng"])
    return int(state["step"].item())


def closed_form_lens(checkpoint_dir: str | os.PathLike, model: nn.Module) -> TunedLens:
    """The closed-form starting lens of a run (the ridge fit; identity where that loses on held-out positions).

    Read from the run's ``data.safetensors``, so it costs no model pass; useful as a baseline in comparisons.
    """
    path = Path(checkpoint_dir) / "data.safetensors"
    data = read_checkpoint(path)
    if data is None:
        raise FileNotFoundError(f"{str(path)!r} is missing; pass the checkpoint_dir of a training run")
    lens = TunedLens(model, placement=data["metadata"].get("placement", "before_norm"))
    if tuple(data["start_weight"].shape) != tuple(lens.weight.shape):
        raise ValueError(
            f"{str(path)!r} holds translators of shape {tuple(data['start_weight'].shape)}, not for this model"
        )
    set_translators(lens, data["start_weight"], data["start_bias"])
    lens.training_info = {"closed_form": True, "steps": 0, "from": str(path)}
    return lens
