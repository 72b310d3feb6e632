"""Evaluation speed: VoxelBoard's exact and binned counting against scikit-learn's curves.

Run: ``python bench/bench_evaluation.py [--n-big 100000000]``. All timings on the same data in one
run; peak memory is what ``tracemalloc`` sees numpy allocate during the call (the input excluded).

Goals (issue 4): exact mode no slower than ``roc_curve`` + ``precision_recall_curve`` on 10^7 scores;
binned mode >= 10x faster than those exact curves with peak memory under 2x the input; moving the
threshold once the counts exist < 1 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.metrics import BinnedAccumulator, evaluate_arrays  # noqa: E402


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores and int8 labels (10 % positives), generated in chunks to stay lean."""
    rng = np.random.default_rng(seed)
    gt = np.empty(n, np.int8)
    s = np.empty(n, np.float32)
    step = 10_000_000
    for i in range(0, n, step):
        m = min(step, n - i)
        g = rng.random(m, dtype=np.float32) < 0.1
        gt[i : i + m] = g
        s[i : i + m] = np.clip(0.3 * g + 0.7 * rng.random(m, dtype=np.float32), 0, 1)
    return gt, s


def timed(fn, *args, **kwargs):
    """(result, seconds, peak traced bytes) of one call."""
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak


def sklearn_curves(gt: np.ndarray, s: np.ndarray) -> None:
    roc_curve(gt, s, drop_intermediate=False)
    precision_recall_curve(gt, s)


def binned_streaming(gt: np.ndarray, s: np.ndarray, n_bins: int = 10_000):
    acc = BinnedAccumulator(n_bins=n_bins, nll=False)
    step = 10_000_000  # cube by cube, as cubes read from h5 would arrive
    for i in range(0, gt.size, step):
        acc.add(gt[i : i + step], s[i : i + step])
    return acc.result()


def threshold_move_cost(res, n: int = 2000) -> float:
    ts = np.random.default_rng(1).random(n)
    t = time.perf_counter()
    for x in ts:
        res.at(float(x))
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--n-big", type=int, default=100_000_000, help="0 to skip")
    args = ap.parse_args()
    mb = 1e-6

    gt, s = make_data(args.n)
    input_bytes = gt.nbytes + s.nbytes
    print(f"n = {args.n:.0e} float32 scores + int8 labels = {input_bytes * mb:.0f} MB input")
    _, t_sk, m_sk = timed(sklearn_curves, gt, s)
    print(f"sklearn roc_curve + precision_recall_curve: {t_sk:8.3f} s  peak {m_sk * mb:7.0f} MB")
    exact, t_ex, m_ex = timed(evaluate_arrays, gt, s, mode="exact", nll=False)
    print(
        f"exact   (all {exact.thresholds.size} thresholds): {t_ex:8.3f} s  peak {m_ex * mb:7.0f} MB"
        f"   sklearn/exact = {t_sk / t_ex:5.2f}x"
    )
    binned, t_bi, m_bi = timed(evaluate_arrays, gt, s, mode="binned", nll=False)
    print(
        f"binned  (10^4 bins):                 {t_bi:8.3f} s  peak {m_bi * mb:7.0f} MB"
        f"   sklearn/binned = {t_sk / t_bi:5.1f}x   peak/input = {m_bi / input_bytes:.3f}"
    )
    print(f"  |AUC binned - AUC exact| = {abs(binned.roc_auc - exact.roc_auc):.2e}")
    for label, res in (("exact", exact), ("binned", binned)):
        cost = threshold_move_cost(res)
        print(
            f"move threshold ({label}, {res.thresholds.size} thresholds): {cost * 1e6:7.1f} us per lookup"
        )
    del exact

    if args.n_big:
        del gt, s
        gt, s = make_data(args.n_big, seed=2)
        big_bytes = gt.nbytes + s.nbytes
        res, t_big, m_big = timed(binned_streaming, gt, s)
        sk_est = t_sk * args.n_big / args.n
        print(
            f"\nn = {args.n_big:.0e} ({big_bytes * mb:.0f} MB input), binned streaming in cubes of 10^7:"
            f" {t_big:8.3f} s  peak {m_big * mb:6.1f} MB  peak/input = {m_big / big_bytes:.4f}"
        )
        print(
            f"  sklearn not run at this size; linear extrapolation of its 10^7 time "
            f"({sk_est:.0f} s, a lower bound: sorting is n log n) / binned = {sk_est / t_big:5.1f}x"
        )
        print(f"  binned throughput: {args.n_big / t_big / 1e6:.0f} M scores/s")


if __name__ == "__main__":
    main()
