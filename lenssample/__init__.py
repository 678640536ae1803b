"""lenssample: decode from a language model's intermediate layers.

Public API::

    model, tokenizer = lenssample.load_model()            # embedded SmolLM2-135M-Instruct
    out = lenssample.generate(model, "Hello", tokenizer=tokenizer, strategy=lenssample.DoLa(layers="high"))
    table = lenssample.apply_lens(model, input_ids)       # logit lens, layers x positions
    scores = lenssample.score(model, input_ids, strategy)  # teacher-forced log-probs
    traj = lenssample.trajectory(model, tokenizer, "some text")  # per-layer statistics for pictures
"""

from lenssample.adapters import ADAPTERS, Adapter, register_adapter
from lenssample.decoding import GenerateOutput, Trace, generate
from lenssample.decoding.speculative import LayerDraft, SelfSpeculative, SkipDraft
from lenssample.lens import Lens, LensOutput, LogitLens, apply_lens
from lenssample.models import EMBEDDED_MODELS, load_model
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
from lenssample.strategies.early_exit import Agreement, EarlyExit, Entropy, Margin, MaxProb, Saturation
from lenssample.trajectory import Trajectory, trajectory

__version__ = "0.1.0"

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Agreement",
    "AutoContrastive",
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
    "SLED",
    "STRATEGIES",
    "Saturation",
    "ScoreOutput",
    "SelfSpeculative",
    "SingleLayer",
    "SkipDraft",
    "Strategy",
    "StrategyOutput",
    "Trace",
    "Trajectory",
    "apply_lens",
    "generate",
    "load_model",
    "register_adapter",
    "register_strategy",
    "score",
    "strategy_from_name",
    "trajectory",
]
