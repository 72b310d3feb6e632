"""Batch-norm scales and weight decay: not decayed by default, ELEKTRONN2's r = 3 with
``decay_batchnorm_scales`` (its update rules: docs/porting.md, "Optimiser defaults")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.optimisers import make_optimiser
from trainer.update_rules import weight_groups

LR, WD = 0.1, 0.05


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2), torch.nn.Conv3d(2, 1, 1)
    ).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([1.5, -0.5]))
        net[1].bias.copy_(torch.tensor([0.25, 2.0]))
    return net


def _groups(net: torch.nn.Module, switch: bool) -> dict[float, set[str]]:
    names = {id(p): n for n, p in net.named_parameters()}
    return {g["wd_mult"]: {names[id(p)] for p in g["params"]} for g in weight_groups(net, switch)}


def test_batchnorm_scales_join_a_group_decayed_three_times_with_the_switch():
    net = _net()
    assert _groups(net, False) == {1.0: {"0.weight", "2.weight"}, 0.0: {"0.bias", "1.weight", "1.bias", "2.bias"}}  # fmt: skip
    assert _groups(net, True) == {
        1.0: {"0.weight", "2.weight"},
        3.0: {"1.weight"},
        0.0: {"0.bias", "1.bias", "2.bias"},
    }


@pytest.mark.parametrize("rule", ["SGD", "Adam", "AdaDelta", "AdamW", "RMSprop"])
@pytest.mark.parametrize("switch", [False, True])
def test_a_step_with_zero_gradient_decays_batchnorm_scales_by_lr_wd_3(rule, switch):
    # with a zero gradient every rule's direction is 0: p <- p - lr * wd * r * p
    net = _net()
    opt = make_optimiser(net, rule, {"lr": LR, "wd": WD}, decay_batchnorm_scales=switch)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    r_scale = 3.0 if switch else 0.0
    for name, p in net.named_parameters():
        r = 1.0 if name in ("0.weight", "2.weight") else r_scale if name == "1.weight" else 0.0
        want = before[name].numpy() * (1 - LR * WD * r)
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=0, atol=1e-15)


def test_sgd_step_on_a_batchnorm_scale_is_elektronn2s_formula():
    # first SGD step: d = g, p <- p - lr * (d + wd * r * p) with r = 3 for the scale
    net = _net()
    opt = make_optimiser(net, "SGD", {"lr": LR, "mom": 0.9, "wd": WD}, decay_batchnorm_scales=True)
    x = torch.randn(2, 1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    net(x).pow(2).mean().backward()
    p = net[1].weight
    old, g = p.detach().numpy().copy(), p.grad.numpy().copy()
    opt.step()
    np.testing.assert_allclose(
        p.detach().numpy(), old - LR * (g + WD * 3 * old), rtol=0, atol=1e-15
    )


@pytest.mark.parametrize("switch", [False, True])
def test_the_config_key_reaches_the_trainers_optimiser(tmp_path, switch):
    from trainer.config import ExperimentConfig
    from trainer.synthetic import ensure_demo_data
    from trainer.trainer import Trainer

    demo = ensure_demo_data(tmp_path / "data", shape=(16, 48, 48), preview_shape=(12, 48, 48))
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text(
        "from trainer.models import UNet3D\n"
        "def create_model():\n"
        "    return UNet3D(base_filters=4, depth=2, patch_size=(8, 32, 32), norm='batch')\n"
        "data_class = 'BatchCreatorImage'\n"
        f"data_init_kwargs = {demo.data_init_kwargs()!r}\n"
        "n_steps = 1\nhistory_freq = 1\nmonitor_batch_size = 1\nbatch_size = 1\n"
        "optimiser = 'Adam'\noptimiser_params = dict(lr=1e-3, wd=1e-2)\n"
        f"decay_batchnorm_scales = {switch}\n"
    )
    cfg = ExperimentConfig(str(cfg_file))
    cfg.apply_overrides(save_path=str(tmp_path / "runs"), save_name="bn")
    cfg.make_dir()
    trainer = Trainer(cfg, device="cpu")
    scales = {id(m.weight) for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm3d)}
    mult = {id(p): g["wd_mult"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert scales and {mult[s] for s in scales} == {3.0 if switch else 0.0}
