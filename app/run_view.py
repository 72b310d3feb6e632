"""What the run page shows: its curves, header, poll interval, comparison and schedules.

The run page (``app/pages/run.py``) is layout and callback wiring; this module reads the run
directory (``trainer.runs`` and the history store, through ``app.series``) and builds the
page's figures (``app.figures``) and their live updates:

* ``update_curves``: one update of the curves, full figures for a page load or a control
  change, ``dash.Patch`` appends for a poll (the per-browser read offsets and the EMA
  accumulator ride in the ``run-cursor`` store, see ``app.series``). ``first_view`` is the
  first update, carried by the layout so the curves draw with the page's first response;
  ``read_curves`` turns a history that cannot be read into one sentence naming the file.
* ``poll_interval``: polling stops once the run's state is final; a run that only looks
  over (``lost``, or a final state read from a damaged status.json) and a history that
  cannot be read are polled slowly, so an open page recovers when the files do.
* ``status_header``: the experiments table's row of the run (``app.readers.run_summary``),
  so both pages say the same state.
* Optional panels: ``valid_are`` (written when the config sets ``history_are_threshold``),
  the per-class metrics, and the ``regression`` table's predicted-vs-true scatter
  (``update_regression``: a tick whose table has new rows rereads its newest
  ``REGRESSION_POINTS`` rows and replaces the figure whole; that read is bounded, and a
  scatter of recent rows has no natural append order worth patching). A panel without its
  data is hidden (``HIDDEN``).
* ``compare_view`` / ``compare_update``: one column of several runs, redrawn only when a
  compared run has new rows; a run whose history cannot be read is named in the note.
* ``planned_schedules`` / ``schedule_view``: the planned hyper-parameter schedules with
  the values the run logged; ``history_table``: a history table for the CSV download.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from dash import Patch, html, no_update

from app import components, figures, inputs, paths, readers, refresh, series
from app.run_actions import explain_failure
from trainer import runs
from trainer.class_metrics import CLASS_METRIC_RE
from trainer.hyperparams import initial_value
from trainer.runs.history_store import HistoryFormatError, read_array, read_table, table_info

if TYPE_CHECKING:
    import pandas as pd

#: states after which nothing new will be written, so polling stops (``poll_interval``)
STOP_POLLING = runs.FINAL_STATES

#: the columns the compare panel always offers (a run's per-class metrics join them)
COMPARE_COLUMNS = ("valid_loss", "train_loss", "valid_err", "train_err", "loss", "lr",
                   "valid_iou_mean", "valid_dice_mean")  # fmt: skip
#: newest rows of the regression table drawn on the run page
REGRESSION_POINTS = 5000
#: widest moving-average window a request may ask for (the dropdown offers up to 1000)
MAX_SMA_WINDOW = 1_000_000

#: the style of a shown half-width panel, and of a hidden one
SHOWN = {"flex": "1 1 560px", "minWidth": "0"}
HIDDEN = {**SHOWN, "display": "none"}


#: the header's word for a run whose trainer has not written its status yet
STARTING = "starting…"


def waiting_text(run_dir: Path) -> str:
    """The run page's sentence before the first history row, with how often rows come."""
    config = runs.read_resolved_config(run_dir) or {}
    every = config.get("history_freq") if isinstance(config, dict) else None
    often = f" (every {every:,} steps)" if isinstance(every, int) and every > 0 else ""
    return f"Waiting for the first history row{often}: the loss, error and lr panels follow."


