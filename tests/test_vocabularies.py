"""Each vocabulary has one home, the torch-free schema (restorebench.schema), and the module that implements
it has exactly those names: a strategy, schedule or loss named in params.yaml always has an implementation,
and an implementation nobody can select does not linger."""

from __future__ import annotations

import pytest

from restorebench import schema
from restorebench.train import loop, schedule, strategies


@pytest.mark.parametrize(("names", "implemented"), [
    (schema.STRATEGIES, strategies.BEHAVIOUR),
    (schema.SCHEDULES, schedule.SHAPES),
    (schema.LOSS_NAMES, loop.LOSSES),
], ids=["strategies", "schedules", "losses"])  # fmt: skip
def test_each_vocabulary_is_implemented_exactly(names, implemented):
    assert len(set(names)) == len(names)
    assert set(implemented) == set(names)


def test_no_second_copy_of_a_vocabulary_in_the_implementations():
    assert not hasattr(strategies, "STRATEGY_NAMES")
    assert schedule.SCHEDULES is schema.SCHEDULES and strategies.STRATEGIES is schema.STRATEGIES
    assert loop.LOSS_NAMES is schema.LOSS_NAMES


def test_each_strategy_does_what_the_study_defines():
    """frozen: no backbone training; full_lowlr: LR / 10; llrd: layer-wise decay; full: the recipe."""
    b = strategies.BEHAVIOUR
    assert (b["frozen"].freeze_backbone, b["frozen"].lr_scale, b["frozen"].layer_decay) == (True, 1.0, False)
    assert (b["full_lowlr"].freeze_backbone, b["full_lowlr"].lr_scale) == (False, 0.1)
    assert b["llrd"].layer_decay and not b["llrd"].freeze_backbone and b["llrd"].lr_scale == 1.0
    assert b["full"] == strategies.Strategy()


def test_unknown_names_are_refused_with_the_schemas_choices():
    with pytest.raises(ValueError, match=r"strategy 'fulll' unknown; choose from \['frozen', 'full_lowlr', 'full', 'llrd'\]"):
        strategies.behaviour("fulll")
    with pytest.raises(ValueError, match=r"schedule 'step' unknown; choose from \['cosine', 'poly', 'constant_then_cosine'\]"):
        schedule.lr_factor(0, total=10, schedule="step")
    with pytest.raises(ValueError, match=r"train.loss: 'l2' unknown; choose from \['l1', 'charbonnier', 'psnr'\]"):
        loop.pixel_objective("l2")


@pytest.mark.parametrize(("name", "step", "expected"), [
    ("cosine", 5, 0.1 + 0.9 * 0.5),  # half way: the mean of 1 and the floor
    ("poly", 5, 0.1 + 0.9 * 0.5**2),  # power 2
    ("constant_then_cosine", 3, 1.0),  # still in the constant part (C = 4)
    ("constant_then_cosine", 7, 0.1 + 0.9 * 0.5),  # half way through the cosine over T - C = 6
])  # fmt: skip
def test_each_schedule_shape_is_its_closed_form(name, step, expected):
    assert schedule.lr_factor(step, total=10, schedule=name, floor=0.1, power=2.0, constant=4) == pytest.approx(expected)
