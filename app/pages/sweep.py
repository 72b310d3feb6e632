"""Sweep page (``/sweep/<sweep_id>``): a hyperparameter sweep's trials side by side.

Shows the sweep's state (running, stopping, finished, stopped, failed and why) and spec, a
parallel-coordinates plot (a line per trial, an axis per swept parameter and the metric),
the metric of every trial against the step on one plot (trials the pruner or a failure
ended dimmed, the best one wide), and a table of the trials sorted by their best metric value
with state, step, values and a link to each run, the best one marked. A CSV button sends
one row per trial; Stop sweep (hidden on a read-only dashboard) stops the whole sweep
through ``app.sweeper.stop_sweep``.

Reads the sweep folder (``trainer.runs.sweeps``) and the trials' run directories only. The
layout carries every figure, built from a full read, so nothing is blank while a callback
runs. Then each ``sweep-interval`` tick follows the sweep with the ``sweep-cursor`` store:
``sweep.json`` and ``trials.json`` are parsed again only when their files changed
(``app.readers.read_json``), a trial whose run had ended when the cursor read it is not
read again, and an open trial's history store gives only the rows added since the last
tick (``app.series.read_new_rows``), appended to its curve with a ``dash.Patch``. Polling
stops once the sweep and all its trials have ended. Ids are prefixed ``sweep-``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
from dash import Input, Output, Patch, State, dcc, html, no_update

from app import changes_runs, components, current_context, inputs, series, sweep_figures
from app.callbacks import callback
from app.components import ROW, empty_state, run_href, state_badge, url_part
from app.readers import read_json, run_summary
from app.security import LaunchError
from app.sweep_figures import TrialRow
from app.sweeper import DamagedSweepError, SweepError, stop_sweep, sweep_folder
from trainer.runs import FINAL_STATES, HISTORY_DIR
from trainer.runs.sweeps import SWEEP_FILE, SWEEP_FINAL_STATES, TRIALS_FILE, TrialsRecord
from trainer.sweeps import best_value

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/sweep/<sweep_id>", "title": "VoxelBoard sweep"}

POLL_MS = 2000
#: a trial's run state after which its files no longer change
ENDED = FINAL_STATES | {"lost"}
#: most points of one trial's curve drawn from a full read
MAX_POINTS = 2000
STOP_REASON = "stopped from the dashboard"
#: height of the two plots, in pixels
GRAPH_HEIGHT = 400
_READ_ONLY = "This dashboard is read-only: it stops no sweep."


@dataclasses.dataclass
class SweepView:
    """What the page shows of a sweep, and how far this browser has read.

    Attributes:
        sweep_id: the sweep.
        record: ``sweep.json``.
        trials: ``trials.json``.
        rows: one ``TrialRow`` per trial, in trial order.
        best: the best run, or ``None``.
        curves: the curves figure (a ``go.Figure`` on a full read, a ``Patch`` or
            ``no_update`` on a poll).
        cursor: the new ``sweep-cursor`` value.
        changed: whether anything the page shows changed since ``cursor`` (a full read:
            always).
        error: what could not be read, or ``''``.
    """

    sweep_id: str
    record: dict
    trials: TrialsRecord
    rows: list[TrialRow]
    best: str | None
    curves: Any
    cursor: dict
    changed: bool
    error: str = ""

    @property
    def spec(self) -> dict:
        spec = self.record.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def metric(self) -> str:
        metric = self.spec.get("metric")
        return metric if isinstance(metric, str) else "valid_loss"

    @property
    def goal(self) -> str:
        return "max" if self.spec.get("goal") == "max" else "min"

    @property
    def parameters(self) -> dict:
        params = self.spec.get("parameters")
        if not isinstance(params, dict):
            return {}
        order = self.spec.get("parameter_order")
        names = [n for n in order if n in params] if isinstance(order, list) else []
        names += [n for n in params if n not in names]  # the section's order, when recorded
        return {
            k: params[k] for k in names if isinstance(params[k], dict) and _valid_param(params[k])
        }

    @property
    def ended(self) -> bool:
        """Nothing will change any more: the sweep ended and so did every trial's run."""
        return self.trials.state in SWEEP_FINAL_STATES and all(r.state in ENDED for r in self.rows)


