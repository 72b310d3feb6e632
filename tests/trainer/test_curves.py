"""Curves sized by what anyone reads (``trainer.curves``) and the result file that keeps them.

The thinned curve must keep what the full one says: its areas, every preset's threshold and
value, its corners; the result file must stay small at any number of scores, keep the exact
counts only when asked, read files of the older layout, and replace a split without reading the
old one back.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn import metrics as skm

from trainer.curves import (
    MAX_CURVE_POINTS,
    binned_counts,
    corner_indices,
    stored_curves,
    thin_indices,
    thin_result,
)
from trainer.evaluation import error_hist, evaluate, performance_figure
from trainer.metrics import (
    NOTHING_POSITIVE,
    TARGETLESS_PRESETS,
    BinnedAccumulator,
    EvaluationResult,
    SingleClassWarning,
    derived_metrics,
    evaluate_arrays,
)
from trainer.runs import (
    FORMAT_VERSION,
    ResultFileError,
    read_neurons,
    read_result,
    stores_exact,
    write_result,
    write_split,
)


def _scores(kind: str, n: int = 60_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = (rng.random(n) < 0.3).astype(np.int8)
    if kind == "overlapping":
        s = np.clip(rng.normal(0.4 + 0.2 * gt, 0.2), 0, 1)
    elif kind == "ties":  # a few hundred distinct float32 scores: counts jump
        s = np.round(np.clip(rng.normal(0.4 + 0.25 * gt, 0.2), 0, 1), 3).astype(np.float32)
        s = np.concatenate([s, rng.random(n, dtype=np.float32)])
        gt = np.concatenate([gt, (rng.random(n) < 0.5).astype(np.int8)])
    elif kind == "separable":  # every positive above every negative: corners at (0, 1)
        s = np.where(gt == 1, 0.6 + 0.4 * rng.random(n), 0.5 * rng.random(n))
    elif kind == "skewed":  # 1 % positives, scores piled near 0
        gt = (rng.random(n) < 0.01).astype(np.int8)
        s = rng.beta(0.3 + 2 * gt, 3.0)
    else:
        raise ValueError(kind)
    gt[rng.random(gt.size) < 0.02] = -1
    return gt, s


def _sklearn_best(gt: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Each preset's best value over all thresholds, from scikit-learn's exact curves."""
    keep = gt >= 0
    g, p = gt[keep], s[keep]
    fpr, tpr, _ = skm.roc_curve(g, p, drop_intermediate=False)
    precision, recall, _ = skm.precision_recall_curve(g, p)
    den = precision + recall
    f1 = np.divide(2 * precision * recall, den, out=np.zeros(den.shape), where=den > 0)
    n_pos, n_neg = int(g.sum()), int((g == 0).sum())
    acc = (tpr * n_pos + (1 - fpr) * n_neg) / (n_pos + n_neg)
    return {
        "max_f1": float(f1.max()),
        "max_accuracy": float(acc.max()),
        "max_youden": float((tpr - fpr).max()),
        "eer_gap": float(np.abs(fpr - (1 - tpr)).min()),
    }


