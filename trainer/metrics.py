"""Binary evaluation maths: counts at every threshold in one pass, and everything derived from them.

This is the pure core under ``trainer.evaluation``: no files, no processes, no plotting.

Conventions (see docs/evaluation.md):

* Labels are ``1`` (positive), ``0`` (negative) or ``-1`` (ignored); scores are probabilities of the
  positive class in ``[0, 1]``.
* A voxel is *predicted positive* at threshold ``t`` when ``score >= t``.
* Thresholds are stored **ascending**; the last one is ``NOTHING_POSITIVE`` (just above 1), where
  nothing is predicted positive, so every curve runs from (1, 1) at the lowest threshold to (0, 0).
* Exact mode: every distinct score is a threshold (as scikit-learn's ``roc_curve`` with
  ``drop_intermediate=False``). Cost: one sort, memory 8 bytes per counted voxel.
* Binned mode: thresholds are the edges ``i / n_bins`` for ``i = 0 .. n_bins``; one ``np.bincount``
  per chunk, linear time, memory ``O(n_bins)``, streams cube by cube. Counts are exact at the edges.

Example:
    >>> import numpy as np
    >>> res = evaluate_arrays(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> round(res.roc_auc, 2), res.at(0.35).tp
    (0.75, 2)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# the input checks live beside the core; their names are the core's too
from trainer.metric_inputs import (  # noqa: F401 - re-exported
    IGNORE_LABEL,
    EvaluationInputError,
    as_cube_pairs,
    check_labels,
    check_scores,
)

#: threshold at which nothing is predicted positive (scores are at most 1); finite so it survives JSON
NOTHING_POSITIVE = float(np.nextafter(1.0, 2.0))
DEFAULT_N_BINS = 10_000
DEFAULT_HIST_BINS = 100
#: counting modes (``make_accumulator``); the evaluation page and ``run.py evaluate`` offer these
MODES = ("exact", "binned")
PRESETS = ("max_f1", "max_accuracy", "max_youden", "eer", "precision_at")
#: the presets that need no input; ``precision_at`` needs a target
TARGETLESS_PRESETS = ("max_f1", "max_accuracy", "max_youden", "eer")

# one chunk's temporaries stay in the CPU caches and a few MB of memory
_CHUNK = 1 << 18
# a chunk of a curve's counts for the scans over it (presets, areas): a few temporaries of it fit
# the CPU's L2 cache, so a curve of 10^7 thresholds is read from memory once
_SCAN = 1 << 15
# smallest probability used in log losses, as scikit-learn's log_loss does for float64
_EPS = float(np.finfo(np.float64).eps)


class SingleClassWarning(UserWarning):
    """Only one class is present after removing ignored voxels: ROC AUC is undefined (NaN)."""


def _chunks(g: np.ndarray, s: np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    g, s = g.reshape(-1), s.reshape(-1)
    for i in range(0, g.size, _CHUNK):
        yield g[i : i + _CHUNK], s[i : i + _CHUNK]


# ----------------------------------------------------------------------------------------------
# accumulators


class _Accumulator:
    """Shared parts: class histograms, the log loss and the ignore count."""

    mode = ""

    def __init__(self, hist_bins: int = DEFAULT_HIST_BINS, nll: bool = True) -> None:
        if int(hist_bins) < 1:
            raise ValueError(f"hist_bins must be >= 1, got {hist_bins}")
        self.hist_bins = int(hist_bins)
        self.with_nll = nll
        self._hist = np.zeros((3, self.hist_bins), np.int64)  # rows: neg, pos, ignored
        self._log_sum = 0.0
        self.n_cubes = 0

    def add(self, gt: Any, scores: Any) -> None:
        """Count one cube (any shape; labels and scores of equal shape). Empty cubes are skipped.

        Raises:
            EvaluationInputError: on bad shapes, labels or scores (nothing is counted then).
        """
        g, s = np.asarray(gt), np.asarray(scores)
        if g.shape != s.shape:
            raise EvaluationInputError(
                f"shape mismatch in cube {self.n_cubes}: labels have shape {g.shape} but scores "
                f"have shape {s.shape}; crop both to the same shape first"
            )
        if g.size == 0:
            return
        g, s = check_labels(g), check_scores(s)
        for gc, sc in _chunks(g, s):
            self._add_chunk(gc, sc)
        self.n_cubes += 1

    def _add_chunk(self, g: np.ndarray, s: np.ndarray) -> None:
        raise NotImplementedError

    def _add_hist(self, g: np.ndarray, s: np.ndarray) -> None:
        hb = self.hist_bins
        h = np.minimum((s * hb).astype(np.intp), hb - 1)
        h += np.array([0, hb, 2 * hb], np.intp)[g]  # label -1 indexes the last entry: ignored
        self._hist += np.bincount(h, minlength=3 * hb).reshape(3, hb)

    def _add_nll(self, g: np.ndarray, s: np.ndarray) -> None:
        # log p for positives, log(1 - p) for negatives, nothing for ignored voxels
        q = np.where(g == 1, s, 1.0 - s)
        if (g < 0).any():
            q = q[g >= 0]
        self._log_sum += float(np.log(np.clip(q, _EPS, None)).sum())

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def result(
        self,
        threshold: float | None = None,
        choose: str = "max_accuracy",
        target_precision: float | None = None,
        warn_single_class: bool = True,
    ) -> EvaluationResult:
        """The ``EvaluationResult`` of everything added so far.

        Args:
            threshold: a given threshold (recorded with method ``'given'``); else ``choose`` picks one.
            choose: preset used when no threshold is given (see ``EvaluationResult.choose``).
            target_precision: target for ``choose='precision_at'``.
            warn_single_class: emit ``SingleClassWarning`` when only one class is present.

        Raises:
            EvaluationInputError: nothing was added, or every voxel is ignored.
        """
        n_neg, n_pos = int(self._hist[0].sum()), int(self._hist[1].sum())
        n_ign = int(self._hist[2].sum())
        if n_neg + n_pos == 0:
            what = f"all {n_ign} voxels are labelled -1 (ignore)" if n_ign else "nothing was added"
            raise EvaluationInputError(f"empty input: {what}; there is nothing to evaluate")
        thresholds, tp, fp = self._counts()
        nll = -0.5 * self._log_sum / (n_pos + n_neg) if self.with_nll else math.nan
        res = EvaluationResult(
            mode=self.mode,
            thresholds=thresholds,
            tp=tp,
            fp=fp,
            tn=n_neg - fp,
            fn=n_pos - tp,
            n_pos=n_pos,
            n_neg=n_neg,
            n_ignored=n_ign,
            hist_edges=np.arange(self.hist_bins + 1) / self.hist_bins,
            hist_pos=self._hist[1].copy(),
            hist_neg=self._hist[0].copy(),
            nll=nll,
            n_bins=getattr(self, "n_bins", 0),
        )
        if warn_single_class and res.single_class:
            only = "negatives" if n_pos == 0 else "positives"
            warnings.warn(
                f"only {only} present ({n_pos} positive, {n_neg} negative, {n_ign} ignored voxels):"
                " ROC AUC is undefined and reported as NaN",
                SingleClassWarning,
                stacklevel=2,
            )
        if threshold is not None:
            return res.with_choice(res.choice_at(threshold))
        return res.with_choice(res.choose(choose, target=target_precision))


class ExactAccumulator(_Accumulator):
    """Exact counts at every distinct score; stores 4 or 8 bytes per counted voxel until ``result``.

    Each voxel becomes one unsigned key ``(bits of the score) << 1 | label``; for scores in
    ``[0, 1]`` the bits are monotonic in the value and the top bit is free. float32 scores make
    ``uint32`` keys (their bits are below 2^30), anything else ``uint64`` keys of the float64
    bits. One sort of the keys then gives both the distinct thresholds and, per threshold, how
    many positives and negatives it has.
    """

    mode = "exact"

    def __init__(self, hist_bins: int = DEFAULT_HIST_BINS, nll: bool = True) -> None:
        super().__init__(hist_bins, nll)
        self._keys: list[np.ndarray] = []

    def _add_chunk(self, g: np.ndarray, s: np.ndarray) -> None:
        self._add_hist(g, s)
        if self.with_nll:
            self._add_nll(g, s)
        keep = g >= 0
        if not keep.all():
            g, s = g[keep], s[keep]
        # + 0 turns -0.0 into 0.0 (the bits must be monotonic in the value)
        if s.dtype == np.float32:
            # a sort of 4-byte keys moves half the memory of 8-byte ones
            key = (s + np.float32(0.0)).view(np.uint32) << np.uint32(1)
        else:
            key = (s.astype(np.float64) + 0.0).view(np.uint64) << np.uint64(1)
        key |= g.view(np.uint8)
        self._keys.append(key)

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = self._keys
        if len({k.dtype for k in parts}) > 1:  # float32 and float64 cubes: all keys 64 bits wide
            parts = [_wide_keys(k) for k in parts]
        keys = np.concatenate(parts) if len(parts) != 1 else parts[0]
        self._keys = [keys]
        keys.sort()
        one = keys.dtype.type(1)
        value = keys >> one
        # a new distinct score starts where the keys differ in more than the label bit
        new = np.empty(keys.size, np.bool_)
        new[:1] = True
        np.not_equal(value[1:], value[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        del new
        m = starts.size
        # arrays one longer than the distinct scores: the last entry is NOTHING_POSITIVE's
        thresholds = np.empty(m + 1)
        thresholds[:m] = value[starts].view(np.float32 if keys.dtype == np.uint32 else np.float64)
        thresholds[m] = NOTHING_POSITIVE
        del value
        label = np.bitwise_and(keys, one, out=np.empty(keys.size, np.uint8), casting="unsafe")
        pos = np.add.reduceat(label, starts, dtype=np.int64)
        # predicted positive at threshold j: every voxel with a score >= thresholds[j]
        tp = np.zeros(m + 1, np.int64)
        np.cumsum(pos[::-1], out=tp[m - 1 :: -1])
        fp = np.zeros(m + 1, np.int64)
        np.subtract(keys.size, starts, out=fp[:m])
        fp[:m] -= tp[:m]
        return thresholds, tp, fp


def _wide_keys(keys: np.ndarray) -> np.ndarray:
    """``uint64`` keys (float64 bits << 1 | label) of ``uint32`` keys (float32 bits)."""
    if keys.dtype == np.uint64:
        return keys
    score = (keys >> np.uint32(1)).view(np.float32).astype(np.float64)
    return (score.view(np.uint64) << np.uint64(1)) | (keys & np.uint32(1)).astype(np.uint64)


class BinnedAccumulator(_Accumulator):
    """Counts at the ``n_bins + 1`` edges ``i / n_bins``: linear time, memory ``O(n_bins)``.

    Bin ``i < n_bins`` holds scores in ``[e_i, e_{i+1})``, bin ``n_bins`` holds scores equal to 1,
    with ``e = np.arange(n_bins + 1) / n_bins``; so counts at every edge are exact.

    Example:
        >>> acc = BinnedAccumulator(n_bins=1000)
        >>> for g, s in cubes:  # doctest: +SKIP
        ...     acc.add(g, s)
        >>> res = acc.result()  # doctest: +SKIP
    """

    mode = "binned"

    def __init__(
        self, n_bins: int = DEFAULT_N_BINS, hist_bins: int = DEFAULT_HIST_BINS, nll: bool = True
    ) -> None:
        super().__init__(hist_bins, nll)
        if int(n_bins) < 1 or int(n_bins) > 1 << 24:
            raise ValueError(f"n_bins must be in [1, 2**24], got {n_bins}")
        self.n_bins = int(n_bins)
        self.edges = np.arange(self.n_bins + 1) / self.n_bins
        self._bins = np.zeros((3, self.n_bins + 1), np.int64)
        self._lut = np.array([0, 1, 2], np.intp) * (self.n_bins + 1)  # label -1 -> lut[-1] -> row 2

    def _add_chunk(self, g: np.ndarray, s: np.ndarray) -> None:
        n = self.n_bins
        idx = (s.astype(np.float64) * n).astype(np.intp)
        if s.dtype != np.float32:
            # float64 scores: s * n can round across an integer; re-check against the edges.
            # (float32 scores times n < 2**24 are exact in float64, so they need no check.)
            idx -= self.edges[idx] > s
            up = np.minimum(idx + 1, n)
            idx += (self.edges[up] <= s) & (idx < n)
        self._bins += np.bincount(idx + self._lut[g], minlength=3 * (n + 1)).reshape(3, n + 1)
        if self.n_bins % self.hist_bins:
            self._add_hist(g, s)
        if self.with_nll:
            self._add_nll(g, s)

    def result(self, *args: Any, **kwargs: Any) -> EvaluationResult:
        if self.n_bins % self.hist_bins == 0:
            # the class histograms are the fine bins summed in groups (scores == 1 in the last one)
            k = self.n_bins // self.hist_bins
            h = self._bins[:, :-1].reshape(3, self.hist_bins, k).sum(axis=2)
            h[:, -1] += self._bins[:, -1]
            self._hist = h
        return super().result(*args, **kwargs)

    result.__doc__ = _Accumulator.result.__doc__

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tp = np.cumsum(self._bins[1, ::-1])[::-1]
        fp = np.cumsum(self._bins[0, ::-1])[::-1]
        return _with_sentinel(self.edges.copy(), tp, fp)


def _with_sentinel(t: np.ndarray, tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, ...]:
    return (
        np.append(t, NOTHING_POSITIVE),
        np.append(tp, 0).astype(np.int64),
        np.append(fp, 0).astype(np.int64),
    )


def make_accumulator(
    mode: str = "exact",
    n_bins: int = DEFAULT_N_BINS,
    hist_bins: int = DEFAULT_HIST_BINS,
    nll: bool = True,
) -> ExactAccumulator | BinnedAccumulator:
    """An empty accumulator for ``mode`` ``'exact'`` or ``'binned'``."""
    if mode == "exact":
        return ExactAccumulator(hist_bins=hist_bins, nll=nll)
    if mode == "binned":
        return BinnedAccumulator(n_bins=n_bins, hist_bins=hist_bins, nll=nll)
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def evaluate_arrays(
    gt: Any,
    scores: Any,
    mode: str = "exact",
    n_bins: int = DEFAULT_N_BINS,
    hist_bins: int = DEFAULT_HIST_BINS,
    threshold: float | None = None,
    choose: str = "max_accuracy",
    target_precision: float | None = None,
    nll: bool = True,
) -> EvaluationResult:
    """Evaluate probabilities against binary labels in one pass over the data.

    Args:
        gt: labels (1, 0, -1 = ignore), one array or a list of cubes.
        scores: probabilities of the positive class, same structure and shapes as ``gt``.
        mode: ``'exact'`` (every distinct score is a threshold) or ``'binned'`` (edges ``i/n_bins``).
        n_bins: number of bins in binned mode.
        hist_bins: bins of the stored per-class score histograms over ``[0, 1]``.
        threshold: a given threshold; otherwise ``choose`` picks one.
        choose: preset (``'max_accuracy'``, ``'max_f1'``, ``'max_youden'``, ``'eer'``,
            ``'precision_at'``).
        target_precision: target for ``'precision_at'``.
        nll: also compute the ``binary_nll`` of the scores.

    Returns:
        the ``EvaluationResult``.

    Raises:
        EvaluationInputError: shape mismatch, labels other than 0/1/-1, NaN or out-of-range
            scores, empty input. A single class gives a ``SingleClassWarning`` and NaN ROC AUC.
    """
    pairs = as_cube_pairs(gt, scores)
    acc = make_accumulator(mode, n_bins=n_bins, hist_bins=hist_bins, nll=nll)
    for g, s in pairs:
        acc.add(g, s)
    return acc.result(threshold=threshold, choose=choose, target_precision=target_precision)


# ----------------------------------------------------------------------------------------------
# derived metrics


def _div(num: Any, den: Any, empty: float) -> np.ndarray:
    """``num / den`` in float64, ``empty`` where ``den`` is 0."""
    num, den = np.asarray(num), np.asarray(den)
    if den.ndim == 0 and den != 0:  # one division per element, nothing else (curves of 10^7)
        return np.asarray(num / np.float64(den), np.float64)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), empty)
    # integers divide as float64 inside the ufunc: the same values as converting them first
    np.divide(num, den, out=out, where=den != 0)
    return out


def _mcc(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> np.ndarray:
    tp, fp, tn, fn = (x.astype(np.float64) for x in (tp, fp, tn, fn))
    # float64: the product of four counts overflows int64 for large volumes
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return _div(tp * tn - fp * fn, den, 0.0)


def _fbeta(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float) -> np.ndarray:
    # (1 + b^2) P R / (b^2 P + R) written in counts; 0 exactly where P + R = 0 or tp = 0
    b2 = float(beta) ** 2
    return _div((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp, 0.0)


# each metric from (tp, fp, tn, fn, beta); empty denominators follow ELEKTRONN2 (see derived_metrics)
_METRICS = {
    "tpr": lambda tp, fp, tn, fn, b: _div(tp, tp + fn, 0.0),
    "fpr": lambda tp, fp, tn, fn, b: _div(fp, fp + tn, 0.0),
    "tnr": lambda tp, fp, tn, fn, b: _div(tn, tn + fp, 0.0),
    "fnr": lambda tp, fp, tn, fn, b: _div(fn, tp + fn, 0.0),
    "precision": lambda tp, fp, tn, fn, b: _div(tp, tp + fp, 1.0),
    "recall": lambda tp, fp, tn, fn, b: _div(tp, tp + fn, 0.0),
    "f1": lambda tp, fp, tn, fn, b: _fbeta(tp, fp, fn, 1.0),
    "fbeta": lambda tp, fp, tn, fn, b: _fbeta(tp, fp, fn, b),
    "accuracy": lambda tp, fp, tn, fn, b: _div(tp + tn, tp + fp + tn + fn, math.nan),
    "balanced_accuracy": lambda tp, fp, tn, fn, b: (
        0.5 * (_div(tp, tp + fn, 0.0) + _div(tn, tn + fp, 0.0))
    ),
    "mcc": lambda tp, fp, tn, fn, b: _mcc(tp, fp, tn, fn),
    "dice": lambda tp, fp, tn, fn, b: _div(2 * tp, 2 * tp + fp + fn, 1.0),
    "iou": lambda tp, fp, tn, fn, b: _div(tp, tp + fp + fn, 1.0),
    "youden_j": lambda tp, fp, tn, fn, b: _div(tp, tp + fn, 0.0) + _div(tn, tn + fp, 0.0) - 1.0,
    "predicted_positive_rate": lambda tp, fp, tn, fn, b: _div(tp + fp, tp + fp + tn + fn, math.nan),
}


def derived_metrics(
    tp: Any, fp: Any, tn: Any, fn: Any, beta: float = 1.0, names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Threshold metrics from confusion counts, vectorised over any array shape.

    Empty denominators follow ELEKTRONN2's conventions: TPR/recall, FPR and TNR are 0, precision is 1
    when nothing is predicted positive, F1/F-beta are 0 when precision + recall is 0, MCC is 0 when
    any margin is empty (as scikit-learn), Dice and IoU are 1 when labels and prediction are both
    empty. Accuracy is undefined only for all-zero counts (NaN here).

    Args:
        tp, fp, tn, fn: counts (scalars or arrays of one shape).
        beta: the beta of F-beta.
        names: metrics to compute (default all of ``METRIC_NAMES``).

    Returns:
        dict with the counts (keys tp, fp, tn, fn) and each requested metric.
    """
    tp, fp, tn, fn = (np.asarray(x, np.int64) for x in (tp, fp, tn, fn))
    out: dict[str, np.ndarray] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for name in _METRICS if names is None else names:
        out[name] = _METRICS[name](tp, fp, tn, fn, beta)
    return out


