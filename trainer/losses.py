"""Training losses: ELEKTRONN2's class-weighted cross entropy and squared loss, soft Dice, MSE.

Pure torch functions and modules of ``(output, target)``; nothing here reads a config or a
file. ``make_loss`` turns the ``loss`` / ``loss_params`` / ``class_weights`` config keys into
a ``LossSpec``: the loss, and whether its targets are class labels or values (which decides
the error column of the history: classification error in percent, or mean squared error).

Class targets are int64 ``(bs, z, y, x)`` with ``IGNORE_INDEX`` (or any negative label) on
voxels that count for nothing; value targets are float, NaN on voxels that count for nothing.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 2, 1, 1, 2)
    >>> target = torch.tensor([[[[0, -100]]]])
    >>> round(float(cross_entropy(logits, target, weight=torch.tensor([2.0, 1.0]))), 4)
    1.3863
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from trainer.errors import ConfigError
from trainer.loss_names import (  # noqa: F401 - names checked without torch, re-exported here
    CALLABLE_PARAMS,
    LOSS_PARAMS,
    LOSSES,
    check_loss,
    loss_name,
)

#: labels below zero are ignored by losses, error and metrics (ELEKTRONN2 used -1 and -666)
IGNORE_INDEX = -100


def _labelled(target: torch.Tensor) -> torch.Tensor:
    return target >= 0


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """ELEKTRONN2's class-weighted multinoulli NLL: ``Σ w_t · nll / N_labelled``.

    Unlike ``F.cross_entropy(weight=w)``, which divides by ``Σ w_t`` over the labelled voxels,
    the weights are not renormalised: doubling every weight doubles the loss, and the loss
    is a weighted sum per labelled voxel (docs/deviations.md).

    Args:
        logits: ``(bs, n_classes, ...)`` scores before the softmax.
        target: ``(bs, ...)`` class indices; negative labels are ignored.
        weight: ``(n_classes,)`` class weights, or ``None`` (all 1).

    Returns:
        A scalar; 0 when no voxel is labelled.
    """
    logits = logits.float()
    mask = _labelled(target)
    safe = torch.where(mask, target, torch.zeros_like(target))
    nll = -torch.gather(F.log_softmax(logits, dim=1), 1, safe.unsqueeze(1)).squeeze(1)
    if weight is not None:
        nll = nll * weight.to(nll.dtype)[safe]
    nll = torch.where(mask, nll, torch.zeros_like(nll))
    return nll.sum() / mask.sum().clamp_min(1)


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss over classes: ``1 − mean_c (2 Σ p_c t_c + s) / (Σ p_c + Σ t_c + s)``.

    ``p`` is the softmax of ``logits``, ``t`` the one-hot target; sums run over the labelled
    voxels of the whole batch. With class weights the mean over classes is weighted,
    ``Σ w_c D_c / Σ w_c`` (so the loss stays within [0, 1]).

    Args:
        logits: ``(bs, n_classes, ...)``.
        target: ``(bs, ...)`` class indices; negative labels are ignored.
        weight: ``(n_classes,)`` weights of the per-class Dice terms, or ``None``.
        smooth: added to numerator and denominator (a class absent from prediction and
            target scores 1).
    """
    prob = F.softmax(logits.float(), dim=1)
    n_classes = prob.shape[1]
    mask = _labelled(target)
    safe = torch.where(mask, target, torch.zeros_like(target))
    onehot = F.one_hot(safe, n_classes).movedim(-1, 1).to(prob.dtype)
    m = mask.unsqueeze(1).to(prob.dtype)
    dims = [0, *range(2, prob.ndim)]
    inter = (prob * onehot * m).sum(dims)
    total = (prob * m).sum(dims) + (onehot * m).sum(dims)
    dice = (2 * inter + smooth) / (total + smooth)
    if weight is None:
        return 1 - dice.mean()
    w = weight.to(dice.dtype)
    return 1 - (w * dice).sum() / w.sum()


