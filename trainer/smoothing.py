"""Smoothing and downsampling of loss curves: pure functions of numpy arrays.

Used by the trainer's HTML plots and by the dashboard, so both show the same curves.

* ``sma``: ELEKTRONN2's same-length box moving average.
* ``ema_debiased``: TensorBoard's debiased exponential moving average (its "smoothing" slider).
* ``minmax_downsample``: which points to draw so that a 10^7-point curve keeps every spike.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["ema_debiased", "minmax_downsample", "sma"]


def sma(values: ArrayLike, n: int) -> np.ndarray:
    """Box moving average of the same length as ``values``.

    Entry ``k < n`` is the mean of the first ``k + 1`` values (a running mean, so the curve
    starts at the first value instead of at zero); entry ``k >= n`` is the mean of the
    ``n`` values ending at ``k``. ``n = 0`` returns the values unchanged (as float64).
    As in ELEKTRONN2, a NaN poisons every later entry.

    Args:
        values: 1-D sequence of numbers.
        n: window length, ``>= 0``.

    Returns:
        float64 array of ``len(values)``.

    Example:
        >>> sma([1, 2, 3, 4], 2).tolist()
        [1.0, 1.5, 2.5, 3.5]
    """
    c = np.asarray(values, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"sma expects a 1-D array, got shape {c.shape}")
    n = int(n)
    if n < 0:
        raise ValueError(f"sma window n must be >= 0, got {n}")
    if n == 0 or len(c) == 0:
        return c.copy()
    cs = np.cumsum(c)
    out = np.empty_like(c)
    head = min(n, len(c))
    out[:head] = cs[:head] / np.arange(1, head + 1)
    if len(c) > n:
        out[n:] = (cs[n:] - cs[:-n]) / n
    return out


def ema_debiased(values: ArrayLike, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average.

    For each finite value ``v``: ``last = last * weight + (1 - weight) * v`` (``last``
    starts at 0), counted in ``num_accum``; the output is ``last / (1 - weight**num_accum)``,
    which removes the pull towards the zero start. Non-finite values (NaN, inf) are passed
    through unchanged and do not touch the accumulator. ``weight = 0`` is the identity.

    Runs in C (``scipy.signal.lfilter``), so 10^7 points take well under a second.

    Args:
        values: 1-D sequence of numbers.
        weight: smoothing weight in ``[0, 1)``; TensorBoard's slider value.

    Returns:
        float64 array of ``len(values)``.
    """
    from scipy.signal import lfilter  # scipy is heavy; only callers that smooth pay for it

    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"ema_debiased expects a 1-D array, got shape {v.shape}")
    w = float(weight)
    if not 0.0 <= w < 1.0:
        raise ValueError(f"ema_debiased weight must be in [0, 1), got {weight!r}")
    out = v.copy()
    if w == 0.0:
        return out
    finite = np.isfinite(v)
    x = v[finite]
    if len(x) == 0:
        return out
    # last_k = w * last_{k-1} + (1 - w) * x_k with last_{-1} = 0, as a first-order IIR filter
    last = lfilter([1.0 - w], [1.0, -w], x)
    # beyond w**k < 2**-60, 1 - w**k is exactly 1.0: skip the costly powers there
    n_debias = min(len(x), int(math.ceil(-60 * math.log(2) / math.log(w))) + 1)
    last[:n_debias] /= 1.0 - np.power(w, np.arange(1, n_debias + 1, dtype=np.float64))
    out[finite] = last
    return out


def minmax_downsample(x: ArrayLike | None, y: ArrayLike, n_buckets: int) -> np.ndarray:
    """Indices of the points to draw so that every local extreme survives.

    The x range ``[x[0], x[-1]]`` is cut into ``n_buckets`` equal-width buckets; point ``i``
    falls into bucket ``min(floor((x[i] - x[0]) * n_buckets / (x[-1] - x[0])), n_buckets - 1)``.
    For every bucket the (first) argmin and argmax of ``y`` are kept (NaN ignored; a bucket of
    only NaNs keeps its first point so the gap shows), plus the first and the last point.
    About ``2 * n_buckets`` points remain; with ``len(y) <= 2 * n_buckets`` all are kept.

    Vectorised: one pass of ``ufunc.reduceat`` per extreme, no Python loop per bucket.

    Args:
        x: ascending x values, or ``None`` for ``0, 1, 2, ...``.
        y: values, same length as ``x``.
        n_buckets: number of buckets, ``>= 1``.

    Returns:
        Sorted, unique int64 indices into ``y``.
    """
    yv = np.asarray(y, dtype=np.float64)
    if yv.ndim != 1:
        raise ValueError(f"minmax_downsample expects a 1-D y, got shape {yv.shape}")
    n = len(yv)
    n_buckets = int(n_buckets)
    if n_buckets < 1:
        raise ValueError(f"minmax_downsample needs n_buckets >= 1, got {n_buckets}")
    if n <= 2 * n_buckets:
        return np.arange(n, dtype=np.int64)
    if x is None:
        xv = np.arange(n, dtype=np.float64)
    else:
        xv = np.asarray(x, dtype=np.float64)
        if xv.shape != yv.shape:
            raise ValueError(f"x and y differ in shape: {xv.shape} vs {yv.shape}")
        if np.any(xv[1:] < xv[:-1]):
            raise ValueError("minmax_downsample needs ascending x values; sort x and y first")
    span = xv[-1] - xv[0]
    if span > 0:
        bucket = np.floor((xv - xv[0]) * (n_buckets / span)).astype(np.int64)
        np.clip(bucket, 0, n_buckets - 1, out=bucket)
    else:
        bucket = np.zeros(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    lo = np.fmin.reduceat(yv, starts)  # fmin/fmax skip NaN unless the bucket is all NaN
    hi = np.fmax.reduceat(yv, starts)
    keep = [starts[np.isnan(lo)], np.array([0, n - 1])]
    for extreme in (lo, hi):
        per_bucket = np.full(n_buckets, np.nan)
        per_bucket[bucket[starts]] = extreme
        hit = np.flatnonzero(yv == per_bucket[bucket])
        # first hit per bucket: hits are in index order
        hb = bucket[hit]
        keep.append(hit[np.r_[True, hb[1:] != hb[:-1]]])
    return np.unique(np.concatenate(keep)).astype(np.int64)
