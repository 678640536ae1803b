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