def first_view(
    root: Path, run_dir: Path, every: refresh.Intervals = refresh.DEFAULT
) -> dict[str, Any]:
    """What the page shows before any callback: figures, cursor, header and poll interval
    (one of ``every``'s), with the default controls (the same full build a control change
    makes); with the reason in ``error`` (and no curves) when the history cannot be read."""
    compare, sig = compare_update(root, run_dir.name, [], "valid_loss", "step", False, None)
    smoothing = series.Smoothing("ema", 0.6, 50)
    u = read_curves(run_dir, None, smoothing=smoothing, poll=False, every=every)
    first = {"figures": {"compare": compare}, "compare_sig": sig}
    first |= {k: u[k] for k in ("header", "stop", "poll_ms", "failure")}
    if "unreadable" in u:
        return {**first, "error": u["unreadable"]}
    first["figures"] |= u
    first["cursor"] = u["cursor"]
    first |= {k: u[k] for k in ("classes_style", "regression_style", "are_style")}
    return first


def read_curves(run_dir: Path, cursor: Any, **controls: Any) -> dict[str, Any]:
    """``update_curves``, or for a history that cannot be read its header, poll interval and
    ``unreadable``: the sentence shown instead of the curves. Such a page keeps polling, slowly
    once the run is over, so a store moved away or replaced shows without a reload."""
    try:
        return update_curves(run_dir, cursor, **controls)
    except Exception as e:  # a corrupt store must show a message, not break the page
        header, state, failure = status_header(run_dir)
        # the store's own messages and a refused link's name the file and say what to do
        named = isinstance(e, HistoryFormatError | paths.OutsideRunsError)
        why = str(e) if named else f"{type(e).__name__}: {e}"
        every = controls.get("every", refresh.DEFAULT)
        poll_ms = poll_interval(state, damaged=True, every=every)
        return {
            "header": header,
            "failure": failure,
            "stop": poll_ms is None,
            "poll_ms": poll_ms or every.live_ms,
            "unreadable": f"cannot read the history of {run_dir.name}: {why}",
        }


def _number(v: Any) -> float | None:
    # status.json is written by another process; never trust its types
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def status_header(run_dir: Path) -> tuple[list, str, list | None]:
    """Header items (state badge, step / n_steps, it/s, ETA, device), the shown state, and
    the failure block of a failed, diverged or lost run (``failure_block``), else ``None``.

    All come from the run's row in the experiments table (``app.readers.run_summary``: the
    trainer's status merged with the launcher's record), so the two pages say the same; a
    status.json that cannot be read is named, and its run's state is ``unknown`` there.
    Before the trainer writes its first status the header says ``starting…``.
    """
    row = readers.run_summary(run_dir)
    state = row["state"]
    badge = components.state_badge(state)
    badge.id = "run-state"
    failure = failure_block(row, run_dir)
    status, problem = readers.read_json(run_dir / runs.STATUS_FILE)
    if status is None:
        why = problem or row["error"] or STARTING
        items = [
            badge,
            html.Span(f" {why}", style={"color": "var(--vb-danger)"} if problem else None),
        ]
        return items, state, failure
    eta = components.fmt_duration(row["eta_s"])
    trained = components.fmt_duration(_number(status.get("train_time_s")))
    parts = [
        f"step {row['step']:,} / {row['n_steps']:,}",
        f"{row['it_per_s']:.2f} it/s" if row["it_per_s"] is not None else None,
        f"ETA {eta}" if eta else None,
        f"device {row['device']}" if row["device"] else None,
        f"trained {trained}" if trained else None,
    ]
    items: list = [badge, html.Span("  ·  ".join(p for p in parts if p), id="run-progress")]
    if row["error"]:
        items.append(html.Span(f" {row['error']}", style={"color": "var(--vb-danger)"}))
    return items, state, failure


def failure_block(row: dict[str, Any], run_dir: Path) -> list | None:
    """What the page shows of a failed, diverged or lost run in place of the sentence that
    waits for history rows: what happened, its cause, and what to do
    (``app.run_actions.explain_failure``); ``None`` for a run in another state."""
    failure = explain_failure(
        row["state"], row["error"], row["step"], readers.has_snapshot(run_dir)
    )
    if failure is None:
        return None
    return [
        html.Strong(failure.title, className="vb-failure-title"),
        html.Div(failure.cause, className="vb-failure-cause"),
        html.Div(failure.todo, className="vb-failure-todo"),
    ]


