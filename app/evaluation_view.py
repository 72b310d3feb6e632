"""What the evaluation page shows: result files as browser JSON, the metrics table, the record.

The evaluation page (``app/pages/evaluation.py``) renders the result files written by
``trainer.evaluation`` (``<run_dir>/eval/<name>.h5``, format in docs/evaluation.md). This module
holds the page's view model, without Dash and without torch (file names, formats and readers of
the result files are ``trainer.runs``'s; the figures are ``app.evaluation_figures``'s):

* ``load_view``: one split of a result file: its curve thinned to at most 4096 thresholds
  (exact counts there; the curve's corners and every preset's threshold kept exactly, see
  ``trainer.curves``), areas of the full curve, the threshold the evaluation chose, the preset
  thresholds and the class score histograms. ``browser_view`` turns it into what the
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
import plotly.graph_objects as go

from app import evaluation_figures as ef
from app import inputs, paths, series
from trainer import runs
from trainer.curves import TARGETLESS_PRESETS
from trainer.metrics import (
    NOTHING_POSITIVE,
    EvaluationResult,
    ThresholdMetrics,
)
from trainer.runs import ResultFileError, read_result

#: presets computed on the server, each kept exactly by the stored thinned curve;
#: ``precision_at`` needs the typed target and runs in the browser
PRESETS = TARGETLESS_PRESETS
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
    """The browser's copy of one split of a result file: its thinned curve.

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
    ``fp``, ``tn``, ``fn`` (int64 arrays: the thinned curve's cumulative counts, ascending
    thresholds),
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


# ----------------------------------------------------------------------------------------------
# the page: its results, first view, figures and comparison


def snapshot_options(run_dir: Path) -> list[dict[str, str]]:
    """The run's snapshots as dropdown options, newest first."""
    return [{"label": n, "value": n} for n in runs.snapshot_names(run_dir)]


def compare_options(root: Path) -> list[dict[str, str]]:
    """Every result split of every run under ``root`` as ``"<run>|<result>|<split>"`` options
    (``compare_curves`` reads them back)."""
    out = []
    for d in runs.iter_run_dirs(root):
        for result in runs.list_results(d):
            for split in runs.SPLITS:
                value = f"{d.name}|{result}|{split}"
                out.append({"label": f"{d.name} · {result} · {split}", "value": value})
    return out


def _stamp(path: Path) -> str | None:
    """``"<mtime_ns>:<size>"`` of a file, ``None`` if there is none (a string: a browser's JSON
    numbers would round nanoseconds)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_mtime_ns}:{st.st_size}"


def result_stamps(run_dir: Path) -> list[list]:
    """``[result, stamp of its file, stamp of its probability cache]`` of each result of a run,
    newest first: one listing and two stats per result, no file opened."""
    return [
        [
            result,
            _stamp(runs.result_path(run_dir, result)),
            _stamp(runs.prob_cache_path(run_dir, result)),
        ]
        for result in runs.list_results(run_dir)
    ]


def stamps_of(files: Any, result: Any) -> list | None:
    """The two stamps of ``result`` in an ``eval-files`` value, ``None`` if it is not there."""
    for row in files if isinstance(files, list) else []:
        if isinstance(row, list) and len(row) == 3 and row[0] == result:
            return row[1:]
    return None


def is_unreadable(run_dir: Path, result: Any) -> bool:
    """Whether result file ``result`` cannot be read at all (one read of its thinned curve)."""
    try:
        read_split(result_file(run_dir, result), "valid")
    except UnreadableResultError:
        return True
    except ResultViewError:  # a refused name or a missing split: readable, or not a file
        return False
    return False


def start_threshold(t: Any, view: dict) -> float:
    """``t`` if it is a threshold, else the result's own: the chosen one, else max accuracy."""
    t = inputs.number(t, lo=0.0, hi=1.0)
    if t is not None:
        return t
    chosen = view.get("chosen")
    return float(chosen["threshold"]) if chosen else float(view["presets"]["max_accuracy"])


def compare_curves(root: Path | None, selected: Any) -> list[dict]:
    """The ``compare_curve`` of each ``compare_options`` value in ``selected`` that can be
    drawn (values that are malformed, gone or of a single class are left out)."""
    out = []
    for value in inputs.strings(selected):
        if value.count("|") != 2:
            continue
        run, result, split = value.split("|")
        d = series.run_dir_for(root, run)
        if d is None or split not in runs.SPLITS:
            continue
        try:
            res = read_split(result_file(d, result), split)
        except ResultViewError:
            continue
        if not res.single_class:
            out.append(compare_curve(res, f"{run} · {result} · {split}"))
    return out