def _valid_param(p: dict) -> bool:
    if "values" in p:
        return isinstance(p["values"], list)
    ok = all(isinstance(p.get(k), int | float) for k in ("low", "high"))
    return ok and (not p.get("log") or p["low"] > 0)


# ----------------------------------------------------------------------------- reading


def read_view(runs_dir: Path, folder: Path, cursor: Any = None) -> SweepView:
    """The sweep in ``folder`` as the page shows it.

    Args:
        runs_dir: the runs folder (the trials' run directories are in it).
        folder: the sweep's folder (``app.sweeper.sweep_folder``).
        cursor: the ``sweep-cursor`` this browser holds, or ``None`` for a full read. A
            cursor of another sweep, or one that does not fit ``trials.json``, counts as
            ``None``.

    Returns:
        A ``SweepView``; on a poll its ``curves`` holds only what changed.
    """
    record, problem = read_json(folder / SWEEP_FILE)
    record = record or {}
    d, trials_problem = read_json(folder / TRIALS_FILE)
    trials = TrialsRecord.from_json(d) if d else TrialsRecord()
    error = "; ".join(
        f"cannot read {folder.name}/{name}: {p}"
        for name, p in ((SWEEP_FILE, problem), (TRIALS_FILE, trials_problem))
        if p
    )
    spec = record.get("spec") if isinstance(record.get("spec"), dict) else {}
    metric = spec.get("metric") if isinstance(spec.get("metric"), str) else "valid_loss"
    goal = "max" if spec.get("goal") == "max" else "min"
    previous = _fitting_runs(cursor, folder.name, trials)
    poll = previous is not None
    curves, changed = {}, not poll
    fresh: list[dict] = []
    for i, entry in enumerate(trials.trials):
        old = previous[i] if poll and i < len(previous) else None
        state, new, points = _follow_trial(runs_dir, entry.run, metric, goal, old)
        fresh.append(state)
        curves[entry.run] = points
        changed = changed or new
    rows = [
        TrialRow(
            run=e.run,
            number=e.number,
            state=s["state"],
            value=e.value if e.told is not None and e.value is not None else s["best"],
            params=e.params if isinstance(e.params, dict) else {},
            steps=s["steps"],
        )
        for e, s in zip(trials.trials, fresh, strict=True)
    ]
    best = sweep_figures.best_run(rows, goal)
    key = [trials.state, trials.reason, trials.stop_requested, best, error]
    changed = changed or not poll or key != (cursor or {}).get("key")
    if not poll:
        figure = sweep_figures.curves_figure(rows, curves, metric, best)
    elif changed:
        figure = _curves_patch(rows, curves, previous, fresh, best)
    else:
        figure = no_update
    for s, r in zip(fresh, rows, strict=True):
        s["look"] = _look(r, best)
    new_cursor = {"sweep": folder.name, "runs": fresh, "key": key}
    return SweepView(folder.name, record, trials, rows, best, figure, new_cursor, changed, error)


def _fitting_runs(cursor: Any, sweep_id: str, trials: TrialsRecord) -> list[dict] | None:
    """The cursor's per-trial entries if the cursor is this sweep's and fits its trials
    (it comes back from the browser: anything odd means a full read)."""
    if not isinstance(cursor, dict) or cursor.get("sweep") != sweep_id:
        return None
    runs = cursor.get("runs")
    if not isinstance(runs, list) or len(runs) > len(trials.trials):
        return None
    clean = [_entry_of(entry, t.run) for entry, t in zip(runs, trials.trials, strict=False)]
    return None if None in clean else clean


