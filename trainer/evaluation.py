"""ELEKTRONN2's binary evaluation API, its figures and the evaluation result file.

The maths lives in ``trainer.metrics`` (pure, one pass over the data); this module keeps the
reference functions and their return shapes as thin wrappers, writes Plotly HTML figures, and
reads/writes ``eval/<name>.h5`` (the file the dashboard's evaluation pages load). See
docs/evaluation.md for the file format and the deviations from ELEKTRONN2.

Example:
    >>> perf, auc, thresh = evaluate(gt, probs, "eval/mynet_valid")  # doctest: +SKIP
    >>> results = read_result("runs/mynet/eval/mynet.h5")  # doctest: +SKIP
    >>> results["valid"].at(0.5).f1  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.metrics import (
    COARSE_ABOVE,
    COARSE_SIZE,
    DEFAULT_N_BINS,
    IGNORE_LABEL,
    NOTHING_POSITIVE,
    ErrorHistogram,
    EvaluationInputError,
    EvaluationResult,
    SingleClassWarning,
    ThresholdChoice,
    ThresholdMetrics,
    as_cube_pairs,
    check_labels,
    check_scores,
    counts_at,
    derived_metrics,
    evaluate_arrays,
    make_accumulator,
)
from trainer.runs import EVAL_DIR, atomic_write_bytes

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IGNORE_LABEL",
    "NOTHING_POSITIVE",
    "ErrorHistogram",
    "EvaluationInputError",
    "EvaluationResult",
    "ResultFileError",
    "SingleClassWarning",
    "ThresholdChoice",
    "ThresholdMetrics",
    "binary_nll",
    "confusion_table",
    "error_hist",
    "error_histogram_figure",
    "eval_thresh",
    "evaluate",
    "evaluate_arrays",
    "evaluate_model_binary",
    "find_nearest",
    "format_report",
    "performance_figure",
    "performance_measure",
    "read_result",
    "rescale_fudge",
    "result_path",
    "roc_area",
    "write_result",
]

FORMAT_NAME = "voxelboard-evaluation"
FORMAT_VERSION = 1
SPLITS = ("valid", "train")
#: ELEKTRONN2's threshold grid for ``evaluate``'s performance table
REFERENCE_GRID = np.linspace(0.0, 1.0, 64)
PERF_ROWS = ("tpr", "fpr", "precision", "recall", "balanced_accuracy", "accuracy", "f1")
_EPS = float(np.finfo(np.float64).eps)


class ResultFileError(ValueError):
    """An evaluation result file that is missing, corrupt, or of another format version.

    Attributes:
        path: the file.
        reason: ``'missing'``, ``'corrupt'``, ``'old-format'`` or ``'newer-format'``.
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"evaluation result {path}: {detail}")


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
) -> tuple[np.ndarray, float, float]:
    """Evaluate probabilities; write ``<save_name>.performance.html`` and the result file.

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

    Returns:
        ``(perf, roc_auc, thresh)``: ``perf`` is the 7 x len(grid) array with rows tpr, fpr,
        precision, recall, balanced accuracy, accuracy, f1; ``roc_auc`` is the area of the full
        ROC curve (NaN for a single class); ``thresh`` is the chosen grid threshold.
    """
    del n_proc
    res = evaluate_arrays(gt, preds, mode=mode, n_bins=n_bins)
    perf, res = _grid_choice(res, grid, thresh)
    save_name = str(save_name)
    _write_html(save_name + ".performance.html", performance_figure(res, perf=perf, grid=grid))
    path = Path(result_file) if result_file is not None else Path(save_name + ".h5")
    _update_split(path, split, lambda old: res.with_error_hist(old.error_hist if old else None))
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
    _write_html(save_name + ".error_histogram.html", error_histogram_figure(hist))
    path = Path(result_file) if result_file is not None else Path(save_name + ".h5")

    def put(old: EvaluationResult | None) -> EvaluationResult:
        base = old if old is not None else evaluate_arrays(gt, preds, mode="binned")
        return base.with_error_hist(hist)

    _update_split(path, split, put)
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


# ----------------------------------------------------------------------------------------------
# figures (pure: arrays in, go.Figure out)


