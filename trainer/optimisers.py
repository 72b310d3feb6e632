"""Optimisers: ELEKTRONN2's optimiser names, parameter keys and update rules on PyTorch.

ELEKTRONN2 keys (``lr``, ``mom``, ``beta2``, ``wd``) are translated to the optimiser's
param-group keys; PyTorch's own argument names (``momentum``, ``betas``, ``eps``, ...) are
accepted as well. Weight decay (``wd``, or PyTorch's name ``weight_decay``) is ELEKTRONN2's for
every optimiser: decoupled, ``p <- p - lr * (update + wd * p)``, and only on weights (conv,
linear and recurrent ``weight*`` tensors; never biases or normalisation parameters). The
classes are in ``trainer.update_rules``; docs/porting.md compares them with ELEKTRONN2.

==========  ==========================  ========================================================
name        update rule                 accepted ``optimiser_params`` keys
==========  ==========================  ========================================================
SGD         torch ``SGD`` direction     lr, mom -> momentum, wd, nesterov, dampening
Adam        ELEKTRONN2's Adam           lr, mom -> betas[0], beta2 -> betas[1], wd, betas, eps
                                        (ε 1e-5 inside the square root)
AdamW       torch ``AdamW`` direction   as Adam, plus amsgrad (ε 1e-8 outside the root)
RMSprop     torch ``RMSprop`` direction lr, mom -> momentum, beta2 -> alpha, wd, eps, centered
AdaGrad     ELEKTRONN2's AdaGrad        lr, wd
AdaDelta    ELEKTRONN2's AdaDelta       lr, mom -> rho (ELEKTRONN2's ``mom`` was AdaDelta's
                                        decay rate), wd, eps
==========  ==========================  ========================================================

Example:
    >>> import torch
    >>> opt = make_optimiser(torch.nn.Linear(2, 1), "Adam", {"lr": 1e-3, "mom": 0.8, "wd": 1e-4})
    >>> get_hyper(opt, "mom"), [g["wd_mult"] for g in opt.param_groups]
    (0.8, [1.0, 0.0])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainer.errors import ConfigError, suggest
from trainer.hyperparams import TORCH_NAMES, names_of

if TYPE_CHECKING:
    import torch

#: optimiser names a config may give (any case), in their canonical spelling
OPTIMISERS = ("SGD", "Adam", "AdamW", "RMSprop", "AdaGrad", "AdaDelta")

#: canonical name -> class in trainer.update_rules
CLASSES = {name: name for name in OPTIMISERS}

# config key -> param-group key; ("betas", i) is one element of the betas pair. PyTorch's
# ``weight_decay`` is another name for ``wd``: both are ELEKTRONN2's decoupled decay.
_DECAY = dict.fromkeys(names_of("wd"), "wd")
_MOMENTUM = {"mom": TORCH_NAMES["mom"]}
_ADAM_ALIASES = {"lr": "lr", "mom": ("betas", 0), "beta2": ("betas", 1), **_DECAY}
ALIASES: dict[str, dict[str, Any]] = {
    "SGD": {"lr": "lr", **_MOMENTUM, **_DECAY},
    "Adam": _ADAM_ALIASES,
    "AdamW": _ADAM_ALIASES,
    "RMSprop": {"lr": "lr", **_MOMENTUM, "beta2": "alpha", **_DECAY},
    "AdaGrad": {"lr": "lr", **_DECAY},
    "AdaDelta": {"lr": "lr", "mom": "rho", **_DECAY},
}

#: param-group keys accepted under their own names
NATIVE: dict[str, tuple[str, ...]] = {
    "SGD": ("momentum", "nesterov", "dampening"),
    "Adam": ("betas", "eps"),
    "AdamW": ("betas", "eps", "amsgrad"),
    "RMSprop": ("alpha", "eps", "momentum", "centered"),
    "AdaGrad": (),
    "AdaDelta": ("rho", "eps"),
}

#: PyTorch keys that ELEKTRONN2's rules have no place for: what to use instead
_NOT_IN_RULE = {
    ("Adam", "amsgrad"): "ELEKTRONN2's Adam has no amsgrad; optimiser 'AdamW' (PyTorch's Adam "
    "direction) takes it. ",
    **{
        ("AdaGrad", key): f"ELEKTRONN2's AdaGrad rule has no '{key}' (PyTorch's Adagrad had). "
        for key in ("eps", "lr_decay", "initial_accumulator_value")
    },
}

#: what a setting left out of ``optimiser_params`` is, beside ELEKTRONN2's value (its settings
#: were global: lr 1, mom 0.9, wd 0, Adam's beta2 0.999, ε 1e-5); ``None``: the key is
#: required, or the optimiser has no such setting. docs/porting.md shows this table.
DEFAULTS: dict[str, dict[str, float | None]] = {
    "SGD": {"lr": None, "mom": 0.9, "wd": 0.0},
    "Adam": {"lr": None, "mom": 0.9, "beta2": 0.999, "eps": 1e-5, "wd": 0.0},
    "AdamW": {"lr": None, "mom": 0.9, "beta2": 0.999, "eps": 1e-8, "wd": 0.0},
    "RMSprop": {"lr": None, "mom": 0.0, "beta2": 0.99, "eps": 1e-8, "wd": 0.0},
    "AdaGrad": {"lr": None, "wd": 0.0},
    "AdaDelta": {"lr": None, "mom": 0.9, "eps": 1e-5, "wd": 0.0},
}

_MISSING_LR = (
    "'lr' is missing: add the learning rate, e.g. optimiser_params = dict(lr=1e-3, ...). "
    "ELEKTRONN2's default was 1, far too large for {name} in most networks; usual values: "
    "Adam/AdamW 1e-4 to 1e-3, SGD 1e-3 to 1e-1, RMSprop 1e-4 to 1e-2, AdaGrad 1e-3 to 1e-1, "
    "AdaDelta 1"
)

# value checks: key -> (predicate, expected)
_IN_0_1 = (lambda v: _is_number(v) and 0 <= v < 1, "number in [0, 1)")
_NONNEG = (lambda v: _is_number(v) and v >= 0, "number >= 0")
_POS = (lambda v: _is_number(v) and v > 0, "number > 0")
_BOOL = (lambda v: isinstance(v, bool), "bool")
_VALUE_CHECKS = {
    "lr": _NONNEG,
    **dict.fromkeys(names_of("mom"), _IN_0_1),
    "beta2": _IN_0_1,
    **dict.fromkeys(names_of("wd"), _NONNEG),
    "dampening": _IN_0_1,
    "alpha": _IN_0_1,
    "rho": _IN_0_1,
    "eps": _POS,
    "lr_decay": _NONNEG,
    "initial_accumulator_value": _NONNEG,
    "nesterov": _BOOL,
    "amsgrad": _BOOL,
    "centered": _BOOL,
    "betas": (
        lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(_IN_0_1[0](b) for b in v),
        "pair of numbers in [0, 1)",
    ),
}


def canonical_optimiser(name: Any) -> str | None:
    """The canonical spelling of an optimiser name (case-insensitive), or ``None``.

    Example:
        >>> canonical_optimiser("adamw"), canonical_optimiser("lbfgs")
        ('AdamW', None)
    """
    if not isinstance(name, str):
        return None
    return {o.lower(): o for o in OPTIMISERS}.get(name.lower())


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(v)


def _torch_name(name: str, key: str) -> Any:
    return ALIASES[name].get(key, key)


def _slots(target: Any) -> list[Any]:
    """The torch settings one key writes: a whole argument, or one element of ``betas``."""
    if target == "betas":
        return [("betas", 0), ("betas", 1)]
    return [target]


def check_optimiser_params(name: str, params: Mapping[str, Any]) -> list[str]:
    """Problems with ``optimiser_params`` for optimiser ``name``; empty if fine.

    Pure (no torch import), so ``ExperimentConfig.check_config`` reports them with the rest.

    Example:
        >>> check_optimiser_params("SGD", {"lr": 0.01, "mon": 0.9})
        ["unknown key 'mon' for SGD: did you mean 'mom'? accepted: lr, mom, wd, weight_decay, momentum, nesterov, dampening"]
    """
    canonical = canonical_optimiser(name)
    if canonical is None:
        return [f"unknown optimiser {name!r}: expected one of {', '.join(OPTIMISERS)}"]
    accepted = [*ALIASES[canonical], *NATIVE[canonical]]
    errors = []
    if "lr" not in params:
        errors.append(_MISSING_LR.format(name=canonical))
    seen: dict[Any, str] = {}
    for key, value in params.items():
        if key not in accepted:
            guess = suggest(str(key), accepted, min_len=2)
            hint = f"did you mean '{guess}'? " if guess else ""
            hint = _NOT_IN_RULE.get((canonical, key), hint)
            errors.append(
                f"unknown key '{key}' for {canonical}: {hint}accepted: {', '.join(accepted)}"
            )
            continue
        # 'mom' and 'momentum' (or 'mom' and 'betas') would set the same torch argument
        for slot in _slots(_torch_name(canonical, key)):
            if slot in seen:
                errors.append(
                    f"'{seen[slot]}' and '{key}' both set the same {canonical} parameter: keep one"
                )
                break
            seen[slot] = key
        pred, expected = _VALUE_CHECKS[key] if key in _VALUE_CHECKS else (None, None)
        if pred is not None and not pred(value):
            errors.append(f"'{key}': expected {expected}, got {type(value).__name__} {value!r}")
    if "nesterov" in params and params.get("nesterov") is True:
        mom = params.get("mom", params.get("momentum", DEFAULTS[canonical].get("mom", 0)))
        if not (_is_number(mom) and mom > 0):
            errors.append("'nesterov': needs 'mom' > 0 (Nesterov momentum without momentum)")
    return errors


def make_optimiser(
    params: Any,
    name: str,
    optimiser_params: Mapping[str, Any],
    decay_batchnorm_scales: bool = False,
) -> torch.optim.Optimizer:
    """Build an optimiser from ELEKTRONN2-style settings.

    Args:
        params: a model (its weights are decayed, its other parameters not: see
            ``trainer.update_rules.weight_groups``), or parameters / param groups (each group
            decayed with its ``wd_mult``, default 1).
        name: one of SGD, Adam, AdamW, RMSprop, AdaGrad, AdaDelta (case-insensitive).
        optimiser_params: e.g. ``{'lr': 1e-3, 'mom': 0.9, 'wd': 5e-4}``; see the module table.
        decay_batchnorm_scales: with a model, decay its batch-norm scales as ELEKTRONN2 did
            (three times as strongly as weights; the config key of that name).

    Raises:
        ConfigError: unknown optimiser, unknown key (with a did-you-mean), or a bad value.

    Example:
        >>> import torch
        >>> opt = make_optimiser(torch.nn.Linear(2, 1), "sgd", {"lr": 0.1, "mom": 0.9})
        >>> type(opt).__name__, opt.param_groups[0]["momentum"]
        ('SGD', 0.9)
    """
    import torch

    from trainer import update_rules

    errors = check_optimiser_params(name, optimiser_params)
    if errors:
        raise ConfigError(f"optimiser {name!r}: " + "; ".join(errors))
    canonical = canonical_optimiser(name)
    kwargs: dict[str, Any] = {}
    betas: dict[int, float] = {}
    for key, value in optimiser_params.items():
        target = _torch_name(canonical, key)
        if isinstance(target, tuple):
            betas[target[1]] = float(value)
        else:
            kwargs[target] = tuple(value) if target == "betas" else value
    cls = getattr(update_rules, CLASSES[canonical])
    if betas:
        b0, b1 = kwargs.get("betas", (0.9, 0.999))  # the default of every Adam here
        kwargs["betas"] = (betas.get(0, b0), betas.get(1, b1))
    if isinstance(params, torch.nn.Module):
        params = update_rules.weight_groups(params, decay_batchnorm_scales)
    return cls(params, **kwargs)


def _hyper_slot(group: Mapping[str, Any], key: str) -> tuple[str, int | None] | None:
    """Where hyper-parameter ``key`` lives in a param group: (entry, index in a pair)."""
    if key == "lr":
        return ("lr", None)
    if key in names_of("wd"):
        for entry in names_of("wd"):
            if entry in group:
                return (entry, None)
        return None
    if key == "mom":
        if "momentum" in group:
            return ("momentum", None)
        if "betas" in group:
            return ("betas", 0)
        if "rho" in group:
            return ("rho", None)
        return None
    return (key, None) if key in group else None


def get_hyper(optimizer: torch.optim.Optimizer, key: str) -> float:
    """Current value of ``'lr'``, ``'mom'`` or ``'wd'`` (or any param-group entry) as a float.

    ``mom`` is ``momentum``, ``betas[0]`` or AdaDelta's ``rho``; ``wd`` is ``wd`` (the
    decay of the weights' groups) or a plain torch optimiser's ``weight_decay``. NaN when the optimiser has no such parameter
    (e.g. ``mom`` for AdaGrad). The first param group is read.
    """
    group = optimizer.param_groups[0]
    slot = _hyper_slot(group, key)
    if slot is None:
        return math.nan
    entry, index = slot
    value = group[entry] if index is None else group[entry][index]
    return float(value)


def set_hyper(optimizer: torch.optim.Optimizer, key: str, value: float) -> None:
    """Set ``'lr'``, ``'mom'`` or ``'wd'`` (or any param-group entry) in every param group.

    Raises:
        ValueError: the optimiser has no such parameter (e.g. ``mom`` for AdaGrad), or the
            value is not a finite number.
    """
    import torch

    if not _is_number(value) or math.isinf(value):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    for group in optimizer.param_groups:
        slot = _hyper_slot(group, key)
        if slot is None:
            raise ValueError(f"{type(optimizer).__name__} has no parameter '{key}'")
        entry, index = slot
        if isinstance(group[entry], torch.Tensor):
            # capturable/fused optimisers keep lr as a tensor; update it in place
            group[entry].fill_(value)
        elif index is None:
            group[entry] = float(value)
        else:
            pair = list(group[entry])
            pair[index] = float(value)
            group[entry] = tuple(pair)
