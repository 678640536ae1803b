"""Bad hyperparameters of the mixing/contrast strategies: a ValueError naming the parameter, the value and a fix;
and every strategy built by name from CLI-style ``--set`` values."""

from __future__ import annotations

import math

import pytest

from lenssample import (
    SLED,
    AutoContrastive,
    DoLa,
    DoLaReference,
    DoLaStatic,
    LayerContrast,
    LayerEnsemble,
    LayerWindow,
    Strategy,
    strategy_from_name,
)
from lenssample.cli import main
from lenssample.strategies import parse_assignments

BAD = [
    (lambda: LayerEnsemble(layers=[1, 2, 3], weights=[0.5, 0.5]), "weights has 2 numbers"),
    (lambda: LayerEnsemble(layers=[1, 2], weights=[0.5, -0.5]), "weights=-0.5"),
    (lambda: LayerEnsemble(layers=[1, 2], weights=[0, 0]), "all zero"),
    (lambda: LayerEnsemble(weights="cubic"), "weights='cubic'"),
    (lambda: LayerEnsemble(combine="sum"), "combine='sum'"),
    (lambda: LayerEnsemble(layers=[1, 1]), "lists layer 1 twice"),
    (lambda: LayerEnsemble(layers=[-1, 2], weights=[1, 1]), "non-negative layer numbers"),
    (lambda: LayerEnsemble(weights="exponential", decay=0), "decay=0.0"),
    (lambda: DoLa(layers=[]), "is empty"),
    (lambda: DoLa(layers="middle"), "layers='middle'"),
    (lambda: DoLa(layers=[2, 2]), "twice"),
    (lambda: DoLa(layers=[1.5]), "1.5"),
    (lambda: DoLa(alpha=0), "alpha=0.0 is outside (0.0, 1.0]"),
    (lambda: DoLa(alpha=1.5), "alpha=1.5"),
    (lambda: DoLa(excluded_logit=5), "excluded_logit=5"),
    (lambda: DoLaStatic(premature_layer=[1, 2]), "premature_layer"),
    (lambda: LayerContrast(beta=-0.1), "beta=-0.1"),
    (lambda: LayerContrast(alpha=2.0), "alpha=2.0"),
    (lambda: LayerContrast(amateur_layer="middle"), "amateur_layer='middle'"),
    (lambda: AutoContrastive(alpha=-1), "alpha=-1"),
    (lambda: SLED(evolution_scale=0), "evolution_scale=0"),
    (lambda: SLED(evolution_rate=-1), "evolution_rate=-1"),
    (lambda: SLED(evolution_lower_bound=math.nan), "evolution_lower_bound"),
    (lambda: LayerWindow(window=0), "window=0"),
    (lambda: LayerWindow(gamma=1.5), "gamma=1.5"),
    (lambda: DoLaReference(tie_word_embeddings="yes"), "tie_word_embeddings"),
]


@pytest.mark.parametrize("build,message", BAD, ids=[m for _, m in BAD])
def test_bad_hyperparameters_raise_value_error(build, message):
    with pytest.raises(ValueError, match=None) as error:
        build()
    assert message in str(error.value), str(error.value)


LAYER_ERRORS = [
    (DoLa(layers=[2, 30]), "outside 0..L-1"),
    (DoLa(layers=[4]), "layer L is the mature layer"),
    (DoLaStatic(premature_layer=4), "outside 0..L-1"),
    (LayerEnsemble(layers=[0, 9]), "contains 9"),
    (LayerEnsemble(weights=[1, 2]), "weights has 2 numbers"),
    (LayerEnsemble(layers=[-1, 4]), "same layer twice"),
    (LayerContrast(amateur_layer=7), "amateur_layer contains 7"),
    (SLED(layers=[1, 4]), "outside 0..L-1"),
    (LayerWindow(window=5), "window=5 exceeds"),
    (DoLaReference(layers=[4, 5]), "no usable candidate"),
]


@pytest.mark.parametrize("strategy,message", LAYER_ERRORS, ids=[m for _, m in LAYER_ERRORS])
def test_layers_out_of_range_for_the_model(strategy, message):
    with pytest.raises(ValueError) as error:
        strategy.check_model(4)
    assert message in str(error.value), str(error.value)


