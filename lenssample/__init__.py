"""lenssample: decode from a language model's intermediate layers.

Public API::

    model, tokenizer = lenssample.load_model()            # embedded SmolLM2-135M-Instruct
    out = lenssample.generate(model, "Hello", "dola:layers=high", tokenizer=tokenizer)
    out = lenssample.generate(model, "Hello", tokenizer=tokenizer, schedule="early-exit:threshold=0.9")
    model.generate(ids, custom_generate=lenssample.custom_generate("dola:layers=high"))   # transformers 5
    table = lenssample.apply_lens(model, input_ids)       # logit lens, layers x positions
    scores = lenssample.score(model, input_ids, strategy)  # teacher-forced log-probs
    traj = lenssample.trajectory(model, tokenizer, "some text")  # per-layer statistics for pictures

Packages, bottom to top (imports only point down): ``model`` (adapters, loading, layer capture, surgery) ->
``lens`` -> ``strategies`` -> ``decoding`` / ``scoring`` -> ``schedules`` -> ``api`` -> ``analysis``,
``plotting``, ``eval``, ``integrations`` -> ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The public names are imported on first use (PEP 562), so `import lenssample.cli` (the command line's --help, its
# argument errors, Ctrl-C at start-up) does not wait seconds for torch and transformers.
_EXPORTS = {
    "hf": ("lenssample.hf", None),  # the deprecated lenssample.hf.decoder path keeps working
    "Trajectory": ("lenssample.analysis.trajectory", "Trajectory"),
    "trajectory": ("lenssample.analysis.trajectory", "trajectory"),
    "custom_generate": ("lenssample.api", "decoder"),
    "generate": ("lenssample.api", "generate"),
    **{name: ("lenssample.decoding", name) for name in ("DecodingSettings", "GenerateOutput", "Trace")},
    **{name: ("lenssample.lens", name) for name in ("Lens", "LensOutput", "LogitLens", "TunedLens", "apply_lens")},
    **{name: ("lenssample.model.adapters", name) for name in ("ADAPTERS", "Adapter", "register_adapter")},
    **{name: ("lenssample.model.loading", name) for name in ("EMBEDDED_MODELS", "load_model")},
    **{name: ("lenssample.schedules", name) for name in (
        "SCHEDULES", "Agreement", "EarlyExit", "Entropy", "LayerDraft", "Margin", "MaxProb", "Saturation", "Schedule",
        "SelfSpeculative", "SkipDraft", "register_schedule")},  # fmt: skip
    **{name: ("lenssample.scoring", name) for name in ("ScoreOutput", "score")},
    **{name: ("lenssample.strategies", name) for name in (
        "SLED", "STRATEGIES", "AutoContrastive", "DoLa", "DoLaReference", "DoLaStatic", "FinalLayer", "LayerContrast",
        "LayerEnsemble", "LayerWindow", "SingleLayer", "Strategy", "StrategyOutput", "register_strategy",
        "strategy_from_name")},  # fmt: skip
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = importlib.import_module(module)
        value = value if attr is None else getattr(value, attr)
    else:  # a subpackage, as `lenssample.analysis.trajectory(...)` after `import lenssample` reads it
        try:
            if name.startswith("__"):
                raise ModuleNotFoundError(name=f"{__name__}.{name}")
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'lenssample' has no attribute {name!r}") from None
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what static tools see
    from lenssample import hf  # noqa: F401  (the deprecated lenssample.hf.decoder path keeps working)
    from lenssample.analysis.trajectory import Trajectory, trajectory
    from lenssample.api import decoder as custom_generate
    from lenssample.api import generate
    from lenssample.decoding import DecodingSettings, GenerateOutput, Trace
    from lenssample.lens import Lens, LensOutput, LogitLens, TunedLens, apply_lens
    from lenssample.model.adapters import ADAPTERS, Adapter, register_adapter
    from lenssample.model.loading import EMBEDDED_MODELS, load_model
    from lenssample.schedules import (
        SCHEDULES,
        Agreement,
        EarlyExit,
        Entropy,
        LayerDraft,
        Margin,
        MaxProb,
        Saturation,
        Schedule,
        SelfSpeculative,
        SkipDraft,
        register_schedule,
    )
    from lenssample.scoring import ScoreOutput, score
    from lenssample.strategies import (
        SLED,
        STRATEGIES,
        AutoContrastive,
        DoLa,
        DoLaReference,
        DoLaStatic,
        FinalLayer,
        LayerContrast,
        LayerEnsemble,
        LayerWindow,
        SingleLayer,
        Strategy,
        StrategyOutput,
        register_strategy,
        strategy_from_name,
    )

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Agreement",
    "AutoContrastive",
    "DecodingSettings",
    "DoLa",
    "DoLaReference",
    "DoLaStatic",
    "EMBEDDED_MODELS",
    "EarlyExit",
    "Entropy",
    "FinalLayer",
    "GenerateOutput",
    "LayerContrast",
    "LayerDraft",
    "LayerEnsemble",
    "LayerWindow",
    "Lens",
    "LensOutput",
    "LogitLens",
    "Margin",
    "MaxProb",
    "SCHEDULES",
    "SLED",
    "STRATEGIES",
    "Saturation",
    "Schedule",
    "ScoreOutput",
    "SelfSpeculative",
    "SingleLayer",
    "SkipDraft",
    "Strategy",
    "StrategyOutput",
    "Trace",
    "Trajectory",
    "TunedLens",
    "apply_lens",
    "custom_generate",
    "generate",
    "load_model",
    "register_adapter",
    "register_schedule",
    "register_strategy",
    "score",
    "strategy_from_name",
    "trajectory",
]