def _value_diff(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred − target, 0 where the target is NaN)`` and the labelled-voxel count."""
    pred = pred.float()
    target = target.to(pred.dtype)
    if target.ndim == pred.ndim - 1:
        target = target.unsqueeze(1)
    if target.shape != pred.shape:
        raise ValueError(
            f"SquaredLoss: model output {tuple(pred.shape)} and targets {tuple(target.shape)} "
            "differ in shape; a regression model needs one output channel per target channel"
        )
    mask = ~torch.isnan(target)
    return torch.where(mask, pred - target, torch.zeros_like(pred)), mask.sum()


def squared_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ELEKTRONN2's ``SquaredLoss`` (averaged by its ``AggregateLoss``): ``½ Σ d² / (N + 1)``.

    ``d = pred − target`` over the ``N`` labelled values (every channel of every voxel whose
    target is not NaN). ELEKTRONN2 scaled each term by ``n_total / (N + 1)`` and then took
    the mean over all ``n_total`` values, which is this formula; the ``+ 1`` keeps it finite
    when nothing is labelled (0 then). For the plain mean ``Σ d² / N`` use ``mean_squared_error``.

    Args:
        pred: ``(bs, C, ...)`` model output.
        target: same shape, or ``(bs, ...)`` when ``C`` is 1; NaN targets are ignored
            (ELEKTRONN2 marked them -666: docs/deviations.md).

    Raises:
        ValueError: the shapes do not match (the message gives both).

    Example:
        >>> float(squared_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, float("nan")]])))
        0.25
    """
    diff, n = _value_diff(pred, target)
    return 0.5 * (diff * diff).sum() / (n + 1)


def mean_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``Σ d² / N`` over the ``N`` values whose target is not NaN.

    Args and errors as ``squared_loss``; 0 when nothing is labelled.
    """
    diff, n = _value_diff(pred, target)
    return (diff * diff).sum() / n.clamp_min(1)


class CrossEntropyDiceLoss(torch.nn.Module):
    """``ce_weight · cross_entropy + dice_weight · dice_loss`` (class weights go to both)."""

    def __init__(
        self,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1e-5,
        weight: torch.Tensor | None = None,
    ):
        super().__init__()
        self.ce_weight, self.dice_weight, self.smooth = float(ce_weight), float(dice_weight), smooth
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = cross_entropy(logits, target, self.weight)
        dice = dice_loss(logits, target, self.weight, self.smooth)
        return self.ce_weight * ce + self.dice_weight * dice


@dataclasses.dataclass
class LossSpec:
    """A loss ready to call, and what its targets are.

    Attributes:
        fn: ``fn(output, target) -> scalar tensor``.
        name: the config's loss name (a callable's qualified name).
        targets: ``'classes'`` (int64 labels; error column = classification error in percent,
            per-class IoU/Dice recorded) or ``'values'`` (float; error column = mean squared
            error).
    """

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    name: str
    targets: str = "classes"

    @property
    def error_label(self) -> str:
        """What the history's error columns hold, in words (the dashboard's axis title)."""
        return "classification error (%)" if self.targets == "classes" else "mean squared error"


def make_loss(loss: Any, params: Mapping | None, class_weights: torch.Tensor | None) -> LossSpec:
    """The ``LossSpec`` of checked config values (``check_loss`` found nothing).

    Class weights apply to ``CrossEntropy`` (ELEKTRONN2's normalisation), to ``Dice`` (a
    weighted mean of the per-class Dice terms) and to both parts of ``CrossEntropy+Dice``;
    ``SquaredLoss``, ``MSE`` and callables do not see them.

    Raises:
        ConfigError: the values do not pass ``check_loss``.
    """
    problems = check_loss(loss, params)
    if problems:
        raise ConfigError("; ".join(problems))
    params = dict(params or {})
    w = class_weights
    if callable(loss):
        return LossSpec(loss, loss_name(loss), params.get("targets", "classes"))
    if loss == "CrossEntropy":
        return LossSpec(lambda x, y: cross_entropy(x, y, w), loss)
    if loss == "Dice":
        smooth = float(params.get("smooth", 1e-5))
        return LossSpec(lambda x, y: dice_loss(x, y, w, smooth), loss)
    if loss == "CrossEntropy+Dice":
        return LossSpec(CrossEntropyDiceLoss(weight=w, **params), loss)
    if loss == "MSE":
        return LossSpec(mean_squared_error, loss, "values")
    return LossSpec(squared_loss, loss, "values")
