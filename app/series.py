"""Curves for the run page: full loads and incremental polls of the history store.

The run page draws two tables of a run's history store (``trainer.runs.history_store``):
``timeline`` (one row per training step) and ``history`` (one row per monitoring step).
A page load reads a whole table once, downsamples each curve to about ``max_points``
points with ``trainer.smoothing.minmax_downsample`` (spikes survive) and hands the
browser a **cursor**: a small JSON dict kept in a ``dcc.Store`` that says how far this
browser has read. Each live poll then reads only the rows after the cursor, which costs
time proportional to the new rows, not to the table.

Cursor (JSON, one per table)::

    {"generation": 3,     # table generation (changes when a resumed run truncates it)
     "rows": 1000000,     # rows read so far
     "shown": 2004,       # points of the longest curve now in the browser
     "key": "step|ema|0.6|50",  # x axis and smoothing the curves were built with
     "ema": [0.41, 999998]}     # timeline only: EMA accumulator and count of finite values

Bounded curves: new rows are appended raw (a poll that brings more than
``max_points // 4`` rows downsamples them first). Once a curve in the browser would hold
more than ``2 * max_points`` points, the poll answers "reload" and the caller rebuilds
the figure from a full read, downsampled to ``max_points`` again. At one new row per
poll that full read happens once every ``max_points`` polls; all other polls stay
proportional to the new rows. A generation change (the table was truncated by a resume)
or fewer rows than the cursor has read also answer "reload".

Smoothing of appended rows: the debiased EMA continues from the accumulator in the cursor
(so appending stays O(new rows) and equals ``ema_debiased`` over the whole series); the
moving average rereads the ``window - 1`` rows before the new ones. Both are pure.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app import paths
from app.figures import class_columns
from trainer.runs import history_dir
from trainer.smoothing import ema_debiased, minmax_downsample, sma

DEFAULT_MAX_POINTS = 2000

#: history columns drawn on the run page, in the order the figures use them
HISTORY_COLUMNS = ("train_loss", "valid_loss", "train_err", "valid_err", "lr", "mom", "loss_gain")
#: history columns only some runs write (``valid_are``: ``history_are_threshold`` is set)
OPTIONAL_HISTORY_COLUMNS = ("valid_are",)

SMOOTHING_MODES = ("ema", "sma", "none")
X_AXES = ("step", "time")


def _app_setting(name: str) -> Any:
    """A setting of the ``AppContext`` serving this request (or of the last app created)."""
    import flask

    if flask.has_app_context():
        config = flask.current_app.config
    else:
        import dash

        try:
            config = dash.get_app().server.config
        except Exception:  # no app created yet
            return None
    return getattr(config.get("VOXELBOARD"), name, None)


def app_runs_dir() -> Path | None:
    """The runs directory of the app serving this request (or of the last app created).

    For page layouts and callbacks. ``None`` when no app is configured.
    """
    value = _app_setting("runs_dir")
    return Path(value) if value else None


def run_dir_for(runs_dir: str | Path | None, name: Any) -> Path | None:
    """The run directory ``runs_dir/name``, or ``None`` if ``name`` is not a run there.

    For every name that comes from a URL or a browser: ``app.paths.run_dir`` decides
    (one plain name directly under ``runs_dir``, no symlink leading out of it unless the
    app was started with ``--follow-links``).
    """
    if runs_dir is None:
        return None
    try:
        return paths.run_dir(runs_dir, name, follow_links=bool(_app_setting("follow_links")))
    except paths.ClientPathError:
        return None


@dataclasses.dataclass(frozen=True)
class Smoothing:
    """How the timeline loss is smoothed.

    Attributes:
        mode: ``'ema'`` (TensorBoard's debiased EMA), ``'sma'`` (moving average) or ``'none'``.
        weight: EMA weight in ``[0, 1)``.
        window: moving-average window in rows (``>= 1``).
    """

    mode: str = "ema"
    weight: float = 0.6
    window: int = 50

    def __post_init__(self) -> None:
        if self.mode not in SMOOTHING_MODES:
            raise ValueError(f"smoothing mode {self.mode!r}: expected one of {SMOOTHING_MODES}")
        if not 0.0 <= self.weight < 1.0:
            raise ValueError(f"EMA weight {self.weight!r}: expected a number in [0, 1)")
        if int(self.window) < 1:
            raise ValueError(f"moving-average window {self.window!r}: expected an integer >= 1")

    @property
    def label(self) -> str:
        """Legend label of the smoothed line."""
        if self.mode == "ema":
            return f"EMA {self.weight:g}"
        if self.mode == "sma":
            return f"moving average {int(self.window)}"
        return "smoothed (off)"


def curve_key(x_axis: str, smoothing: Smoothing | None = None) -> str:
    """The settings a cursor was built with; a poll with other settings must reload."""
    if x_axis not in X_AXES:
        raise ValueError(f"x axis {x_axis!r}: expected one of {X_AXES}")
    s = smoothing or Smoothing(mode="none")
    return f"{x_axis}|{s.mode}|{s.weight:g}|{int(s.window)}"


def downsample_indices(y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most about ``max_points`` points of ``y`` keeping every bucket's extremes.

    The first and the last point are always kept. Short curves are returned whole.
    """
    n = len(y)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    return minmax_downsample(None, y, max(1, max_points // 2))


def continue_ema(
    values: np.ndarray, state: tuple[float, int] | list | None, weight: float
) -> tuple[np.ndarray, tuple[float, int]]:
    """Debiased EMA of ``values`` continuing a series whose accumulator is ``state``.

    ``state`` is ``(last, count)``: the raw (biased) accumulator after the earlier values
    and how many finite values went into it; ``None`` starts a new series. Feeding a series
    in chunks gives the same values as ``ema_debiased`` over the whole series.

    Returns:
        ``(smoothed, new_state)``; non-finite inputs pass through unchanged.
    """
    v = np.asarray(values, dtype=np.float64)
    last0, n0 = (float(state[0]), int(state[1])) if state else (0.0, 0)
    w = float(weight)
    out = ema_debiased(v, w)
    finite = np.isfinite(v)
    k = int(finite.sum())
    if k == 0:
        return out, (last0, n0)
    j = np.arange(1, k + 1, dtype=np.float64)
    decay = np.power(w, j)
    # ema_debiased of the chunk alone started from 0; undo its debiasing, add the carried
    # accumulator's decayed share, and debias with the global count
    last = out[finite] * (1.0 - decay) + decay * last0
    out[finite] = last / (1.0 - np.power(w, n0 + j))
    return out, (float(last[-1]), n0 + k)


def _ema_state(values: np.ndarray, smoothed: np.ndarray, weight: float) -> tuple[float, int]:
    finite = np.isfinite(values)
    k = int(finite.sum())
    if k == 0:
        return (0.0, 0)
    last_smoothed = float(smoothed[np.flatnonzero(finite)[-1]])
    return (last_smoothed * (1.0 - weight**k), k)


def _table_api():
    from trainer.runs.history_store import read_table, table_info

    return table_info, read_table


@dataclasses.dataclass
class NewRows:
    """Rows a poll read: ``frame`` holds rows ``[start, start + len(frame))`` of the table
    (``start`` may lie before the cursor by the context rows asked for).

    Attributes:
        frame: the rows read.
        start: table row index of ``frame``'s first row.
        first_new: position in ``frame`` of the first row the cursor had not seen.
        n_rows: rows in the table now (``start + len(frame)``).
        generation: table generation, ``None`` if the table does not exist yet.
        reload: the cursor no longer fits the table; read it whole again.
    """

    frame: pd.DataFrame
    start: int
    first_new: int
    n_rows: int
    generation: int | None
    reload: bool = False


def read_new_rows(
    store_dir: str | Path, table: str, cursor: dict | None, *, context: int = 0
) -> NewRows:
    """Read the rows of ``table`` after ``cursor['rows']`` (plus ``context`` rows before).

    Cost is proportional to the rows read. ``reload`` is set when there is no cursor, the
    table's generation changed, or it holds fewer rows than the cursor has seen.
    """
    table_info, read_table = _table_api()
    info = table_info(store_dir, table)
    empty = pd.DataFrame()
    if info is None:
        seen = bool(cursor and cursor.get("rows"))
        return NewRows(empty, 0, 0, 0, None, reload=cursor is None or seen)
    if (
        cursor is None
        or cursor.get("generation") != info.generation
        or info.n_rows < int(cursor.get("rows", 0))
    ):
        return NewRows(empty, 0, 0, info.n_rows, info.generation, reload=True)
    seen = int(cursor["rows"])
    if info.n_rows == seen:
        return NewRows(empty, seen, 0, seen, info.generation)
    start = max(0, seen - max(0, context))
    frame = read_table(store_dir, table, start=start, stop=info.n_rows)
    n_rows = start + len(frame)
    if n_rows < seen:  # the table shrank between table_info and read_table
        return NewRows(empty, 0, 0, n_rows, info.generation, reload=True)
    return NewRows(frame, start, seen - start, n_rows, info.generation)


def _x_values(frame: pd.DataFrame, start: int, x_axis: str, step_column: str | None) -> np.ndarray:
    if x_axis == "time" and "time" in frame:
        return frame["time"].to_numpy(dtype=np.float64)
    if step_column and step_column in frame:
        return frame[step_column].to_numpy()
    return np.arange(start, start + len(frame), dtype=np.int64)


# ------------------------------------------------------------------------------ timeline


@dataclasses.dataclass
class TimelineCurves:
    """Points of the timeline figure (full load) or points to append (poll).

    Attributes:
        x, loss, smoothed: the points (``smoothed`` is ``None`` when smoothing is off).
        n_total: rows in the table.
        n_shown: points of the raw curve in the browser after this load or append.
        cursor: the new cursor to keep in the browser.
    """

    x: np.ndarray
    loss: np.ndarray
    smoothed: np.ndarray | None
    n_total: int
    n_shown: int
    cursor: dict


def _smooth_full(loss: np.ndarray, smoothing: Smoothing) -> tuple[np.ndarray | None, Any]:
    if smoothing.mode == "ema":
        sm = ema_debiased(loss, smoothing.weight)
        return sm, list(_ema_state(loss, sm, smoothing.weight))
    if smoothing.mode == "sma":
        return sma(loss, int(smoothing.window)), None
    return None, None


def load_timeline(
    store_dir: str | Path,
    *,
    x_axis: str = "step",
    smoothing: Smoothing | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> TimelineCurves:
    """Read the whole timeline table, smooth it and downsample it for a new figure."""
    smoothing = smoothing or Smoothing()
    key = curve_key(x_axis, smoothing)
    table_info, read_table = _table_api()
    info = table_info(store_dir, "timeline")
    frame = read_table(store_dir, "timeline") if info is not None else pd.DataFrame()
    loss = frame["loss"].to_numpy(dtype=np.float64) if "loss" in frame else np.empty(0)
    x = _x_values(frame, 0, x_axis, None)
    smoothed, ema = _smooth_full(loss, smoothing)
    idx = downsample_indices(loss, max_points)
    cursor = {
        "generation": info.generation if info is not None else None,
        "rows": len(frame),
        "shown": len(idx),
        "key": key,
        "ema": ema,
    }
    return TimelineCurves(
        x=x[idx],
        loss=loss[idx],
        smoothed=smoothed[idx] if smoothed is not None else None,
        n_total=len(frame),
        n_shown=len(idx),
        cursor=cursor,
    )


def poll_timeline(
    store_dir: str | Path,
    cursor: dict | None,
    *,
    x_axis: str = "step",
    smoothing: Smoothing | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> TimelineCurves | None:
    """The timeline points added since ``cursor``; ``None`` means "reload the figure".

    Reads only the new rows (and ``window - 1`` earlier ones for a moving average).
    """
    smoothing = smoothing or Smoothing()
    if not cursor or cursor.get("key") != curve_key(x_axis, smoothing):
        return None
    context = int(smoothing.window) - 1 if smoothing.mode == "sma" else 0
    new = read_new_rows(store_dir, "timeline", cursor, context=context)
    if new.reload:
        return None
    fresh = new.frame.iloc[new.first_new :]
    loss = fresh["loss"].to_numpy(dtype=np.float64) if "loss" in fresh else np.empty(0)
    x = _x_values(fresh, new.start + new.first_new, x_axis, None)
    ema = cursor.get("ema")
    if smoothing.mode == "ema":
        smoothed, state = continue_ema(loss, ema, smoothing.weight)
        ema = list(state)
    elif smoothing.mode == "sma" and len(loss):
        smoothed = sma(new.frame["loss"].to_numpy(dtype=np.float64), int(smoothing.window))
        smoothed = smoothed[new.first_new :]
    elif smoothing.mode == "sma":
        smoothed = np.empty(0)
    else:
        smoothed = None
    idx = downsample_indices(loss, max(2, max_points // 4))
    shown = int(cursor.get("shown", 0)) + len(idx)
    if shown > 2 * max_points:
        return None
    return TimelineCurves(
        x=x[idx],
        loss=loss[idx],
        smoothed=smoothed[idx] if smoothed is not None else None,
        n_total=new.n_rows,
        n_shown=shown,
        cursor={
            **cursor,
            "generation": new.generation,
            "rows": new.n_rows,
            "shown": shown,
            "ema": ema,
        },
    )


# ------------------------------------------------------------------------------- history


@dataclasses.dataclass
class HistoryCurves:
    """Points of the history figures (full load) or points to append (poll).

    Attributes:
        curves: column -> ``(x, y)``, for the columns of ``HISTORY_COLUMNS`` and
            ``OPTIONAL_HISTORY_COLUMNS`` the table has and its per-class metric columns
            (``valid_iou_<c>``, ``valid_dice_mean``, ...).
        n_total: rows in the table.
        n_shown: points of the longest curve in the browser after this load or append.
        cursor: the new cursor.
    """

    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    n_total: int
    n_shown: int
    cursor: dict


def _history_curves(
    frame: pd.DataFrame, start: int, x_axis: str, max_points: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    x = _x_values(frame, start, x_axis, "steps")
    curves, shown = {}, 0
    for col in (*HISTORY_COLUMNS, *OPTIONAL_HISTORY_COLUMNS, *class_columns(frame.columns)):
        if col not in frame:
            continue
        y = frame[col].to_numpy(dtype=np.float64)
        idx = downsample_indices(y, max_points)
        curves[col] = (x[idx], y[idx])
        shown = max(shown, len(idx))
    return curves, shown


def load_history(
    store_dir: str | Path,
    *,
    x_axis: str = "step",
    max_points: int = DEFAULT_MAX_POINTS,
    table: str = "history",
) -> HistoryCurves:
    """Read the whole history table and downsample each column for new figures."""
    table_info, read_table = _table_api()
    info = table_info(store_dir, table)
    frame = read_table(store_dir, table) if info is not None else pd.DataFrame()
    curves, shown = _history_curves(frame, 0, x_axis, max_points)
    cursor = {
        "generation": info.generation if info is not None else None,
        "rows": len(frame),
        "shown": shown,
        "key": curve_key(x_axis),
    }
    return HistoryCurves(curves=curves, n_total=len(frame), n_shown=shown, cursor=cursor)


def poll_history(
    store_dir: str | Path,
    cursor: dict | None,
    *,
    x_axis: str = "step",
    max_points: int = DEFAULT_MAX_POINTS,
    table: str = "history",
) -> HistoryCurves | None:
    """The history points added since ``cursor``; ``None`` means "reload the figures"."""
    if not cursor or cursor.get("key") != curve_key(x_axis):
        return None
    new = read_new_rows(store_dir, table, cursor)
    if new.reload:
        return None
    fresh = new.frame.iloc[new.first_new :]
    curves, added = _history_curves(
        fresh, new.start + new.first_new, x_axis, max(2, max_points // 4)
    )
    shown = int(cursor.get("shown", 0)) + added
    if shown > 2 * max_points:
        return None
    return HistoryCurves(
        curves=curves,
        n_total=new.n_rows,
        n_shown=shown,
        cursor={**cursor, "generation": new.generation, "rows": new.n_rows, "shown": shown},
    )


def compare_curves(
    runs: dict[str, Path],
    column: str,
    *,
    x_axis: str = "step",
    max_points: int = DEFAULT_MAX_POINTS,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, int]]:
    """One history column of several runs, each downsampled: ``(curves, n_totals)``.

    ``column`` may be a history column or ``'loss'`` (the timeline). Runs without the
    column or without a history store are left out.
    """
    curves, totals = {}, {}
    table_info, read_table = _table_api()
    table = "timeline" if column == "loss" else "history"
    for name, run_dir in runs.items():
        store = history_dir(run_dir)
        info = table_info(store, table)
        if info is None:
            continue
        frame = read_table(store, table)
        if column not in frame:
            continue
        y = frame[column].to_numpy(dtype=np.float64)
        x = _x_values(frame, 0, x_axis, "steps" if table == "history" else None)
        idx = downsample_indices(y, max_points)
        curves[name], totals[name] = (x[idx], y[idx]), len(frame)
    return curves, totals
