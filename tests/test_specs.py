"""One spec syntax for strategies and schedules: parsing, the comma-list rule, legacy spellings, and exact round trips
``obj -> to_spec()/to_dict() -> build -> obj`` for every registered family."""

from __future__ import annotations

import json

import pytest

import lenssample
from lenssample import SLED, DoLa, FinalLayer, LayerContrast, LayerEnsemble, SingleLayer
from lenssample.schedules import (
    SCHEDULES,
    Agreement,
    EarlyExit,
    Entropy,
    LayerDraft,
    Margin,
    MaxProb,
    Saturation,
    SelfSpeculative,
    SkipDraft,
    as_schedule,
)
from lenssample.specs import format_spec, parse_assignments, parse_spec, split_specs
from lenssample.strategies.base import STRATEGIES, as_strategy
from tests.strategy_cases import ALL

SCHEDULE_CASES = [
    EarlyExit(),
    EarlyExit(measure=Entropy(threshold=0.5), min_layer=3),
    EarlyExit(measure=Margin(threshold=0.2), skipped_kv="propagate"),
    EarlyExit(measure=Saturation(threshold=0.95)),
    EarlyExit(measure=Agreement(count=2), max_pending=4),
    SelfSpeculative(draft=LayerDraft(layer=2)),
    SelfSpeculative(draft=LayerDraft(layer=20), k=6, adaptive=True),
    SelfSpeculative(draft=SkipDraft(skip=(1, 2))),
]


@pytest.mark.parametrize(
    ("text", "name", "params"),
    [
        ("final", "final", {}),
        ("  dola  ", "dola", {}),
        ("dola:layers=high,alpha=0.2", "dola", {"layers": "high", "alpha": 0.2}),
        ("ensemble:layers=20,30,weights=0.3,0.7", "ensemble", {"layers": [20, 30], "weights": [0.3, 0.7]}),
        ("dola:layers=[2,4,6]", "dola", {"layers": [2, 4, 6]}),
        ("layer:layer=-3", "layer", {"layer": -3}),
        ('x:flag=true,none=null,s="a,b"', "x", {"flag": True, "none": None, "s": "a,b"}),
        ("dola:layers=high:alpha=0.2", "dola", {"layers": "high", "alpha": 0.2}),  # legacy colons
        ("x:path=C:/tmp", "x", {"path": "C:/tmp"}),  # a colon not followed by key= stays in the value
    ],
)
def test_parse_spec(text, name, params):
    assert parse_spec(text) == (name, params)


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "empty"), (":alpha=1", "no name"), ("dola:alpha=1,alpha=2", "twice"), ("dola:=3", "not key=value")],
)
def test_parse_spec_refuses(text, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(text)


def test_a_parameter_set_twice_with_set_is_refused_as_in_a_spec():
    with pytest.raises(ValueError, match="--set 'alpha=0.2': 'alpha' is set twice; set each parameter once"):
        parse_assignments(["alpha=0.1", "alpha=0.2"])


def test_split_specs_uses_names_and_colons_to_start_a_spec():
    names = list(STRATEGIES)
    assert split_specs("final,dola:layers=2,4,sled", names) == ["final", "dola:layers=2,4", "sled"]
    assert split_specs("ensemble:layers=1,2,weights=0.5,0.5,layer:layer=2", names) == [
        "ensemble:layers=1,2,weights=0.5,0.5",
        "layer:layer=2",
    ]
    assert split_specs("", names) == []


def test_assignments_and_formatting():
    assert parse_assignments(["layers=high", "alpha=0.2", "w=1,2"]) == {
        "layers": "high",
        "alpha": 0.2,
        "w": [1, 2],
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_assignments(["alpha"])
    params = {"layers": [1, 2], "s": "two words", "t": "true", "x": None, "b": False}
    assert parse_spec(format_spec("n", params)) == (
        "n",
        params,
    )  # strings that would parse as others are quoted


@pytest.mark.parametrize("case", sorted(ALL))
def test_every_strategy_round_trips(case):
    strategy = ALL[case]
    assert as_strategy(strategy.to_spec()) == strategy
    assert STRATEGIES.build(json.loads(json.dumps(strategy.to_dict()))) == strategy


@pytest.mark.parametrize("schedule", SCHEDULE_CASES, ids=lambda s: s.to_spec())
def test_every_schedule_round_trips(schedule):
    assert as_schedule(schedule.to_spec()) == schedule
    assert SCHEDULES.build(json.loads(json.dumps(schedule.to_dict()))) == schedule


def test_spec_strings_and_objects_agree():
    assert as_strategy(None) == FinalLayer()
    assert as_strategy("layer:layer=2") == SingleLayer(layer=2)
    assert as_strategy("contrast:amateur_layer=1,beta=0.5") == LayerContrast(amateur_layer=1, beta=0.5)
    assert as_strategy({"name": "sled", "evolution_rate": 1.0}) == SLED(evolution_rate=1.0)
    assert as_strategy("ensemble:layers=2,4,weights=0.5,0.5") == LayerEnsemble(
        layers=[2, 4], weights=[0.5, 0.5]
    )
    assert as_strategy("dola:layers=high:alpha=0.2") == DoLa(layers="high", alpha=0.2)
    # Parameters of a part are flattened into the spec; the part's name selects its class.
    assert as_schedule("early-exit:measure=entropy,threshold=0.5,min_layer=3") == SCHEDULE_CASES[1]
    assert as_schedule("speculative:draft_layer=2") == SelfSpeculative(draft=LayerDraft(layer=2))
    assert as_schedule("speculative:skip=1,2") == SelfSpeculative(draft=SkipDraft(skip=(1, 2)))
    assert as_schedule(
        {"name": "early-exit", "measure": {"name": "max-prob", "threshold": 0.5}}
    ) == EarlyExit(measure=MaxProb(threshold=0.5))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("dolla", "Did you mean 'dola'"),
        ("dola:alpah=0.1", "Did you mean 'alpha'"),
        ("early-exit:measure=max-prop", "Did you mean 'max-prob'"),
        ("early-exit:treshold=0.5", "Did you mean 'threshold'"),
        ("speculative", "draft_layer"),
    ],
)
def test_spec_errors_name_the_fix(spec, match):
    with pytest.raises(ValueError, match=match):
        as_schedule(spec) if spec.startswith(("early", "spec")) else as_strategy(spec)


@pytest.mark.parametrize("register", [lenssample.register_strategy, lenssample.register_schedule])
@pytest.mark.parametrize("thing", [5, "dola", lambda logits, layers: logits, int])
def test_registering_something_that_is_not_a_spec_class_is_refused(register, thing):
    with pytest.raises(TypeError, match=r"pass a class deriving from lenssample's \w+ base class"):
        register(thing)
