"""What the evaluation page shows: result files as browser JSON, the metrics table, the record.

The evaluation page (``app/pages/evaluation.py``) renders the result files written by
``trainer.evaluation`` (``<run_dir>/eval/<name>.h5``, format in docs/evaluation.md). This module
holds the page's view model, without Dash and without torch (file names, formats and readers of
the result files are ``trainer.runs``'s; the figures are ``app.evaluation_figures``'s):

* ``load_view``: one split of a result file: the ``coarse/`` cumulative counts (all of them up
  to 10^5 thresholds, else ~10^4; exact counts), areas, the threshold the evaluation chose, the
  preset thresholds and the class score histograms. ``browser_view`` turns it into what the
  browser keeps in a ``dcc.Store``: the threshold and count arrays as base64 typed arrays
  (``pack_array``), a third of the JSON text and nothing for the server to walk number by
  number. The browser computes every metric at a slider value from these counts
  (``assets/evaluation.js`` mirrors ``trainer.metrics.derived_metrics``), so moving the
  threshold costs no round trip.
* The metrics table (rows, cell text, CSV) and the ``threshold.json`` record.
* Client-sent result names checked (``result_file``, ``prob_cache_path``, via ``app.paths``).
  The segmentation view reads the probability cache the evaluation wrote with the result;
  nothing here predicts.
"""

from __future__ import annotations

import base64
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app import evaluation_figures as ef
from app import paths
from trainer import runs
from trainer.metrics import (
    NOTHING_POSITIVE,
    EvaluationResult,
    ThresholdMetrics,
)
from trainer.runs import ResultFileError, read_result

#: presets computed on the server; ``precision_at`` needs the typed target and runs in the browser
PRESETS = ("max_f1", "max_accuracy", "max_youden", "eer")
PRESET_LABELS = {
    "max_f1": "max F1",
    "max_accuracy": "max accuracy",
    "max_youden": "max Youden's J",
    "eer": "equal error rate",
    "precision_at": "precision ≥ target",
    "chosen": "evaluation's choice",
}

