"""Run page (``/run/<name>``): live curves of one run's history store.

Reads the run directory only. The layout itself carries every figure, built from a full
(downsampled) read with the default controls, so the curves are drawn with the page's first
response; after that each ``run-interval`` tick sends only the points added since the last
tick, as ``dash.Patch`` appends, with the per-browser read offsets and the EMA
accumulator kept in the ``run-cursor`` store (see ``app.series``). Polling stops once
the run's state is final (``poll_interval``); a run that only looks over (``lost``, or a
final state read from a damaged status.json) and a history that cannot be read are polled
slowly, so the open page recovers when the files do. Zoom and pan survive updates through
``uirevision``.

The header shows the experiments table's row of the run (``app.readers.run_summary``), so
both say the same state. A history store that cannot be read shows one sentence naming the
file in place of the curves, and the compare panel names the runs it cannot read.

Runs whose history has ``valid_are`` (the validation neurons' adapted Rand error, written
when the config sets ``history_are_threshold``) get a panel for it beside the error panel;
other runs do not show it. A panel hidden for want of data holds an empty figure in the
first response, so the browser draws only what is shown.

Runs that write a ``regression`` table (predicted and true values, e.g. the tracing
trainer's neurite radius) get a predicted-vs-true scatter panel, hidden until the table
has rows. A tick whose table has new rows rereads its newest ``REGRESSION_POINTS`` rows and
replaces the figure whole; that read is bounded, and a scatter of recent rows has no
natural append order worth patching.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from dash import Input, Output, Patch, State, ctx, dcc, html, no_update

from app import components, figures, inputs, readers, series
from app.callbacks import callback, clientside_callback
from app.components import (
    ROW,
    empty_state,
    graph,
    labelled,
    run_href,
    run_not_found,
    url_part,
)
from trainer import runs
from trainer.class_metrics import CLASS_METRIC_RE
from trainer.history import HistoryFormatError, read_array, table_info
from trainer.hyperparams import initial_value

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/run/<name>", "title": "VoxelBoard run"}

POLL_MS = 2000
#: how often a page polls a run that looks over but may yet change (``poll_interval``)
SLOW_POLL_MS = 10_000
#: states after which nothing new will be written, so polling stops (``poll_interval``)
STOP_POLLING = runs.FINAL_STATES


COMPARE_COLUMNS = ("valid_loss", "train_loss", "valid_err", "train_err", "loss", "lr",
                   "valid_iou_mean", "valid_dice_mean")  # fmt: skip

#: newest rows of the regression table drawn on the run page
REGRESSION_POINTS = 5000
#: widest moving-average window a request may ask for (the dropdown offers up to 1000)
MAX_SMA_WINDOW = 1_000_000

_HALF = {"flex": "1 1 560px", "minWidth": "0"}
_HIDDEN = {**_HALF, "display": "none"}
#: what a hidden panel's graph holds in the page's first response: nothing for plotly.js to
#: draw (no axes), where its full figure would cost drawing time before the first curves
_NOTHING = {"data": [], "layout": {"height": 320, "xaxis": {"visible": False},
                                   "yaxis": {"visible": False}}}  # fmt: skip


def layout(name: str | None = None, **kwargs: Any) -> html.Div:
    """The run page of run ``name``; a clear message if there is no such run."""
    name = url_part(name)
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return run_not_found(name, "run-missing")
    others = [p.name for p in runs.iter_run_dirs(root) if p.name != name]
    compare_columns = _compare_columns(run_dir)
    first = _first_view(root, run_dir)
    figs = first.get("figures", {})
    has_history = _has_rows(first.get("cursor"), "history")
    has_timeline = _has_rows(first.get("cursor"), "timeline")
    failed = bool(first.get("error"))
    controls = components.controls(
        labelled(
            "Smoothing",
            dcc.RadioItems(
                id="run-smoothing",
                options=[
                    {"label": "EMA", "value": "ema"},
                    {"label": "moving average", "value": "sma"},
                    {"label": "off", "value": "none"},
                ],
                value="ema",
                inline=True,
            ),
        ),
        labelled(
            "EMA weight",
            dcc.Slider(
                id="run-ema-weight",
                min=0,
                max=0.99,
                step=0.01,
                value=0.6,
                marks={0: "0", 0.6: "0.6", 0.9: "0.9", 0.99: "0.99"},
                updatemode="mouseup",
            ),
            "260px",
        ),
        labelled(
            "Window",
            dcc.Dropdown(
                id="run-sma-window",
                options=[5, 10, 20, 50, 100, 200, 500, 1000],
                value=50,
                clearable=False,
                style={"width": "100px"},
            ),
        ),
        labelled(
            "x axis",
            dcc.RadioItems(
                id="run-xaxis",
                options=[
                    {"label": "step", "value": "step"},
                    {"label": "training time", "value": "time"},
                ],
                value="step",
                inline=True,
            ),
        ),
        dcc.Checklist(id="run-options", options=[{"label": "log y", "value": "logy"}], value=[]),
        components.button("History CSV", id="run-download-history"),
        components.button("Timeline CSV", id="run-download-timeline"),
        dcc.Download(id="run-download"),
    )
    compare = html.Div(
        [
            html.Div(
                [
                    dcc.Dropdown(
                        id="run-compare-runs",
                        options=others,
                        value=[],
                        multi=True,
                        placeholder="compare with runs ...",
                        style={"minWidth": "320px"},
                    ),
                    components.screen_reader_label("Runs to compare", "run-compare-runs"),
                    dcc.Dropdown(
                        id="run-compare-column",
                        options=[
                            {"label": figures.COLUMN_LABELS.get(c, c), "value": c}
                            for c in compare_columns
                        ],
                        value="valid_loss",
                        clearable=False,
                        style={"width": "180px"},
                    ),
                    components.screen_reader_label("Column to compare", "run-compare-column"),
                ],
                style=ROW,
            ),
            graph("run-graph-compare", figure=figs.get("compare")),
        ],
        style=_HALF,
    )
    return html.Div(
        [
            dcc.Store(id="run-name", data=name),
            dcc.Store(id="run-cursor", data=first.get("cursor")),
            dcc.Store(id="run-compare-sig", data=first.get("compare_sig")),
            dcc.Interval(
                id="run-interval",
                interval=first.get("poll_ms", POLL_MS),
                disabled=first.get("stop", False),
            ),
            html.Div(
                [
                    html.H1(name, className="vb-page-title"),
                    html.Div(first.get("header"), id="run-header"),
                    dcc.Link(
                        "preview viewer", href=run_href(name, "/preview"), id="run-preview-link"
                    ),
                    dcc.Link("evaluation", href=run_href(name, "/evaluation"), id="run-eval-link"),
                    dcc.Link("all runs", href="/"),
                ],
                style=ROW,
            ),
            controls,
            html.Div(first.get("error", ""), id="run-error", style={"color": "#dc3545"}),
            empty_state(
                _waiting_text(run_dir),
                "run-waiting",
                dcc.Link("see the log on the experiments page", href="/", className="vb-link"),
                hidden=has_history or failed,
            ),
            html.Div(
                [
                    html.Div(
                        graph("run-graph-timeline", figure=figs.get("timeline")),
                        id="run-timeline-panel",
                        style=_HALF,
                        hidden=failed or not has_timeline,
                    ),
                    html.Div(
                        [
                            html.Div(
                                graph(f"run-graph-{k}", figure=_shown_figure(first, k)),
                                id=f"run-{k}-panel",
                                style=first.get(f"{k}_style", _HIDDEN)
                                if k in figures.OPTIONAL_PANELS
                                else _HALF,
                            )
                            for k in ("loss", "error", "are", "lr", "gain")
                        ],
                        id="run-history-panels",
                        className="vb-contents",
                        hidden=not has_history or failed,
                    ),
                    html.Div(
                        graph("run-graph-classes", figure=_shown_figure(first, "classes")),
                        id="run-classes-panel",
                        style=first.get("classes_style", _HIDDEN),
                    ),
                    compare,
                    html.Div(graph("run-graph-schedule"), style=_HALF),
                    html.Div(
                        graph("run-graph-regression", figure=_shown_figure(first, "regression")),
                        id="run-regression-panel",
                        style=first.get("regression_style", _HIDDEN),
                    ),
                ],
                style=ROW,
            ),
        ],
        style={"padding": "10px 16px"},
    )


def _shown_figure(first: dict[str, Any], panel: str) -> Any:
    """The first response's figure of a panel: ``_NOTHING`` for one that ``<panel>_style``
    hides (the update that shows it sends its figure), else its figure."""
    style = first.get(f"{panel}_style")
    if isinstance(style, dict) and style.get("display") == "none":
        return _NOTHING
    return first.get("figures", {}).get(panel)


def _has_rows(cursor: Any, table: str) -> bool:
    """Whether the cursor has read a row of ``table`` (``"history"``: the history panels have
    something to draw; ``"timeline"``: the per-step loss panel has)."""
    read = cursor.get(table) if isinstance(cursor, dict) else None
    return isinstance(read, dict) and (inputs.integer(read.get("rows")) or 0) > 0


def _waiting_text(run_dir: Path) -> str:
    """The run page's sentence before the first history row, with how often rows come."""
    config = runs.read_resolved_config(run_dir) or {}
    every = config.get("history_freq") if isinstance(config, dict) else None
    often = f" (every {every:,} steps)" if isinstance(every, int) and every > 0 else ""
    return f"Waiting for the first history row{often}: the loss, error and lr panels follow."