# ---- thin_indices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "max_points", "keep"),
    [(10, 16, ()), (10_000, 4096, ()), (10_000, 4096, (1, 5000, 9998)), (99_991, 100, (3, 77))],
)
def test_thin_indices_keeps_the_ends_and_the_kept_within_the_limit(n, max_points, keep):
    idx = thin_indices(np.arange(n), max_points, keep)
    assert idx.size <= max_points and np.all(np.diff(idx) > 0)
    assert {0, n - 1, *keep} <= set(idx.tolist())
    if n <= max_points:
        assert idx.size == n
    else:  # evenly spaced in rank: no gap wider than one step
        assert np.diff(idx).max() <= -(-n // (max_points - 2 - len(keep)))
        assert idx.size > max_points // 2


def test_thin_indices_without_room_says_so():
    with pytest.raises(ValueError, match="max_points=3 leaves no room beside the 4 indices"):
        thin_indices(np.arange(100), 3, (10, 20))


# ---- the thinned curve keeps AUC, AP, every preset and the corners ------------------------


@pytest.mark.parametrize("kind", ["overlapping", "ties", "separable", "skewed"])
def test_thinned_curve_keeps_the_areas_and_every_preset_exactly(kind):
    gt, s = _scores(kind)
    res = evaluate_arrays(gt, s, choose="max_f1")
    assert res.thresholds.size > 2 * MAX_CURVE_POINTS
    small = thin_result(res)
    assert small.thresholds.size <= MAX_CURVE_POINTS
    keep = gt >= 0
    # the areas are the full curve's: scikit-learn's on every score
    assert small.roc_auc == res.roc_auc == pytest.approx(skm.roc_auc_score(gt[keep], s[keep]))
    assert small.average_precision == res.average_precision
    assert res.average_precision == pytest.approx(skm.average_precision_score(gt[keep], s[keep]))
    # the kept thresholds have the full curve's exact counts
    idx = np.searchsorted(res.thresholds, small.thresholds)
    np.testing.assert_array_equal(res.thresholds[idx], small.thresholds)
    for name in ("tp", "fp", "tn", "fn"):
        np.testing.assert_array_equal(getattr(small, name), getattr(res, name)[idx])
    # every preset picks the same threshold with the same value on both, and that value is the
    # best over every threshold (scikit-learn's curves)
    best = _sklearn_best(gt, s)
    for method in TARGETLESS_PRESETS:
        full, thin = res.choose(method), small.choose(method)
        assert thin == full, method
        assert small.at(full.threshold) == res.at(full.threshold)
        if method != "eer":
            assert full.value == pytest.approx(best[method], abs=1e-12), method
    at = res.at(res.choose("eer").threshold)
    assert abs(at.fpr - at.fnr) == pytest.approx(best["eer_gap"], abs=1e-12)
    assert small.chosen == res.chosen and small.chosen.method == "max_f1"
    # the corners: (1, 1), (0, 0), the highest score, where TPR leaves 1 and FPR reaches 0
    kept = set(small.thresholds.tolist())
    assert {res.thresholds[i] for i in corner_indices(res)} <= kept
    assert small.thresholds[0] == res.thresholds[0] == s[keep].min()
    assert small.thresholds[-1] == NOTHING_POSITIVE and small.thresholds[-2] == s[keep].max()
    last_tpr_one = res.thresholds[np.flatnonzero(res.tp == res.n_pos)[-1]]
    first_fpr_zero = res.thresholds[np.flatnonzero(res.fp == 0)[0]]
    assert {last_tpr_one, first_fpr_zero} <= kept
    if kind == "separable":  # the ROC curve's corner at (0, 1) is one threshold
        assert last_tpr_one == first_fpr_zero == s[keep & (gt == 1)].min()


def test_presets_scan_equals_the_formulas_of_derived_metrics():
    gt, s = _scores("ties", n=20_000, seed=4)
    res = evaluate_arrays(gt, s)
    d = derived_metrics(res.tp, res.fp, res.tn, res.fn)
    for method, name in (
        ("max_f1", "f1"),
        ("max_accuracy", "accuracy"),
        ("max_youden", "youden_j"),
    ):
        i = int(np.argmax(d[name]))  # the first maximum: the smallest threshold on ties
        assert res.choose(method).threshold == res.thresholds[i]
        assert res.choose(method).value == d[name][i]
    i = int(np.argmin(np.abs(d["fpr"] - d["fnr"])))
    assert res.choose("eer").threshold == res.thresholds[i]
    assert res.choose("eer").value == 0.5 * (d["fpr"][i] + d["fnr"][i])


def test_single_class_thins_without_error():
    with pytest.warns(SingleClassWarning):
        res = evaluate_arrays(np.zeros(20_000, np.int8), np.random.default_rng(0).random(20_000))
    small = thin_result(res)
    assert small.thresholds.size <= MAX_CURVE_POINTS and math.isnan(small.roc_auc)
    for method in TARGETLESS_PRESETS:
        assert small.choose(method) == res.choose(method)


def test_binned_counts_of_an_exact_result_are_binned_mode_s():
    gt, s = _scores("ties", n=30_000, seed=2)
    exact = evaluate_arrays(gt, s)
    acc = BinnedAccumulator(n_bins=1000)
    acc.add(gt, s)
    binned = acc.result()
    t, tp, fp = binned_counts(exact, 1000)
    np.testing.assert_array_equal(t, binned.thresholds)
    np.testing.assert_array_equal(tp, binned.tp)
    np.testing.assert_array_equal(fp, binned.fp)
    assert binned_counts(binned, 1000)[1] is binned.tp  # a binned result's own counts


def test_performance_figure_is_drawn_from_the_thinned_curve():
    gt, s = _scores("overlapping", n=30_000, seed=3)
    res = evaluate_arrays(gt, s)
    fig = performance_figure(res)
    lengths = [len(tr.x) for tr in fig.data]
    assert max(lengths) <= MAX_CURVE_POINTS
    roc = next(tr for tr in fig.data if tr.name == "ROC")
    small = thin_result(res)
    np.testing.assert_array_equal(np.asarray(roc.x), small.roc()[0])


# ---- the result file ---------------------------------------------------------------------


def test_result_file_is_small_at_a_million_scores_and_exact_counts_only_on_request(tmp_path):
    rng = np.random.default_rng(7)
    gt = (rng.random(1_000_000) < 0.2).astype(np.int8)
    s = np.clip(rng.normal(0.4 + 0.2 * gt, 0.2), 0, 1)  # float64: ~10^6 distinct scores
    _perf, auc, thresh = evaluate(gt, s, tmp_path / "net_valid")
    path = tmp_path / "net_valid.h5"
    assert path.stat().st_size <= 2 * 2**20
    assert auc == pytest.approx(skm.roc_auc_score(gt, s), abs=1e-12)
    assert not stores_exact(path)
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == FORMAT_VERSION == 3
        assert f["valid"].attrs["n_thresholds"] > 900_000 and "exact" not in f["valid"]
    back = read_result(path)["valid"]  # the most detailed curve stored: the thinned one
    assert back.thresholds.size <= MAX_CURVE_POINTS and back.roc_auc == auc
    assert back.chosen.threshold == thresh
    binned = read_result(path, curve="binned")["valid"]
    assert binned.thresholds.size == 10_002 and binned.n_bins == 10_000
    assert binned.at(0.5).tp == int(((s >= 0.5) & (gt == 1)).sum())
    with pytest.raises(ResultFileError, match="--store-exact") as e:
        read_result(path, curve="exact")
    assert e.value.reason == "not-stored"
    # the same result with its exact counts: every distinct score comes back
    res = evaluate_arrays(gt, s)
    write_result(tmp_path / "exact.h5", {"valid": res}, store_exact=True)
    assert stores_exact(tmp_path / "exact.h5")
    full = read_result(tmp_path / "exact.h5")["valid"]
    for name in ("thresholds", "tp", "fp", "tn", "fn"):
        np.testing.assert_array_equal(getattr(full, name), getattr(res, name))
    assert full.roc_auc == res.roc_auc


def _write_format_2(path: Path, res: EvaluationResult, neurons: bool = False) -> None:
    """A result file as VoxelBoard wrote it up to format version 2: every threshold at the top
    of the split, ``roc/``, ``pr/``, ``hist/`` and a ``coarse/`` copy (links when small)."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "voxelboard-evaluation", "format_version": 2, "step": 5})
        g = f.create_group("valid")
        g.attrs.update(
            {
                "mode": res.mode, "n_bins": res.n_bins, "n_pos": res.n_pos, "n_neg": res.n_neg,
                "n_ignored": res.n_ignored, "roc_auc": res.roc_auc,
                "average_precision": res.average_precision, "nll": res.nll,
                "chosen_threshold": res.chosen.threshold, "chosen_method": res.chosen.method,
                "chosen_value": res.chosen.value, "chosen_target": math.nan,
            }
        )  # fmt: skip
        for name in ("thresholds", "tp", "fp", "tn", "fn"):
            g.create_dataset(name, data=getattr(res, name), compression="lzf", shuffle=True)
        fpr, tpr = res.roc()
        g["roc/fpr"], g["roc/tpr"] = fpr, tpr
        g["pr/recall"], g["pr/precision"] = res.pr()
        g["hist/edges"], g["hist/pos"], g["hist/neg"] = res.hist_edges, res.hist_pos, res.hist_neg
        coarse = g.create_group("coarse")
        for name in ("thresholds", "tp", "fp", "tn", "fn"):
            coarse[name] = h5py.SoftLink(f"/valid/{name}")
        eh = g.create_group("error_hist")
        eh.attrs["threshold"] = 0.25
        for name, v in (
            ("edges", [0, 0.5, 1]),
            ("total", [3, 4]),
            ("pos", [1, 2]),
            ("neg", [2, 2]),
        ):
            eh[name] = np.asarray(v)
        if neurons:
            f["neurons/cube0/curve/thresholds"] = np.linspace(0.02, 0.98, 49)
            f["neurons/cube0"].attrs["seg_rand_index"] = 0.5


def test_files_of_format_2_are_read_as_before(tmp_path):
    gt, s = _scores("overlapping", n=20_000)
    res = evaluate_arrays(gt, s)
    _write_format_2(tmp_path / "old.h5", res, neurons=True)
    back = read_result(tmp_path / "old.h5")["valid"]
    for name in ("thresholds", "tp", "fp", "tn", "fn"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert back.roc_auc == res.roc_auc and back.chosen == res.chosen
    assert back.error_hist.threshold == 0.25
    coarse = read_result(tmp_path / "old.h5", coarse=True)["valid"]  # its coarse/ links
    np.testing.assert_array_equal(coarse.tp, res.tp)
    binned = read_result(tmp_path / "old.h5", curve="binned")["valid"]
    np.testing.assert_array_equal(binned.fp, binned_counts(res)[2])
    assert read_neurons(tmp_path / "old.h5")[0]["seg_rand_index"] == 0.5
    # a new split beside it: the old split stays as it was, readable
    evaluate(gt, s, tmp_path / "net_train", result_file=tmp_path / "old.h5", split="train")
    both = read_result(tmp_path / "old.h5")
    np.testing.assert_array_equal(both["valid"].tp, res.tp)
    kept = read_result(tmp_path / "old.h5", coarse=True)["valid"]  # its links came along
    np.testing.assert_array_equal(kept.fp, res.fp)
    assert both["train"].thresholds.size <= MAX_CURVE_POINTS
    assert read_neurons(tmp_path / "old.h5")[0]["seg_rand_index"] == 0.5


def test_evaluating_again_into_the_same_name_does_not_read_the_old_split_back(tmp_path):
    """The old split's curves are unreadable here (links to a file that is gone): replacing the
    split must not need them; its error histogram and the file's neurons stay."""
    gt, s = _scores("overlapping", n=20_000)
    res = evaluate_arrays(gt, s)
    path = tmp_path / "net_valid.h5"
    _write_format_2(path, res, neurons=True)
    with h5py.File(path, "a") as f:
        for name in ("thresholds", "tp", "fp", "tn", "fn"):
            del f[f"valid/{name}"]
            f[f"valid/{name}"] = h5py.ExternalLink("gone.h5", "/x")
    with pytest.raises(ResultFileError, match="incomplete or damaged"):
        read_result(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "replacing unreadable result file" would fail here
        evaluate(gt, s, tmp_path / "net_valid")
    back = read_result(path)["valid"]
    assert back.error_hist.threshold == 0.25 and back.roc_auc == res.roc_auc
    assert read_neurons(path)[0]["seg_rand_index"] == 0.5
    # error_hist then replaces only the histogram, copying the curves as they are
    error_hist(gt, s, tmp_path / "net_valid", thresh=0.4)
    again = read_result(path)["valid"]
    assert again.error_hist.threshold == 0.4
    np.testing.assert_array_equal(again.tp, back.tp)


def test_write_split_keeps_the_stored_curves_it_is_given(tmp_path):
    gt, s = _scores("skewed", n=40_000)
    res = evaluate_arrays(gt, s)
    stored = stored_curves(res, store_exact=True)
    write_split(tmp_path / "r.h5", "valid", stored)
    thin = read_result(tmp_path / "r.h5", coarse=True)["valid"]
    np.testing.assert_array_equal(thin.thresholds, stored.thinned.thresholds)
    np.testing.assert_array_equal(read_result(tmp_path / "r.h5")["valid"].fp, res.fp)


def test_store_exact_needs_exact_mode_on_the_command_line(tmp_path, capsys):
    import run

    assert run.main(["evaluate", str(tmp_path), "--store-exact"]) == run.EXIT_USAGE
    assert "--store-exact keeps the counts at every distinct score" in capsys.readouterr().err