def _status_damaged(run_dir: Path) -> bool:
    """Whether status.json is there but says nothing trustworthy about the state: unreadable,
    not a JSON object, or a state this VoxelBoard does not know (shown as ``failed``)."""
    status, problem = readers.read_json(run_dir / runs.STATUS_FILE)
    if status is None:
        return problem is not None
    return "state" in runs.Status.from_json(status).extra.get("status_problems", ())


def poll_interval(
    state: str, damaged: bool = False, every: refresh.Intervals = refresh.DEFAULT
) -> int | None:
    """Milliseconds between the run page's polls of a run in ``state``; ``None`` stops them.

    A run that may still write is polled every ``every.live_ms`` (the app's refresh). A
    final state stops the poll (nothing new will be written), which is what keeps the open
    pages of finished runs free. A run that only looks over is polled every
    ``every.slow_ms``: a ``lost`` run (its trainer may come back) and, when ``damaged`` (a
    status.json or history store that cannot be read), any state but an active one.

    Example:
        >>> poll_interval("running"), poll_interval("finished"), poll_interval("lost")
        (2000, None, 10000)
        >>> poll_interval("lost", every=refresh.intervals(0.5))
        2500
    """
    if state == "lost" or (damaged and state not in runs.ACTIVE_STATES):
        return every.slow_ms
    return None if state in STOP_POLLING else every.live_ms


def curve_settings(
    smoothing: Any, weight: Any, window: Any, options: Any, x_axis: Any
) -> tuple[series.Smoothing, str, bool]:
    """The curve controls as sent, with anything malformed or non-finite at its default."""
    mode = inputs.choice(smoothing, series.SMOOTHING_MODES, "ema")
    w = inputs.number(weight)
    w = w if w is not None and 0 <= w < 1 else 0.6
    n = inputs.integer(window, hi=MAX_SMA_WINDOW)
    n = n if n is not None and n >= 1 else 50
    x = inputs.choice(x_axis, series.X_AXES, "step")
    return series.Smoothing(mode, w, n), x, wants_log_y(options)


def wants_log_y(options: Any) -> bool:
    """Whether the page's options (``run-options``) ask for a log y axis."""
    return "logy" in inputs.strings(options)


def _timeline_full(tl: series.TimelineCurves, smoothing, x_axis: str, log_y: bool):
    return figures.timeline_figure(
        tl.x,
        tl.loss,
        tl.smoothed,
        n_total=tl.n_total,
        x_axis=x_axis,
        log_y=log_y,
        smoothing_label=smoothing.label,
    )


def _timeline_patch(tl: series.TimelineCurves) -> Patch | Any:
    if len(tl.x) == 0:
        return no_update
    p = Patch()
    xs = tl.x.tolist()
    p["data"][0]["x"].extend(xs)
    p["data"][0]["y"].extend(tl.loss.tolist())
    if tl.smoothed is not None:
        p["data"][1]["x"].extend(xs)
        p["data"][1]["y"].extend(tl.smoothed.tolist())
    p["layout"]["annotations"][0]["text"] = figures.points_note(tl.n_shown, tl.n_total)
    return p


def _history_patches(hi: series.HistoryCurves) -> list:
    out = []
    for columns in figures.HISTORY_PANELS.values():
        new = [
            (i, hi.curves[c])
            for i, c in enumerate(columns)
            if c in hi.curves and len(hi.curves[c][0])
        ]
        if not new:
            out.append(no_update)
            continue
        p = Patch()
        for i, (x, y) in new:
            p["data"][i]["x"].extend(x.tolist())
            p["data"][i]["y"].extend(y.tolist())
        p["layout"]["annotations"][0]["text"] = figures.points_note(hi.n_shown, hi.n_total)
        out.append(p)
    return out


