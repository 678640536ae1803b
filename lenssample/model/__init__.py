"""The model layer: where an architecture keeps its pieces (:mod:`~lenssample.model.adapters`), loading
(:mod:`~lenssample.model.loading`), reading layer outputs (:mod:`~lenssample.model.capture`) and block/cache surgery
(:mod:`~lenssample.model.surgery`). Nothing here knows about lenses, strategies or decoding."""

from lenssample.model.adapters import ADAPTERS, Adapter, ModelParts, model_parts, register_adapter
from lenssample.model.capture import LayerOutputs, position_ids_from_mask, run_layers
from lenssample.model.loading import DEFAULT_MODEL, EMBEDDED_MODELS, cache_root, load_model

__all__ = [
    "ADAPTERS",
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "Adapter",
    "LayerOutputs",
    "ModelParts",
    "cache_root",
    "load_model",
    "model_parts",
    "position_ids_from_mask",
    "register_adapter",
    "run_layers",
]
