"""ELEKTRONN2's update rules as ``torch.optim`` optimisers.

Every optimiser here applies ELEKTRONN2's weight decay: decoupled from the gradient and only on
weights,

    p <- p - lr * (update + wd * r * p)

where ``update`` is the optimiser's direction from the data gradient alone and ``r`` is the
param group's ``wd_mult``: 1 for weights, 0 for everything else. ``weight_groups(model)`` makes
the groups. Weights are the ``weight*`` parameters of convolution (``nn.ConvNd``,
``nn.ConvTransposeNd``), linear (``nn.Linear``, ``nn.Bilinear``) and recurrent (``nn.RNN``,
``nn.LSTM``, ``nn.GRU`` and their cells) layers; biases, normalisation scales and shifts and
any parameter of another kind of module are never decayed. ELEKTRONN2 decayed batch-norm
scales with r = 3: ``weight_groups(model, decay_batchnorm_scales=True)`` (config key
``decay_batchnorm_scales``) puts them in a third group with ``wd_mult`` 3.

``Adam``, ``AdaGrad`` and ``AdaDelta`` follow ELEKTRONN2's formulas exactly (ε inside the square
root, AdaDelta's old averages, AdaGrad's first-batch accumulator); ``SGD``, ``AdamW`` and
``RMSprop`` take their direction from ``torch.optim`` with its own weight decay off. The decay
uses the parameter value before the step, as ELEKTRONN2 does. Parameters without a gradient
(``p.grad is None``) are left alone, as ``torch.optim`` leaves them; a zero gradient still decays.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(1, 1)
    >>> opt = Adam(weight_groups(model), lr=0.5, wd=0.1)
    >>> [(len(g["params"]), g["wd_mult"]) for g in opt.param_groups]
    [(1, 1.0), (1, 0.0)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "AdaGrad",
    "AdaDelta",
    "WEIGHT_LAYERS",
    "BATCHNORM_LAYERS",
    "BATCHNORM_SCALE_MULT",
    "weight_groups",
]

#: modules whose ``weight*`` parameters are decayed (ELEKTRONN2's r = 1)
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.Bilinear,
    nn.RNNBase,
    nn.RNNCellBase,
)


#: modules whose ``weight`` (the scale, gamma) ELEKTRONN2 decayed, with ``BATCHNORM_SCALE_MULT``
BATCHNORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
)
#: ELEKTRONN2's regularisation factor r of a batch-norm scale (weights have 1)
BATCHNORM_SCALE_MULT = 3.0


def weight_groups(model: nn.Module, decay_batchnorm_scales: bool = False) -> list[dict[str, Any]]:
    """Split ``model``'s parameters into a decayed group (weights) and an undecayed one.

    Args:
        model: the network.
        decay_batchnorm_scales: also decay the scales of batch-norm layers, three times as
            strongly as weights (ELEKTRONN2's r = 3), in a group of their own.

    Returns:
        Param groups ``{'params': [...], 'wd_mult': 1.0}`` (weights), with
        ``decay_batchnorm_scales`` ``{..., 'wd_mult': 3.0}`` (batch-norm scales), and
        ``{..., 'wd_mult': 0.0}`` (biases, other normalisation parameters, everything else); an
        empty group is left out.
    """
    weights: list[nn.Parameter] = []
    scales: list[nn.Parameter] = []
    others: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            is_scale = isinstance(module, BATCHNORM_LAYERS) and name == "weight"
            if isinstance(module, WEIGHT_LAYERS) and name.startswith("weight"):
                weights.append(p)
            elif is_scale and decay_batchnorm_scales:
                scales.append(p)
            else:
                others.append(p)
    groups = [
        {"params": weights, "wd_mult": 1.0},
        {"params": scales, "wd_mult": BATCHNORM_SCALE_MULT},
        {"params": others, "wd_mult": 0.0},
    ]
    return [g for g in groups if g["params"]]


def _call(closure: Callable[[], Any] | None) -> Any:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _decay_settings(optimizer: torch.optim.Optimizer, wd: float) -> None:
    """Give every group (and groups added later) ELEKTRONN2's ``wd`` and ``wd_mult``."""
    optimizer.defaults.setdefault("wd", float(wd))
    optimizer.defaults.setdefault("wd_mult", 1.0)
    for group in optimizer.param_groups:
        group.setdefault("wd", float(wd))
        group.setdefault("wd_mult", 1.0)


class _DecoupledDecay:
    """Decoupled weight decay before a ``torch.optim`` step whose own weight decay is off."""

    param_groups: list[dict[str, Any]]

    @torch.no_grad()
    def _decay(self) -> None:
        for group in self.param_groups:
            factor = group["lr"] * group["wd"] * group["wd_mult"]
            if factor:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1.0 - factor)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _call(closure)
        self._decay()
        super().step()  # type: ignore[misc]
        return loss


