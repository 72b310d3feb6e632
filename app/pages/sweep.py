"""Sweep page (``/sweep/<sweep_id>``): a hyperparameter sweep's trials side by side.

Shows the sweep's state (running, stopping, finished, stopped, failed and why) and spec, a
parallel-coordinates plot (a line per trial, an axis per swept parameter and the metric),
the metric of every trial against the step on one plot (trials the pruner or a failure
ended dimmed, the best one wide), and a table of the trials sorted by their best metric value
with state, step, values and a link to each run, the best one marked. A CSV button sends
one row per trial; Stop sweep (hidden on a read-only dashboard) stops the whole sweep
through ``app.sweeper.stop_sweep``.

What it shows comes from ``app.sweep_view.read_view``. The layout carries every figure,
built from a full read, so nothing is blank while a callback runs. Then each
``sweep-interval`` tick follows the sweep with the ``sweep-cursor`` store (only what changed
is read and sent, as a ``dash.Patch``). Polling stops once the sweep and all its trials
have ended. Ids are prefixed ``sweep-``.
"""

from __future__ import annotations

import math
from typing import Any

from dash import Input, Output, State, dcc, html, no_update

from app import changes_runs, components, current_context, sweep_figures
from app.callbacks import callback
from app.components import ROW, empty_state, run_href, state_badge, url_part
from app.security import LaunchError
from app.sweep_view import ENDED, TRUNCATED, SweepView, read_view, spec_line, stoppable
from app.sweeper import DamagedSweepError, SweepError, stop_sweep, sweep_folder

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/sweep/<sweep_id>", "title": "VoxelBoard sweep"}

STOP_REASON = "stopped from the dashboard"
#: height of the two plots, in pixels
GRAPH_HEIGHT = 400
_READ_ONLY = "This dashboard is read-only: it stops no sweep."


# ------------------------------------------------------------------------------ showing


def header(view: SweepView) -> list:
    """The state badge (``stopping`` while a stop waits for trials), the reason a sweep
    ended other than finished, and what has run so far."""
    trials = view.trials
    state = trials.state
    if state == "running" and trials.stop_requested is not None:
        state = "stopping"
    badge = state_badge(state)
    badge.id = "sweep-state"
    n_runs = view.spec.get("n_runs")
    done = sum(1 for r in view.rows if r.state in ENDED)
    running = sum(1 for r in view.rows if r.state == "running")
    total = f" of {n_runs}" if isinstance(n_runs, int) else ""
    parts = [f"{len(view.rows)}{total} trials started", f"{running} running", f"{done} ended"]
    truncated = sum(1 for r in view.rows if r.state == TRUNCATED)
    if truncated:
        parts.append(f"{truncated} truncated by max_runtime (ranked after full trials)")
    overrides = view.record.get("overrides")
    if isinstance(overrides, dict) and overrides:
        parts.append("every trial: " + ", ".join(f"{k} {v}" for k, v in overrides.items()))
    items: list = [badge, html.Span("  ·  ".join(parts), id="sweep-progress")]
    if trials.reason and state != "finished":
        items.append(html.Span(trials.reason, id="sweep-reason", className="vb-error"))
    if view.best:
        items.append(
            html.Span(["best run ", dcc.Link(view.best, href=run_href(view.best))], id="sweep-best")
        )
    return items


def runs_table(view: SweepView) -> html.Table:
    """The trials sorted by their best value (``sweep_figures.sorted_rows``), the best one
    marked, each run linked to its run page."""
    params = list(view.parameters)
    head = html.Tr(
        # the first column marks the best trial: its header is read, not drawn
        [html.Th(html.Span("best", className="vb-sr-only"))]
        + [html.Th(h) for h in ("run", "trial", "state", view.metric, *params, "step")]
    )
    body = []
    for r in sweep_figures.sorted_rows(view.rows, view.goal):
        is_best = r.run == view.best
        body.append(
            html.Tr(
                [
                    html.Td("best" if is_best else "", className="sweep-best-mark"),
                    html.Td(dcc.Link(r.run, href=run_href(r.run), className="sweep-run-link")),
                    html.Td(str(r.number)),
                    html.Td(state_badge(r.state)),
                    html.Td(
                        sweep_figures.fmt_value(r.value) if r.value is not None else "—",
                        className="sweep-value",
                    ),
                    *(html.Td(sweep_figures.fmt_value(r.params.get(p))) for p in params),
                    html.Td("" if r.steps is None else f"{r.steps:,}"),
                ],
                className="sweep-row sweep-best" if is_best else "sweep-row",
                **{"data-run": r.run},
            )
        )
    return html.Table([html.Thead(head), html.Tbody(body)], className="sweep-table")


