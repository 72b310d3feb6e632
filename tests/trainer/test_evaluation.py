"""ELEKTRONN2's evaluation functions, the figures they write and the result file."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn import metrics as skm

from trainer.evaluation import (
    REFERENCE_GRID,
    EvaluationInputError,
    SingleClassWarning,
    binary_nll,
    confusion_table,
    error_hist,
    eval_thresh,
    evaluate,
    evaluate_arrays,
    evaluate_model_binary,
    find_nearest,
    format_report,
    performance_measure,
    rescale_fudge,
    roc_area,
)
from trainer.runs import FORMAT_VERSION, ResultFileError, read_result, write_result


def _data(n: int = 3000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = (rng.random(n) < 0.3).astype(np.int8)
    s = np.clip(0.35 * gt + 0.65 * rng.random(n), 0, 1)
    gt[rng.random(n) < 0.05] = -1
    return gt.reshape(10, 300), s.reshape(10, 300)


# ---- reference test vectors --------------------------------------------------------------------


def test_roc_area_vector() -> None:
    assert roc_area([1, 0.8, 0.5, 0.1], [1, 0.5, 0.2, 0]) == pytest.approx(0.705, abs=1e-12)


def test_rescale_fudge_in_place() -> None:
    p = np.array([0, 0.15, 0.5, 0.85, 1])
    out = rescale_fudge(p)
    assert out is p
    np.testing.assert_allclose(p, [0, 0, 0.5, 1, 1], atol=1e-12)
    with pytest.raises(TypeError, match="float numpy array"):
        rescale_fudge(np.array([0, 1]))
    with pytest.raises(ValueError, match=r"fudge must be in \[0, 0\.5\)"):
        rescale_fudge(np.array([0.5]), fudge=0.5)


def test_binary_nll_balanced_form() -> None:
    gt, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.7, 0.9])
    assert binary_nll(p, gt) == pytest.approx(0.13478, abs=1e-5)
    assert binary_nll(p, gt) == pytest.approx(0.5 * skm.log_loss(gt, p), rel=1e-12)
    # list of cubes: mean of per-cube values; -1 ignored
    assert binary_nll([p, p[:2]], [gt, gt[:2]]) == pytest.approx(
        0.5 * (binary_nll(p, gt) + binary_nll(p[:2], gt[:2]))
    )
    assert binary_nll(np.append(p, 0.5), np.append(gt, -1)) == binary_nll(p, gt)
    # a confident mistake is large but finite (probabilities are clipped at float64 eps)
    assert 10 < binary_nll(np.array([0.0]), np.array([1])) < 40


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((0, 0, 0, 5), (0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0)),
        ((5, 5, 0, 0), (1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0)),
        ((3, 4, 1, 2), (0.6, 0.2, 0.75, 0.6, 0.7, 0.7, 2 / 3)),
    ],
)
def test_performance_measure(counts: tuple, expected: tuple) -> None:
    assert performance_measure(*counts) == pytest.approx(expected)


def test_performance_measure_all_zero() -> None:
    with pytest.raises(ValueError, match="all counts .* are zero"):
        performance_measure(0, 0, 0, 0)


def test_confusion_table_lists_and_ignore() -> None:
    labs = [np.array([1, 1, 0, 0, -1]), np.array([[1, 0], [-1, 0]])]
    preds = [np.array([1, 0, 1, 0, 1]), np.array([[True, True], [True, False]])]
    assert confusion_table(labs, preds) == (2, 2, 2, 1)
    with pytest.raises(EvaluationInputError, match="thresholded predictions"):
        confusion_table(np.array([1, 0]), np.array([0.3, 0.9]))
    with pytest.raises(
        EvaluationInputError, match=r"labels have shape \(2,\) but preds have shape \(3,\)"
    ):
        confusion_table(np.array([1, 0]), np.array([1, 0, 1]))


def test_eval_thresh_accepts_lists(capsys) -> None:
    gt, s = _data()
    whole = eval_thresh((0.5, gt, s))
    assert eval_thresh((0.5, list(gt), list(s))) == whole
    keep = gt >= 0
    assert whole[5] == pytest.approx(skm.accuracy_score(gt[keep], s[keep] >= 0.5))
    assert "thresh=0.50, acc=" in capsys.readouterr().out


def test_find_nearest() -> None:
    assert find_nearest([0.0, 0.25, 0.5], 0.3) == 0.25
    assert find_nearest([0.0, 0.2, 0.4], 0.1) == 0.0  # first on ties


# ---- evaluate / error_hist -------------------------------------------------------------------


@pytest.mark.parametrize("n_proc", [None, 1, 2, 6])
def test_evaluate_matches_reference_loop(tmp_path: Path, n_proc: int | None) -> None:
    gt, s = _data()
    perf, auc, thresh = evaluate(gt, s, tmp_path / "net_valid", n_proc=n_proc)
    assert perf.shape == (7, 64)
    # the reference computed each grid column with eval_thresh
    for j in (0, 17, 40, 63):
        cols = performance_measure(*confusion_table(gt, s >= REFERENCE_GRID[j]))
        np.testing.assert_allclose(perf[:, j], cols, atol=1e-12)
    assert thresh == REFERENCE_GRID[int(np.argmax(perf[5]))]
    keep = gt >= 0
    assert auc == pytest.approx(skm.roc_auc_score(gt[keep], s[keep]), abs=1e-9)
    assert (tmp_path / "net_valid.performance.html").stat().st_size > 10_000
    res = read_result(tmp_path / "net_valid.h5")["valid"]
    assert res.chosen.threshold == thresh and res.chosen.method == "max_accuracy"


def test_evaluate_given_threshold_and_list_of_cubes(tmp_path: Path) -> None:
    gt, s = _data()
    perf, _, thresh = evaluate(list(gt), list(s), tmp_path / "x", thresh=0.5)
    assert thresh == find_nearest(REFERENCE_GRID, 0.5)
    perf2, _, _ = evaluate(gt, s, tmp_path / "y", thresh=0.0)  # 0.0 is a threshold, not "none"
    np.testing.assert_array_equal(perf, perf2)
    assert read_result(tmp_path / "y.h5")["valid"].chosen.threshold == 0.0


def test_perfectly_separable() -> None:
    gt = np.array([0] * 50 + [1] * 50)
    s = np.concatenate([np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)])
    res = evaluate_arrays(gt, s)
    assert res.roc_auc == 1.0 and res.average_precision == 1.0
    assert res.chosen.value == 1.0 and 0.4 < res.chosen.threshold <= 0.6


def test_error_hist_bins_and_file(tmp_path: Path) -> None:
    gt, s = _data()
    hist = error_hist(gt, s, tmp_path / "net_valid", thresh=0.3)
    n_bins = int(3000 ** (1 / 3))
    assert hist.edges.size == n_bins + 1 == 15
    np.testing.assert_allclose(hist.centres, (np.arange(n_bins) + 0.5) / n_bins)
    pos, _ = np.histogram(s[gt == 1], bins=hist.edges)
    np.testing.assert_array_equal(hist.pos, pos)
    assert hist.total.sum() == gt.size  # ignored voxels count in the total, as in ELEKTRONN2
    assert (tmp_path / "net_valid.error_histogram.html").exists()
    # no split yet: error_hist evaluates it (binned) so the file is complete
    res = read_result(tmp_path / "net_valid.h5")["valid"]
    assert res.mode == "binned" and res.error_hist.threshold == 0.3
    np.testing.assert_array_equal(res.error_hist.pos, hist.pos)
    # evaluate afterwards keeps the histogram, and a train split leaves valid alone
    evaluate(gt, s, tmp_path / "net_valid")
    evaluate(gt, s, tmp_path / "net_train", result_file=tmp_path / "net_valid.h5", split="train")
    both = read_result(tmp_path / "net_valid.h5")
    assert set(both) == {"valid", "train"}
    assert both["valid"].mode == "exact" and both["valid"].error_hist.threshold == 0.3


def test_tiny_input_error_hist_has_one_bin(tmp_path: Path) -> None:
    hist = error_hist(np.array([0, 1]), np.array([0.2, 0.8]), tmp_path / "t")
    assert hist.edges.tolist() == [0.0, 1.0]


def test_single_class_through_evaluate(tmp_path: Path) -> None:
    with pytest.warns(SingleClassWarning):
        _, auc, _ = evaluate(np.zeros(20, int), np.linspace(0, 1, 20), tmp_path / "s")
    assert math.isnan(auc)
    res = read_result(tmp_path / "s.h5")["valid"]
    assert math.isnan(res.roc_auc) and res.n_pos == 0


# ---- result file ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_result_file_round_trip(tmp_path: Path, mode: str) -> None:
    gt, s = _data()
    res = evaluate_arrays(gt, s, mode=mode, n_bins=1000)
    path = tmp_path / "eval" / "net.h5"
    path.parent.mkdir()
    write_result(path, {"valid": res, "train": res}, {"snapshot": "snapshots/LAST.pt", "step": 7})
    back = read_result(path)
    for split in ("valid", "train"):
        b = back[split]
        for name in ("thresholds", "tp", "fp", "tn", "fn", "hist_pos", "hist_neg", "hist_edges"):
            np.testing.assert_array_equal(getattr(b, name), getattr(res, name))
        assert (b.roc_auc, b.average_precision, b.nll) == (
            res.roc_auc,
            res.average_precision,
            res.nll,
        )
        assert b.chosen == res.chosen and b.mode == mode
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == FORMAT_VERSION and f.attrs["step"] == 7
        g = f["valid"]
        assert g.attrs["curves"] == "thinned" and g.attrs["n_thresholds"] == res.thresholds.size
        np.testing.assert_array_equal(g["tp"][()], res.tp)  # small: the thinned curve is all of it
        assert g["binned"].attrs["n_bins"] == (1000 if mode == "binned" else 10_000)
        assert "exact" not in g  # only with store_exact
        fpr, tpr = res.roc()
        np.testing.assert_array_equal(g["roc/fpr"][()], fpr)
        np.testing.assert_array_equal(g["pr/precision"][()], res.pr()[1])
        assert g["tp"].dtype == np.int64 and g.attrs["chosen_method"] == "max_accuracy"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_result_file_thinned_copy_for_many_thresholds(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    gt = (rng.random(120_000) < 0.5).astype(np.int8)
    res = evaluate_arrays(gt, rng.random(120_000))
    assert res.thresholds.size > 100_000
    write_result(tmp_path / "big.h5", {"valid": res})
    small = read_result(tmp_path / "big.h5", coarse=True)["valid"]
    assert 4000 < small.thresholds.size <= 4096
    idx = np.searchsorted(res.thresholds, small.thresholds)
    np.testing.assert_array_equal(small.fp, res.fp[idx])
    assert small.roc_auc == res.roc_auc


def test_read_result_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ResultFileError, match=r"missing\.h5: no such file; re-run `python run\.py evaluate"
    ):
        read_result(tmp_path / "missing.h5")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ResultFileError, match=r"bad\.h5: not a readable HDF5 file") as e:
        read_result(tmp_path / "bad.h5")
    assert e.value.reason == "corrupt"
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ResultFileError, match="not a voxelboard-evaluation file"):
        read_result(tmp_path / "foreign.h5")
    gt, s = _data()
    res = evaluate_arrays(gt, s)
    for version, match in ((0, "format version 0 is older"), (99, "format version 99 is newer")):
        write_result(tmp_path / "v.h5", {"valid": res})
        with h5py.File(tmp_path / "v.h5", "a") as f:
            f.attrs["format_version"] = version
        with pytest.raises(ResultFileError, match=match):
            read_result(tmp_path / "v.h5")
    write_result(tmp_path / "cut.h5", {"valid": res})
    with h5py.File(tmp_path / "cut.h5", "a") as f:
        del f["valid/fp"]
    with pytest.raises(ResultFileError, match="split 'valid' is incomplete or damaged"):
        read_result(tmp_path / "cut.h5")
    with pytest.raises(ResultFileError, match="no split 'train'"):
        read_result(tmp_path / "cut.h5", splits=["train"])


def test_evaluate_replaces_unreadable_file(tmp_path: Path) -> None:
    gt, s = _data()
    (tmp_path / "r.h5").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="replacing unreadable result file"):
        evaluate(gt, s, tmp_path / "r")
    assert set(read_result(tmp_path / "r.h5")) == {"valid"}


# ---- model evaluation -----------------------------------------------------------------------


def test_evaluate_model_binary(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from trainer.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn3d", n_classes=2).eval()
    rng = np.random.default_rng(0)
    shape = (9, 30, 30)
    raws = [rng.random((1, *shape), dtype=np.float32) for _ in range(3)]
    labels = [(r[0] > 0.5).astype(np.int16) for r in raws]
    labels[0][0] = -1
    labels[1] = labels[1][None]  # (1, z, y, x) is accepted too

    class Data:
        valid_d, valid_l = raws[:2], labels[:2]

    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        results = evaluate_model_binary(
            model,
            "net",
            data=Data,
            train_d=raws[2:],
            train_l=labels[2:],
            run_dir=tmp_path,
            mode="binned",
            n_bins=1000,
            progress=lambda *a: seen.append(a),
        )
    assert seen == [("train", 1, 1), ("valid", 1, 2), ("valid", 2, 2)]
    out = model.output_shape(shape)
    v = results["valid"]
    assert v.n_pos + v.n_neg + v.n_ignored == 2 * math.prod(out)
    assert v.chosen.method == "train_max_accuracy"
    assert v.chosen.threshold == results["train"].chosen.threshold
    files = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {
        "net.h5",
        "net-REPORT.txt",
        "net_valid.performance.html",
        "net_train.error_histogram.html",
    } <= files
    back = read_result(tmp_path / "eval" / "net.h5")
    np.testing.assert_array_equal(back["valid"].tp, v.tp)
    report = (tmp_path / "eval" / "net-REPORT.txt").read_text()
    assert report.startswith("T_nll, T_acc, T_ROCA, V_nll, V_acc, V_ROCA, d_acc, d_ROCA\n")
    assert report == format_report(results)
    with pytest.raises(RuntimeError, match="no validation cubes"):
        evaluate_model_binary(model, "net", run_dir=tmp_path)