def performance_figure(
    res: EvaluationResult, perf: np.ndarray | None = None, grid: Any = None, title: str = ""
) -> Any:
    """2 x 2 figure: F1 and accuracy against threshold, the PR curve and the ROC curve.

    Curves use at most ``COARSE_SIZE`` thresholds of ``res``; ``perf``/``grid`` (ELEKTRONN2's
    table) are drawn as markers when given. The chosen threshold is a vertical line.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    small = res.coarsen(COARSE_SIZE)
    keep = small.thresholds <= 1.0  # the NOTHING_POSITIVE end point has no place on a 0..1 axis
    t = small.thresholds[keep]
    d = derived_metrics(small.tp, small.fp, small.tn, small.fn, names=("f1", "accuracy"))
    fpr, tpr = small.roc()
    rec, prec = small.pr()
    chosen = res.chosen.threshold if res.chosen else math.nan
    at = res.at(chosen) if res.chosen else None
    f1_title = f"F1={at.f1:.2f} at {chosen:.4f}" if at else "F1"
    acc_title = f"Accuracy max={float(np.max(d['accuracy'])):.2f} at {chosen:.4f}"
    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=(
            f1_title,
            acc_title,
            f"Precision-Recall AP={res.average_precision:.4f}",
            f"ROC AUC={res.roc_auc:.4f}",
        ),
    )
    fig.add_trace(go.Scatter(x=t, y=d["f1"][keep], name="F1", mode="lines"), row=1, col=1)
    fig.add_trace(
        go.Scatter(x=t, y=d["accuracy"][keep], name="accuracy", mode="lines"), row=1, col=2
    )
    if perf is not None:
        g = REFERENCE_GRID if grid is None else np.asarray(grid)
        for col, row_name in ((1, "f1"), (2, "accuracy")):
            fig.add_trace(
                go.Scatter(
                    x=g,
                    y=perf[PERF_ROWS.index(row_name)],
                    mode="markers",
                    marker_size=4,
                    name=f"{row_name} (grid)",
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
    fig.add_trace(go.Scatter(x=rec, y=prec, name="PR", mode="lines", line_shape="vh"), row=2, col=1)
    fig.add_trace(go.Scatter(x=fpr, y=tpr, name="ROC", mode="lines"), row=2, col=2)
    if at is not None:
        for col in (1, 2):
            fig.add_vline(x=chosen, line_color="grey", row=1, col=col)
        fig.add_trace(
            go.Scatter(
                x=[at.recall], y=[at.precision], mode="markers", name="chosen", marker_size=9
            ),
            row=2,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=[at.fpr],
                y=[at.tpr],
                mode="markers",
                name="chosen",
                marker_size=9,
                showlegend=False,
            ),
            row=2,
            col=2,
        )
    fig.update_xaxes(title_text="threshold", range=[0, 1], row=1)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(title_text="recall", row=2, col=1)
    fig.update_yaxes(title_text="precision", row=2, col=1)
    fig.update_xaxes(title_text="FPR", row=2, col=2)
    fig.update_yaxes(title_text="TPR", row=2, col=2)
    fig.update_layout(title_text=title, width=1100, height=850, showlegend=False)
    return fig


def error_histogram_figure(hist: ErrorHistogram, title: str = "Error Histogram") -> Any:
    """Score histograms of all voxels, positives and negatives (log y) with the threshold line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for y, name, colour in (
        (hist.total, "total", "black"),
        (hist.pos, "pos GT label", "green"),
        (hist.neg, "neg GT label", "red"),
    ):
        fig.add_trace(
            go.Scatter(x=hist.centres, y=y, name=name, line_color=colour, line_shape="hvh")
        )
    fig.add_vline(x=hist.threshold, line_color="grey", annotation_text=f"{hist.threshold:.3f}")
    fig.update_yaxes(type="log", title_text="voxels")
    fig.update_xaxes(range=[0, 1], title_text="predicted probability of class 1")
    fig.update_layout(
        title_text=title, legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": 1.02}
    )
    return fig


def _write_html(path: str | os.PathLike, fig: Any) -> None:
    # self-contained (plotly.js inline) so the file opens on machines without internet
    atomic_write_bytes(path, fig.to_html(include_plotlyjs=True, full_html=True).encode())


# ----------------------------------------------------------------------------------------------
# the result file


def result_path(run_dir: str | os.PathLike, name: str) -> Path:
    """``<run_dir>/eval/<name>.h5``."""
    return Path(run_dir) / EVAL_DIR / f"{name}.h5"


