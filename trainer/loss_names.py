"""The names the ``loss`` / ``loss_params`` config keys accept, and their check.

Torch-free, so a config is checked (``trainer.config.ExperimentConfig``) without importing
torch: a sweep driver or a dashboard's ``run.py sweep --detach`` child executes a config but
never trains it. The losses themselves are in ``trainer.losses``.

Example:
    >>> check_loss("Dice", {"smooth": 1e-5})
    []
    >>> check_loss("dice", None)[0][:45]
    "'loss': unknown loss 'dice': did you mean 'Di"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainer.errors import suggest

#: loss names the ``loss`` config key accepts (besides a callable or a ``torch.nn.Module``)
LOSSES = ("CrossEntropy", "Dice", "CrossEntropy+Dice", "SquaredLoss", "MSE")
#: ``loss_params`` keys each named loss accepts
LOSS_PARAMS: dict[str, tuple[str, ...]] = {
    "CrossEntropy": (),
    "Dice": ("smooth",),
    "CrossEntropy+Dice": ("ce_weight", "dice_weight", "smooth"),
    "SquaredLoss": (),
    "MSE": (),
}
#: ``loss_params`` keys of a callable loss: ``targets='values'`` makes it a regression loss
CALLABLE_PARAMS = ("targets",)


def check_loss(loss: Any, params: Any) -> list[str]:
    """Problems with the ``loss`` / ``loss_params`` config keys, as config-error lines."""
    if isinstance(params, Mapping):
        params = dict(params)
    elif params is not None:
        return [f"'loss_params': expected a dict or None, got {type(params).__name__}"]
    params = params or {}
    if callable(loss):
        allowed = CALLABLE_PARAMS
        if params.get("targets", "classes") not in ("classes", "values"):
            return ["'loss_params': 'targets' must be 'classes' or 'values'"]
    elif isinstance(loss, str) and loss in LOSSES:
        allowed = LOSS_PARAMS[loss]
    else:
        guess = suggest(str(loss), LOSSES, min_len=2) if isinstance(loss, str) else None
        hint = f"did you mean '{guess}'? " if guess else ""
        return [
            f"'loss': unknown loss {loss!r}: {hint}expected one of {', '.join(LOSSES)}, "
            "or a function / torch.nn.Module (output, target) -> scalar defined in the config"
        ]
    unknown = [k for k in params if k not in allowed]
    if unknown:
        return [
            f"'loss_params': unknown key(s) {', '.join(map(repr, unknown))} for loss "
            f"{loss_name(loss)!r}; accepted: {', '.join(allowed) or 'none'}"
        ]
    return []


def loss_name(loss: Any) -> str:
    """A loss's name for messages and the history: the config's name, a function's qualified
    name, or a ``torch.nn.Module``'s class name (an instance has no ``__qualname__``)."""
    if isinstance(loss, str):
        return loss
    return getattr(loss, "__qualname__", type(loss).__name__)