# the per-step loss panel appears with the first timeline row a poll brings, the history
# panels with the first history row; while the history cannot be read, the error sentence
# stands alone (no empty frames, no waiting sentence)
clientside_callback(
    """function (cursor, error) {
        const rows = t => !!(cursor && cursor[t] && typeof cursor[t].rows === "number"
                             && cursor[t].rows > 0);
        const has = rows("history");
        const failed = !!error;
        return [has || failed, !has || failed, failed || !rows("timeline")];
    }""",
    Output("run-waiting", "hidden"),
    Output("run-history-panels", "hidden"),
    Output("run-timeline-panel", "hidden"),
    Input("run-cursor", "data"),
    Input("run-error", "children"),
)


def _first_view(root: Path, run_dir: Path) -> dict[str, Any]:
    """What the page shows before any callback: figures, cursor, header and poll interval,
    with the default controls (the same full build a control change makes); with the reason
    in ``error`` (and no curves) when the history cannot be read."""
    compare, sig = _compare_update(root, run_dir.name, [], "valid_loss", "step", False, None)
    u = _read_curves(run_dir, None, smoothing=series.Smoothing("ema", 0.6, 50), poll=False)
    first = {"figures": {"compare": compare}, "compare_sig": sig}
    first |= {k: u[k] for k in ("header", "stop", "poll_ms")}
    if "unreadable" in u:
        return {**first, "error": u["unreadable"]}
    first["figures"] |= u
    first["cursor"] = u["cursor"]
    first |= {k: u[k] for k in ("classes_style", "regression_style", "are_style")}
    return first