def write_result(
    path: str | os.PathLike,
    result_by_split: Mapping[str, EvaluationResult],
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write one result file (HDF5) atomically: readers see the old or the new file.

    Args:
        path: the file, usually ``result_path(run_dir, name)``.
        result_by_split: e.g. ``{'valid': res, 'train': res}``.
        attrs: extra root attributes (snapshot, step, ...): str, numbers or None.
    """
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = time.time()
        for k, v in (attrs or {}).items():
            f.attrs[k] = "" if v is None else v
        for split, res in result_by_split.items():
            _write_split(f.create_group(split), res)
    atomic_write_bytes(path, buf.getvalue())


def _dataset(group: Any, name: str, data: np.ndarray) -> None:
    opts = {"compression": "lzf", "shuffle": True} if data.size > COARSE_ABOVE else {}
    group.create_dataset(name, data=data, **opts)


def _write_split(g: Any, res: EvaluationResult) -> None:
    import h5py

    chosen = res.chosen or ThresholdChoice(math.nan, "")
    g.attrs.update(
        {
            "mode": res.mode,
            "n_bins": res.n_bins,
            "n_pos": res.n_pos,
            "n_neg": res.n_neg,
            "n_ignored": res.n_ignored,
            "roc_auc": res.roc_auc,
            "average_precision": res.average_precision,
            "nll": res.nll,
            "chosen_threshold": chosen.threshold,
            "chosen_method": chosen.method,
            "chosen_value": chosen.value,
            "chosen_target": math.nan if chosen.target is None else chosen.target,
        }
    )
    for name in ("thresholds", "tp", "fp", "tn", "fn"):
        _dataset(g, name, getattr(res, name))
    fpr, tpr = res.roc()
    rec, prec = res.pr()
    for name, arr in (
        ("roc/fpr", fpr),
        ("roc/tpr", tpr),
        ("pr/recall", rec),
        ("pr/precision", prec),
    ):
        _dataset(g, name, arr)
    g["hist/edges"], g["hist/pos"], g["hist/neg"] = res.hist_edges, res.hist_pos, res.hist_neg
    coarse = g.create_group("coarse")
    small = res.coarsen(COARSE_SIZE) if res.thresholds.size > COARSE_ABOVE else None
    for name in ("thresholds", "tp", "fp", "tn", "fn"):
        if small is None:
            coarse[name] = h5py.SoftLink(f"{g.name}/{name}")
        else:
            coarse[name] = getattr(small, name)
    if res.error_hist is not None:
        eh = g.create_group("error_hist")
        eh.attrs["threshold"] = res.error_hist.threshold
        for name in ("edges", "total", "pos", "neg"):
            eh[name] = getattr(res.error_hist, name)


def read_result(
    path: str | os.PathLike, splits: Sequence[str] | None = None, coarse: bool = False
) -> dict[str, EvaluationResult]:
    """Load a result file written by ``write_result`` without recomputing anything.

    Args:
        path: the ``.h5`` file.
        splits: groups to load (default all present).
        coarse: load the at most ~``COARSE_SIZE`` thresholds meant for browsers instead of all.

    Returns:
        ``{split: EvaluationResult}``; ``roc_auc``/``average_precision`` are the stored values.

    Raises:
        ResultFileError: missing or unreadable file, another format or version, missing keys.
    """
    import h5py

    path = Path(path)
    hint = "re-run `python run.py evaluate RUN_DIR` to write it"
    if not path.is_file():
        raise ResultFileError(path, "missing", f"no such file; {hint}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ResultFileError(path, "corrupt", f"not a readable HDF5 file ({e}); {hint}") from e
    with f:
        fmt = f.attrs.get("format")
        version = f.attrs.get("format_version")
        if fmt != FORMAT_NAME or version is None:
            raise ResultFileError(
                path, "old-format", f"not a {FORMAT_NAME} file (no format attribute); {hint}"
            )
        if int(version) < FORMAT_VERSION:
            raise ResultFileError(
                path,
                "old-format",
                f"format version {int(version)} is older than {FORMAT_VERSION}; {hint}",
            )
        if int(version) > FORMAT_VERSION:
            raise ResultFileError(
                path,
                "newer-format",
                f"format version {int(version)} is newer than this VoxelBoard reads ({FORMAT_VERSION}); update VoxelBoard",
            )
        names = [s for s in f if isinstance(f[s], h5py.Group)] if splits is None else list(splits)
        out = {}
        for split in names:
            if split not in f:
                raise ResultFileError(
                    path, "corrupt", f"no split {split!r} (has: {', '.join(f) or 'none'}); {hint}"
                )
            try:
                out[split] = _read_split(f[split], coarse)
            except (KeyError, ValueError, OSError) as e:
                raise ResultFileError(
                    path, "corrupt", f"split {split!r} is incomplete or damaged ({e}); {hint}"
                ) from e
        return out


def _read_split(g: Any, coarse: bool) -> EvaluationResult:
    src = g["coarse"] if coarse else g
    arr = {name: src[name][()] for name in ("thresholds", "tp", "fp", "tn", "fn")}
    a = g.attrs
    method = str(a["chosen_method"])
    target = float(a["chosen_target"])
    chosen = (
        ThresholdChoice(
            float(a["chosen_threshold"]),
            method,
            float(a["chosen_value"]),
            None if math.isnan(target) else target,
        )
        if method
        else None
    )
    eh = None
    if "error_hist" in g:
        e = g["error_hist"]
        eh = ErrorHistogram(
            edges=e["edges"][()],
            total=e["total"][()],
            pos=e["pos"][()],
            neg=e["neg"][()],
            threshold=float(e.attrs["threshold"]),
        )
    res = EvaluationResult(
        mode=str(a["mode"]),
        n_bins=int(a["n_bins"]),
        n_pos=int(a["n_pos"]),
        n_neg=int(a["n_neg"]),
        n_ignored=int(a["n_ignored"]),
        hist_edges=g["hist/edges"][()],
        hist_pos=g["hist/pos"][()],
        hist_neg=g["hist/neg"][()],
        nll=float(a["nll"]),
        chosen=chosen,
        error_hist=eh,
        **arr,
    )
    sizes = {k: v.shape for k, v in arr.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"per-threshold arrays differ in length: {sizes}")
    res.__dict__["roc_auc"] = float(a["roc_auc"])
    res.__dict__["average_precision"] = float(a["average_precision"])
    return res


def _update_split(
    path: Path, split: str, make: Callable[[EvaluationResult | None], EvaluationResult]
) -> None:
    """Replace one split of a result file, keeping the others (an unreadable old file is replaced)."""
    existing: dict[str, EvaluationResult] = {}
    if path.exists():
        try:
            existing = read_result(path)
        except ResultFileError as e:
            warnings.warn(f"replacing unreadable result file: {e}", stacklevel=3)
    existing[split] = make(existing.get(split))
    write_result(path, existing)


# ----------------------------------------------------------------------------------------------
# model evaluation


def _centre_crop(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    lo = [(n - m) // 2 for n, m in zip(a.shape, shape)]
    return a[tuple(slice(i, i + m) for i, m in zip(lo, shape))]


def _cube_scores(
    model: Any, raw: Any, label: Any, channel: int, device: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Dense class-1 probabilities and labels of one cube, centre-cropped to a common shape."""
    from trainer.inference import predict_dense

    label = np.asarray(label)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 3:
        raise EvaluationInputError(
            f"labels must have shape (z, y, x) or (1, z, y, x), got {label.shape}"
        )
    prob = np.asarray(predict_dense(model, np.asarray(raw), device=device))[channel]
    shape = tuple(min(a, b) for a, b in zip(prob.shape, label.shape))
    return _centre_crop(label, shape), _centre_crop(prob, shape)


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

    Returns:
        ``{'train': ..., 'valid': ...}`` (train only if training cubes exist).

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
    out_dir = Path(run_dir) / EVAL_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, EvaluationResult] = {}
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
            gt, prob = _cube_scores(model, raw, lab, channel, device)
            acc.add(gt, prob)
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
        save = out_dir / f"{name}_{split}"
        hist = ErrorHistogram(
            edges=res.hist_edges,
            total=res.hist_pos + res.hist_neg,
            pos=res.hist_pos,
            neg=res.hist_neg,
            threshold=res.chosen.threshold,  # type: ignore[union-attr]
        )
        res = res.with_error_hist(hist)
        _write_html(
            f"{save}.performance.html", performance_figure(res, perf=perf, title=f"{name} {split}")
        )
        _write_html(f"{save}.error_histogram.html", error_histogram_figure(hist))
        results[split] = res
    write_result(out_dir / f"{name}.h5", results, {"name": name, **(attrs or {})})
    atomic_write_bytes(out_dir / f"{name}-REPORT.txt", format_report(results).encode())
    return results


