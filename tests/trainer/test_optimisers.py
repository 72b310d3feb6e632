"""Tests for trainer.optimisers: ELEKTRONN2 names and keys on real torch optimisers."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from trainer import update_rules
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
            update_rules.SGD,
            {"lr": 0.1, "momentum": 0.9, "wd": 1e-4, "weight_decay": 0.0, "nesterov": True},
        ),
        # a missing mom is ELEKTRONN2's 0.9 (torch.optim.SGD's default is 0)
        ("sgd", {"lr": 0.5}, update_rules.SGD, {"lr": 0.5, "momentum": 0.9, "wd": 0.0}),
        ("SGD", {"lr": 0.5, "mom": 0}, update_rules.SGD, {"momentum": 0}),
        (
            "Adam",
            {"lr": 1e-3, "mom": 0.8, "beta2": 0.99, "wd": 0.01},
            update_rules.Adam,
            {"lr": 1e-3, "betas": (0.8, 0.99), "wd": 0.01, "eps": 1e-5},
        ),
        ("Adam", {"lr": 1e-3, "mom": 0.7}, update_rules.Adam, {"betas": (0.7, 0.999)}),
        (
            "ADAMW",
            {"lr": 2e-3, "beta2": 0.95, "eps": 1e-6, "weight_decay": 0.1},
            update_rules.AdamW,
            {"lr": 2e-3, "betas": (0.9, 0.95), "eps": 1e-6, "wd": 0.1, "weight_decay": 0.0},
        ),
        (
            "AdamW",
            {"lr": 1e-3, "betas": (0.5, 0.6), "amsgrad": True},
            update_rules.AdamW,
            {"betas": (0.5, 0.6), "amsgrad": True},
        ),
        (
            "RMSprop",
            {"lr": 0.01, "mom": 0.5, "wd": 0.1, "beta2": 0.95},
            update_rules.RMSprop,
            {"lr": 0.01, "momentum": 0.5, "wd": 0.1, "alpha": 0.95, "weight_decay": 0.0},
        ),
        ("AdaGrad", {"lr": 0.05, "wd": 0.2}, update_rules.AdaGrad, {"lr": 0.05, "wd": 0.2}),
        (
            "AdaDelta",
            {"lr": 1.0, "wd": 0.3, "rho": 0.8},
            update_rules.AdaDelta,
            {"lr": 1.0, "wd": 0.3, "rho": 0.8, "eps": 1e-5},
        ),
        ("AdaDelta", {"lr": 1.0, "mom": 0.95}, update_rules.AdaDelta, {"rho": 0.95}),
    ],
)
def test_make_optimiser_maps_names_and_keys(name, settings, cls, group):
    opt = make_optimiser(params(), name, settings)
    assert type(opt) is cls
    for key, value in group.items():
        got = opt.param_groups[0][key]
        assert got == (pytest.approx(value) if isinstance(value, float) else value), key


def test_sgd_without_decay_steps_like_plain_torch():
    model_a, model_b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    model_b.load_state_dict(model_a.state_dict())
    ours = make_optimiser(model_a, "SGD", {"lr": 0.1, "mom": 0.9, "wd": 0.0})
    ref = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9)
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
        ("AdaDelta", {"mom": 0.9, "rho": 0.9}, r"'mom' and 'rho' both set the same AdaDelta"),
        ("Adam", {"amsgrad": True}, r"unknown key 'amsgrad' for Adam: .*'AdamW'"),
        ("AdaGrad", {"lr_decay": 0.1}, r"ELEKTRONN2's AdaGrad rule has no 'lr_decay'"),
        (
            "SGD",
            {"mom": 0.9, "momentum": 0.5},
            r"'mom' and 'momentum' both set the same SGD parameter",
        ),
        ("Adam", {"mom": 0.9, "betas": (0.9, 0.99)}, r"'mom' and 'betas' both set the same"),
        ("SGD", {"lr": -1}, r"'lr': expected number >= 0, got int -1"),
        ("SGD", {"lr": "0.1"}, r"'lr': expected number >= 0, got str '0.1'"),
        ("Adam", {"mom": 1.0}, r"'mom': expected number in \[0, 1\)"),
        ("SGD", {"lr": 0.1, "mom": 0, "nesterov": True}, r"'nesterov': needs 'mom' > 0"),
        ("Adamax", {"lr": 0.1}, r"unknown optimiser 'Adamax'"),
    ],
)
def test_bad_settings_raise_config_error(name, settings, match):
    with pytest.raises(ConfigError, match=match):
        make_optimiser(params(), name, settings)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "AdaGrad", "AdaDelta"])
def test_a_missing_lr_is_an_error_that_asks_for_it(name):
    # ELEKTRONN2's lr defaulted to 1; a silent default 1000x off is worse than a question
    with pytest.raises(ConfigError, match=r"'lr' is missing: add the learning rate") as err:
        make_optimiser(params(), name, {"wd": 0.0})
    assert "ELEKTRONN2's default was 1" in str(err.value)
    assert "Adam/AdamW 1e-4 to 1e-3" in str(err.value)


def test_missing_mom_is_elektronn2s_0_9():
    # the first SGD step is lr * g whatever mom is; the second shows the momentum buffer
    def two_steps(settings):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
        opt = make_optimiser([w], "SGD", settings)
        for _ in range(2):
            opt.zero_grad()
            (w * torch.tensor([3.0, 5.0], dtype=torch.float64)).sum().backward()
            opt.step()
        return w.detach().numpy()

    g, lr = np.array([3.0, 5.0]), 0.1
    expected = np.array([1.0, -2.0]) - lr * g - lr * (g + 0.9 * g)  # d = g + mom · d_old
    np.testing.assert_allclose(two_steps({"lr": lr}), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(two_steps({"lr": lr}), two_steps({"lr": lr, "mom": 0.9}))
    adam = make_optimiser(params(), "Adam", {"lr": 1e-3})
    assert get_hyper(adam, "mom") == 0.9 and adam.param_groups[0]["betas"] == (0.9, 0.999)


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
        ("AdaDelta", {"lr": 1.0, "mom": 0.8}, {"lr": 1.0, "mom": 0.8, "wd": 0.0}),
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
        assert group["lr"] == 0.5 and group["betas"] == (0.7, 0.9) and group["wd"] == 0.25
    assert get_hyper(opt, "mom") == pytest.approx(0.7)


def test_set_hyper_on_sgd_momentum_takes_effect():
    opt = make_optimiser(params(), "SGD", {"lr": 0.1})
    set_hyper(opt, "mom", 0.9)
    assert opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize(
    ("name", "key", "value", "match"),
    [
        ("AdaGrad", "mom", 0.9, "AdaGrad has no parameter 'mom'"),
        ("SGD", "lr", float("nan"), "lr: expected a finite number"),
        ("SGD", "lr", "0.1", "lr: expected a finite number"),
    ],
)
def test_set_hyper_errors(name, key, value, match):
    opt = make_optimiser(params(), name, {"lr": 0.1})
    with pytest.raises(ValueError, match=match):
        set_hyper(opt, key, value)


# ---------------------------------------------------------------- ELEKTRONN2's update rules
# A plain numpy transcription of /work/shared/reference/elektronn2-update-rules.md (ELEKTRONN2's
# neuromancer/optimiser.py): every quantity on the right is the value before the step.


def e2_step(rule, p, g, st, r, lr, mom, wd, beta2=0.999):
    """One ELEKTRONN2 update of parameter ``p`` (r: 1 weight, 0 bias); returns the new p."""
    decay = wd * r * p
    if rule == "SGD":
        st["d"] = g + mom * st.get("d", 0.0)
        return p - lr * (st["d"] + decay)
    if rule == "AdaGrad":
        h = st.get("h", g * g) + g * g  # filled once with g² of the first batch
        st["h"] = h
        update = g + wd * p if r > 0 else g
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(h > 0, update / np.sqrt(h), 0.0)  # ELEKTRONN2: 0/0 = NaN
        return p - lr * scaled
    if rule == "AdaDelta":
        eps = 1e-5
        s_old, d_old = st.get("s", np.zeros_like(p)), st.get("delta", np.zeros_like(p))
        direction = g * np.sqrt(d_old + eps) / np.sqrt(s_old + eps)
        st["s"] = mom * s_old + (1 - mom) * g * g
        st["delta"] = mom * d_old + (1 - mom) * direction * direction
        return p - lr * (direction + decay)
    if rule == "Adam":
        eps = 1e-5
        t = st["t"] = st.get("t", 0) + 1
        m = st["m"] = mom * st.get("m", 0.0) + (1 - mom) * g
        s = st["s"] = beta2 * st.get("s", 0.0) + (1 - beta2) * g * g
        direction = np.sqrt(1 - beta2**t) / (1 - mom**t) * m / np.sqrt(s + eps)
        return p - lr * (direction + decay)
    raise AssertionError(rule)


class _TwoHeads(torch.nn.Module):
    """A linear layer that learns and one whose output is multiplied by 0 (no data gradient)."""

    def __init__(self):
        super().__init__()
        self.fit = torch.nn.Linear(4, 2)
        self.idle = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fit(x) + 0.0 * self.idle(x)


def _numpy_run(rule, settings, init, x, t, steps):
    lr, mom, wd = settings["lr"], settings.get("mom", 0.0), settings.get("wd", 0.0)
    p = {k: v.copy() for k, v in init.items()}
    states = {k: {} for k in p}
    rs = {"fit.weight": 1, "fit.bias": 0, "idle.weight": 1, "idle.bias": 0}
    n = len(x)
    for _ in range(steps):
        err = x @ p["fit.weight"].T + p["fit.bias"] - t  # loss = mean over rows of |err|²
        grads = {
            "fit.weight": 2 / n * err.T @ x,
            "fit.bias": 2 / n * err.sum(0),
            "idle.weight": np.zeros_like(p["idle.weight"]),
            "idle.bias": np.zeros_like(p["idle.bias"]),
        }
        for k in p:
            p[k] = e2_step(rule, p[k], grads[k], states[k], rs[k], lr, mom, wd)
    return p


@pytest.mark.parametrize(
    ("rule", "settings"),
    [
        ("SGD", {"lr": 1e-2, "mom": 0.9, "wd": 1e-2}),
        ("Adam", {"lr": 1e-2, "mom": 0.9, "wd": 0.5}),
        ("Adam", {"lr": 5e-4, "mom": 0.9, "wd": 5e-5}),  # ELEKTRONN2's neuro3d settings
        ("AdaGrad", {"lr": 5e-2, "wd": 0.2}),
        ("AdaDelta", {"lr": 0.1, "mom": 0.9, "wd": 0.05}),
        ("AdaDelta", {"lr": 0.5, "mom": 0.5}),
    ],
)
def test_updates_match_elektronn2_rules_over_200_steps(rule, settings):
    torch.manual_seed(0)
    model = _TwoHeads().double()
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(16, 4)), rng.normal(size=(16, 2))
    init = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    expected = _numpy_run(rule, settings, init, x, t, steps=200)
    opt = make_optimiser(model, rule, settings)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    for _ in range(200):
        opt.zero_grad()
        ((model(xt) - tt) ** 2).sum(1).mean().backward()
        opt.step()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), expected[name], rtol=0, atol=1e-6)
    # the idle bias (no gradient, r = 0) never moves; the idle weight decays only with wd
    np.testing.assert_array_equal(model.idle.bias.detach().numpy(), init["idle.bias"])
    moved = not np.array_equal(model.idle.weight.detach().numpy(), init["idle.weight"])
    assert moved == (settings.get("wd", 0) > 0 and rule != "AdaGrad")


@pytest.mark.parametrize(
    ("rule", "settings", "expected"),
    [
        ("Adam", {"lr": 5e-4, "mom": 0.9, "wd": 5e-5}, (1 - 5e-4 * 5e-5) ** 200),  # 0.999995
        ("SGD", {"lr": 1e-2, "mom": 0.9, "wd": 1e-2}, (1 - 1e-2 * 1e-2) ** 200),  # 0.980
        ("AdamW", {"lr": 5e-4, "mom": 0.9, "wd": 5e-5}, (1 - 5e-4 * 5e-5) ** 200),
        ("RMSprop", {"lr": 1e-2, "mom": 0.9, "wd": 1e-2}, (1 - 1e-2 * 1e-2) ** 200),
        ("AdaDelta", {"lr": 1.0, "mom": 0.9, "wd": 1e-3}, (1 - 1.0 * 1e-3) ** 200),
    ],
)
def test_a_weight_without_data_gradient_decays_as_in_elektronn2(rule, settings, expected):
    model = torch.nn.Linear(1, 1).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    opt = make_optimiser(model, rule, settings)
    for _ in range(200):
        opt.zero_grad()
        (0.0 * model(torch.ones(1, 1, dtype=torch.float64))).sum().backward()
        opt.step()
    assert model.weight.item() == pytest.approx(expected, abs=1e-9)
    assert model.bias.item() == 1.0


def test_weights_are_conv_linear_and_recurrent_weights_only():
    model = torch.nn.ModuleDict(
        {
            "conv": torch.nn.Conv3d(1, 2, 3),
            "up": torch.nn.ConvTranspose3d(2, 2, 2),
            "bn": torch.nn.BatchNorm3d(2),
            "gn": torch.nn.GroupNorm(1, 2),
            "lstm": torch.nn.LSTM(2, 3),
            "fc": torch.nn.Linear(3, 2),
        }
    )
    groups = update_rules.weight_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {g["wd_mult"]: sorted(names[id(p)] for p in g["params"]) for g in groups}
    assert decayed[1.0] == [
        "conv.weight",
        "fc.weight",
        "lstm.weight_hh_l0",
        "lstm.weight_ih_l0",
        "up.weight",
    ]
    assert len(decayed[0.0]) == len(names) - 5 and all("weight_" not in n for n in decayed[0.0])


@pytest.mark.parametrize("rule", ["SGD", "Adam", "AdaGrad", "AdaDelta", "AdamW", "RMSprop"])
def test_state_dict_resumes_the_same_trajectory(rule):
    settings = {"lr": 1e-2, "wd": 0.1} | ({} if rule == "AdaGrad" else {"mom": 0.8})

    def fresh():
        torch.manual_seed(1)
        model = _TwoHeads().double()
        return model, make_optimiser(model, rule, settings)

    def train(model, opt, steps):
        for step in steps:
            x = torch.randn(
                8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(step)
            )
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()

    whole, opt_whole = fresh()
    train(whole, opt_whole, range(20))
    half, opt_half = fresh()
    train(half, opt_half, range(10))
    resumed, opt_resumed = fresh()
    buf = io.BytesIO()  # as a snapshot on disk: no tensor shared with the running optimiser
    torch.save({"model": half.state_dict(), "optimizer": opt_half.state_dict()}, buf)
    buf.seek(0)
    snapshot = torch.load(buf)
    resumed.load_state_dict(snapshot["model"])
    opt_resumed.load_state_dict(snapshot["optimizer"])
    train(half, opt_half, range(10, 20))
    train(resumed, opt_resumed, range(10, 20))
    for a, b, c in zip(half.parameters(), resumed.parameters(), whole.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)
    # the restored groups still decay weights only: the idle bias has not moved
    assert torch.equal(resumed.idle.bias, fresh()[0].idle.bias)
    decayed = not torch.equal(resumed.idle.weight, fresh()[0].idle.weight)
    assert decayed == (rule != "AdaGrad")  # AdaGrad's h stays 0 without a gradient


@pytest.mark.parametrize(
    ("rule", "prop", "entry"),
    [("AdaDelta", "mom", "rho"), ("Adam", "wd", "wd"), ("SGD", "weight_decay", "wd")],
)
def test_schedules_bind_to_the_decay_and_adadelta_rho(rule, prop, entry):
    from trainer.schedules import Schedule

    opt = make_optimiser(_TwoHeads(), rule, {"lr": 0.1, "mom": 0.5, "wd": 0.2})
    sched = Schedule(updates=[(0, 0.25)])
    sched.bind_variable(obj=opt, prop_name=prop)
    sched.update(0)
    assert [g[entry] for g in opt.param_groups] == [0.25, 0.25]


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "AdaGrad", "AdaDelta"])
def test_settings_left_out_take_the_documented_defaults(name):
    # trainer.optimisers.DEFAULTS is the table docs/porting.md shows under "Optimiser defaults"
    from trainer.optimisers import DEFAULTS

    group = make_optimiser(params(), name, {"lr": 0.01}).param_groups[0]
    slots = {"mom": ("momentum", "betas", "rho"), "beta2": ("betas", "alpha"), "eps": ("eps",)}
    for key, want in DEFAULTS[name].items():
        if key == "lr":
            continue
        if key == "wd":
            assert group["wd"] == want
            continue
        entry = next(e for e in slots[key] if e in group)
        got = group[entry][0 if key == "mom" else 1] if entry == "betas" else group[entry]
        assert got == want, (key, entry)
    assert set(DEFAULTS[name]) >= {"lr", "wd"}


def test_porting_md_shows_the_defaults_table():
    from pathlib import Path

    from trainer.optimisers import DEFAULTS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "porting.md").read_text()
    rows = {
        cells[0].split()[0].strip("`"): cells[1:]
        for line in doc.split("## Optimiser defaults")[1].splitlines()
        if line.startswith("| `") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    assert set(rows) == set(DEFAULTS)
    for name, cells in rows.items():
        shown = dict(zip(("lr", "mom", "beta2", "eps", "wd"), cells))
        for key, value in DEFAULTS[name].items():
            first = shown[key].split()[0].rstrip(",")
            assert first == "required" if value is None else float(first) == value, (name, key)
