"""Checks of what the evaluation counts: labels, scores and lists of cubes.

The pure core ``trainer.metrics`` runs these on every cube it is given (and re-exports their
names); ELEKTRONN2's wrappers in ``trainer.evaluation`` use them directly. Each error names the
values it found and what to do.

Example:
    >>> check_labels(np.array([0, 1, -1])).dtype
    dtype('int8')
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["IGNORE_LABEL", "EvaluationInputError", "as_cube_pairs", "check_labels", "check_scores"]

IGNORE_LABEL = -1


class EvaluationInputError(ValueError):
    """Labels or scores that cannot be evaluated (shape, values, emptiness)."""


def as_cube_pairs(
    gt: Any, scores: Any, what: str = "scores"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair up labels and scores given as arrays or as lists of cubes; check shapes.

    Args:
        gt: one array or a list/tuple of arrays of labels.
        scores: the same structure of scores (or of thresholded predictions).
        what: name of the second argument in error messages.

    Returns:
        list of ``(gt_cube, score_cube)`` numpy arrays with equal shapes.

    Raises:
        EvaluationInputError: on different list lengths, different shapes or no voxels at all.
    """
    gt_list = list(gt) if isinstance(gt, list | tuple) else [gt]
    sc_list = list(scores) if isinstance(scores, list | tuple) else [scores]
    if len(gt_list) != len(sc_list):
        raise EvaluationInputError(
            f"got {len(gt_list)} label cubes but {len(sc_list)} {what} cubes; pass one {what} "
            "cube per label cube"
        )
    pairs = []
    for i, (g, s) in enumerate(zip(gt_list, sc_list)):
        g, s = np.asarray(g), np.asarray(s)
        if g.shape != s.shape:
            where = f" (cube {i})" if len(gt_list) > 1 else ""
            raise EvaluationInputError(
                f"shape mismatch{where}: labels have shape {g.shape} but {what} have shape "
                f"{s.shape}; crop both to the same shape first"
            )
        pairs.append((g, s))
    if not pairs or all(g.size == 0 for g, _ in pairs):
        raise EvaluationInputError(f"empty input: no labels and {what} to evaluate")
    return pairs


def check_labels(gt: np.ndarray) -> np.ndarray:
    """Labels as ``int8`` after checking they are all 0, 1 or -1 (bool and float 0./1. accepted).

    Raises:
        EvaluationInputError: naming the offending values.
    """
    gt = np.asarray(gt)
    if gt.dtype == np.bool_:
        return gt.view(np.int8)
    if gt.size == 0:
        return gt.astype(np.int8)
    if gt.dtype.kind in "iu":
        lo, hi = gt.min(), gt.max()
        if lo >= -1 and hi <= 1:
            return gt.astype(np.int8, copy=False)
    elif gt.dtype.kind == "f":
        g8 = gt.astype(np.int8)
        if np.array_equal(g8, gt):  # also rejects NaN
            return check_labels(g8)
    else:
        raise EvaluationInputError(f"labels must be numbers (0, 1 or -1), got dtype {gt.dtype}")
    bad = np.unique(gt[(gt != 0) & (gt != 1) & (gt != IGNORE_LABEL)])
    raise EvaluationInputError(
        f"labels must be 0 (negative), 1 (positive) or -1 (ignore); found {bad[:5].tolist()}"
        f"{' ...' if bad.size > 5 else ''}; binarise them first (e.g. labels > 0.5)"
    )


def check_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as a float array after checking they are finite and in ``[0, 1]``.

    float32 stays float32 (cheaper); other types become float64. All voxels are checked, ignored
    ones included: a NaN anywhere in a prediction is a bug worth hearing about.

    Raises:
        EvaluationInputError: on NaN, infinities or values outside ``[0, 1]``.
    """
    s = np.asarray(scores)
    if s.dtype.kind not in "fbiu":
        raise EvaluationInputError(f"scores must be numbers in [0, 1], got dtype {s.dtype}")
    if s.dtype != np.float32:
        s = s.astype(np.float64)
    if s.size == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    if math.isnan(lo) or math.isnan(hi):
        n_nan = int(np.count_nonzero(np.isnan(s)))
        raise EvaluationInputError(
            f"scores contain {n_nan} NaN value(s); the prediction is broken (diverged model?)"
        )
    if lo < 0.0 or hi > 1.0:
        raise EvaluationInputError(
            f"scores must be probabilities in [0, 1], found values in [{lo:g}, {hi:g}]; apply a "
            "softmax/sigmoid first"
        )
    return s