def _entry_of(entry: Any, run: str) -> dict | None:
    """A cursor entry of trial ``run`` with every field of the right type, else ``None``."""
    if not isinstance(entry, dict) or entry.get("run") != run:
        return None
    rows, shown = inputs.integer(entry.get("rows")), inputs.integer(entry.get("shown"))
    steps, best = entry.get("steps"), entry.get("best")
    ok = (
        isinstance(entry.get("state"), str)
        and isinstance(entry.get("done"), bool)
        and isinstance(entry.get("generation"), str | None)
        and rows is not None
        and rows >= 0
        and shown is not None
        and shown >= 0
        and (steps is None or inputs.integer(steps) is not None)
        and (best is None or inputs.number(best) is not None)
    )
    if not ok:
        return None
    return {
        **{k: entry[k] for k in ("run", "state", "done", "generation")},
        "rows": rows,
        "shown": shown,
        "steps": None if steps is None else inputs.integer(steps),
        "best": None if best is None else inputs.number(best),
        "look": entry.get("look"),
    }


def _follow_trial(
    runs_dir: Path, run: str, metric: str, goal: str, old: dict | None
) -> tuple[dict, bool, Any]:
    """One trial's new cursor entry, whether anything changed, and its points: all of them
    (``(x, y)``) without ``old``, the new ones as ``('append', x, y)`` or a full reread as
    ``('replace', x, y)`` with it, ``None`` when nothing is new."""
    if old is not None and old.get("done"):
        return dict(old), False, None
    run_dir = series.run_dir_for(runs_dir, run)
    # status first: rows written before a final status are then read by this same call
    summary = run_summary(run_dir) if run_dir is not None else None
    state = summary["state"] if summary else "queued"
    steps = summary["step"] if summary and state != "queued" else None
    entry = {
        "run": run,
        "state": state,
        "steps": steps,
        "generation": None,
        "rows": 0,
        "shown": 0,
        "best": None,
        "done": state in ENDED,
    }
    if old is not None:
        entry.update(
            generation=old["generation"], rows=old["rows"], shown=old["shown"], best=old["best"]
        )
    store = run_dir / HISTORY_DIR if run_dir is not None else None
    if old is None or store is None:
        return _reread(store, metric, goal, entry, old)
    try:
        new = series.read_new_rows(store, "history", _table_cursor(old))
    except (OSError, ValueError):  # a corrupt store: the run page names it
        return entry, _changed(old, entry), None
    if new.reload and new.generation is None:  # the table is gone
        return entry, _changed(old, entry), None
    if new.reload:
        return _reread(store, metric, goal, entry, old)
    fresh = new.frame.iloc[new.first_new :]
    x, y = _metric(fresh, metric, new.start + new.first_new)
    best = best_value([v for v in (entry["best"], *y.tolist()) if v is not None], goal)
    entry.update(generation=new.generation, rows=new.n_rows, best=best)
    if entry["shown"] + len(x) > 2 * MAX_POINTS:
        return _reread(store, metric, goal, entry, old)
    entry["shown"] += len(x)
    points = ("append", x, y) if len(x) else None
    return entry, bool(len(x)) or _changed(old, entry), points


def _table_cursor(old: dict | None) -> dict:
    if old is None:
        return {"generation": None, "rows": 0}
    return {"generation": old.get("generation"), "rows": int(old["rows"])}


def _changed(old: dict, entry: dict) -> bool:
    return any(old.get(k) != entry[k] for k in ("state", "steps", "best", "done"))


def _reread(
    store: Path | None, metric: str, goal: str, entry: dict, old: dict | None
) -> tuple[dict, bool, Any]:
    """A trial's whole curve (a first read, a table truncated by a resume, or one grown
    past what a curve keeps): every row read, downsampled. A missing or unreadable store
    gives no points (the run page names what is wrong with it)."""
    from trainer.runs.history_store import read_table, table_info

    try:
        info = table_info(store, "history") if store is not None else None
        frame = read_table(store, "history") if info is not None else None
    except (OSError, ValueError):
        info = frame = None
    x, y = _metric(frame, metric, 0)
    idx = series.downsample_indices(y, MAX_POINTS)
    entry.update(
        generation=info.generation if info is not None else None,
        rows=len(frame) if frame is not None else 0,
        shown=len(idx),
        best=best_value(y.tolist(), goal),
    )
    points = (x[idx], y[idx]) if old is None else ("replace", x[idx], y[idx])
    return entry, old is None or len(idx) > 0 or _changed(old, entry), points


