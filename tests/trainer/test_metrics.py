"""The evaluation core against scikit-learn: counts, curves, areas and metrics at thresholds."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from trainer.curves import thin_result
from trainer.metrics import (
    METRIC_NAMES,
    NOTHING_POSITIVE,
    BinnedAccumulator,
    EvaluationInputError,
    ExactAccumulator,
    SingleClassWarning,
    counts_at,
    derived_metrics,
    evaluate_arrays,
)


def _case(kind: str, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ignore (-1) and scores: random, tied, heavily imbalanced, float32."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        gt = (rng.random(n) < 0.4).astype(np.int64)
        s = np.clip(0.3 * gt + 0.7 * rng.random(n), 0, 1)
    elif kind == "tied":
        gt = (rng.random(n) < 0.5).astype(np.int64)
        s = np.round(np.clip(0.2 * gt + 0.8 * rng.random(n), 0, 1), 1)  # 11 distinct values
    elif kind == "imbalanced":
        gt = (rng.random(n) < 0.01).astype(np.int64)
        s = np.clip(0.5 * gt + 0.5 * rng.random(n) ** 3, 0, 1)
    elif kind == "float32":
        gt = (rng.random(n) < 0.3).astype(np.int64)
        s = rng.random(n).astype(np.float32) ** 2
        s[:10] = 0.0
        s[10:20] = 1.0
    else:
        raise AssertionError(kind)
    gt[rng.random(n) < 0.1] = -1
    return gt, s


KINDS = ("random", "tied", "imbalanced", "float32")


@pytest.mark.parametrize("kind", KINDS)
def test_exact_curves_match_sklearn(kind: str) -> None:
    gt, s = _case(kind)
    res = evaluate_arrays(gt, s, mode="exact")
    keep = gt >= 0
    y, p = gt[keep], s[keep]
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    # sklearn: descending thresholds starting with inf; ours: ascending ending with NOTHING_POSITIVE
    our_fpr, our_tpr = res.roc()
    np.testing.assert_allclose(our_fpr[::-1], fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(our_tpr[::-1], tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.thresholds[:-1][::-1], thr[1:])
    assert res.thresholds[-1] == NOTHING_POSITIVE
    prec, rec, thr_pr = skm.precision_recall_curve(y, p)
    our_rec, our_prec = res.pr()
    np.testing.assert_allclose(our_prec, prec, rtol=0, atol=1e-12)
    np.testing.assert_allclose(our_rec, rec, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.thresholds[:-1], thr_pr)
    assert res.roc_auc == pytest.approx(skm.roc_auc_score(y, p), abs=1e-9)
    assert res.average_precision == pytest.approx(skm.average_precision_score(y, p), abs=1e-9)
    assert (res.n_pos, res.n_neg, res.n_ignored) == (
        int((y == 1).sum()),
        int((y == 0).sum()),
        int((~keep).sum()),
    )
    np.testing.assert_array_equal(res.tp + res.fn, res.n_pos)
    np.testing.assert_array_equal(res.fp + res.tn, res.n_neg)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0.0, 0.1, 0.3, 0.5, 0.77, 1.0])
def test_metrics_at_threshold_match_sklearn(kind: str, t: float) -> None:
    gt, s = _case(kind)
    res = evaluate_arrays(gt, s, mode="exact")
    keep = gt >= 0
    y, yhat = gt[keep], (s[keep] >= t).astype(int)
    m = res.at(t, beta=2.0)
    tn, fp, fn, tp = skm.confusion_matrix(y, yhat, labels=[0, 1]).ravel()
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    expected = {
        "precision": skm.precision_score(y, yhat, zero_division=1.0),
        "recall": skm.recall_score(y, yhat, zero_division=0.0),
        "f1": skm.f1_score(y, yhat, zero_division=0.0),
        "fbeta": skm.fbeta_score(y, yhat, beta=2.0, zero_division=0.0),
        "accuracy": skm.accuracy_score(y, yhat),
        "balanced_accuracy": skm.balanced_accuracy_score(y, yhat),
        "mcc": skm.matthews_corrcoef(y, yhat),
        "iou": skm.jaccard_score(y, yhat, zero_division=1.0),
        "fpr": fp / (fp + tn),
        "tnr": tn / (fp + tn),
        "youden_j": tp / (tp + fn) - fp / (fp + tn),
        "predicted_positive_rate": yhat.mean(),
    }
    for name, value in expected.items():
        assert getattr(m, name) == pytest.approx(value, abs=1e-9), name
    assert m.dice == pytest.approx(m.f1, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_binned_auc_close_to_sklearn_and_exact_at_edges(kind: str) -> None:
    gt, s = _case(kind, n=20_000)
    keep = gt >= 0
    binned = evaluate_arrays(gt, s, mode="binned", n_bins=10_000)
    assert binned.thresholds.size == 10_002
    assert binned.roc_auc == pytest.approx(skm.roc_auc_score(gt[keep], s[keep]), abs=1e-3)
    # counts at the bin edges are the exact counts there
    exact = evaluate_arrays(gt, s, mode="exact")
    edges = binned.thresholds[::97]
    for name in ("tp", "fp", "tn", "fn"):
        np.testing.assert_array_equal(counts_at(exact, edges)[name], counts_at(binned, edges)[name])


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_streaming_equals_all_at_once(mode: str) -> None:
    gt, s = _case("random", n=30_000)
    whole = evaluate_arrays(gt, s, mode=mode, n_bins=500)
    cubes_g = [gt[:7000].reshape(7, 10, 100), gt[7000:7001], gt[7001:].reshape(-1, 1)]
    cubes_s = [s[:7000].reshape(7, 10, 100), s[7000:7001], s[7001:].reshape(-1, 1)]
    acc = ExactAccumulator() if mode == "exact" else BinnedAccumulator(n_bins=500)
    for g, sc in zip(cubes_g, cubes_s):
        acc.add(g, sc)
    acc.add(np.zeros((0, 3), np.int8), np.zeros((0, 3)))  # empty cubes are skipped
    streamed = acc.result()
    for name in ("thresholds", "tp", "fp", "tn", "fn", "hist_pos", "hist_neg"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(streamed, name), err_msg=name)
    assert streamed.nll == pytest.approx(whole.nll, rel=1e-12)
    assert streamed.roc_auc == whole.roc_auc


def test_float64_scores_on_bin_edges_are_exact() -> None:
    # 0.29 * 100 rounds to 28.999..., the edge check must still put it in bin 29
    s = np.array([0.29, 0.57, 0.58, 0.99, 1.0, 0.0, 0.01])
    gt = np.array([1, 0, 1, 1, 0, 0, 1])
    binned = evaluate_arrays(gt, s, mode="binned", n_bins=100)
    exact = evaluate_arrays(gt, s, mode="exact")
    edges = binned.thresholds
    for name in ("tp", "fp"):
        np.testing.assert_array_equal(counts_at(exact, edges)[name], counts_at(binned, edges)[name])


def test_histograms_and_nll() -> None:
    gt, s = _case("random")
    for mode, n_bins in (("exact", 0), ("binned", 1000), ("binned", 999)):
        res = evaluate_arrays(gt, s, mode=mode, n_bins=max(n_bins, 1), hist_bins=100)
        keep = gt >= 0
        pos, _ = np.histogram(s[keep & (gt == 1)], bins=100, range=(0, 1))
        neg, _ = np.histogram(s[keep & (gt == 0)], bins=100, range=(0, 1))
        # np.histogram and floor(s * 100) may differ for a score one rounding error from an edge
        assert np.abs(res.hist_pos - pos).sum() <= 2 and res.hist_pos.sum() == pos.sum()
        assert np.abs(res.hist_neg - neg).sum() <= 2 and res.hist_neg.sum() == neg.sum()
        p = np.clip(s[keep], 1e-15, 1 - 1e-15)
        assert res.nll == pytest.approx(0.5 * skm.log_loss(gt[keep], p), rel=1e-9)


def test_presets() -> None:
    gt, s = _case("random")
    res = evaluate_arrays(gt, s)
    table = res.metrics()
    assert list(table.columns) == ["threshold", "tp", "fp", "tn", "fn", *METRIC_NAMES]
    for method, col in (("max_f1", "f1"), ("max_accuracy", "accuracy"), ("max_youden", "youden_j")):
        ch = res.choose(method)
        best = table[col].max()
        assert ch.value == best
        assert ch.threshold == table.threshold[table[col] == best].min()
    eer = res.choose("eer")
    m = res.at(eer.threshold)
    gaps = np.abs(table.fpr - table.fnr)
    assert abs(m.fpr - m.fnr) == gaps.min()
    assert eer.value == pytest.approx(0.5 * (m.fpr + m.fnr))
    ch = res.choose("precision_at", target=0.8)
    assert res.at(ch.threshold).precision >= 0.8
    lower = table[(table.threshold < ch.threshold) & (table.tp + table.fp > 0)]
    assert (lower.precision < 0.8).all()
    with pytest.raises(
        ValueError, match=r"no threshold reaches precision >= 1\.5|target precision in \[0, 1\]"
    ):
        res.choose("precision_at", target=1.5)
    with pytest.raises(ValueError, match="unknown threshold preset 'best'"):
        res.choose("best")
    given = evaluate_arrays(gt, s, threshold=0.5)
    assert given.chosen.method == "given" and given.chosen.threshold == 0.5


def test_precision_target_out_of_reach() -> None:
    res = evaluate_arrays(np.array([0, 1, 0, 1]), np.array([0.9, 0.8, 0.7, 0.1]))
    with pytest.raises(
        ValueError, match=r"no threshold reaches precision >= 0\.99 \(the best is 0\.5"
    ):
        res.choose("precision_at", target=0.99)


def test_at_is_exact_between_thresholds_and_thinning_keeps_counts() -> None:
    gt, s = _case("random", n=50_000)
    res = evaluate_arrays(gt, s)
    keep = gt >= 0
    for t in (0.123456, 0.5, 0.999999, 1.0):
        assert res.at(t).tp == int(((s >= t) & (gt == 1) & keep).sum())
    small = thin_result(res, 2000)
    assert small.thresholds.size <= 2000 and small.thresholds[-1] == NOTHING_POSITIVE
    idx = np.searchsorted(res.thresholds, small.thresholds)
    np.testing.assert_array_equal(small.tp, res.tp[idx])
    assert small.roc_auc == res.roc_auc and small.average_precision == res.average_precision
    with pytest.raises(ValueError, match="finite"):
        res.at(math.nan)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # tp, fp, tn, fn -> precision, recall, f1, mcc, dice, iou, fpr, tnr
        ((0, 0, 5, 0), (1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0)),
        ((0, 0, 0, 5), (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
        ((5, 5, 0, 0), (0.5, 1.0, 2 / 3, 0.0, 2 / 3, 0.5, 1.0, 0.0)),
        (
            (3, 1, 4, 2),
            (0.75, 0.6, 2 / 3, (12 - 2) / math.sqrt(4 * 5 * 5 * 6), 2 / 3, 0.5, 0.2, 0.8),
        ),
    ],
)
def test_derived_metric_conventions(counts: tuple, expected: tuple) -> None:
    d = derived_metrics(*counts)
    names = ("precision", "recall", "f1", "mcc", "dice", "iou", "fpr", "tnr")
    assert tuple(float(d[k]) for k in names) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("gt", "scores", "match"),
    [
        (
            np.zeros((2, 3)),
            np.zeros((3, 2)),
            r"labels have shape \(2, 3\) but scores have shape \(3, 2\)",
        ),
        ([np.zeros(3)], [np.zeros(3), np.zeros(3)], "got 1 label cubes but 2 scores cubes"),
        (np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]), "1 NaN"),
        (
            np.array([0, 1, 1]),
            np.array([0.1, 1.2, 0.3]),
            r"probabilities in \[0, 1\], found values in \[0\.1, 1\.2\]",
        ),
        (np.array([0, 1, 1]), np.array([-0.1, 0.2, 0.3]), r"found values in \[-0\.1"),
        (
            np.array([0, 2, 1]),
            np.array([0.1, 0.2, 0.3]),
            r"labels must be 0 \(negative\), 1 \(positive\) or -1 \(ignore\); found \[2\]",
        ),
        (np.array([0, 0.5, 1]), np.array([0.1, 0.2, 0.3]), r"found \[0\.5\]"),
        (np.array([], int), np.array([]), "empty input"),
        ([], [], "empty input"),
        (np.array([-1, -1]), np.array([0.1, 0.2]), "all 2 voxels are labelled -1"),
    ],
)
@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_bad_input(gt, scores, match: str, mode: str) -> None:
    with pytest.raises(EvaluationInputError, match=match):
        evaluate_arrays(gt, scores, mode=mode)


@pytest.mark.parametrize("mode", ["exact", "binned"])
@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_auc_and_warning(mode: str, label: int) -> None:
    gt = np.full(50, label)
    gt[:5] = -1
    s = np.linspace(0, 1, 50)
    with pytest.warns(SingleClassWarning, match="ROC AUC is undefined"):
        res = evaluate_arrays(gt, s, mode=mode)
    assert math.isnan(res.roc_auc)
    assert math.isnan(res.average_precision) if label == 0 else res.average_precision == 1.0
    assert res.single_class and res.n_ignored == 5


def test_bool_labels_and_no_warning_for_two_classes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = evaluate_arrays(np.array([True, False, True]), np.array([0.9, 0.2, 0.4], np.float32))
    assert res.roc_auc == 1.0
