"""ELEKTRONN2's binary evaluation API, as thin wrappers over ``trainer.metrics``.

The maths lives in ``trainer.metrics`` (pure, one pass over the data); this module keeps the
reference functions and their return shapes. ``evaluate``, ``error_hist`` and
``evaluate_model_binary`` write their figures (``trainer.evaluation.figures``) and the result
file (format and writer: ``trainer.runs.result_file``). See docs/evaluation.md for the deviations
from ELEKTRONN2.

Example:
    >>> perf, auc, thresh = evaluate(gt, probs, "eval/mynet_valid")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer import runs
from trainer.curves import StoredCurves, stored_curves
from trainer.evaluation.figures import (
    PERF_ROWS,
    REFERENCE_GRID,
    error_histogram_figure,
    performance_figure,
    write_html,
)
from trainer.metrics import (
    DEFAULT_N_BINS,
    IGNORE_LABEL,
    ErrorHistogram,
    EvaluationInputError,
    EvaluationResult,
    ThresholdChoice,
    as_cube_pairs,
    check_labels,
    check_scores,
    counts_at,
    derived_metrics,
    evaluate_arrays,
    make_accumulator,
)

__all__ = [
    "binary_nll",
    "confusion_table",
    "error_hist",
    "eval_thresh",
    "evaluate",
    "evaluate_model_binary",
    "find_nearest",
    "format_report",
    "performance_measure",
    "rescale_fudge",
    "roc_area",
]

_EPS = float(np.finfo(np.float64).eps)

#: ``on_prediction(split, index, raw, label, prob)`` of ``evaluate_model_binary``
OnPrediction = Callable[[str, int, np.ndarray, np.ndarray, np.ndarray], None]


# ----------------------------------------------------------------------------------------------
# the reference functions


def binary_nll(pred: Any, gt: Any) -> float:
    """Balanced binary negative log-likelihood ``-0.5 (mean(gt log p) + mean((1-gt) log(1-p)))``.

    Means run over the voxels whose label is not -1; ``p`` is clipped to ``[eps, 1 - eps]`` so
    ``0 log 0`` counts as 0 and a confident mistake gives a large finite value. A list/tuple of
    cubes gives the mean of the per-cube values (as ELEKTRONN2). Soft labels in ``[0, 1]`` work.

    Example:
        >>> round(binary_nll(np.array([.1, .4, .7, .9]), np.array([0, 0, 1, 1])), 5)
        0.13478
    """
    if isinstance(pred, list | tuple):
        pairs = as_cube_pairs(gt, pred, "pred")
        return float(np.mean([binary_nll(p, g) for g, p in pairs]))
    ((g, p),) = as_cube_pairs(gt, pred, "pred")
    p = check_scores(p).astype(np.float64, copy=False)
    g = np.asarray(g, np.float64)
    keep = g != IGNORE_LABEL
    if not keep.all():
        g, p = g[keep], p[keep]
    if g.size == 0:
        raise EvaluationInputError("empty input: every label is -1 (ignore)")
    if g.min() < 0 or g.max() > 1 or np.isnan(g).any():
        raise EvaluationInputError("labels for binary_nll must be in [0, 1] (or -1 to ignore)")
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return float(-0.5 * (np.mean(g * np.log(p)) + np.mean((1.0 - g) * np.log1p(-p))))


def confusion_table(labs: Any, preds: Any) -> tuple[int, int, int, int]:
    """Counts ``(tp, tn, fp, fn)`` of thresholded predictions; labels -1 are ignored.

    Args:
        labs: labels 0/1/-1, an array or a list of cubes.
        preds: predictions 0/1 (bool or int; threshold probabilities first), same structure.

    Raises:
        EvaluationInputError: on shape mismatch, bad labels, or predictions other than 0/1.
    """
    tp = tn = fp = fn = 0
    for g, p in as_cube_pairs(labs, preds, "preds"):
        g = check_labels(g)
        p = np.asarray(p)
        if p.dtype != np.bool_:
            if p.size and (p.min() < 0 or p.max() > 1 or not np.array_equal(p, p.astype(bool))):
                raise EvaluationInputError(
                    "confusion_table needs thresholded predictions (0 or 1); threshold the "
                    "probabilities first, e.g. preds >= 0.5"
                )
            p = p.astype(bool)
        pos, neg = g == 1, g == 0
        tp += int(np.count_nonzero(pos & p))
        fn += int(np.count_nonzero(pos & ~p))
        fp += int(np.count_nonzero(neg & p))
        tn += int(np.count_nonzero(neg & ~p))
    return tp, tn, fp, fn


def performance_measure(
    tp: int, tn: int, fp: int, fn: int
) -> tuple[float, float, float, float, float, float, float]:
    """``(tpr, fpr, precision, recall, bal_accur, accur, f1)`` from confusion counts.

    Conventions of ELEKTRONN2: tpr/fpr are 0 on an empty denominator, precision is 1 when nothing
    is predicted positive, f1 is 0 when precision + recall is 0.

    Raises:
        ValueError: all counts are zero (accuracy would be 0/0).
    """
    if tp + tn + fp + fn == 0:
        raise ValueError(
            "performance_measure: all counts (tp, tn, fp, fn) are zero; nothing to measure"
        )
    d = derived_metrics(tp, fp, tn, fn)
    return tuple(float(d[k]) for k in PERF_ROWS)  # type: ignore[return-value]


def roc_area(tpr: Any, fpr: Any) -> float:
    """Trapezoid area under ``tpr`` over ``fpr`` given in ascending-threshold order.

    The arrays are reversed before integrating (ascending thresholds mean descending fpr), so
    ``roc_area(precision, recall)`` is the PR area. No (0, 0)/(1, 1) anchors are added.

    Example:
        >>> round(roc_area([1, .8, .5, .1], [1, .5, .2, 0]), 6)
        0.705
    """
    y = np.asarray(tpr, np.float64)[::-1]
    x = np.asarray(fpr, np.float64)[::-1]
    return float(np.trapezoid(y, x))


def eval_thresh(
    args: tuple[float, Any, Any],
) -> tuple[float, float, float, float, float, float, float]:
    """``performance_measure`` at one threshold; ``args = (thresh, labs, preds)``; prints a line.

    ``preds`` may be an array or a list of cubes.
    """
    thresh, labs, preds = args
    pairs = as_cube_pairs(labs, preds, "preds")
    classified = [check_scores(p) >= thresh for _, p in pairs]
    perf = performance_measure(*confusion_table([g for g, _ in pairs], classified))
    _tpr, _fpr, prec, rec, _bal, acc, f1 = perf
    print(f"thresh={thresh:.2f}, acc={acc:.4f}, prec={prec:.4f}, recall={rec:.4f}, F1={f1:.4f}")
    return perf


def find_nearest(array: Any, value: float) -> Any:
    """The element of ``array`` closest to ``value`` (the first one on ties)."""
    a = np.asarray(array)
    if a.size == 0:
        raise ValueError("find_nearest: empty array")
    return a.flat[int(np.argmin(np.abs(a - value)))]


def rescale_fudge(pred: np.ndarray, fudge: float = 0.15) -> np.ndarray:
    """Map ``[fudge, 1 - fudge]`` linearly onto ``[0, 1]``, clipping outside. **In place**.

    Example:
        >>> rescale_fudge(np.array([0, .15, .5, .85, 1])).round(12)
        array([0. , 0. , 0.5, 1. , 1. ])
    """
    if not 0.0 <= fudge < 0.5:
        raise ValueError(f"fudge must be in [0, 0.5), got {fudge}")
    if isinstance(pred, list | tuple):
        for p in pred:
            rescale_fudge(p, fudge)
        return pred
    if not isinstance(pred, np.ndarray) or pred.dtype.kind != "f":
        raise TypeError("rescale_fudge works in place and needs a float numpy array")
    np.clip(pred, fudge, 1.0 - fudge, out=pred)
    pred -= fudge
    pred /= 1.0 - 2.0 * fudge
    return pred


def evaluate(
    gt: Any,
    preds: Any,
    save_name: str | os.PathLike,
    thresh: float | None = None,
    n_proc: int | None = None,
    *,
    mode: str = "exact",
    n_bins: int = DEFAULT_N_BINS,
    grid: Sequence[float] | np.ndarray | None = None,
    result_file: str | os.PathLike | None = None,
    split: str = "valid",
    store_exact: bool = False,
) -> tuple[np.ndarray, float, float]:
    """Evaluate probabilities; write ``<save_name>.performance.html`` and the result file.

    The result file keeps the curves thinned to at most 4096 thresholds (the presets' exactly)
    and the binned counts, whatever the number of scores; the figure is drawn from the thinned
    curve. The areas are those of the full curve.

    Args:
        gt: labels (1, 0, -1 = ignore), an array or a list of cubes.
        preds: probabilities of class 1 in [0, 1], same structure and shapes.
        save_name: path prefix of the figure.
        thresh: a threshold (e.g. tuned on another split); the nearest grid value is used. If
            ``None`` the grid value with the highest accuracy is chosen.
        n_proc: accepted for compatibility and ignored: one pass needs no process pool.
        mode: ``'exact'`` or ``'binned'`` (see ``trainer.metrics``).
        n_bins: bins in binned mode.
        grid: thresholds of the ``perf`` table (default: ELEKTRONN2's 64 points over [0, 1]).
        result_file: result file to update (default ``<save_name>.h5``).
        split: group of the result file to write (``'valid'`` or ``'train'``).
        store_exact: also keep the exact counts at every distinct score in the result file
            (exact mode; ~20 bytes per distinct score before compression).

    Returns:
        ``(perf, roc_auc, thresh)``: ``perf`` is the 7 x len(grid) array with rows tpr, fpr,
        precision, recall, balanced accuracy, accuracy, f1; ``roc_auc`` is the area of the full
        ROC curve (NaN for a single class); ``thresh`` is the chosen grid threshold.
    """
    del n_proc
    res = evaluate_arrays(gt, preds, mode=mode, n_bins=n_bins)
    perf, res = _grid_choice(res, grid, thresh)
    stored = stored_curves(res, store_exact)
    save_name = str(save_name)
    fig = performance_figure(stored.thinned, perf=perf, grid=grid)
    write_html(save_name + ".performance.html", fig)
    path = Path(result_file) if result_file is not None else Path(save_name + ".h5")
    # keeps the split's error histogram (error_hist wrote it) without reading its old curves
    runs.write_split(path, split, stored)
    return perf, res.roc_auc, res.chosen.threshold  # type: ignore[union-attr]


def error_hist(
    gt: Any,
    preds: Any,
    save_name: str | os.PathLike,
    thresh: float = 0.42,
    *,
    result_file: str | os.PathLike | None = None,
    split: str = "valid",
) -> ErrorHistogram:
    """Histograms of the scores (all, positives, negatives); write the figure and the numbers.

    Uses ``int(min(500, n ** (1/3)))`` bins (at least 1) over [0, 1] for ``n`` voxels. Writes
    ``<save_name>.error_histogram.html`` and stores the histogram under ``<split>/error_hist`` of
    the result file (default ``<save_name>.h5``); a split not evaluated yet is evaluated in binned
    mode first, so the file is always complete.

    Returns:
        the ``ErrorHistogram``.
    """
    pairs = as_cube_pairs(gt, preds, "preds")
    size = sum(g.size for g, _ in pairs)
    n_bins = max(1, int(min(500, size ** (1.0 / 3.0))))
    counts = np.zeros((3, n_bins), np.int64)  # neg, pos, ignored
    for g, s in pairs:
        g, s = check_labels(g).reshape(-1), check_scores(s).reshape(-1)
        idx = np.minimum((s * n_bins).astype(np.intp), n_bins - 1)
        idx += np.array([0, n_bins, 2 * n_bins], np.intp)[g]  # label -1 -> last row
        counts += np.bincount(idx, minlength=3 * n_bins).reshape(3, n_bins)
    hist = ErrorHistogram(
        edges=np.linspace(0.0, 1.0, n_bins + 1),
        total=counts.sum(axis=0),
        pos=counts[1],
        neg=counts[0],
        threshold=float(thresh),
    )
    save_name = str(save_name)
    write_html(save_name + ".error_histogram.html", error_histogram_figure(hist))
    path = Path(result_file) if result_file is not None else Path(save_name + ".h5")
    runs.write_error_hist(path, split, hist, lambda: evaluate_arrays(gt, preds, mode="binned"))
    return hist


def _grid_choice(
    res: EvaluationResult, grid: Any, thresh: float | None
) -> tuple[np.ndarray, EvaluationResult]:
    """ELEKTRONN2's 7 x n table on the grid and the threshold it picks (given, else max accuracy)."""
    grid = REFERENCE_GRID if grid is None else np.asarray(grid, np.float64)
    d = counts_at(res, grid)
    perf = np.stack([d[k] for k in PERF_ROWS])
    if thresh is not None:
        t = float(find_nearest(grid, thresh))
        chosen = ThresholdChoice(t, "given", res.at(t).accuracy)
    else:
        i = int(np.argmax(d["accuracy"]))
        chosen = ThresholdChoice(float(grid[i]), "max_accuracy", float(d["accuracy"][i]))
    return perf, res.with_choice(chosen)


def evaluate_model_binary(
    model: Any,
    name: str,
    data: Any = None,
    valid_d: Sequence[np.ndarray] | None = None,
    valid_l: Sequence[np.ndarray] | None = None,
    train_d: Sequence[np.ndarray] | None = None,
    train_l: Sequence[np.ndarray] | None = None,
    n_proc: int = 2,
    betaloss: bool = False,
    fudgeysoft: bool = False,
    *,
    run_dir: str | os.PathLike = ".",
    mode: str = "exact",
    n_bins: int = DEFAULT_N_BINS,
    n_train: int = 4,
    device: Any = None,
    attrs: Mapping[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    splits: Sequence[str] = ("train", "valid"),
    on_prediction: OnPrediction | None = None,
    instances: Sequence[np.ndarray] | None = None,
    neuron_kwargs: Mapping[str, Any] | None = None,
    store_exact: bool = False,
) -> dict[str, EvaluationResult]:
    """Predict the validation (and the first ``n_train`` training) cubes densely and evaluate them.

    Cubes are predicted and counted one at a time, so memory holds one cube's prediction plus the
    counts (binned mode) or 8 bytes per voxel (exact mode). Writes into ``<run_dir>/eval/``:
    ``<name>.h5`` (both splits), ``<name>_<split>.performance.html``,
    ``<name>_<split>.error_histogram.html`` and ``<name>-REPORT.txt``.

    Args:
        model: has ``offsets`` (z, y, x) and ``n_classes``; predicted with
            ``trainer.inference.predict_dense``.
        name: base name of the outputs.
        data: object with ``valid_d``, ``valid_l``, ``train_d``, ``train_l`` used for the cubes not
            given explicitly (e.g. a ``BatchCreatorImage``).
        valid_d, valid_l, train_d, train_l: raw cubes (C, z, y, x) or (z, y, x) (float in [0, 1], or
            integers scaled by 1/255 as ``predict_dense`` does) and labels
            (z, y, x) or (1, z, y, x) with 1/0/-1.
        n_proc: accepted for compatibility and ignored.
        betaloss: use channel 0 (the mode of a beta output) instead of channel 1.
        fudgeysoft: compute the NLL on ``rescale_fudge``-d probabilities (curves use the raw ones).
        run_dir: the run directory.
        mode, n_bins: exact or binned counting (see ``trainer.metrics``).
        n_train: how many training cubes to evaluate (ELEKTRONN2: the first 4).
        device: passed to ``predict_dense``.
        attrs: extra root attributes of the result file (snapshot, step, ...).
        progress: called as ``progress(split, cubes_done, cubes_total)``.
        splits: which of ``'train'`` and ``'valid'`` to evaluate.
        on_prediction: called as ``on_prediction(split, index, raw, label, prob)`` with each
            cube as it is counted (raw's first channel, labels and the class probabilities,
            centre-cropped to one shape): a caller keeps what it needs of the prediction (the
            probability cache) without predicting again.
        instances: the ground-truth neurons of the validation cubes (one id per neuron,
            0 = membrane), each of its membrane labels' shape: the result file gets their
            neuron scores (``trainer.evaluation.neurons.evaluate_neurons``) and the report
            ELEKTRONN2's ``ri*`` columns.
        neuron_kwargs: passed to ``evaluate_neurons`` (thresholds, connectivity, grid, n_proc).
        store_exact: also keep the exact counts at every distinct score in the result file
            (exact mode); by default it keeps the thinned curves and the binned counts.

    Returns:
        ``{'train': ..., 'valid': ...}`` (train only if training cubes exist), the full results.

    Raises:
        RuntimeError: no validation cubes.
    """
    del n_proc

    def pick(given: Any, attr: str) -> list[Any]:
        src = given if given is not None else getattr(data, attr, None)
        return [] if src is None else list(src)

    vd, vl, td, tl = (
        pick(valid_d, "valid_d"),
        pick(valid_l, "valid_l"),
        pick(train_d, "train_d"),
        pick(train_l, "train_l"),
    )
    if "valid" in splits and not vd:
        raise RuntimeError(
            "evaluate_model_binary: no validation cubes; pass valid_d/valid_l or a data object "
            "with valid_d/valid_l"
        )
    n_classes = getattr(model, "n_classes", 2)
    if n_classes != 2:
        warnings.warn(
            f"evaluate_model_binary expects a 2-class model, this one has {n_classes} classes; "
            "evaluating channel 1 against label 1",
            stacklevel=2,
        )
    channel = 0 if betaloss else 1
    if instances is not None and len(instances) != len(vd):
        raise EvaluationInputError(
            f"{len(instances)} instance label cubes for {len(vd)} validation cubes: give one "
            "per validation cube"
        )
    runs.eval_dir(run_dir).mkdir(parents=True, exist_ok=True)
    results: dict[str, EvaluationResult] = {}
    stored: dict[str, StoredCurves] = {}
    neurons: list[dict[str, Any]] = []
    thresh = None
    for split, raws, labels in (("train", td[:n_train], tl[:n_train]), ("valid", vd, vl)):
        if not raws or split not in splits:
            continue
        if len(raws) != len(labels):
            raise EvaluationInputError(
                f"{split}: {len(raws)} raw cubes but {len(labels)} label cubes"
            )
        acc = make_accumulator(mode, n_bins=n_bins, nll=not fudgeysoft)
        log_sum, n_counted = 0.0, 0
        for i, (raw, lab) in enumerate(zip(raws, labels)):
            raw_c, gt, prob = _predict_cube(model, raw, lab, channel, device)
            acc.add(gt, prob)
            if split == "valid" and instances is not None:
                neurons.append(_neurons_of_cube(i, instances[i], lab, prob, neuron_kwargs))
            if on_prediction is not None:
                on_prediction(split, i, raw_c, gt, prob)
            if fudgeysoft:
                g = check_labels(gt)
                p = rescale_fudge(check_scores(prob).astype(np.float64), 0.15)[g >= 0]
                g = g[g >= 0]
                q = np.clip(np.where(g == 1, p, 1.0 - p), _EPS, None)
                log_sum += float(np.log(q).sum())
                n_counted += g.size
            if progress is not None:
                progress(split, i + 1, len(raws))
        res = acc.result()
        if fudgeysoft:
            res = _with_nll(res, -0.5 * log_sum / max(n_counted, 1))
        # the validation split is shown at the threshold tuned on the training cubes
        perf, res = _grid_choice(res, None, thresh)
        if split == "valid" and thresh is not None:
            res = res.with_choice(dataclasses.replace(res.chosen, method="train_max_accuracy"))
        if split == "train":
            thresh = res.chosen.threshold  # type: ignore[union-attr]
        hist = ErrorHistogram(
            edges=res.hist_edges,
            total=res.hist_pos + res.hist_neg,
            pos=res.hist_pos,
            neg=res.hist_neg,
            threshold=res.chosen.threshold,  # type: ignore[union-attr]
        )
        res = res.with_error_hist(hist)
        stored[split] = stored_curves(res, store_exact)
        write_html(
            runs.figure_path(run_dir, name, split, "performance"),
            performance_figure(stored[split].thinned, perf=perf, title=f"{name} {split}"),
        )
        write_html(
            runs.figure_path(run_dir, name, split, "error_histogram"),
            error_histogram_figure(hist),
        )
        results[split] = res
    runs.write_result(
        runs.result_path(run_dir, name), stored, {"name": name, **(attrs or {})}, neurons
    )
    report = format_report(results, neurons).encode()
    runs.atomic_write_bytes(runs.report_path(run_dir, name), report)
    return results


def _predict_cube(
    model: Any, raw: Any, label: Any, channel: int, device: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(raw, label, prob)`` of one cube, centre-cropped to one shape (labels may be 4-d)."""
    from trainer.inference import predict_labelled

    label = np.asarray(label)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 3:
        raise EvaluationInputError(
            f"labels must have shape (z, y, x) or (1, z, y, x), got {label.shape}"
        )
    return predict_labelled(model, raw, label, channel, device)


def _neurons_of_cube(
    i: int, inst: Any, label: Any, prob: np.ndarray, kwargs: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The neuron record of validation cube ``i``: its instance labels cropped as its labels."""
    from trainer.evaluation.neurons import evaluate_neurons
    from trainer.inference import centre_crop

    inst, label = np.asarray(inst), np.asarray(label)
    label_shape = label.shape[1:] if label.ndim == 4 else label.shape
    if inst.shape != label_shape:
        raise EvaluationInputError(
            f"validation cube {i}: instance labels have shape {inst.shape} but its membrane "
            f"labels have shape {label_shape}; give instance labels of the labels' shape"
        )
    return evaluate_neurons(centre_crop(inst, prob.shape), prob, **(kwargs or {}))


def _with_nll(res: EvaluationResult, nll: float) -> EvaluationResult:
    return dataclasses.replace(res, nll=nll)


def format_report(
    results: Mapping[str, EvaluationResult], neurons: Sequence[Mapping[str, Any]] = ()
) -> str:
    """A short text report: ELEKTRONN2's header line and values, then one readable line per split.

    With neuron records (``--instances``) the header ends with ELEKTRONN2's ``ri0 .. ri3, rim``
    (the best seeded segmentation's Rand index per validation cube and their mean) and one line
    per cube follows.
    """
    cols, vals = [], []
    for tag, split in (("T", "train"), ("V", "valid")):
        r = results.get(split)
        acc = r.at(r.chosen.threshold).accuracy if r is not None and r.chosen else math.nan
        cols += [f"{tag}_nll", f"{tag}_acc", f"{tag}_ROCA"]
        vals += [r.nll if r else math.nan, acc, r.roc_auc if r else math.nan]
    cols += ["d_acc", "d_ROCA"]
    vals += [vals[1] - vals[4], vals[2] - vals[5]]
    if neurons:
        from trainer.evaluation.neurons import report_columns

        ri_cols, ri_vals = report_columns(list(neurons))
        cols, vals = cols + ri_cols, vals + ri_vals
    lines = [", ".join(cols), ",\t".join(f"{v:.6g}" for v in vals), ""]
    for split, r in results.items():
        ch = r.chosen
        at = r.at(ch.threshold) if ch else None
        lines.append(
            f"{split}: nll={r.nll:.4f} accuracy={at.accuracy if at else math.nan:.4f} "
            f"roc_auc={r.roc_auc:.4f} ap={r.average_precision:.4f} "
            f"threshold={ch.threshold if ch else math.nan:.4f} ({ch.method if ch else '-'}) "
            f"f1={at.f1 if at else math.nan:.4f} positives={r.n_pos} negatives={r.n_neg} "
            f"ignored={r.n_ignored} mode={r.mode}"
        )
    for i, n in enumerate(neurons):
        lines.append(
            f"valid cube {i} neurons: best VOI at threshold {n['best_voi_threshold']:.2f}, best "
            f"adapted Rand at {n['best_are_threshold']:.2f}; seeded segmentation thresh="
            f"{n['seg_thresh']} grow_it={tuple(int(g) for g in n['seg_grow_it'])} "
            f"hi={n['seg_hi_thresh']} lo={n['seg_lo_thresh']}: rand_index="
            f"{n['seg_rand_index']:.4f} adapted_rand_error={n['seg_adapted_rand_error']:.4f} "
            f"voi_split={n['seg_voi_split']:.4f} voi_merge={n['seg_voi_merge']:.4f}"
        )
    return "\n".join(lines) + "\n"