def _with_nll(res: EvaluationResult, nll: float) -> EvaluationResult:
    return dataclasses.replace(res, nll=nll)


def format_report(results: Mapping[str, EvaluationResult]) -> str:
    """A short text report: ELEKTRONN2's header line and values, then one readable line per split."""
    cols, vals = [], []
    for tag, split in (("T", "train"), ("V", "valid")):
        r = results.get(split)
        acc = r.at(r.chosen.threshold).accuracy if r is not None and r.chosen else math.nan
        cols += [f"{tag}_nll", f"{tag}_acc", f"{tag}_ROCA"]
        vals += [r.nll if r else math.nan, acc, r.roc_auc if r else math.nan]
    cols += ["d_acc", "d_ROCA"]
    vals += [vals[1] - vals[4], vals[2] - vals[5]]
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
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class LoadedRun:
    """A run's model with a snapshot's weights, and its data source, ready to predict."""

    config: Any
    model: Any
    data: Any
    snapshot: Path
    state: dict
    device: Any


def default_snapshot(run_dir: str | os.PathLike) -> Path | None:
    """The snapshot evaluated when none is named: FINAL, else the newest one, else ``None``."""
    from trainer import runs

    final = runs.snapshot_path(run_dir, "FINAL")
    return final if final.is_file() else runs.latest_snapshot(run_dir)