def update_regression(
    store: Path, previous: dict | None, *, max_points: int = REGRESSION_POINTS
) -> tuple[Any, Any, dict]:
    """The regression panel's figure, its style and its cursor for one update.

    Args:
        store: the run's history store (``<run_dir>/history``).
        previous: the cursor this browser got last time (``{'rows', 'generation'}``), or
            ``None`` to build the figure whatever the table holds.
        max_points: newest rows drawn.

    Returns:
        ``(figure, style, cursor)``; figure and style are ``no_update`` when the table is
        as the cursor says. The panel is hidden while the table is missing or empty. A
        table that cannot be read shows the reason in the panel instead of the scatter.
    """
    try:
        info = table_info(store, "regression")
        n = info.n_rows if info is not None else 0
        cursor = {"rows": n, "generation": info.generation if info is not None else None}
        if cursor == previous:
            return no_update, no_update, cursor
        if n == 0:
            return figures.regression_figure([], []), HIDDEN, cursor
        got = read_array(store, "regression", -max_points)
        if got is None:  # removed since table_info; the next tick sees it gone
            return no_update, no_update, previous or {}
        info, arr = got
        pred = [j for j, c in enumerate(info.columns) if c.startswith("pred_")]
        target = [j for j, c in enumerate(info.columns) if c.startswith("target_")]
        fig = figures.regression_figure(
            arr[:, pred], arr[:, target], n_total=info.n_rows, max_points=max_points
        )
        return fig, SHOWN, {"rows": info.n_rows, "generation": info.generation}
    except (OSError, ValueError) as e:  # HistoryFormatError is a ValueError
        fig = figures.regression_figure([], [])
        fig.layout.annotations[0].text = f"cannot read the regression table: {e}"
        return fig, SHOWN, {}


