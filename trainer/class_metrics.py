"""Per-class IoU and Dice of a segmentation, and the history columns that record them.

The trainer counts true positives, false positives and false negatives per class over the
labelled voxels of its validation monitor batches (``class_counts``, summed over batches) and
turns the sums into scores once (``overlap_scores``): a score over the pooled voxels, not a
mean of per-batch scores. A class that appears neither in the prediction nor in the labels
has no score (NaN), and the means leave it out.

History columns (after the ten standard ones, docs/history-format.md):
``valid_iou_<c>`` and ``valid_dice_<c>`` for every class ``c``, then ``valid_iou_mean`` and
``valid_dice_mean``.

Example:
    >>> import numpy as np
    >>> counts = class_counts(np.array([0, 1, 1, 0]), np.array([0, 1, 0, -1]), 2)
    >>> overlap_scores(counts)["valid_iou_1"]
    0.5
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

#: a per-class metric column (``valid_iou_3``, ``valid_dice_mean``)
CLASS_METRIC_RE = re.compile(r"^valid_(iou|dice)_(mean|\d+)$")
#: how the columns are written in messages that list the columns a run may have
CLASS_METRIC_PATTERNS = ("valid_iou_<class>", "valid_iou_mean", "valid_dice_<class>",
                         "valid_dice_mean")  # fmt: skip


def metric_columns(n_classes: int) -> tuple[str, ...]:
    """The per-class metric columns of a model with ``n_classes`` classes, in record order."""
    per = [f"valid_{m}_{c}" for m in ("iou", "dice") for c in range(int(n_classes))]
    return (*per, "valid_iou_mean", "valid_dice_mean")


def class_counts(pred: Any, target: Any, n_classes: int) -> np.ndarray:
    """``(n_classes, 3)`` counts of true positives, false positives, false negatives.

    Args:
        pred: predicted class per voxel (any shape; numpy array or torch tensor).
        target: labels of the same shape; negative labels are left out.
        n_classes: number of classes.
    """
    p = np.asarray(_numpy(pred)).ravel().astype(np.int64)
    t = np.asarray(_numpy(target)).ravel().astype(np.int64)
    keep = t >= 0
    p, t = p[keep], t[keep]
    k = int(n_classes)
    confusion = np.bincount(t * k + p, minlength=k * k)[: k * k].reshape(k, k)
    tp = np.diag(confusion)
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    return np.stack([tp, fp, fn], axis=1).astype(np.float64)


def overlap_scores(counts: np.ndarray) -> dict[str, float]:
    """IoU and Dice per class and their means (NaN-free classes only), keyed by column."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    out = {f"valid_iou_{c}": float(v) for c, v in enumerate(iou)}
    out.update({f"valid_dice_{c}": float(v) for c, v in enumerate(dice)})
    out["valid_iou_mean"] = _nanmean(iou)
    out["valid_dice_mean"] = _nanmean(dice)
    return out


def _nanmean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _numpy(x: Any) -> Any:
    detach = getattr(x, "detach", None)
    return detach().cpu().numpy() if callable(detach) else x