CLI_SPECS = [
    ("dola", ["layers=high"], DoLa(layers="high")),
    ("dola", ["layers=2,4,6", "alpha=0.2"], DoLa(layers=[2, 4, 6], alpha=0.2)),
    ("dola", ["layers=8"], DoLa(layers=[8])),
    ("dola", ["excluded_logit=-1000"], DoLa(excluded_logit=-1000.0)),
    ("dola-static", ["premature_layer=-10"], DoLaStatic(premature_layer=-10)),
    ("dola-reference", ["layers=low", "tie_word_embeddings=false"], DoLaReference(layers="low", tie_word_embeddings=False)),
    ("ensemble", ["layers=20,30", "weights=0.3,0.7", "combine=product"],
     LayerEnsemble(layers=[20, 30], weights=[0.3, 0.7], combine="product")),
    ("ensemble", ["weights=entropy", "temperature=2"], LayerEnsemble(weights="entropy", temperature=2.0)),
    ("window", ["window=3", "gamma=0.2"], LayerWindow(window=3, gamma=0.2)),
    ("contrast", ["amateur_layer=12", "beta=1", "alpha=null"], LayerContrast(amateur_layer=12, beta=1, alpha=None)),
    ("acd", ["amateur_layer=-8"], AutoContrastive(amateur_layer=-8)),
    ("sled", ["evolution_scale=20", "evolution_rate=1.5"], SLED(evolution_scale=20, evolution_rate=1.5)),
]  # fmt: skip


@pytest.mark.parametrize("name,assignments,want", CLI_SPECS, ids=[f"{n}:{a}" for n, a, _ in CLI_SPECS])
def test_built_from_cli_assignments_and_round_trips(name, assignments, want):
    built = strategy_from_name(name, **parse_assignments(assignments))
    assert built == want
    assert Strategy.from_dict(built.to_dict()) == built
    import json

    assert Strategy.from_dict(json.loads(json.dumps(built.to_dict()))) == built


def test_layers_method_and_hyperparameter_coexist():
    dola = DoLa(layers="high")
    assert dola.layers == "high" and dola.layers.spec == "high"
    assert dola.layers(30) == (15, 17, 19, 21, 23, 25, 27, 29, 30)
    assert DoLa(layers="low").layers(30) == (2, 4, 6, 8, 10, 12, 14, 30)
    assert DoLaReference(layers="low", tie_word_embeddings=False).layers(30)[:2] == (0, 2)
    assert DoLaReference(layers="high").layers(48) == (*range(28, 48, 2), 48)
    assert LayerEnsemble().layers(3) == (0, 1, 2, 3)
    assert SLED().layers(5) == (2, 3, 4, 5)
    assert hash(DoLa(layers=[1, 2])) == hash(DoLa(layers=(1, 2)))


def test_cli_rejects_a_bad_strategy_value_with_exit_2(capsys):
    assert main(["generate", "hello", "--strategy", "dola", "--set", "layers=hgh"]) == 2
    err = capsys.readouterr().err
    assert "layers='hgh'" in err and "Did you mean 'high'" in err


def test_direct_calls_check_the_shapes_in_and_out():
    """Issue 16 probe: a strategy called on lens logits of the wrong shape, or a user's strategy returning logits of
    the wrong shape, raises naming the strategy and the shapes (not an IndexError or a silent slice)."""
    import dataclasses

    import torch

    from lenssample import StrategyOutput, generate
    from tests.conftest import make_tiny_model

    dola = DoLa(layers=[0, 1, 2, 3])
    layers = dola.check_model(4)
    with pytest.raises(ValueError, match=r"strategy 'dola': lens_logits has shape \(2, 2, 24\)"):
        dola(torch.zeros(2, 2, 24), layers)
    with pytest.raises(ValueError, match=r"lens_logits has shape \(2, 24\)"):
        LayerEnsemble()(torch.zeros(2, 24), LayerEnsemble().check_model(4))

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Narrow(Strategy):
        name = "narrow-test"

        def layers(self, num_layers):
            return (num_layers,)

        def __call__(self, lens_logits, layers):
            return StrategyOutput(logits=lens_logits[:, -1, :5])

    with pytest.raises(ValueError, match=r"strategy 'narrow-test' returned logits of shape \(1, 5\)"):
        generate(make_tiny_model("llama"), torch.tensor([[5, 6, 7]]), Narrow(), max_new_tokens=2)