def update_curves(
    run_dir: Path,
    cursor: dict | None,
    *,
    smoothing: series.Smoothing,
    x_axis: str = "step",
    log_y: bool = False,
    poll: bool = True,
    max_points: int = series.DEFAULT_MAX_POINTS,
    every: refresh.Intervals = refresh.DEFAULT,
) -> dict[str, Any]:
    """One update of the run page's curves: Patch appends for a poll, full figures otherwise.

    Args:
        run_dir: the run directory.
        cursor: the browser's ``run-cursor`` store (``None`` on a first load).
        smoothing, x_axis, log_y: the page's controls.
        poll: ``True`` for an interval tick (append if the cursor still fits), ``False``
            to rebuild every figure (page load, a control changed).
        max_points: points per curve after downsampling.
        every: the app's page intervals (``AppContext.intervals``), for ``'poll_ms'``.

    Returns:
        ``{'timeline', 'loss', 'error', 'lr', 'gain', 'are', 'classes', 'regression'}`` each
        a figure, a ``Patch`` or ``no_update``; ``'are_style'``, ``'classes_style'`` and
        ``'regression_style'`` the adapted-Rand-error, per-class and regression panels'
        styles (hidden without their columns or rows) or ``no_update``;
        ``'cursor'`` the new store value; ``'header'``; ``'stop'`` (bool) and ``'poll_ms'``
        (the interval while polling, see ``poll_interval``). The panel holding
        status.json's ``best_metric`` gets a "best" marker as its last trace, moved when the
        best value changes; the error panel is titled with status.json's ``error_metric``.
    """
    # status first: rows written before a final status are then read by this same update
    header, state, failure = status_header(run_dir)
    store = run_dir / runs.HISTORY_DIR
    cursor = cursor if isinstance(cursor, dict) else {}
    poll_ms = poll_interval(state, _status_damaged(run_dir), every)
    out: dict[str, Any] = {"header": header, "failure": failure, "stop": poll_ms is None,
                           "poll_ms": poll_ms or every.live_ms}  # fmt: skip

    tl = None
    if poll:
        tl = series.poll_timeline(
            store, cursor.get("timeline"), x_axis=x_axis, smoothing=smoothing, max_points=max_points
        )
    if tl is None:
        tl = series.load_timeline(store, x_axis=x_axis, smoothing=smoothing, max_points=max_points)
        out["timeline"] = _timeline_full(tl, smoothing, x_axis, log_y)
    else:
        out["timeline"] = _timeline_patch(tl)

    hi = (
        series.poll_history(store, cursor.get("history"), x_axis=x_axis, max_points=max_points)
        if poll
        else None
    )
    status = runs.read_status(run_dir)
    extra = status.extra if status is not None else {}
    if hi is None:
        hi = series.load_history(store, x_axis=x_axis, max_points=max_points)
        out.update(
            figures.history_figures(hi.curves, n_total=hi.n_total, x_axis=x_axis, log_y=log_y)
        )
        error_label = extra.get("error_metric")
        figures.label_error_panel(out["error"], error_label if isinstance(error_label, str) else "")
        out["classes"] = figures.class_metrics_figure(hi.curves, n_total=hi.n_total, x_axis=x_axis)
        out["classes_style"] = SHOWN if out["classes"].data else HIDDEN
        # a panel of a column the run does not write stays hidden (no empty frame)
        out["are_style"] = SHOWN if "valid_are" in hi.curves else HIDDEN
        best = _add_best_marker(out, extra, x_axis)
        ranges = {p: r for p in figures.HISTORY_PANELS if (r := figures.fixed_ranges(out[p]))}
    else:
        out.update(zip(figures.HISTORY_PANELS, _history_patches(hi), strict=True))
        out["classes"], out["classes_style"] = _classes_patch(hi), no_update
        out["are_style"] = no_update
        best = _move_best_marker(out, extra, x_axis, cursor.get("best"))
        ranges = _release_ranges(out, hi, cursor.get("ranges"))
    # the regression scatter does not depend on the controls: rebuild only for new rows
    previous = cursor.get("regression") if cursor.get("run") == run_dir.name else None
    out["regression"], out["regression_style"], reg_cursor = update_regression(store, previous)
    out["cursor"] = {
        "run": run_dir.name,
        "timeline": tl.cursor,
        "history": hi.cursor,
        "regression": reg_cursor,
        "best": best,
        "ranges": ranges,
    }
    return out


def _release_ranges(out: dict[str, Any], hi: series.HistoryCurves, ranges: Any) -> dict:
    """Let an axis drawn in a constant series' band autorange again once appended points
    leave the band (a Patch on the panel); the bands still fixed."""
    kept: dict = {}
    for panel, axes in (ranges if isinstance(ranges, dict) else {}).items():
        if panel not in figures.HISTORY_PANELS or not isinstance(axes, dict):
            continue
        for axis, band in axes.items():
            # the cursor comes back from the browser: only two numbers make a band
            bounds = [inputs.number(v) for v in band] if isinstance(band, list) else []
            if axis not in ("xaxis", "yaxis", "yaxis2") or len(bounds) != 2 or None in bounds:
                continue
            panel_columns = figures.HISTORY_PANELS[panel]
            columns = [
                c for c in panel_columns if axis == "xaxis" or (c == "mom") == (axis == "yaxis2")
            ]
            k = 0 if axis == "xaxis" else 1
            if any(
                figures.outside_range(hi.curves[c][k], bounds) for c in columns if c in hi.curves
            ):
                p = out[panel] if isinstance(out[panel], Patch) else Patch()
                p["layout"][axis]["autorange"] = True
                if axis == "xaxis":  # the lone first point had markers; lines from now on
                    for i in range(len(panel_columns)):
                        p["data"][i]["mode"] = "lines"
                out[panel] = p
            else:
                kept.setdefault(panel, {})[axis] = bounds
    return kept


