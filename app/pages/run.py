"""Run page (``/run/<name>``): live curves of one run's history store.

Reads the run directory only, through its view model ``app.run_view``. The layout carries
every figure of the first update (``run_view.first_view``), so the curves are drawn with the
page's first response; after that each ``run-interval`` tick sends only the points added
since the last tick, as ``dash.Patch`` appends (``run_view.update_curves``), until the run's
state is final. Zoom and pan survive updates through ``uirevision``.

Optional panels (the validation neurons' adapted Rand error, per-class metrics, the
``regression`` table's predicted-vs-true scatter) are shown only for runs that write their
data; a hidden panel holds an empty figure in the first response, so the browser draws only
what is shown. A history store that cannot be read shows one sentence naming the file in
place of the curves, and the compare panel names the runs it cannot read.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from dash import Input, Output, State, ctx, dcc, html, no_update

from app import components, current_context, figures, inputs, series
from app import run_view as rv
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
from app.jobs_view import has_jobs
from trainer.class_metrics import CLASS_METRIC_RE

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/run/<name>", "title": "VoxelBoard run"}


#: what a hidden panel's graph holds in the page's first response: nothing for plotly.js to
#: draw (no axes), where its full figure would cost drawing time before the first curves
_NOTHING = {"data": [], "layout": {"height": 320, "xaxis": {"visible": False},
                                   "yaxis": {"visible": False}}}  # fmt: skip


def _jobs_link(name: str, run_dir: Any) -> list:
    """A link to the run's predict and segment jobs: where it has any, or where the page
    may start one."""
    if current_context().read_only and not has_jobs(run_dir):
        return []
    return [dcc.Link("jobs", href=f"/jobs?run={quote(name, safe='')}", id="run-jobs-link")]


def layout(name: str | None = None, **kwargs: Any) -> html.Div:
    """The run page of run ``name``; a clear message if there is no such run."""
    name = url_part(name)
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return run_not_found(name, "run-missing")
    every = current_context().intervals
    first = rv.first_view(root, run_dir, every)
    figs = first.get("figures", {})
    has_history = _has_rows(first.get("cursor"), "history")
    has_timeline = _has_rows(first.get("cursor"), "timeline")
    failed = bool(first.get("error"))
    return html.Div(
        [
            dcc.Store(id="run-name", data=name),
            dcc.Store(id="run-cursor", data=first.get("cursor")),
            dcc.Store(id="run-compare-sig", data=first.get("compare_sig")),
            dcc.Interval(
                id="run-interval",
                interval=first.get("poll_ms", every.live_ms),
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
                    *_jobs_link(name, run_dir),
                    dcc.Link("all runs", href="/"),
                ],
                style=ROW,
            ),
            _controls(),
            html.Div(first.get("error", ""), id="run-error", style={"color": "var(--vb-danger)"}),
            # a failed run: what happened, why, what to do, where the waiting sentence was
            html.Div(
                first.get("failure"),
                id="run-failure",
                className="vb-failure",
                hidden=not first.get("failure"),
            ),
            empty_state(
                rv.waiting_text(run_dir),
                "run-waiting",
                dcc.Link("see the log on the experiments page", href="/", className="vb-link"),
                hidden=has_history or failed or bool(first.get("failure")),
            ),
            html.Div(
                [
                    html.Div(
                        graph("run-graph-timeline", figure=figs.get("timeline")),
                        id="run-timeline-panel",
                        style=rv.SHOWN,
                        hidden=failed or not has_timeline,
                    ),
                    html.Div(
                        [
                            html.Div(
                                graph(f"run-graph-{k}", figure=_shown_figure(first, k)),
                                id=f"run-{k}-panel",
                                style=first.get(f"{k}_style", rv.HIDDEN)
                                if k in figures.OPTIONAL_PANELS
                                else rv.SHOWN,
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
                        style=first.get("classes_style", rv.HIDDEN),
                    ),
                    _compare_panel(
                        rv.other_runs(root, name),
                        rv.compare_columns(run_dir),
                        figs.get("compare"),
                        hidden=not has_history or failed,
                    ),
                    html.Div(graph("run-graph-schedule"), style=rv.SHOWN),
                    html.Div(
                        graph("run-graph-regression", figure=_shown_figure(first, "regression")),
                        id="run-regression-panel",
                        style=first.get("regression_style", rv.HIDDEN),
                    ),
                ],
                style=ROW,
            ),
        ],
        style={"padding": "10px 16px"},
    )


def _controls() -> html.Div:
    """The curve controls (smoothing, EMA weight, window, x axis, log y) and the downloads."""
    return components.controls(
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


def _compare_panel(
    others: list[str], columns: list[str], figure: Any, hidden: bool = False
) -> html.Div:
    """The compare panel: runs and a column to draw beside this run's, and its figure;
    hidden while the run has no history row (no empty frame)."""
    return html.Div(
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
                            {"label": figures.COLUMN_LABELS.get(c, c), "value": c} for c in columns
                        ],
                        value="valid_loss",
                        clearable=False,
                        style={"width": "180px"},
                    ),
                    components.screen_reader_label("Column to compare", "run-compare-column"),
                ],
                style=ROW,
            ),
            graph("run-graph-compare", figure=figure),
        ],
        id="run-compare-panel",
        style=rv.SHOWN,
        hidden=hidden,
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


# the per-step loss panel appears with the first timeline row a poll brings, the history
# panels with the first history row; while the history cannot be read, the error sentence
# stands alone (no empty frames, no waiting sentence)
clientside_callback(
    """function (cursor, error, failure) {
        const rows = t => !!(cursor && cursor[t] && typeof cursor[t].rows === "number"
                             && cursor[t].rows > 0);
        const has = rows("history");
        const failed = !!error;
        const gone = !!(failure && failure.length);  // a failed run says so instead of waiting
        return [has || failed || gone, !has || failed, failed || !rows("timeline"),
                !has || failed];
    }""",
    Output("run-waiting", "hidden"),
    Output("run-history-panels", "hidden"),
    Output("run-timeline-panel", "hidden"),
    Output("run-compare-panel", "hidden"),
    Input("run-cursor", "data"),
    Input("run-error", "children"),
    Input("run-failure", "children"),
)


# --------------------------------------------------------------------------- status header


# ----------------------------------------------------------------------------- curves


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
    Output("run-failure", "children"),
    Output("run-failure", "hidden"),
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
        gone = f"run {name!r} is gone from the runs directory"
        return (*[no_update] * 13, True, no_update, gone, no_update, no_update)
    smooth, x, log_y = rv.curve_settings(smoothing, weight, window, options, x_axis)
    poll = (
        ctx.triggered_id == "run-interval"
        and isinstance(cursor, dict)
        and cursor.get("run") == name
    )
    u = rv.read_curves(run_dir, cursor, smoothing=smooth, x_axis=x, log_y=log_y, poll=poll,
                       every=current_context().intervals)  # fmt: skip
    if "unreadable" in u:
        failure = (u["failure"], not u["failure"])
        return (*[no_update] * 12, u["header"], u["stop"], u["poll_ms"], u["unreadable"], *failure)
    figs = [u[k] for k in ("timeline", "loss", "error", "lr", "gain", "are", "are_style")]
    figs += [u["classes"], u["classes_style"]]
    figs += [u["regression"], u["regression_style"]]
    return (*figs, u["cursor"], u["header"], u["stop"], u["poll_ms"], "", u["failure"],
            not u["failure"])  # fmt: skip


# ---------------------------------------------------------------------- compare, schedules


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
            column, (*rv.COMPARE_COLUMNS, *series.OPTIONAL_HISTORY_COLUMNS), "valid_loss"
        )
    x_axis = inputs.choice(x_axis, series.X_AXES, "step")
    others = inputs.strings(others)
    # a tick redraws only when a compared run has new history rows
    previous = previous if ctx.triggered_id == "run-interval" else None
    return rv.compare_update(root, name, others, column, x_axis, rv.wants_log_y(options), previous)


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
    return rv.schedule_view(run_dir, rv.wants_log_y(options))


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
    table = "timeline" if ctx.triggered_id == "run-download-timeline" else "history"
    frame = rv.history_table(run_dir, table)
    if frame is None:  # none, or a corrupt table the curves panel already names
        return no_update
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return dcc.send_data_frame(frame.to_csv, f"{name}-{table}-{stamp}.csv")