def load_run(
    run_dir: str | os.PathLike,
    snapshot: str | os.PathLike | None = None,
    device: str | None = None,
) -> LoadedRun:
    """Build a run's model from its config copy, load a snapshot and its data source.

    Only reads the run directory, so it is safe while the run is still training.

    Args:
        run_dir: the run directory.
        snapshot: snapshot file; default ``snapshots/FINAL.pt``, else the newest snapshot.
        device: ``'auto'``, ``'cpu'``, ``'cuda:N'``; the model is moved there in eval mode.

    Raises:
        FileNotFoundError: no config copy or no snapshot (the message names the run).
        trainer.trainer.SnapshotError: the snapshot is corrupt or truncated (names the file).
    """
    from trainer import runs
    from trainer.config import ExperimentConfig
    from trainer.devices import resolve_device
    from trainer.trainer import _call_create_model, _resolve_data_class, load_snapshot

    run_dir = Path(run_dir)
    copy = runs.config_copy(run_dir)
    if copy is None:
        raise FileNotFoundError(
            f"{run_dir}: no config copy (0-<config>.py); give the folder of a VoxelBoard run"
        )
    if snapshot is None:
        snapshot = default_snapshot(run_dir)
        if snapshot is None:
            raise FileNotFoundError(f"{run_dir}: no snapshot in {run_dir / runs.SNAPSHOT_DIR} yet")
    snapshot = Path(snapshot)
    if not snapshot.exists():
        raise FileNotFoundError(f"snapshot {snapshot} does not exist")
    cfg = ExperimentConfig(str(copy), use_existing_dir=True)
    dev = resolve_device(device or "auto")
    model = _call_create_model(cfg)
    state = load_snapshot(snapshot, "cpu")
    model.load_state_dict(state["model"] if "model" in state else state)
    model.to(dev).eval()
    data = _resolve_data_class(cfg.data_class)(model, None, **(cfg.data_init_kwargs or {}))
    return LoadedRun(cfg, model, data, snapshot, state, dev)


def evaluate_run(
    run_dir: str | os.PathLike,
    snapshot: str | os.PathLike | None = None,
    split: str = "valid",
    mode: str = "binned",
    device: str | None = None,
    name: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, EvaluationResult]:
    """Evaluate a run's snapshot on its config's cubes: ``python run.py evaluate RUN_DIR``.

    Reads the run's config copy and a snapshot (FINAL, else the newest; see ``load_run``),
    predicts densely and writes ``eval/<name>.h5`` plus figures and a report. Only reads the
    snapshot, so it is safe on a run that is still training.

    Args:
        run_dir: the run directory.
        snapshot: snapshot file; default ``snapshots/FINAL.pt``, else the newest snapshot.
        split: ``'valid'``, ``'train'`` or ``'both'``.
        mode: ``'exact'`` or ``'binned'`` counting.
        device: ``'auto'``, ``'cpu'``, ``'cuda:N'``.
        name: result name; default the snapshot's file stem (``FINAL``, ``LAST``, ``step-...``).
        progress: called as ``progress(split, cubes_done, cubes_total)``; default logs a line.
    """
    import logging

    log = logging.getLogger("voxelboard")
    if split not in ("valid", "train", "both"):
        raise ValueError(f"split {split!r}: expected 'valid', 'train' or 'both'")
    run = load_run(run_dir, snapshot, device)
    splits = ("train", "valid") if split == "both" else (split,)
    name = name or run.snapshot.stem

    def log_progress(s: str, done: int, total: int) -> None:
        log.info("evaluate %s: %s cube %d/%d", name, s, done, total)

    results = evaluate_model_binary(
        run.model, name, data=run.data, run_dir=run_dir, mode=mode, device=run.device,
        splits=splits, attrs={"snapshot": str(run.snapshot), "step": int(run.state.get("step", -1))},
        progress=progress or log_progress,
    )  # fmt: skip
    report = Path(run_dir) / EVAL_DIR / f"{name}-REPORT.txt"
    print(report.read_text())
    return results
