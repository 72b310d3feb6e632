"""trainer.schedules: ELEKTRONN2's schedule tables, the lindec fix, binding to real torch objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.schedules import Schedule


class Shared:
    """A stand-in for a theano shared variable: the get_value/set_value protocol."""

    def __init__(self, value):
        self.v = value

    def get_value(self):
        return self.v

    def set_value(self, v):
        self.v = v


def run(schedule: Schedule, initial: float, n_steps: int) -> dict[int, float]:
    """Step a bound schedule like the trainer does (update at every step); value after each."""
    var = Shared(initial)
    schedule.bind_variable(var)
    seen = {}
    for step in range(n_steps + 1):
        schedule.update(step)
        seen[step] = var.v
    return seen


TABLES = [
    # (kwargs, initial, {step: value after update(step)}, next_update at the end)
    (
        {"dec": 0.995},
        5e-4,
        {0: 5e-4, 999: 5e-4, 1000: 4.975e-4, 1999: 4.975e-4, 2000: 4.950125e-4},
        3000,
    ),
    (
        {"updates": [(500, 0.8), (1000, 0.7), (1500, 0.9), (2000, 0.2)]},
        0.9,
        {0: 0.9, 499: 0.9, 500: 0.8, 999: 0.8, 1000: 0.7, 1500: 0.9, 2000: 0.2, 2500: 0.2},
        -1,
    ),
    (
        {"lindec": [4000, 0.001]},
        0.001,
        {999: 1e-3, 1000: 7.5e-4, 2000: 5e-4, 3000: 2.5e-4, 3999: 2.5e-4, 4000: 0.0, 4500: 0.0},
        -1,
    ),
    (  # ELEKTRONN2 got stuck at 1.11e-4 here; the fixed schedule reaches 0 at 4500
        {"lindec": [4500, 0.001]},
        0.001,
        {1000: 0.001 - 0.001 / 4.5, 4000: 0.001 - 4 * 0.001 / 4.5, 4499: 1.111111e-4, 4500: 0.0},
        -1,
    ),
    ({"lindec": [300, 1.0]}, 1.0, {299: 1.0, 300: 0.0}, -1),  # shorter than one period
    ({"dec": 0.5, "period": 10}, 8.0, {9: 8.0, 10: 4.0, 20: 2.0, 35: 1.0}, 40),
    ({"lindec": [25, 1.0], "period": 10}, 1.0, {10: 0.6, 20: 0.2, 24: 0.2, 25: 0.0}, -1),
    # first matching kwarg wins, in the order dec, updates, lindec
    ({"dec": 0.5, "updates": [(10, 3.0)]}, 1.0, {10: 1.0, 1000: 0.5}, 2000),
    ({"updates": [(10, 3.0)], "lindec": [100, 1.0]}, 1.0, {10: 3.0, 100: 3.0}, -1),
    ({"updates": [(0, 0.3), (3000, 0.1)]}, 1.0, {0: 0.3, 2999: 0.3, 3000: 0.1}, -1),
]


@pytest.mark.parametrize(("kwargs", "initial", "expected", "end"), TABLES)
def test_schedule_tables(kwargs, initial, expected, end):
    seen = run(s := Schedule(**kwargs), initial, max(expected))
    for step, value in expected.items():
        assert seen[step] == pytest.approx(value, rel=1e-6, abs=1e-15), f"step {step}"
    assert s.next_update == end


@pytest.mark.parametrize(("kwargs", "initial", "expected", "end"), TABLES)
def test_plan_agrees_with_update_at_every_step(kwargs, initial, expected, end):
    s = Schedule(**kwargs)
    steps, values = s.plan(5000, initial)  # before binding
    planned = values[np.searchsorted(steps, np.arange(5001), side="right") - 1].tolist()
    seen = run(s, initial, 5000)
    assert planned == [seen[step] for step in range(5001)]  # exactly, not approximately


@pytest.mark.parametrize(
    ("kwargs", "initial", "steps", "values"),
    [
        ({"dec": 0.5}, 1.0, [0, 1000, 2000, 3000], [1.0, 0.5, 0.25, 0.125]),
        ({"lindec": [2500, 1.0]}, 1.0, [0, 1000, 2000, 2500], [1.0, 0.6, 0.2, 0.0]),
        ({"updates": [(0, 0.5), (100, 0.1), (9000, 0.0)]}, 1.0, [0, 100], [0.5, 0.1]),
    ],
)
def test_plan(kwargs, initial, steps, values):
    got_steps, got_values = Schedule(**kwargs).plan(3000, initial)
    assert got_steps.tolist() == steps
    assert got_values.tolist() == pytest.approx(values)


def test_update_is_a_no_op_until_due_and_catches_up_when_late():
    var = Shared(1.0)
    s = Schedule(dec=0.5, period=10)
    s.bind_variable(var)
    for step in range(10):
        s.update(step)
    assert var.v == 1.0
    s.update(35)  # steps 10, 20, 30 were missed: all three are applied
    assert var.v == 0.125 and s.next_update == 40


def test_decay_continues_from_a_value_changed_by_hand():
    var = Shared(1.0)
    s = Schedule(dec=0.5, period=10)
    s.bind_variable(var)
    var.v = 4.0  # e.g. set in the interactive shell
    s.update(10)
    assert var.v == 2.0


def test_state_dict_round_trip_continues_the_schedule():
    updates = [(5, 0.8), (10, 0.7), (15, 0.9)]
    a, var_a = Schedule(updates=updates), Shared(0.9)
    a.bind_variable(var_a)
    for step in range(8):
        a.update(step)
    state = a.state_dict()
    b, var_b = Schedule(updates=updates), Shared(0.123)  # e.g. a fresh optimiser value
    b.load_state_dict(state)
    b.bind_variable(var_b)  # binding after loading writes the restored value
    assert var_b.v == 0.8 and b.next_update == 10 and b.pending == [(10, 0.7), (15, 0.9)]
    for step in range(8, 20):
        a.update(step)
        b.update(step)
        assert var_a.v == var_b.v
    assert b.next_update == -1


def test_load_state_dict_of_another_mode():
    with pytest.raises(ValueError, match="cannot load a 'mult' schedule state"):
        Schedule(lindec=[100, 1.0]).load_state_dict(Schedule(dec=0.5).state_dict())


def test_repr():
    assert repr(Schedule(dec=0.995)) == "Schedule(mode=mult, factor=0.995, next_update=1000)"
    s = Schedule(lindec=[4000, 0.001])
    s.bind_variable(Shared(0.001))
    assert (
        repr(s)
        == "Schedule(mode=lin, n_steps=4000, delta=0.00025, next_update=1000, target=Shared)"
    )


# ---------------------------------------------------------------------- binding to torch
def _params():
    return [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]


def _adam():
    p = _params()
    return torch.optim.Adam(
        [{"params": [p[0]]}, {"params": [p[1]]}], lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1
    )


def _sgd():
    p = _params()
    return torch.optim.SGD([{"params": [p[0]]}, {"params": [p[1]]}], lr=0.1, momentum=0.9)


@pytest.mark.parametrize(
    ("make", "prop", "initial", "read"),
    [
        (_adam, "lr", 1e-3, lambda g: g["lr"]),
        (_adam, "mom", 0.9, lambda g: g["betas"][0]),
        (_adam, "momentum", 0.9, lambda g: g["betas"][0]),
        (_adam, "wd", 0.1, lambda g: g["weight_decay"]),
        (_adam, "weight_decay", 0.1, lambda g: g["weight_decay"]),
        (_sgd, "momentum", 0.9, lambda g: g["momentum"]),
        (_sgd, "mom", 0.9, lambda g: g["momentum"]),
        (_sgd, "lr", 0.1, lambda g: g["lr"]),
    ],
)
def test_bind_to_optimiser_param_groups(make, prop, initial, read):
    opt = make()
    s = Schedule(dec=0.5, period=10)
    s.bind_variable(obj=opt, prop_name=prop)
    assert s.value == pytest.approx(initial)
    s.update(10)
    for group in opt.param_groups:  # every group is set
        assert read(group) == pytest.approx(initial / 2)
    if prop in ("mom", "momentum") and "betas" in opt.param_groups[0]:
        assert opt.param_groups[0]["betas"][1] == 0.999  # beta2 untouched
    # the optimiser still steps with the scheduled value
    for p in (p for g in opt.param_groups for p in g["params"]):
        p.grad = torch.ones_like(p)
    opt.step()


def test_bind_to_dropout_rate_and_config_attribute():
    drop = torch.nn.Dropout(p=0.5)
    s = Schedule(updates=[(3, 0.1)])
    s.bind_variable(obj=drop, prop_name="p")
    s.update(3)
    assert drop.p == 0.1

    class Config:
        history_freq = 200

    cfg = Config()
    s = Schedule(updates=[(100, 500)])
    s.bind_variable(obj=cfg, prop_name="history_freq")
    s.update(100)
    assert cfg.history_freq == 500


def test_per_layer_dropout_list():
    rates = Shared([0.5, 0.5])
    s = Schedule(updates=[(1000, [0.2, 0.3])])
    s.bind_variable(rates)
    s.update(1000)
    assert rates.v == [0.2, 0.3]
    d = Schedule(dec=0.5, period=1)
    d.bind_variable(rates)
    d.update(1)
    assert rates.v == [0.1, 0.15]


class ReadOnly:
    @property
    def rate(self):
        return 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"obj": _sgd(), "prop_name": "betas"},
            r"SGD\.betas: its param groups have no key 'betas'",
        ),
        (
            {"obj": torch.nn.Dropout(), "prop_name": "rate"},
            r"Dropout\.rate: Dropout has no attribute",
        ),
        ({"obj": ReadOnly(), "prop_name": "rate"}, r"ReadOnly\.rate: it is a read-only property"),
        ({"variable_param": object()}, "object: variable_param needs get_value"),
    ],
)
def test_bind_errors(kwargs, match):
    with pytest.raises(AttributeError, match=match):
        Schedule(dec=0.9).bind_variable(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "either variable_param"),
        (
            {"variable_param": Shared(1.0), "obj": object(), "prop_name": "x"},
            "either variable_param",
        ),
        ({"obj": object()}, "needs prop_name"),
    ],
)
def test_bind_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(dec=0.9).bind_variable(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"permut": [0.1, 0.2]}, "permut=.* is not supported"),
        (
            {"decay": 0.9},
            "unknown Schedule argument.*decay.*valid arguments are dec, updates, lindec, period",
        ),
        ({}, "needs one of dec="),
        ({"updates": [(1000, 0.1), (500, 0.2)]}, "strictly ascending, but 500 follows 1000"),
        ({"updates": [(5, 0.1), (5, 0.2)]}, "strictly ascending, but 5 follows 5"),
        ({"updates": [(-1, 0.1)]}, "step -1 is not a non-negative integer"),
        ({"updates": 0.5}, r"list of \(step, value\) pairs"),
        ({"lindec": [0, 1.0]}, "n_steps must be a positive integer"),
        ({"lindec": 4000}, r"lindec= must be \[n_steps, init_value\]"),
        ({"dec": "fast"}, "dec= must be a number"),
        ({"dec": 0.9, "period": 0}, "period must be a positive integer"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(**kwargs)


def test_update_unbound_when_due():
    s = Schedule(dec=0.9, period=5)
    s.update(4)  # not due: fine
    with pytest.raises(RuntimeError, match="due at step 5 but not bound"):
        s.update(5)


def test_bind_schedules_finds_the_optimiser_the_model_and_the_config():
    from types import SimpleNamespace

    from trainer.optimisers import make_optimiser
    from trainer.schedules import bind_schedules

    model = torch.nn.Linear(2, 1)
    model.dropout_rate = 0.5
    opt = make_optimiser(model, "SGD", {"lr": 0.1, "mom": 0.9})
    cfg = SimpleNamespace(history_freq=100, exp_file="cfg.py")
    settings = {"momentum": {"updates": [(0, 0.5)]}, "dropout_rate": {"updates": [(0, 0.1)]},
                "history_freq": {"updates": [(0, 7)]}, "lr": {}}  # fmt: skip
    bound = bind_schedules(settings, opt, model, cfg)
    assert list(bound) == ["momentum", "dropout_rate", "history_freq"]  # an empty one is skipped
    for s in bound.values():
        s.update(0)
    assert opt.param_groups[0]["momentum"] == 0.5 and model.dropout_rate == 0.1
    assert cfg.history_freq == 7 and opt.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match=r"schedules\['gamma'\] in cfg.py: no optimiser key"):
        bind_schedules({"gamma": {"dec": 0.5}}, opt, model, cfg)
