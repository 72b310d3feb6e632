"""Tests for trainer.optimisers: ELEKTRONN2 names and keys on real torch optimisers."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.config import ConfigError
from trainer.optimisers import check_optimiser_params, get_hyper, make_optimiser, set_hyper


def params():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).parameters()


@pytest.mark.parametrize(
    ("name", "settings", "cls", "group"),
    [
        (
            "SGD",
            {"lr": 0.1, "mom": 0.9, "wd": 1e-4, "nesterov": True},
            torch.optim.SGD,
            {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True},
        ),
        ("sgd", {"lr": 0.5}, torch.optim.SGD, {"lr": 0.5, "momentum": 0}),
        (
            "Adam",
            {"lr": 1e-3, "mom": 0.8, "beta2": 0.99, "wd": 0.01},
            torch.optim.Adam,
            {"lr": 1e-3, "betas": (0.8, 0.99), "weight_decay": 0.01},
        ),
        ("Adam", {"lr": 1e-3, "mom": 0.7}, torch.optim.Adam, {"betas": (0.7, 0.999)}),
        (
            "ADAMW",
            {"lr": 2e-3, "beta2": 0.95, "eps": 1e-6},
            torch.optim.AdamW,
            {"lr": 2e-3, "betas": (0.9, 0.95), "eps": 1e-6},
        ),
        (
            "Adam",
            {"betas": (0.5, 0.6), "amsgrad": True},
            torch.optim.Adam,
            {"betas": (0.5, 0.6), "amsgrad": True},
        ),
        (
            "RMSprop",
            {"lr": 0.01, "mom": 0.5, "wd": 0.1, "beta2": 0.95},
            torch.optim.RMSprop,
            {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1, "alpha": 0.95},
        ),
        (
            "AdaGrad",
            {"lr": 0.05, "wd": 0.2},
            torch.optim.Adagrad,
            {"lr": 0.05, "weight_decay": 0.2},
        ),
        (
            "AdaDelta",
            {"lr": 1.0, "wd": 0.3, "rho": 0.8},
            torch.optim.Adadelta,
            {"lr": 1.0, "weight_decay": 0.3, "rho": 0.8},
        ),
    ],
)
def test_make_optimiser_maps_names_and_keys(name, settings, cls, group):
    opt = make_optimiser(params(), name, settings)
    assert type(opt) is cls
    for key, value in group.items():
        got = opt.param_groups[0][key]
        assert got == (pytest.approx(value) if isinstance(value, float) else value), key


def test_made_optimiser_steps_like_plain_torch():
    model_a, model_b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    model_b.load_state_dict(model_a.state_dict())
    ours = make_optimiser(model_a.parameters(), "SGD", {"lr": 0.1, "mom": 0.9, "wd": 0.01})
    ref = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    x = torch.randn(8, 3)
    for _ in range(3):
        for model, opt in ((model_a, ours), (model_b, ref)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("name", "settings", "match"),
    [
        ("SGD", {"lr": 0.1, "mon": 0.9}, r"unknown key 'mon' for SGD: did you mean 'mom'\?"),
        (
            "Adam",
            {"lr": 0.1, "beta_2": 0.9},
            r"unknown key 'beta_2' for Adam: did you mean 'beta2'\?",
        ),
        (
            "Adam",
            {"learning_rate": 0.1},
            r"unknown key 'learning_rate' for Adam: accepted: lr, mom",
        ),
        ("AdaGrad", {"mom": 0.9}, r"unknown key 'mom' for AdaGrad"),
        ("AdaDelta", {"mom": 0.9}, r"AdaDelta has no momentum; use 'rho'"),
        (
            "SGD",
            {"mom": 0.9, "momentum": 0.5},
            r"'mom' and 'momentum' both set the same SGD parameter",
        ),
        ("Adam", {"mom": 0.9, "betas": (0.9, 0.99)}, r"'mom' and 'betas' both set the same"),
        ("SGD", {"lr": -1}, r"'lr': expected number >= 0, got int -1"),
        ("SGD", {"lr": "0.1"}, r"'lr': expected number >= 0, got str '0.1'"),
        ("Adam", {"mom": 1.0}, r"'mom': expected number in \[0, 1\)"),
        ("SGD", {"lr": 0.1, "nesterov": True}, r"'nesterov': needs 'mom' > 0"),
        ("Adamax", {"lr": 0.1}, r"unknown optimiser 'Adamax'"),
    ],
)
def test_bad_settings_raise_config_error(name, settings, match):
    with pytest.raises(ConfigError, match=match):
        make_optimiser(params(), name, settings)


def test_check_optimiser_params_collects_all_problems():
    errors = check_optimiser_params("SGD", {"mon": 0.9, "wd": -1, "lr": 0.1})
    assert len(errors) == 2
    assert check_optimiser_params("Adam", {"lr": 1e-3, "mom": 0.9, "beta2": 0.999}) == []


@pytest.mark.parametrize(
    ("name", "settings", "expected"),
    [
        ("SGD", {"lr": 0.1, "mom": 0.9, "wd": 0.01}, {"lr": 0.1, "mom": 0.9, "wd": 0.01}),
        ("Adam", {"lr": 1e-3, "mom": 0.8}, {"lr": 1e-3, "mom": 0.8, "wd": 0.0}),
        ("RMSprop", {"lr": 0.01, "mom": 0.3}, {"lr": 0.01, "mom": 0.3, "wd": 0.0}),
        ("AdaGrad", {"lr": 0.01}, {"lr": 0.01, "mom": math.nan, "wd": 0.0}),
        ("AdaDelta", {"lr": 1.0}, {"lr": 1.0, "mom": math.nan, "wd": 0.0}),
    ],
)
def test_get_hyper(name, settings, expected):
    opt = make_optimiser(params(), name, settings)
    for key, value in expected.items():
        got = get_hyper(opt, key)
        assert isinstance(got, float)
        if math.isnan(value):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(value)


def test_set_hyper_writes_every_param_group():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = make_optimiser(
        [{"params": a.parameters()}, {"params": b.parameters()}], "Adam", {"lr": 1e-3, "beta2": 0.9}
    )
    set_hyper(opt, "lr", 0.5)
    set_hyper(opt, "mom", 0.7)
    set_hyper(opt, "wd", 0.25)
    for group in opt.param_groups:
        assert group["lr"] == 0.5 and group["betas"] == (0.7, 0.9) and group["weight_decay"] == 0.25
    assert get_hyper(opt, "mom") == pytest.approx(0.7)


def test_set_hyper_on_sgd_momentum_takes_effect():
    opt = make_optimiser(params(), "SGD", {"lr": 0.1})
    set_hyper(opt, "mom", 0.9)
    assert opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize(
    ("name", "key", "value", "match"),
    [
        ("AdaGrad", "mom", 0.9, "Adagrad has no parameter 'mom'"),
        ("SGD", "lr", float("nan"), "lr: expected a finite number"),
        ("SGD", "lr", "0.1", "lr: expected a finite number"),
    ],
)
def test_set_hyper_errors(name, key, value, match):
    opt = make_optimiser(params(), name, {"lr": 0.1})
    with pytest.raises(ValueError, match=match):
        set_hyper(opt, key, value)
