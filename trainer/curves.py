"""Curves sized by what anyone reads: thinning, preset thresholds and binned counts of a result.

An exact-mode ``EvaluationResult`` has a threshold per distinct score (7.7 M for 10^7 float32
scores); nobody reads that many: a plot has a few thousand pixels across, a slider moves in steps
of 10^-4. This module is the pure core both the result file (``trainer.runs``) and the evaluation
page (``app.evaluation_figures``) thin curves with:

* ``thin_indices``: every ``k``-th index plus the ones that must stay, at most ``max_points``;
* ``thin_result``: a result thinned to ``MAX_CURVE_POINTS`` thresholds that keeps the curve's
  corners (``corner_indices``), every preset's threshold (``preset_indices``) and the chosen one
  exactly, so ``thin_result(res).choose(m)`` is ``res.choose(m)`` for every preset ``m`` without a
  target; areas (ROC AUC, AP) stay those of the full curve;
* ``binned_counts``: the counts at the edges ``i / n_bins``, as binned mode counts them;
* ``stored_curves``: what a result file keeps of one split (``StoredCurves``).

No files, no plotting.

Example:
    >>> import numpy as np
    >>> from trainer.metrics import evaluate_arrays
    >>> rng = np.random.default_rng(0)
    >>> res = evaluate_arrays(rng.random(10**5) < 0.3, rng.random(10**5))
    >>> small = thin_result(res)
    >>> small.thresholds.size <= MAX_CURVE_POINTS, small.roc_auc == res.roc_auc
    (True, True)
    >>> small.choose("max_f1") == res.choose("max_f1")
    True
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from trainer.metrics import (
    DEFAULT_N_BINS,
    NOTHING_POSITIVE,
    TARGETLESS_PRESETS,
    EvaluationResult,
    best_indices,
)

__all__ = [
    "MAX_CURVE_POINTS",
    "TARGETLESS_PRESETS",
    "StoredCurves",
    "binned_counts",
    "binned_counts_of",
    "corner_indices",
    "preset_indices",
    "stored_curves",
    "thin_indices",
    "thin_result",
]

#: the most thresholds a stored or drawn curve keeps: an exact-mode result has one per distinct
#: score (6.5 * 10^4 for 2^16 voxels: 10 MB of figure JSON for the page's four curves, seconds of
#: first paint); 4096 are more than a plot has pixels across
MAX_CURVE_POINTS = 4096


def thin_indices(
    index: np.ndarray, max_points: int = MAX_CURVE_POINTS, keep: Iterable[int] = ()
) -> np.ndarray:
    """Every ``k``-th of ``index``, its first and last, and ``keep``: at most ``max_points``.

    Args:
        index: ascending indices (e.g. ``np.arange(n)``).
        max_points: the most indices returned (at least ``2 + len(keep)``).
        keep: values of ``index`` that must stay (e.g. a preset's index).

    Returns:
        ascending indices, all of ``index`` when it has at most ``max_points``.

    Raises:
        ValueError: ``max_points`` leaves no room for the indices that must stay.
    """
    index = np.asarray(index)
    if len(index) <= max_points:
        return index
    must = np.unique(np.concatenate([index[[0, -1]], np.asarray(list(keep), index.dtype)]))
    room = max_points - must.size
    if room < 1:
        raise ValueError(
            f"max_points={max_points} leaves no room beside the {must.size} indices that must "
            "stay; give a larger max_points"
        )
    step = -(-len(index) // room)  # ceil: index[::step] has at most `room` entries
    return np.union1d(index[::step], must)


def corner_indices(res: EvaluationResult) -> list[int]:
    """Where the ROC curve turns at the unit square's edges: its ends (1, 1) and (0, 0), the
    highest score (the first point off (0, 0)), the last threshold with TPR 1 (where the curve
    leaves the top edge) and the first with FPR 0 (where it reaches the left edge)."""
    k = res.thresholds.size
    last_score = int(np.searchsorted(res.thresholds, 1.0, side="right")) - 1
    # tp and fp do not increase with the threshold: binary searches, ~23 steps for 10^7
    tpr_one = bisect.bisect_left(range(k), True, key=lambda i: res.tp[i] < res.n_pos) - 1
    fpr_zero = bisect.bisect_left(range(k), True, key=lambda i: res.fp[i] == 0)
    return sorted({min(max(i, 0), k - 1) for i in (0, k - 1, last_score, tpr_one, fpr_zero)})


def preset_indices(res: EvaluationResult) -> dict[str, int]:
    """The index of every target-free preset's threshold (``TARGETLESS_PRESETS``) and, if the
    result has one, the chosen threshold's (key ``'chosen'``)."""
    # the scan EvaluationResult.choose makes, once for all presets
    out = best_indices(res.tp, res.fp, res.n_pos, res.n_neg, TARGETLESS_PRESETS)
    if res.chosen is not None and math.isfinite(res.chosen.threshold):
        out["chosen"] = res.index(res.chosen.threshold)
    return out


def thin_result(res: EvaluationResult, max_points: int = MAX_CURVE_POINTS) -> EvaluationResult:
    """``res`` with at most ``max_points`` thresholds and their exact counts.

    Keeps ``corner_indices`` and ``preset_indices`` exactly, the rest evenly spaced in rank
    (``thin_indices``). The metric of a preset is a function of one threshold's counts, so each
    target-free preset picks the same threshold on the thinned result as on the full one (ties
    go to the smallest threshold on both, and the full result's pick is kept). ``roc_auc`` and
    ``average_precision`` are the full curve's. A result with few enough thresholds is returned
    as it is.
    """
    if res.thresholds.size <= max_points:
        return res
    keep = corner_indices(res) + list(preset_indices(res).values())
    idx = thin_indices(np.arange(res.thresholds.size), max_points, keep)
    small = dataclasses.replace(
        res,
        thresholds=res.thresholds[idx],
        tp=res.tp[idx],
        fp=res.fp[idx],
        tn=res.tn[idx],
        fn=res.fn[idx],
    )
    # the areas belong to the full curve, not to its subsample
    small.__dict__["roc_auc"] = res.roc_auc
    small.__dict__["average_precision"] = res.average_precision
    return small


def binned_counts(
    res: EvaluationResult, n_bins: int = DEFAULT_N_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, tp, fp)`` at the edges ``i / n_bins`` (``i = 0 .. n_bins``) and
    ``NOTHING_POSITIVE``: the counts of ``score >= edge``, as binned mode counts them.

    A binned result with these ``n_bins`` gives its own arrays; an exact result gives the counts
    at the stored threshold at or above each edge (exact: every score is a threshold).
    """
    if res.mode == "binned" and res.n_bins == n_bins:
        return res.thresholds, res.tp, res.fp
    return binned_counts_of(res.thresholds, res.tp, res.fp, n_bins)


def binned_counts_of(
    thresholds: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_bins: int = DEFAULT_N_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``binned_counts`` of ascending ``thresholds`` and their counts (ending at
    ``NOTHING_POSITIVE``)."""
    edges = np.arange(n_bins + 1) / n_bins
    idx = np.minimum(np.searchsorted(thresholds, edges, side="left"), tp.size - 1)
    return np.append(edges, NOTHING_POSITIVE), np.append(tp[idx], 0), np.append(fp[idx], 0)


@dataclasses.dataclass(frozen=True, eq=False)
class StoredCurves:
    """What a result file keeps of one split (layout in docs/evaluation.md).

    Attributes:
        thinned: the result thinned to ``MAX_CURVE_POINTS`` (``thin_result``), with the full
            result's areas, choice, histograms and error histogram.
        binned: ``(thresholds, tp, fp)`` at the ``n_bins + 1`` edges (``binned_counts``).
        n_bins: the bins of ``binned``: the result's own in binned mode, else ``DEFAULT_N_BINS``.
        exact: the full exact-mode result when exact counts at every score are kept, else
            ``None``.
        n_thresholds: how many thresholds the full result has.
    """

    thinned: EvaluationResult
    binned: tuple[np.ndarray, np.ndarray, np.ndarray]
    n_bins: int
    exact: EvaluationResult | None
    n_thresholds: int

    def with_error_hist(self, hist: Any) -> StoredCurves:
        """A copy whose ``thinned`` (and ``exact``) carry the error histogram ``hist``."""
        exact = self.exact.with_error_hist(hist) if self.exact is not None else None
        return dataclasses.replace(self, thinned=self.thinned.with_error_hist(hist), exact=exact)


def stored_curves(res: EvaluationResult, store_exact: bool = False) -> StoredCurves:
    """The ``StoredCurves`` of ``res``: thinned and binned always; the exact counts at every
    distinct score only with ``store_exact`` (and only in exact mode: a binned result's counts
    are all in ``binned``)."""
    n_bins = res.n_bins if res.mode == "binned" and res.n_bins else DEFAULT_N_BINS
    return StoredCurves(
        thinned=thin_result(res),
        binned=binned_counts(res, n_bins),
        n_bins=n_bins,
        exact=res if store_exact and res.mode == "exact" else None,
        n_thresholds=int(res.thresholds.size),
    )