def _read_curves(run_dir: Path, cursor: Any, **controls: Any) -> dict[str, Any]:
    """``update_curves``, or for a history that cannot be read its header, poll interval and
    ``unreadable``: the sentence shown instead of the curves. Such a page keeps polling, slowly
    once the run is over, so a store moved away or replaced shows without a reload."""
    try:
        return update_curves(run_dir, cursor, **controls)
    except Exception as e:  # a corrupt store must show a message, not break the page
        header, state = status_header(run_dir)
        # the store's own messages name the file and say what to do
        why = str(e) if isinstance(e, HistoryFormatError) else f"{type(e).__name__}: {e}"
        poll_ms = poll_interval(state, damaged=True)
        return {
            "header": header,
            "stop": poll_ms is None,
            "poll_ms": poll_ms or POLL_MS,
            "unreadable": f"cannot read the history of {run_dir.name}: {why}",
        }


# --------------------------------------------------------------------------- status header


def _number(v: Any) -> float | None:
    # status.json is written by another process; never trust its types
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def status_header(run_dir: Path) -> tuple[list, str]:
    """Header items (state badge, step / n_steps, it/s, ETA, device) and the shown state.

    Both come from the run's row in the experiments table (``app.readers.run_summary``: the
    trainer's status merged with the launcher's record), so the two pages say the same; a
    status.json that cannot be read is named, and its run's state is ``unknown`` there.
    """
    row = readers.run_summary(run_dir)
    state = row["state"]
    badge = components.state_badge(state)
    badge.id = "run-state"
    status, problem = readers.read_json(run_dir / runs.STATUS_FILE)
    if status is None:
        why = problem or row["error"] or "no status.json yet"
        return [badge, html.Span(f" {why}", style={"color": "#dc3545"} if problem else None)], state
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
        items.append(html.Span(f" {row['error']}", style={"color": "#dc3545"}))
    return items, state


def _status_damaged(run_dir: Path) -> bool:
    """Whether status.json is there but says nothing trustworthy about the state: unreadable,
    not a JSON object, or a state this VoxelBoard does not know (shown as ``failed``)."""
    status, problem = readers.read_json(run_dir / runs.STATUS_FILE)
    if status is None:
        return problem is not None
    return "state" in runs.Status.from_json(status).extra.get("status_problems", ())