def build_figures(view: dict, threshold: float, others: list, log_y: bool) -> dict[str, go.Figure]:
    """Every figure of the page at ``threshold`` (the browser moves them afterwards)."""
    c = counts_at(view, threshold)
    return {
        "roc": ef.roc_figure(view, threshold, others),
        "pr": ef.pr_figure(view, threshold, others),
        "confusion": ef.confusion_figure(c["tp"], c["fp"], c["tn"], c["fn"], threshold),
        "curves": ef.metric_curves_figure(view, threshold),
        "hist": ef.error_hist_figure(view, threshold, log_y),
    }


def first_view(run_dir: Path, results: list[str]) -> dict[str, Any]:
    """What the page shows before any callback: the newest listed result's validation split
    (its store, its figures at the threshold the browser starts from, the summary), or the
    message saying why the result cannot be shown (``no_view``).
    The callbacks then only answer changes, so the page draws with its first response."""
    if not results:
        try:
            paths.confined(runs.eval_dir(run_dir))
        except paths.OutsideRunsError as e:  # listed as empty: say why
            return {"message": f"No results shown: {e}"}
        return {}
    result = results[0]
    try:
        view = load_view(run_dir, result, "valid")
        store = browser_view(view)
    except ResultViewError as e:  # unreadable, a single class: nothing to draw
        return {"result": result, "no_view": str(e)}
    t = start_threshold(None, view)  # where assets/evaluation.js starts: chosen, else max accuracy
    figures = build_figures(view, t, [], log_y=True)  # the "log y" box starts ticked
    return {
        "result": result,
        "store": store,
        "figures": figures,
        "summary": summary(view),
    }


def summary(view: dict) -> str:
    """One line about a ``load_view`` dict: counting mode, class sizes, snapshot step."""
    parts = [
        f"{view['mode']} counts",
        f"{view['n_pos']:,} positive / {view['n_neg']:,} negative voxels",
    ]
    if view.get("n_ignored"):
        parts.append(f"{view['n_ignored']:,} ignored")
    if view.get("step") is not None and view["step"] >= 0:
        parts.append(f"snapshot step {view['step']:,}")
    return " · ".join(parts)


def current_metrics(
    run_dir: Path | None, result: Any, split: Any, t: Any, beta: Any
) -> ThresholdMetrics | None:
    """The metrics at the browser's threshold ``t`` from the same thinned counts as the
    browser's, ``None`` without a run, result or threshold.

    Raises:
        ResultViewError: the result or split cannot be read.
    """
    t = inputs.number(t, lo=0.0, hi=1.0)
    if run_dir is None or not result or t is None:
        return None
    res = read_split(result_file(run_dir, result), split_of(split))
    # beta weighs recall against precision; beyond these bounds F-beta is recall or precision
    b = inputs.number(beta, lo=1e-3, hi=1e3)
    return metrics_at(res, t, 1.0 if b is None or b <= 0 else b)


def split_of(split: Any) -> str:
    """A split a client sent, ``"valid"`` for anything but a known split."""
    return inputs.choice(split, runs.SPLITS, "valid")


def list_results(run_dir: Path) -> list[str]:
    """The names of the run's result files, newest first."""
    return runs.list_results(run_dir)


def save_threshold(run_dir: Path, record: dict[str, Any]) -> str:
    """Write ``record`` (``threshold_record``) as the run's ``threshold.json``; the sentence
    the page shows, saying where it went or why it could not be written."""
    try:
        path = runs.write_threshold(run_dir, record)
    except OSError as e:
        return f"cannot write {runs.threshold_path(run_dir)}: {e.strerror or e}; check that folder"
    return f"saved threshold {record['threshold']:.4f} to {path.relative_to(run_dir.parent)}"


def snapshot_file(run_dir: Path, snapshot: Any) -> Path:
    """The snapshot file a client named (``snapshots/<name>.pt``).

    Raises:
        ResultViewError: a refused name, or no such snapshot in the run.
    """
    try:
        snap = paths.run_file(
            run_dir, runs.SNAPSHOT_DIR, "snapshot", snapshot, runs.SNAPSHOT_SUFFIX
        )
    except paths.ClientPathError as e:
        raise ResultViewError(str(e)) from None
    if not snap.is_file():
        raise ResultViewError(f"snapshot {snapshot!r} not found in {run_dir.name}")
    return snap


__all__ = [
    "COUNT_KEYS",
    "METRIC_ROWS",
    "NOTHING_POSITIVE",
    "PRESETS",
    "ResultViewError",
    "UnreadableResultError",
    "browser_view",
    "build_figures",
    "compare_curve",
    "compare_curves",
    "compare_options",
    "counts_at",
    "current_metrics",
    "first_view",
    "format_value",
    "is_unreadable",
    "list_results",
    "load_view",
    "metrics_at",
    "metrics_csv",
    "metrics_rows",
    "pack_array",
    "read_split",
    "result_file",
    "result_stamps",
    "save_threshold",
    "snapshot_file",
    "snapshot_options",
    "split_of",
    "stamps_of",
    "start_threshold",
    "summary",
    "threshold_record",
    "unpack_array",
]
