"""lenssample: decode from a language model's intermediate layers.

Public API::

    model, tokenizer = lenssample.load_model()            # embedded SmolLM2-135M-Instruct
    out = lenssample.generate(model, "Hello", tokenizer=tokenizer, strategy=lenssample.FinalLayer())
    table = lenssample.apply_lens(model, input_ids)       # logit lens, layers x positions
    scores = lenssample.score(model, input_ids, strategy)  # teacher-forced log-probs
"""

from lenssample.adapters import ADAPTERS, Adapter, register_adapter
from lenssample.decoding import GenerateOutput, Trace, generate
from lenssample.lens import Lens, LensOutput, LogitLens, apply_lens
from lenssample.models import EMBEDDED_MODELS, load_model
from lenssample.scoring import ScoreOutput, score
from lenssample.strategies import (
    STRATEGIES,
    FinalLayer,
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
    "EMBEDDED_MODELS",
    "FinalLayer",
    "GenerateOutput",
    "Lens",
    "LensOutput",
    "LogitLens",
    "STRATEGIES",
    "ScoreOutput",
    "SingleLayer",
    "Strategy",
    "StrategyOutput",
    "Trace",
    "apply_lens",
    "generate",
    "load_model",
    "register_adapter",
    "register_strategy",
    "score",
    "strategy_from_name",
]

from lenssample.trajectory import Trajectory, trajectory  # noqa: E402

__all__ += ["Trajectory", "trajectory"]

# Strategies that mix and contrast layers (issue 3).
from lenssample.strategies import (  # noqa: E402
    SLED,
    AutoContrastive,
    DoLa,
    DoLaReference,
    DoLaStatic,
    LayerContrast,
    LayerEnsemble,
    LayerWindow,
)

__all__ += [
    "AutoContrastive",
    "DoLa",
    "DoLaReference",
    "DoLaStatic",
    "LayerContrast",
    "LayerEnsemble",
    "LayerWindow",
    "SLED",

# Compute schedules: early exit and self-speculative decoding (``generate(..., schedule=...)``).
from lenssample.decoding.speculative import LayerDraft, SelfSpeculative, SkipDraft  # noqa: E402
from lenssample.strategies.early_exit import (  # noqa: E402
    Agreement,
    EarlyExit,
    Entropy,
    Margin,
    MaxProb,
    Saturation,
)

__all__ += [
    "Agreement",
    "EarlyExit",
    "Entropy",
    "LayerDraft",
    "Margin",
    "MaxProb",
    "Saturation",
    "SelfSpeculative",
    "SkipDraft",
]