def poll_interval(state: str, damaged: bool = False) -> int | None:
    """Milliseconds between the run page's polls of a run in ``state``; ``None`` stops them.

    A final state stops the poll (nothing new will be written), which is what keeps the
    open pages of finished runs free. A run that only looks over is polled every
    ``SLOW_POLL_MS``: a ``lost`` run (its trainer may come back) and, when ``damaged`` (a
    status.json or history store that cannot be read), any state but an active one.

    Example:
        >>> poll_interval("running"), poll_interval("finished"), poll_interval("lost")
        (2000, None, 10000)
    """
    if state == "lost" or (damaged and state not in runs.ACTIVE_STATES):
        return SLOW_POLL_MS
    return None if state in STOP_POLLING else POLL_MS


# ----------------------------------------------------------------------------- curves


def _settings(
    smoothing: Any, weight: Any, window: Any, options: Any, x_axis: Any
) -> tuple[series.Smoothing, str, bool]:
    """The curve controls as sent, with anything malformed or non-finite at its default."""
    mode = inputs.choice(smoothing, series.SMOOTHING_MODES, "ema")
    w = inputs.number(weight)
    w = w if w is not None and 0 <= w < 1 else 0.6
    n = inputs.integer(window, hi=MAX_SMA_WINDOW)
    n = n if n is not None and n >= 1 else 50
    x = inputs.choice(x_axis, series.X_AXES, "step")
    return series.Smoothing(mode, w, n), x, _log_y(options)


def _log_y(options: Any) -> bool:
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
            return figures.regression_figure([], []), _HIDDEN, cursor
        got = read_array(store, "regression", -max_points)
        if got is None:  # removed since table_info; the next tick sees it gone
            return no_update, no_update, previous or {}
        info, arr = got
        pred = [j for j, c in enumerate(info.columns) if c.startswith("pred_")]
        target = [j for j, c in enumerate(info.columns) if c.startswith("target_")]
        fig = figures.regression_figure(
            arr[:, pred], arr[:, target], n_total=info.n_rows, max_points=max_points
        )
        return fig, _HALF, {"rows": info.n_rows, "generation": info.generation}
    except (OSError, ValueError) as e:  # HistoryFormatError is a ValueError
        fig = figures.regression_figure([], [])
        fig.layout.annotations[0].text = f"cannot read the regression table: {e}"
        return fig, _HALF, {}


