"""trainer.smoothing against hand-computed vectors and straightforward reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.smoothing import ema_debiased, minmax_downsample, sma


def sma_reference(values: list[float], n: int) -> list[float]:
    out = []
    for k in range(len(values)):
        window = values[max(0, k - n + 1) : k + 1] if n else [values[k]]
        out.append(sum(window) / len(window))
    return out


def ema_reference(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing loop, transcribed from its documented behaviour."""
    last, num_accum, out = 0.0, 0, []
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1 - weight) * v
        num_accum += 1
        debias = 1.0 if weight == 1 else 1 - weight**num_accum
        out.append(last / debias)
    return out


@pytest.mark.parametrize(
    ("values", "n", "expected"),
    [
        ([1, 2, 3, 4], 2, [1, 1.5, 2.5, 3.5]),
        ([1, 2, 3, 4], 0, [1, 2, 3, 4]),
        ([1, 2, 3, 4], 1, [1, 2, 3, 4]),
        ([1, 2, 3, 4], 10, [1, 1.5, 2, 2.5]),
        ([2, 4, 6, 8, 10], 3, [2, 3, 4, 6, 8]),
        ([], 3, []),
    ],
)
def test_sma_vectors(values, n, expected):
    np.testing.assert_allclose(sma(values, n), expected, rtol=1e-12)
    assert len(sma(values, n)) == len(values)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 200])
def test_sma_matches_reference_loop(n):
    values = list(np.random.default_rng(n).normal(size=300))
    np.testing.assert_allclose(sma(values, n), sma_reference(values, n), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sma([1, 2], -1), "n must be >= 0"),
        (lambda: sma([[1, 2]], 1), "1-D"),
        (lambda: ema_debiased([1.0], 1.0), r"\[0, 1\)"),
        (lambda: ema_debiased([1.0], -0.1), r"\[0, 1\)"),
        (lambda: minmax_downsample(None, [1.0, 2.0], 0), "n_buckets >= 1"),
        (lambda: minmax_downsample([3, 2, 1, 0, 5], [1.0] * 5, 1), "ascending"),
        (lambda: minmax_downsample([0, 1, 2], [1.0] * 5, 1), "differ in shape"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("values", "weight"),
    [
        ([1.0, 2.0, 3.0, 4.0], 0.5),
        ([1.0, float("nan"), 3.0, float("inf"), 5.0, -2.0], 0.6),
        ([float("nan"), float("nan"), 7.0, 8.0], 0.9),
        ([float("nan")] * 3, 0.9),
        ([5.0, 5.0, 5.0], 0.99),
        (list(np.random.default_rng(1).normal(size=500)), 0.95),
        (list(np.random.default_rng(2).normal(size=2000)), 0.6),  # debias reaches exactly 1
    ],
)
def test_ema_matches_tensorboard_loop(values, weight):
    got = ema_debiased(values, weight)
    np.testing.assert_allclose(got, ema_reference(values, weight), rtol=1e-12, equal_nan=True)
    # non-finite values pass through untouched
    raw = np.asarray(values)
    bad = ~np.isfinite(raw)
    np.testing.assert_array_equal(got[bad], raw[bad])


def test_ema_first_value_and_identity():
    assert ema_debiased([3.0, 9.0], 0.9)[0] == pytest.approx(
        3.0
    )  # debiasing removes the zero start
    v = [1.0, float("nan"), -4.0]
    np.testing.assert_array_equal(ema_debiased(v, 0.0), v)


def test_minmax_keeps_all_when_short():
    np.testing.assert_array_equal(minmax_downsample(None, np.arange(10.0), 5), np.arange(10))


def _buckets(x: np.ndarray, n_buckets: int) -> np.ndarray:
    """The bucket rule as documented in minmax_downsample."""
    b = np.floor((x - x[0]) * (n_buckets / (x[-1] - x[0]))).astype(int)
    return np.minimum(b, n_buckets - 1)


@pytest.mark.parametrize(
    ("n", "n_buckets", "uniform"),
    [(10_000, 100, True), (12_345, 37, True), (5_000, 64, False), (1_000, 1, True)],
)
def test_minmax_keeps_extremes_of_every_bucket(n, n_buckets, uniform):
    rng = np.random.default_rng(n)
    x = np.arange(n, dtype=float) if uniform else np.sort(rng.uniform(0, 100, n))
    y = rng.normal(size=n)
    y[rng.integers(0, n, 20)] = np.nan
    keep = minmax_downsample(x, y, n_buckets)
    assert np.all(np.diff(keep) > 0), "indices must be sorted and unique"
    assert keep[0] == 0 and keep[-1] == n - 1
    assert len(keep) <= 2 * n_buckets + 2
    kept = set(keep.tolist())
    b = _buckets(x, n_buckets)
    for bucket in np.unique(b):
        idx = np.flatnonzero(b == bucket)
        assert idx[np.nanargmin(y[idx])] in kept
        assert idx[np.nanargmax(y[idx])] in kept


def test_minmax_keeps_a_single_spike_and_nan_buckets():
    y = np.zeros(100_000)
    y[54_321] = 1e6
    y[10_000:10_500] = np.nan  # one whole bucket of NaN at 200 buckets
    keep = minmax_downsample(None, y, 200)
    assert 54_321 in keep
    assert 10_000 in keep, "an all-NaN bucket keeps its first point, so the gap is drawn"
    assert len(keep) <= 2 * 200 + 2


def test_minmax_index_buckets_when_x_is_none():
    y = np.sin(np.linspace(0, 20, 50_000))
    np.testing.assert_array_equal(
        minmax_downsample(None, y, 100), minmax_downsample(np.arange(50_000), y, 100)
    )