class SGD(_DecoupledDecay, torch.optim.SGD):
    """``d = g + mom·d_old; p <- p - lr·(d + wd·r·p)`` (torch's SGD direction, no dampening by
    default; ``nesterov`` and ``dampening`` work as in ``torch.optim.SGD``).

    ``momentum`` defaults to ELEKTRONN2's ``mom`` of 0.9 (``torch.optim.SGD``'s is 0).
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, momentum: float = 0.9, wd: float = 0.0, **kwargs: Any
    ):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0, **kwargs)
        _decay_settings(self, wd)


class AdamW(_DecoupledDecay, torch.optim.AdamW):
    """PyTorch's Adam direction (ε 1e-8 outside the root) with the decay above."""

    def __init__(self, params: Any, lr: float = 1e-3, wd: float = 0.0, **kwargs: Any):
        super().__init__(params, lr=lr, weight_decay=0.0, **kwargs)
        _decay_settings(self, wd)


class RMSprop(_DecoupledDecay, torch.optim.RMSprop):
    """PyTorch's RMSprop direction with the decay above."""

    def __init__(self, params: Any, lr: float = 1e-2, wd: float = 0.0, **kwargs: Any):
        super().__init__(params, lr=lr, weight_decay=0.0, **kwargs)
        _decay_settings(self, wd)


class Adam(torch.optim.Optimizer):
    """ELEKTRONN2's Adam: ``dir = √(1-β2^t)/(1-β1^t) · m/√(s+ε)``, ``p <- p - lr·(dir + wd·r·p)``.

    ε (default 1e-5) sits inside the square root, before the bias correction.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-5,
        wd: float = 0.0,
    ):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "wd": float(wd), "wd_mult": 1.0}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _call(closure)
        for group in self.param_groups:
            b1, b2 = group["betas"]
            decay = group["wd"] * group["wd_mult"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["s"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, s = state["m"], state["s"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                s.mul_(b2).addcmul_(g, g, value=1 - b2)
                direction = m / (s + group["eps"]).sqrt() * (math.sqrt(1 - b2**t) / (1 - b1**t))
                if decay:
                    direction.add_(p, alpha=decay)
                p.sub_(direction, alpha=group["lr"])
        return loss


class AdaGrad(torch.optim.Optimizer):
    """ELEKTRONN2's AdaGrad: ``h = h_old + g²``, ``p <- p - lr/√h · (g + wd·p)`` for weights.

    The accumulator starts as g² of the first batch a parameter gets (ELEKTRONN2 filled it once
    with one batch before training), so the first step divides by √(2g²). Here the decay is
    scaled by 1/√h, as in ELEKTRONN2. Where h is 0 (a parameter that never had a non-zero
    gradient) the parameter is not moved; ELEKTRONN2's 0/0 there made it NaN.
    """

    def __init__(self, params: Any, lr: float = 1e-2, wd: float = 0.0):
        super().__init__(params, {"lr": lr, "wd": float(wd), "wd_mult": 1.0})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _call(closure)
        for group in self.param_groups:
            decay = group["wd"] if group["wd_mult"] > 0 else 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["h"] = g * g
                h = state["h"]
                h.addcmul_(g, g)
                update = g + decay * p if decay else g
                scaled = torch.where(h > 0, update / h.sqrt(), torch.zeros_like(update))
                p.sub_(scaled, alpha=group["lr"])
        return loss


class AdaDelta(torch.optim.Optimizer):
    """ELEKTRONN2's AdaDelta with ``rho`` (ELEKTRONN2's ``mom``) and ε = 1e-5.

    ``dir = g·√(δ_old+ε)/√(s_old+ε)`` with the averages *before* this step, then
    ``s = ρ·s_old + (1-ρ)·g²``, ``δ = ρ·δ_old + (1-ρ)·dir²``, ``p <- p - lr·(dir + wd·r·p)``.
    """

    def __init__(
        self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-5, wd: float = 0.0
    ):
        defaults = {"lr": lr, "rho": rho, "eps": eps, "wd": float(wd), "wd_mult": 1.0}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _call(closure)
        for group in self.param_groups:
            rho, eps = group["rho"], group["eps"]
            decay = group["wd"] * group["wd_mult"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["s"] = torch.zeros_like(p)
                    state["delta"] = torch.zeros_like(p)
                s, delta = state["s"], state["delta"]
                direction = g * (delta + eps).sqrt() / (s + eps).sqrt()
                s.mul_(rho).addcmul_(g, g, value=1 - rho)
                delta.mul_(rho).addcmul_(direction, direction, value=1 - rho)
                if decay:
                    direction.add_(p, alpha=decay)
                p.sub_(direction, alpha=group["lr"])
        return loss