def update_curves(
    run_dir: Path,
    cursor: dict | None,
    *,
    smoothing: series.Smoothing,
    x_axis: str = "step",
    log_y: bool = False,
    poll: bool = True,
    max_points: int = series.DEFAULT_MAX_POINTS,
) -> dict[str, Any]:
    """One update of the run page's curves: Patch appends for a poll, full figures otherwise.

    Args:
        run_dir: the run directory.
        cursor: the browser's ``run-cursor`` store (``None`` on a first load).
        smoothing, x_axis, log_y: the page's controls.
        poll: ``True`` for an interval tick (append if the cursor still fits), ``False``
            to rebuild every figure (page load, a control changed).
        max_points: points per curve after downsampling.

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
    header, state = status_header(run_dir)
    store = run_dir / runs.HISTORY_DIR
    cursor = cursor if isinstance(cursor, dict) else {}
    poll_ms = poll_interval(state, _status_damaged(run_dir))
    out: dict[str, Any] = {"header": header, "stop": poll_ms is None, "poll_ms": poll_ms or POLL_MS}

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
        out["classes_style"] = _HALF if out["classes"].data else _HIDDEN
        # a panel of a column the run does not write stays hidden (no empty frame)
        out["are_style"] = _HALF if "valid_are" in hi.curves else _HIDDEN
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
            if axis not in ("yaxis", "yaxis2") or len(bounds) != 2 or None in bounds:
                continue
            columns = [
                c for c in figures.HISTORY_PANELS[panel] if (c == "mom") == (axis == "yaxis2")
            ]
            if any(
                figures.outside_range(hi.curves[c][1], bounds) for c in columns if c in hi.curves
            ):
                p = out[panel] if isinstance(out[panel], Patch) else Patch()
                p["layout"][axis]["autorange"] = True
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


def _compare_columns(run_dir: Path) -> list[str]:
    """The compare dropdown's columns: the usual ones and this run's per-class metrics."""
    try:
        info = table_info(run_dir / runs.HISTORY_DIR, "history")
    except (OSError, ValueError):  # a corrupt store: the curves panel names it
        info = None
    extra = figures.class_columns(info.columns) if info is not None else []
    extra += [c for c in series.OPTIONAL_HISTORY_COLUMNS if info is not None and c in info.columns]
    return [*COMPARE_COLUMNS, *(c for c in extra if c not in COMPARE_COLUMNS)]


@callback(
    Output("run-graph-timeline", "figure"),
    Output("run-graph-loss", "figure"),
    Output("run-graph-error", "figure"),
    Output("run-graph-lr", "figure"),
    Output("run-graph-gain", "figure"),
    Output("run-graph-are", "figure"),
    Output("run-are-panel", "style"),
    Output("run-graph-classes", "figure"),
    Output("run-classes-panel", "style"),
    Output("run-graph-regression", "figure"),
    Output("run-regression-panel", "style"),
    Output("run-cursor", "data"),
    Output("run-header", "children"),
    Output("run-interval", "disabled"),
    Output("run-interval", "interval"),
    Output("run-error", "children"),
    Input("run-interval", "n_intervals"),
    Input("run-smoothing", "value"),
    Input("run-ema-weight", "value"),
    Input("run-sma-window", "value"),
    Input("run-options", "value"),
    Input("run-xaxis", "value"),
    State("run-cursor", "data"),
    State("run-name", "data"),
    prevent_initial_call=True,  # the layout carries the first figures and their cursor
)
def _on_curves(_tick, smoothing, weight, window, options, x_axis, cursor, name):
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return (*[no_update] * 13, True, no_update, f"run {name!r} is gone from the runs directory")
    smooth, x, log_y = _settings(smoothing, weight, window, options, x_axis)
    poll = (
        ctx.triggered_id == "run-interval"
        and isinstance(cursor, dict)
        and cursor.get("run") == name
    )
    u = _read_curves(run_dir, cursor, smoothing=smooth, x_axis=x, log_y=log_y, poll=poll)
    if "unreadable" in u:
        return (*[no_update] * 12, u["header"], u["stop"], u["poll_ms"], u["unreadable"])
    figs = [u[k] for k in ("timeline", "loss", "error", "lr", "gain", "are", "are_style")]
    figs += [u["classes"], u["classes_style"]]
    figs += [u["regression"], u["regression_style"]]
    return (*figs, u["cursor"], u["header"], u["stop"], u["poll_ms"], "")


# ---------------------------------------------------------------------- compare, schedules


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


def _compare_update(
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


@callback(
    Output("run-graph-compare", "figure"),
    Output("run-compare-sig", "data"),
    Input("run-interval", "n_intervals"),
    Input("run-compare-runs", "value"),
    Input("run-compare-column", "value"),
    Input("run-xaxis", "value"),
    Input("run-options", "value"),
    State("run-compare-sig", "data"),
    State("run-name", "data"),
    prevent_initial_call=True,  # the layout carries the first compare figure
)
def _on_compare(_tick, others, column, x_axis, options, previous, name):
    root = series.app_runs_dir()
    if root is None or series.run_dir_for(root, name) is None:
        return no_update, no_update
    if not (isinstance(column, str) and CLASS_METRIC_RE.match(column)):
        column = inputs.choice(
            column, (*COMPARE_COLUMNS, *series.OPTIONAL_HISTORY_COLUMNS), "valid_loss"
        )
    x_axis = inputs.choice(x_axis, series.X_AXES, "step")
    others = inputs.strings(others)
    # a tick redraws only when a compared run has new history rows
    previous = previous if ctx.triggered_id == "run-interval" else None
    return _compare_update(root, name, others, column, x_axis, _log_y(options), previous)


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


@callback(
    Output("run-graph-schedule", "figure"),
    Input("run-name", "data"),
    Input("run-options", "value"),
)
def _on_schedule(name, options):
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return no_update
    plans = planned_schedules(runs.read_resolved_config(run_dir))
    status = runs.read_status(run_dir)
    try:
        hist = series.load_history(run_dir / runs.HISTORY_DIR)
        actual = {k: v for k, v in hist.curves.items() if k in plans}
    except Exception:
        actual = {}
    return figures.schedule_figure(
        plans,
        actual=actual,
        current_step=status.step if status else None,
        log_y=_log_y(options),
    )


@callback(
    Output("run-download", "data"),
    Input("run-download-history", "n_clicks"),
    Input("run-download-timeline", "n_clicks"),
    State("run-name", "data"),
    prevent_initial_call=True,
)
def _on_download(_h, _t, name):
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return no_update
    from trainer.history import read_table, table_info

    table = "timeline" if ctx.triggered_id == "run-download-timeline" else "history"
    store = run_dir / runs.HISTORY_DIR
    try:
        if table_info(store, table) is None:
            return no_update
        frame = read_table(store, table)
    except (OSError, ValueError):
        # a corrupt table: the curves panel already names the file; offer no download
        return no_update
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return dcc.send_data_frame(frame.to_csv, f"{name}-{table}-{stamp}.csv")