def _best_point(extra: dict, x_axis: str) -> tuple[str, float | None, float | None, str] | None:
    """``(panel, x, y, label)`` of the best ``best_metric`` value in status.json, if drawn."""
    metric = extra.get("best_metric")
    if not isinstance(metric, str):
        return None
    if CLASS_METRIC_RE.match(metric):
        panel = "classes"
    else:
        panel = next((p for p, cols in figures.HISTORY_PANELS.items() if metric in cols), None)
    if panel is None:
        return None
    x = _number(extra.get("best_step" if x_axis == "step" else "best_time_s"))
    y = _number(extra.get("best_value"))
    label = f"best {figures.COLUMN_LABELS.get(metric, metric)}"
    return panel, (None if y is None else x), (None if x is None else y), label


def _add_best_marker(out: dict[str, Any], extra: dict, x_axis: str) -> dict | None:
    """Put the best-value marker on the full figure of its panel; its cursor entry."""
    point = _best_point(extra, x_axis)
    if point is None:
        return None
    panel, x, y, label = point
    index = len(out[panel].data)
    figures.add_best_marker(out[panel], x, y, label)
    return {"panel": panel, "index": index, "xy": [x, y]}


def _move_best_marker(out: dict[str, Any], extra: dict, x_axis: str, previous: Any) -> dict | None:
    """Move the marker drawn at the last full build when the best value changed (a Patch)."""
    point = _best_point(extra, x_axis)
    if not isinstance(previous, dict) or point is None or point[0] != previous.get("panel"):
        return previous if isinstance(previous, dict) else None
    panel, x, y, _label = point
    if [x, y] == previous.get("xy"):
        return previous
    p = out[panel] if isinstance(out[panel], Patch) else Patch()
    p["data"][int(previous["index"])]["x"] = [] if x is None else [x]
    p["data"][int(previous["index"])]["y"] = [] if y is None else [y]
    out[panel] = p
    return {**previous, "xy": [x, y]}


def _classes_patch(hi: series.HistoryCurves) -> Patch | Any:
    """Appends to the per-class panel (traces in ``figures.class_columns`` order)."""
    columns = figures.class_columns(hi.curves)
    new = [(i, hi.curves[c]) for i, c in enumerate(columns) if len(hi.curves[c][0])]
    if not new:
        return no_update
    p = Patch()
    for i, (x, y) in new:
        p["data"][i]["x"].extend(x.tolist())
        p["data"][i]["y"].extend(y.tolist())
    p["layout"]["annotations"][0]["text"] = figures.points_note(hi.n_shown, hi.n_total)
    return p


def compare_columns(run_dir: Path) -> list[str]:
    """The compare dropdown's columns: the usual ones and this run's per-class metrics."""
    try:
        info = table_info(run_dir / runs.HISTORY_DIR, "history")
    except (OSError, ValueError):  # a corrupt store: the curves panel names it
        info = None
    extra = figures.class_columns(info.columns) if info is not None else []
    extra += [c for c in series.OPTIONAL_HISTORY_COLUMNS if info is not None and c in info.columns]
    return [*COMPARE_COLUMNS, *(c for c in extra if c not in COMPARE_COLUMNS)]


def compare_view(
    root: Path,
    name: str,
    others: list[str],
    column: str,
    *,
    x_axis: str = "step",
    log_y: bool = False,
):
    """The compare figure: ``column`` of run ``name`` and of the chosen ``others``.

    A run whose history cannot be read is left out and named in the point-count note (the
    run's own page says why), so one corrupt store does not hide the other runs' curves.
    """
    curves, totals, unreadable = {}, {}, []
    for n in [name, *[o for o in others if o != name]]:
        d = series.run_dir_for(root, n)
        if d is None:
            continue
        try:
            got, n_rows = series.compare_curves({n: d}, column, x_axis=x_axis)
        except (OSError, ValueError):  # HistoryFormatError is a ValueError
            unreadable.append(n)
            continue
        curves |= got
        totals |= n_rows
    fig = figures.compare_figure(curves, column=column, x_axis=x_axis, log_y=log_y, n_totals=totals)
    if unreadable:
        note = fig.layout.annotations[0]
        missing = f"cannot read the history of {', '.join(unreadable)}"
        note.text = f"{note.text}; {missing}" if curves else missing
    return fig