#: rows of the metrics table: (key, label); counts first. The same keys and order are used by
#: assets/evaluation.js, the CSV download and threshold.json.
METRIC_ROWS: tuple[tuple[str, str], ...] = (
    ("tp", "TP"),
    ("fp", "FP"),
    ("tn", "TN"),
    ("fn", "FN"),
    ("tpr", "TPR (recall, sensitivity)"),
    ("fpr", "FPR"),
    ("tnr", "TNR (specificity)"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("fbeta", "F-beta"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("mcc", "MCC"),
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("youden_j", "Youden's J"),
    ("predicted_positive_rate", "predicted positive rate"),
)
COUNT_KEYS = ("tp", "fp", "tn", "fn")


class ResultViewError(ValueError):
    """A result file or split the page cannot show; the message says why and what to do."""


class UnreadableResultError(ResultViewError):
    """A result file that cannot be read at all (missing, damaged, another format version):
    none of its splits can be shown, and only evaluating again helps."""


# ----------------------------------------------------------------------------------------------
# result files


def result_file(run_dir: str | os.PathLike, name: Any) -> Path:
    """``<run_dir>/eval/<name>.h5`` for a result name a client sent (see ``app.paths``).

    Raises:
        ResultViewError: for a name that could leave the ``eval`` folder.
    """
    try:
        return paths.run_file(run_dir, runs.EVAL_DIR, "result", name, runs.RESULT_SUFFIX)
    except paths.ClientPathError as e:
        raise ResultViewError(str(e)) from None


def read_split(path: str | os.PathLike, split: str) -> EvaluationResult:
    """The browser's (coarse) copy of one split of a result file.

    Raises:
        UnreadableResultError: missing, corrupt or old-format file.
        ResultViewError: no such split. Either message names the file and says what to do
            (never a traceback for the browser).
    """
    try:
        results = read_result(path, coarse=True)
    except ResultFileError as e:
        raise UnreadableResultError(_file_message(e)) from None
    except Exception as e:  # anything else an unreadable file can raise: still a message
        raise UnreadableResultError(
            f"cannot read evaluation result {path}: {type(e).__name__}: {e}; re-run the evaluation"
        ) from None
    if split not in results:
        have = ", ".join(results) or "none"
        raise ResultViewError(
            f"evaluation result {path} has no {split!r} split (it has: {have}); pick another "
            "split or evaluate it with `python run.py evaluate RUN_DIR --split both`"
        )
    return results[split]


def _file_message(e: ResultFileError) -> str:
    lead = {
        "missing": "No result file",
        "corrupt": "The result file is damaged or incomplete",
        "old-format": "The result file is from an older VoxelBoard",
        "newer-format": "The result file is from a newer VoxelBoard",
    }.get(e.reason, "Cannot read the result file")
    return f"{lead}: {e}"


def single_class_message(res: EvaluationResult, path: Any, split: str) -> str | None:
    """A message if only one class was counted (ROC undefined), else ``None``."""
    if not res.single_class:
        return None
    only = "negatives" if res.n_pos == 0 else "positives"
    return (
        f"The {split} split of {path} holds only {only} ({res.n_pos:,} positive, "
        f"{res.n_neg:,} negative voxels): ROC and PR curves and threshold metrics are undefined "
        "for a single class. Evaluate on cubes whose labels contain both classes."
    )


def presets(res: EvaluationResult) -> dict[str, float]:
    """Thresholds of the presets that need no input (``PRESETS``); ``chosen`` if recorded."""
    out = {m: res.choose(m).threshold for m in PRESETS}
    if res.chosen is not None and math.isfinite(res.chosen.threshold):
        out["chosen"] = float(res.chosen.threshold)
    return out


def load_view(run_dir: str | os.PathLike, name: str, split: str) -> dict[str, Any]:
    """One split of result ``name`` of a run: what the page's figures and store are made of.

    Keys: ``result``, ``split``, ``mode``, ``n_bins``, ``thresholds`` (float64 array), ``tp``,
    ``fp``, ``tn``, ``fn`` (int64 arrays: the coarse cumulative counts, ascending thresholds),
    ``n_pos``, ``n_neg``,
    ``n_ignored``, ``roc_auc``, ``average_precision``, ``nll``, ``chosen`` (threshold, method,
    value or ``None``), ``presets`` ({preset: threshold}), ``hist`` (edges, pos, neg),
    ``snapshot``, ``step``.

    Raises:
        UnreadableResultError: the file cannot be read (missing, corrupt, another format).
        ResultViewError: the split cannot be shown (no such split, a single class).
    """
    path = result_file(run_dir, name)
    res = read_split(path, split)
    msg = single_class_message(res, path, split)
    if msg:
        raise ResultViewError(msg)
    attrs = runs.read_result_attrs(path)
    chosen = res.chosen
    return {
        "result": name,
        "split": split,
        "mode": res.mode,
        "n_bins": int(res.n_bins),
        "thresholds": np.asarray(res.thresholds, np.float64),
        "tp": np.asarray(res.tp, np.int64),
        "fp": np.asarray(res.fp, np.int64),
        "tn": np.asarray(res.tn, np.int64),
        "fn": np.asarray(res.fn, np.int64),
        "n_pos": int(res.n_pos),
        "n_neg": int(res.n_neg),
        "n_ignored": int(res.n_ignored),
        "roc_auc": _finite(res.roc_auc),
        "average_precision": _finite(res.average_precision),
        "nll": _finite(res.nll),
        "chosen": None
        if chosen is None or not math.isfinite(chosen.threshold)
        else {
            "threshold": chosen.threshold,
            "method": chosen.method,
            "value": _finite(chosen.value),
        },
        "presets": presets(res),
        "hist": {
            "edges": res.hist_edges.tolist(),
            "pos": res.hist_pos.tolist(),
            "neg": res.hist_neg.tolist(),
        },
        "snapshot": str(attrs.get("snapshot", "")),
        "step": int(attrs["step"]) if isinstance(attrs.get("step"), int | np.integer) else None,
    }


#: unsigned integer codes of ``pack_array``, smallest first
_UNSIGNED = (("u1", np.uint8), ("u2", np.uint16), ("u4", np.uint32))
#: the largest count a float64 holds exactly
_EXACT_FLOAT = 2**53


#: at most this many trailing values that are no float32 (``NOTHING_POSITIVE`` after a
#: float32 probability map's scores) go as JSON numbers beside an ``f4`` array
_MAX_TAIL = 8


def pack_array(a: np.ndarray) -> dict[str, Any]:
    """``a`` as ``{'dtype', 'bdata'}``: base64 of its little-endian bytes in the smallest type
    that holds every value exactly: ``u1``/``u2``/``u4`` for counts (``f8`` past 2^32), ``f4``
    for scores that are float32 values, else ``f8`` (the typed-array form plotly.js reads
    too). Scores that are float32 values but for a few last ones (the thresholds of a float32
    map end with ``NOTHING_POSITIVE``) are ``f4`` with those in ``tail``, a list of floats
    (JSON keeps a float64 exactly). ``unpack_array`` and ``assets/evaluation.js`` turn it back
    into the same numbers.

    Raises:
        ValueError: integers that are negative or beyond 2^53 (no exact float64).
    """
    a = np.asarray(a)
    tail: list[float] = []
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() >= _EXACT_FLOAT):
            raise ValueError(f"counts must lie in [0, 2^53), got {a.min()}..{a.max()}")
        top = int(a.max()) if a.size else 0
        code, dtype = next(
            ((c, t) for c, t in _UNSIGNED if top <= np.iinfo(t).max), ("f8", np.float64)
        )
    else:
        a = a.astype(np.float64)
        inexact = np.flatnonzero(a.astype(np.float32).astype(np.float64) != a)
        if inexact.size and (inexact[0] < a.size - _MAX_TAIL or np.isnan(a).any()):
            code, dtype = "f8", np.float64
        else:
            code, dtype = "f4", np.float32
            if inexact.size:
                tail = a[inexact[0] :].tolist()
                a = a[: inexact[0]]
    raw = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    out: dict[str, Any] = {"dtype": code, "bdata": base64.b64encode(raw).decode("ascii")}
    if tail:
        out["tail"] = tail
    return out


def unpack_array(packed: Mapping[str, Any]) -> np.ndarray:
    """The array a ``pack_array`` dict holds (float64 for scores, int64 for counts)."""
    code = packed["dtype"]
    dtype = dict(_UNSIGNED).get(code) or {"f4": np.float32, "f8": np.float64}[code]
    a = np.frombuffer(base64.b64decode(packed["bdata"]), np.dtype(dtype).newbyteorder("<"))
    if code.startswith("u"):
        return a.astype(np.int64)
    return np.concatenate([a.astype(np.float64), np.asarray(packed.get("tail", []), np.float64)])


def browser_view(view: Mapping[str, Any]) -> dict[str, Any]:
    """The ``dcc.Store`` form of a ``load_view`` dict: ``thresholds``, ``tp`` and ``fp`` packed
    (``pack_array``); ``tn`` and ``fn`` are left out, the browser has them as ``n_neg - fp``
    and ``n_pos - tp``. The other keys as they are.

    Raises:
        UnreadableResultError: counts that do not add up to the class sizes (a damaged file).
    """
    tp, fp = np.asarray(view["tp"], np.int64), np.asarray(view["fp"], np.int64)
    if not (
        np.array_equal(np.asarray(view["fn"]), view["n_pos"] - tp)
        and np.array_equal(np.asarray(view["tn"]), view["n_neg"] - fp)
    ):
        raise UnreadableResultError(
            f"evaluation result {view.get('result')!r} ({view.get('split')}): its counts do not "
            f"add up to its {view['n_pos']:,} positive and {view['n_neg']:,} negative voxels; "
            "the file is damaged: re-run the evaluation"
        )
    out = {k: v for k, v in view.items() if k not in ("tn", "fn")}
    out.update(
        thresholds=pack_array(np.asarray(view["thresholds"], np.float64)),
        tp=pack_array(tp),
        fp=pack_array(fp),
    )
    return out


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def result_from_view(view: Mapping[str, Any]) -> EvaluationResult:
    """The ``EvaluationResult`` (coarse counts) a ``load_view`` dict describes (for tests)."""
    hist = view["hist"]
    return EvaluationResult(
        mode=view["mode"],
        thresholds=np.asarray(view["thresholds"], np.float64),
        tp=np.asarray(view["tp"], np.int64),
        fp=np.asarray(view["fp"], np.int64),
        tn=np.asarray(view["tn"], np.int64),
        fn=np.asarray(view["fn"], np.int64),
        n_pos=view["n_pos"],
        n_neg=view["n_neg"],
        n_ignored=view["n_ignored"],
        hist_edges=np.asarray(hist["edges"]),
        hist_pos=np.asarray(hist["pos"]),
        hist_neg=np.asarray(hist["neg"]),
        n_bins=view["n_bins"],
    )


# ----------------------------------------------------------------------------------------------
# metrics table


def metrics_at(res: EvaluationResult, threshold: float, beta: float = 1.0) -> ThresholdMetrics:
    """Counts and metrics at ``threshold`` (the stored threshold at or above it, as the slider)."""
    return res.at(float(threshold), beta=float(beta))


def metrics_rows(m: ThresholdMetrics) -> list[tuple[str, str, float | int]]:
    """``(key, label, value)`` per ``METRIC_ROWS`` row; the F-beta label names its beta."""
    out = []
    for key, label in METRIC_ROWS:
        if key == "fbeta":
            label = f"F-beta (beta={m.beta:g})"
        out.append((key, label, getattr(m, key)))
    return out


def format_value(key: str, value: float | int | None) -> str:
    """A table cell: counts with thousands separators, rates with 4 decimals (as the browser)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if key in COUNT_KEYS:
        return f"{int(value):,}"
    return f"{float(value):.4f}"


def metrics_csv(m: ThresholdMetrics, *, result: str = "", split: str = "") -> str:
    """The metrics table as CSV text: ``metric,value`` rows after the threshold and its source."""
    lines = ["metric,value", f"threshold,{m.threshold!r}", f"beta,{m.beta!r}"]
    if result:
        lines.append(f"result,{result}")
    if split:
        lines.append(f"split,{split}")
    for key, _label, value in metrics_rows(m):
        lines.append(f"{key},{int(value) if key in COUNT_KEYS else repr(float(value))}")
    return "\n".join(lines) + "\n"


def threshold_record(
    m: ThresholdMetrics, *, run: str, result: str, split: str, method: str = "manual"
) -> dict[str, Any]:
    """What ``eval/threshold.json`` holds: the threshold, where it came from, and its metrics."""
    metrics = {k: (int(v) if k in COUNT_KEYS else _finite(v)) for k, _l, v in metrics_rows(m)}
    return {
        "threshold": float(m.threshold),
        "method": method,
        "beta": float(m.beta),
        "run": run,
        "result": result,
        "split": split,
        "saved": time.time(),
        "metrics": metrics,
    }


def counts_at(view: Mapping[str, Any], threshold: float) -> dict[str, int]:
    """``tp``, ``fp``, ``tn``, ``fn`` of a ``load_view`` dict at ``threshold`` (as the slider)."""
    i = ef.threshold_index(np.asarray(view["thresholds"], np.float64), threshold)
    return {k: int(view[k][i]) for k in COUNT_KEYS}


def compare_curve(res: EvaluationResult, label: str) -> dict[str, Any]:
    """The ROC and PR points of another result for ``roc_figure``/``pr_figure``'s ``others``."""
    fpr, tpr = res.roc()
    rec, prec = res.pr()
    return {
        "label": label,
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "recall": rec.tolist(),
        "precision": prec.tolist(),
        "roc_auc": _finite(res.roc_auc),
        "average_precision": _finite(res.average_precision),
    }


def prob_cache_path(run_dir: str | os.PathLike, name: Any, split: str = "valid") -> Path:
    """``<run_dir>/eval/<name>_<split>_prob.h5`` for a result name a client sent.

    Raises:
        ResultViewError: for a name that could leave the ``eval`` folder or an unknown split.
    """
    if split not in runs.SPLITS:
        raise ResultViewError(f"split {split!r} is not one of {', '.join(runs.SPLITS)}")
    try:
        return paths.run_file(run_dir, runs.EVAL_DIR, "result", name, runs.prob_cache_suffix(split))
    except paths.ClientPathError as e:
        raise ResultViewError(str(e)) from None


__all__ = [
    "COUNT_KEYS",
    "METRIC_ROWS",
    "NOTHING_POSITIVE",
    "PRESETS",
    "ResultViewError",
    "browser_view",
    "compare_curve",
    "counts_at",
    "format_value",
    "load_view",
    "metrics_at",
    "metrics_csv",
    "metrics_rows",
    "pack_array",
    "read_split",
    "result_file",
    "result_from_view",
    "threshold_record",
    "unpack_array",
]