def _has_value(view: SweepView) -> bool:
    return any(r.value is not None and math.isfinite(r.value) for r in view.rows)


def _empty_text(view: SweepView) -> str:
    if not view.rows:
        return (
            "No trial has started yet: run.py sweep, or a dashboard that may launch runs on this "
            "runs folder, queues them."
        )
    return (
        f"No trial has a value of {view.metric} yet: each trial's first comes with its first "
        "history row."
    )


def _parcoords(view: SweepView) -> Any:
    return sweep_figures.parcoords_figure(view.parameters, view.rows, view.metric, view.goal)


def _graph(graph_id: str, figure: Any) -> dcc.Graph:
    """A plot that follows its container's width: drawn while hidden behind the empty
    state, it takes its full width once shown (a fixed-size plot would stay at Plotly's
    700 px default)."""
    return dcc.Graph(
        id=graph_id,
        figure=figure,
        responsive=True,
        config={"displaylogo": False},
        # a responsive graph takes its height from its box
        style={"height": f"{GRAPH_HEIGHT}px"},
    )


def not_found(sweep_id: Any, reason: str, title: str = "Sweep not found") -> html.Div:
    """The page body for an address naming no sweep (or one whose ``sweep.json`` is damaged)."""
    return html.Div(
        [
            html.H1(title, className="vb-page-title"),
            html.P(reason, className="vb-error"),
            dcc.Link("Back to the experiments", href="/"),
        ],
        id="sweep-missing",
        style={"padding": "20px"},
    )


def layout(sweep_id: str | None = None, **kwargs: Any) -> html.Div:
    """The sweep page of ``sweep_id``; a clear message if there is no such sweep."""
    c = current_context()
    sweep_id = url_part(sweep_id)
    try:
        folder = sweep_folder(c.runs_dir, sweep_id)
    except SweepError as e:
        damaged = isinstance(e, DamagedSweepError)
        return not_found(sweep_id, str(e)[:300], "Sweep damaged" if damaged else "Sweep not found")
    view = read_view(c.runs_dir, folder)
    stoppable = view.trials.state == "running" and view.trials.stop_requested is None
    actions = [
        components.button("Download CSV", id="sweep-download-csv"),
        dcc.Download(id="sweep-download"),
    ]
    if not c.read_only:
        actions.insert(
            0, components.button("Stop sweep", id="sweep-stop", kind="danger", hidden=not stoppable)
        )
    return html.Div(
        [
            dcc.Store(id="sweep-id", data=view.sweep_id),
            dcc.Store(id="sweep-cursor", data=view.cursor),
            dcc.Interval(
                id="sweep-interval",
                interval=current_context().intervals.live_ms,
                disabled=view.ended,
            ),
            html.Div(
                [
                    html.H1(f"Sweep {view.sweep_id}", className="vb-page-title sweep-title"),
                    html.Div(header(view), id="sweep-header", style=ROW),
                    dcc.Link("all runs", href="/"),
                ],
                style=ROW,
            ),
            html.P(spec_line(view), id="sweep-spec", className="vb-muted"),
            components.controls(*actions),
            html.Div(id="sweep-msg", className="vb-msg"),
            html.Div(view.error, id="sweep-error", className="vb-error"),
            html.Div(
                [
                    # the sentence stands in for the plots (not the table) until a value comes
                    empty_state(
                        _empty_text(view),
                        "sweep-empty",
                        hidden=_has_value(view),
                        replaces_rest=True,
                    ),
                    html.Div(
                        [
                            html.Div(
                                _graph("sweep-parcoords", _parcoords(view)),
                                className="sweep-panel",
                            ),
                            html.Div(
                                _graph("sweep-curves", view.curves),
                                className="sweep-panel",
                            ),
                        ],
                        style=ROW,
                    ),
                ]
            ),
            html.Div(runs_table(view), id="sweep-table", className="sweep-table-box"),
        ],
        className="sweep-page",
    )