def _compare_signature(root: Path, names: list[str], column: str, x_axis: str, log_y: bool):
    """What the compare figure depends on: its settings and the history rows of each run."""
    rows = {}
    for n in names:
        d = series.run_dir_for(root, n)
        try:
            info = table_info(d / runs.HISTORY_DIR, "history") if d is not None else None
        except (OSError, ValueError):
            info = None
        rows[n] = [info.n_rows, info.generation] if info is not None else None
    return {"column": column, "x_axis": x_axis, "log_y": log_y, "rows": rows}


def compare_update(
    root: Path, name: str, others: list[str], column: str, x_axis: str, log_y: bool, previous: Any
) -> tuple[Any, dict]:
    """The compare figure (``no_update`` when nothing it shows changed) and its signature."""
    names = [name, *(o for o in others if o != name)]
    sig = _compare_signature(root, names, column, x_axis, log_y)
    if sig == previous:
        return no_update, sig
    try:
        return compare_view(root, name, others, column, x_axis=x_axis, log_y=log_y), sig
    except Exception as e:  # the figure says so in its note, not in its titles
        fig = figures.compare_figure({}, column=column, x_axis=x_axis)
        fig.layout.annotations[0].text = f"cannot draw the comparison ({type(e).__name__})"
        return fig, sig


def planned_schedules(config: dict | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Planned values of every schedule in a resolved config, continued to ``n_steps``.

    A schedule whose start value is not a number in ``optimiser_params`` (or whose
    settings are malformed) is left out.
    """
    from trainer.schedules import Schedule

    config = config or {}
    n_steps = config.get("n_steps")
    params = config.get("optimiser_params") or {}
    scheds = config.get("schedules") or {}
    if not isinstance(n_steps, int) or not isinstance(scheds, dict) or not isinstance(params, dict):
        return {}
    plans = {}
    for key, kw in scheds.items():
        initial = initial_value(params, key)
        if not isinstance(initial, int | float) or not isinstance(kw, dict):
            continue
        try:
            steps, values = Schedule(**kw).plan(n_steps, float(initial))
        except (ValueError, TypeError):
            continue
        if len(steps) and steps[-1] < n_steps:
            steps, values = np.r_[steps, n_steps], np.r_[values, values[-1]]
        plans[key] = (steps, values)
    return plans


def other_runs(root: Path, name: str) -> list[str]:
    """The names of the runs under ``root`` but ``name`` (the compare choices)."""
    return [p.name for p in runs.iter_run_dirs(root) if p.name != name]


def schedule_view(run_dir: Path, log_y: bool = False) -> go.Figure:
    """The schedule panel: each schedule's planned values to ``n_steps``, the values the run
    logged (none while its history cannot be read) and its current step."""
    plans = planned_schedules(runs.read_resolved_config(run_dir))
    status = runs.read_status(run_dir)
    try:
        hist = series.load_history(run_dir / runs.HISTORY_DIR)
        actual = {k: v for k, v in hist.curves.items() if k in plans}
    except Exception:  # the curves panel names an unreadable store; plans still show
        actual = {}
    return figures.schedule_figure(
        plans, actual=actual, current_step=status.step if status else None, log_y=log_y
    )


def history_table(run_dir: Path, table: str) -> pd.DataFrame | None:
    """Table ``table`` (``"history"`` or ``"timeline"``) of the run's history store, ``None``
    if there is none or it cannot be read (the curves panel names the file then)."""
    store = run_dir / runs.HISTORY_DIR
    try:
        if table_info(store, table) is None:
            return None
        return read_table(store, table)
    except (OSError, ValueError):
        return None