def _metric(frame: Any, metric: str, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``metric`` in history rows, non-finite values left out."""
    if frame is None or metric not in frame:
        return np.empty(0), np.empty(0)
    y = frame[metric].to_numpy(dtype=np.float64)
    if "steps" in frame:
        x = frame["steps"].to_numpy()
    else:
        x = np.arange(start, start + len(frame), dtype=np.int64)
    keep = np.isfinite(y)
    return x[keep], y[keep]


def _look(row: TrialRow, best: str | None) -> list:
    style = sweep_figures.curve_style(row.state, row.run == best)
    return [sweep_figures.trace_name(row, row.run == best), *style.values()]


def _curves_patch(
    rows: list[TrialRow], curves: dict, previous: list[dict], fresh: list[dict], best: str | None
) -> Any:
    """Appends new points, adds traces of new trials and restyles traces whose state or
    best mark changed; ``no_update`` when nothing did."""
    p = Patch()
    touched = False
    for i, row in enumerate(rows):
        if i >= len(previous):  # a new trial: its whole trace
            x, y = curves[row.run]
            one = sweep_figures.curves_figure([row], {row.run: (x, y)}, "", best).data[0]
            one.line.color = _colour(i)
            p["data"].append(one.to_plotly_json())
            touched = True
            continue
        points = curves.get(row.run)
        if points is not None and points[0] == "append":
            p["data"][i]["x"].extend(np.asarray(points[1]).tolist())
            p["data"][i]["y"].extend(np.asarray(points[2]).tolist())
            touched = True
        elif points is not None and points[0] == "replace":
            p["data"][i]["x"] = np.asarray(points[1]).tolist()
            p["data"][i]["y"] = np.asarray(points[2]).tolist()
            touched = True
        look = _look(row, best)
        if previous[i].get("look") != look:
            name, opacity, width, dash = look
            p["data"][i]["name"] = name
            p["data"][i]["opacity"] = opacity
            p["data"][i]["line"]["width"] = width
            p["data"][i]["line"]["dash"] = dash
            touched = True
    return p if touched else no_update


def _colour(i: int) -> str:
    import plotly.colors as pcolors

    palette = pcolors.qualitative.Plotly
    return palette[i % len(palette)]


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
    items: list = [badge, html.Span("  ·  ".join(parts), id="sweep-progress")]
    if trials.reason and state != "finished":
        items.append(html.Span(trials.reason, id="sweep-reason", className="vb-error"))
    if view.best:
        items.append(
            html.Span(["best run ", dcc.Link(view.best, href=run_href(view.best))], id="sweep-best")
        )
    return items


def spec_line(view: SweepView) -> str:
    """What was asked: method, runs, metric and goal, pruner, parallel cap, config."""
    spec = view.spec
    if not spec:
        return "sweep.json has no readable spec"
    pruner = "no pruning"
    if spec.get("prune"):
        pruner = (
            f"pruner {spec.get('pruner')} (after {spec.get('warmup_steps', 0)} steps, "
            f"{spec.get('startup_runs', 0)} complete runs first)"
        )
    parts = [
        f"method {spec.get('method')}",
        f"{spec.get('n_runs')} runs",
        f"metric {view.metric} ({view.goal})",
        pruner,
        f"at most {view.record.get('max_parallel', spec.get('max_parallel'))} at once",
        f"config {view.record.get('config', '?')}",
        f"{view.record.get('backend', 'local')} backend",
    ]
    params = ", ".join(_param_text(k, p) for k, p in view.parameters.items())
    return "  ·  ".join(str(p) for p in parts) + (f"  ·  parameters: {params}" if params else "")


def _param_text(name: str, p: dict) -> str:
    if "values" in p:
        return f"{name} in {[sweep_figures.fmt_value(v) for v in p['values']]}".replace("'", "")
    log = ", log" if p.get("log") else ""
    return f"{name} {sweep_figures.fmt_value(p['low'])}..{sweep_figures.fmt_value(p['high'])}{log}"


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
            dcc.Interval(id="sweep-interval", interval=POLL_MS, disabled=view.ended),
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
    d, _problem = read_json(folder / TRIALS_FILE)
    trials = TrialsRecord.from_json(d) if d else TrialsRecord()
    return not (trials.state == "running" and trials.stop_requested is None)


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