METRIC_NAMES = tuple(_METRICS)


@dataclasses.dataclass(frozen=True)
class ThresholdMetrics:
    """Counts and metrics at one threshold (``EvaluationResult.at``)."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    tpr: float
    fpr: float
    tnr: float
    fnr: float
    precision: float
    recall: float
    f1: float
    fbeta: float
    beta: float
    accuracy: float
    balanced_accuracy: float
    mcc: float
    dice: float
    iou: float
    youden_j: float
    predicted_positive_rate: float


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    """A chosen threshold and why: ``method`` is a preset name, ``'given'`` or a caller's label."""

    threshold: float
    method: str
    value: float = math.nan  # the metric the method optimised (EER for 'eer')
    target: float | None = None  # the target of 'precision_at'


@dataclasses.dataclass(frozen=True)
class ErrorHistogram:
    """The numbers behind an error-histogram figure."""

    edges: np.ndarray
    total: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    threshold: float

    @property
    def centres(self) -> np.ndarray:
        """Bin centres (left edge + half the width)."""
        return 0.5 * (self.edges[:-1] + self.edges[1:])


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Counts at every threshold of one split, and what is derived from them.

    Per-threshold arrays (``thresholds``, ``tp``, ``fp``, ``tn``, ``fn``) are aligned and sorted by
    ascending threshold; the last threshold is ``NOTHING_POSITIVE``.
    """

    mode: str
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    n_pos: int
    n_neg: int
    n_ignored: int
    hist_edges: np.ndarray
    hist_pos: np.ndarray
    hist_neg: np.ndarray
    nll: float = math.nan
    n_bins: int = 0
    chosen: ThresholdChoice | None = None
    error_hist: ErrorHistogram | None = None

    @property
    def single_class(self) -> bool:
        """True when only positives or only negatives were counted."""
        return self.n_pos == 0 or self.n_neg == 0

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, tpr)`` per threshold (ascending thresholds: from (1, 1) down to (0, 0))."""
        return _div(self.fp, self.n_neg, 0.0), _div(self.tp, self.n_pos, 0.0)

    def pr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(recall, precision)`` per threshold; precision is 1 where nothing is predicted positive."""
        return _div(self.tp, self.n_pos, 0.0), _div(self.tp, self.tp + self.fp, 1.0)

    @functools.cached_property
    def roc_auc(self) -> float:
        """Area under the ROC curve (trapezoids); NaN when only one class is present.

        Summed in integers, ``sum (fp_j - fp_j+1) (tp_j + tp_j+1) / (2 P N)``, and divided once:
        exact up to the last rounding.
        """
        if self.single_class:
            return math.nan
        tp, fp = self.tp, self.fp
        exact = 2 * self.n_pos * self.n_neg < 2**63  # no int64 product can overflow
        total = 0
        for lo in range(0, tp.size - 1, _SCAN):
            t, f = tp[lo : lo + _SCAN + 1], fp[lo : lo + _SCAN + 1]
            d, h = f[:-1] - f[1:], t[:-1] + t[1:]
            total += int((d * h).sum()) if exact else float((d * h.astype(np.float64)).sum())
        return total / (2 * self.n_pos * self.n_neg)

    @functools.cached_property
    def average_precision(self) -> float:
        """AP = sum_n (R_n - R_{n-1}) P_n over descending thresholds (scikit-learn's definition).

        NaN without positives; 1 without negatives.
        """
        if self.n_pos == 0:
            return math.nan
        tp, fp = self.tp, self.fp
        total = 0.0
        for lo in range(0, tp.size - 1, _SCAN):
            t, f = tp[lo : lo + _SCAN + 1], fp[lo : lo + _SCAN + 1]
            # the positives at exactly threshold j, times the precision there (tp_j > 0 then)
            den = t[:-1] + f[:-1]
            prec = np.divide(t[:-1], den, out=np.zeros(den.shape), where=den > 0)
            # no np.dot: BLAS threads waking for each small chunk cost more than the sum
            total += float(np.multiply(t[:-1] - t[1:], prec, out=prec).sum())
        return total / self.n_pos

    def metrics(self, beta: float = 1.0) -> Any:
        """All metrics at every threshold as a pandas DataFrame (one row per threshold)."""
        import pandas as pd

        d = derived_metrics(self.tp, self.fp, self.tn, self.fn, beta=beta)
        return pd.DataFrame({"threshold": self.thresholds, **d})

    def index(self, threshold: float) -> int:
        """Index of the smallest stored threshold >= ``threshold`` (exact in exact mode)."""
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        i = int(np.searchsorted(self.thresholds, threshold, side="left"))
        return min(i, self.thresholds.size - 1)

    def at(self, threshold: float, beta: float = 1.0) -> ThresholdMetrics:
        """Counts and metrics at ``threshold`` (predicted positive: score >= threshold).

        In exact mode this is exact for any threshold; in binned mode the threshold is rounded up to
        the next bin edge. Cost: one binary search, microseconds.
        """
        return self._metrics_at_index(self.index(threshold), beta, threshold)

    def _metrics_at_index(self, i: int, beta: float, threshold: float) -> ThresholdMetrics:
        tp, fp, tn, fn = int(self.tp[i]), int(self.fp[i]), int(self.tn[i]), int(self.fn[i])
        d = derived_metrics(tp, fp, tn, fn, beta)
        vals = {k: float(v) for k, v in d.items() if k not in ("tp", "fp", "tn", "fn")}
        return ThresholdMetrics(
            threshold=float(threshold), tp=tp, fp=fp, tn=tn, fn=fn, beta=float(beta), **vals
        )

    def choose(self, method: str = "max_accuracy", target: float | None = None) -> ThresholdChoice:
        """Pick a threshold with a preset. Ties go to the smallest threshold.

        Args:
            method: ``'max_f1'``, ``'max_accuracy'``, ``'max_youden'``, ``'eer'`` (equal error
                rate: where FPR and FNR cross; ``value`` is their mean there) or
                ``'precision_at'`` (smallest threshold with precision >= ``target`` and at least
                one positive prediction).
            target: the precision target of ``'precision_at'``.

        Raises:
            ValueError: unknown method, or no threshold reaches the target precision.
        """

        tp, fp, p, n = self.tp, self.fp, self.n_pos, self.n_neg
        if method in TARGETLESS_PRESETS:
            i = best_indices(tp, fp, p, n, (method,))[method]
            one = slice(i, i + 1)
            if method == "eer":  # FPR and FNR there, and their mean
                rates = _div(fp[one], n, 0.0) + _div(p - tp[one], p, 0.0)
                value = float(0.5 * rates[0])
            else:
                value = float(_preset_metric(method, tp[one], fp[one], p, n)[0])
            return ThresholdChoice(float(self.thresholds[i]), method, value)
        if method == "precision_at":
            if target is None or not 0.0 <= target <= 1.0:
                raise ValueError(f"precision_at needs a target precision in [0, 1], got {target}")
            d = derived_metrics(tp, fp, self.tn, self.fn, names=("precision",))
            ok = (d["precision"] >= target) & ((self.tp + self.fp) > 0)
            if not ok.any():
                some = (self.tp + self.fp) > 0
                best = float(d["precision"][some].max()) if some.any() else math.nan
                raise ValueError(
                    f"no threshold reaches precision >= {target:g} (the best is {best:.4g}); "
                    "lower the target"
                )
            i = int(np.argmax(ok))
            return ThresholdChoice(
                float(self.thresholds[i]), method, float(d["precision"][i]), target
            )
        raise ValueError(f"unknown threshold preset {method!r}; use one of {', '.join(PRESETS)}")

    def choice_at(self, threshold: float, method: str = "given") -> ThresholdChoice:
        """A ``ThresholdChoice`` for a given threshold (``value`` = accuracy there)."""
        return ThresholdChoice(float(threshold), method, self.at(threshold).accuracy)

    def with_choice(self, chosen: ThresholdChoice | None) -> EvaluationResult:
        """A copy with ``chosen`` set."""
        return dataclasses.replace(self, chosen=chosen)

    def with_error_hist(self, hist: ErrorHistogram | None) -> EvaluationResult:
        """A copy with ``error_hist`` set."""
        return dataclasses.replace(self, error_hist=hist)


def _preset_metric(method: str, tp: np.ndarray, fp: np.ndarray, p: int, n: int) -> np.ndarray:
    """What target-free preset ``method`` maximises, per threshold: the values of
    ``derived_metrics`` bit for bit (the same integers, divided once); for ``eer`` minus
    ``|FPR - FNR|``."""
    if method == "max_accuracy":  # (tp + tn) / (tp + fp + tn + fn), tn = n - fp
        return _div(tp - fp + n, p + n, math.nan)
    if method == "max_f1":  # 2 tp / (2 tp + fn + fp), fn = p - tp
        return _div(2 * tp, tp + fp + p, 0.0)
    if method == "max_youden":
        return _div(tp, p, 0.0) + _div(n - fp, n, 0.0) - 1.0
    return -np.abs(_div(fp, n, 0.0) - _div(p - tp, p, 0.0))


def best_indices(
    tp: np.ndarray,
    fp: np.ndarray,
    n_pos: int,
    n_neg: int,
    methods: Sequence[str] = TARGETLESS_PRESETS,
) -> dict[str, int]:
    """The index each target-free preset picks on the curve ``(tp, fp)`` (ascending thresholds):
    the first maximum of its metric, so ties go to the smallest threshold. One scan in chunks
    that stay in the CPU caches, all ``methods`` at once; ``EvaluationResult.choose`` uses it.
    """
    best = {m: (-math.inf, 0) for m in methods}
    for lo in range(0, tp.size, _SCAN):
        t, f = tp[lo : lo + _SCAN], fp[lo : lo + _SCAN]
        for m in methods:
            v = _preset_metric(m, t, f, n_pos, n_neg)
            i = int(np.argmax(v))
            if v[i] > best[m][0]:
                best[m] = (float(v[i]), lo + i)
    return {m: i for m, (_v, i) in best.items()}


def counts_at(
    result: EvaluationResult, thresholds: Sequence[float] | np.ndarray
) -> dict[str, np.ndarray]:
    """``derived_metrics`` at several thresholds at once (each rounded up to a stored threshold)."""
    t = np.asarray(thresholds, np.float64)
    idx = np.minimum(np.searchsorted(result.thresholds, t, side="left"), result.thresholds.size - 1)
    return derived_metrics(result.tp[idx], result.fp[idx], result.tn[idx], result.fn[idx])