# ---------------------------------------------------------------------------- callbacks


@callback(
    Output("sweep-curves", "figure"),
    Output("sweep-parcoords", "figure"),
    Output("sweep-table", "children"),
    Output("sweep-header", "children"),
    Output("sweep-empty", "hidden"),
    Output("sweep-empty", "children"),
    Output("sweep-error", "children"),
    Output("sweep-cursor", "data"),
    Output("sweep-interval", "disabled"),
    Input("sweep-interval", "n_intervals"),
    State("sweep-cursor", "data"),
    State("sweep-id", "data"),
    prevent_initial_call=True,  # the layout carries the first figures and their cursor
)
def _on_poll(_tick, cursor, sweep_id):
    c = current_context()
    sweep_id = url_part(sweep_id)
    try:
        folder = sweep_folder(c.runs_dir, sweep_id)
    except SweepError as e:
        return (*[no_update] * 6, str(e)[:300], no_update, True)
    view = read_view(c.runs_dir, folder, cursor)
    if not view.changed:
        same = view.cursor == cursor
        return (*[no_update] * 7, no_update if same else view.cursor, view.ended)
    empty = empty_state(_empty_text(view), "sweep-empty-inner").children
    return (
        view.curves,
        _parcoords(view),
        runs_table(view),
        header(view),
        _has_value(view),
        empty,
        view.error,
        view.cursor,
        view.ended,
    )


@callback(
    Output("sweep-stop", "hidden"),
    Input("sweep-cursor", "data"),
    State("sweep-id", "data"),
    prevent_initial_call=True,
)
def _on_stoppable(_cursor, sweep_id):
    """Stop sweep shows while the sweep runs and no stop was asked for."""
    c = current_context()
    if c.read_only:
        return True
    try:
        folder = sweep_folder(c.runs_dir, sweep_id)
    except SweepError:
        return True
    return not stoppable(folder)


@callback(
    Output("sweep-msg", "children"),
    Output("sweep-interval", "disabled", allow_duplicate=True),
    Input("sweep-stop", "n_clicks"),
    State("sweep-id", "data"),
    prevent_initial_call=True,
)
@changes_runs
def stop(_clicks, sweep_id):
    c = current_context()
    if c.read_only:
        return html.Span(_READ_ONLY, className="vb-error"), no_update
    try:
        folder = sweep_folder(c.runs_dir, sweep_id)
    except SweepError as e:
        return html.Span(str(e)[:300], className="vb-error"), no_update
    try:
        asked = stop_sweep(c.launcher, folder, STOP_REASON)
    except (LaunchError, OSError, SweepError) as e:
        return html.Span(f"Not stopped: {e}", className="vb-error"), no_update
    text = (
        f"Stopping the sweep: {len(asked)} trial(s) asked to stop ({', '.join(asked)})."
        if asked
        else "Stopping the sweep: no trial was queued or running."
    )
    # polling resumes so the page follows the trials to their end
    return html.Span(text, className="vb-ok"), False


@callback(
    Output("sweep-download", "data"),
    Input("sweep-download-csv", "n_clicks"),
    State("sweep-id", "data"),
    prevent_initial_call=True,
)
def download_csv(_clicks, sweep_id):
    c = current_context()
    sweep_id = url_part(sweep_id)
    try:
        folder = sweep_folder(c.runs_dir, sweep_id)
    except SweepError:
        return no_update
    view = read_view(c.runs_dir, folder)
    text = sweep_figures.csv_text(view.rows, list(view.parameters))
    return dcc.send_string(text, f"{view.sweep_id}-trials.csv")
