"""Evaluation page (``/run/<name>/evaluation``): threshold tuning on a run's evaluation results.

Picks a result file (``eval/<name>.h5``, written by ``trainer.evaluation``) and a split, and shows
ROC and PR curves, the metrics table, the confusion heatmap, metric-vs-threshold curves, the
error histogram and a thresholded segmentation slice, all at one threshold.

Speed: the layout carries the newest result's ``eval-data`` store (the split's cumulative
counts) and its figures, so the page draws with its first response (``first_view``); the
loading callbacks only answer changes. Moving the threshold runs one clientside callback
(``assets/evaluation.js``) that computes the metrics, fills the table and moves the figure
markers in place. The server is asked by one callback per step, with at most one request in
flight (``eval-t-server`` / ``eval-t-answered``): the segmentation plane (one plane of a cached
probability volume, patched into the drawn figure; the evaluation is never recomputed) and, for
a result evaluated with ``--instances``, the "Neurons" panel's exact scores at the threshold
(``app.neurons_view``: threshold -> components -> scores of the chosen cube, tens of ms), its
curves and the instance colouring of the segmentation view (``app.neuron_figures``). Segmenting
holds one of the dashboard's few segmentation slots (``app.limits.segmentations``): a step that
finds them all taken by other pages is answered "busy" at once, its figure kept.

A result that cannot be shown (a file that cannot be read, a missing split, a single class)
shows its message in place of the figures and threshold controls, with the Evaluate button
and the result and split choices above it. Every ``panel_ms`` (``app.refresh``: 2.5 times the
dashboard's ``--refresh``) the page lists the run's result files and their modification stamps
(``_on_poll``: no file opened): a result written from a shell (``python run.py evaluate``) joins the results choice, is shown if there was none, and
the shown result is loaded again when rewritten; nothing else moves the threshold.

"Evaluate" runs ``trainer.evaluation.evaluate_run`` as a Dash background callback (a process
managed by a ``DiskcacheManager``, with progress and cancel): one prediction pass writes the
result file and the probability cache the segmentation view reads. The dashboard process never
predicts and never imports torch; only the background job does.

The page's view models are ``app.evaluation_view`` (results, first view, figures, saving) and
``app.segmentation_view`` (the segmentation view and the Neurons panel), its layout pieces
``app.evaluation_layout``, its figures ``app.evaluation_figures``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import flask
import plotly.graph_objects as go
from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from app import changes_runs, current_context, inputs, limits, series
from app import evaluation_figures as ef
from app import evaluation_layout as el
from app import evaluation_view as ev
from app import neurons_view as nv
from app import segmentation_view as sv
from app import viewer as vw
from app.callbacks import callback, clientside_callback
from app.components import (
    ROW,
    empty_state,
    neuroglancer_link,
    run_href,
    run_not_found,
    url_part,
)
from trainer.metrics import MODES

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/run/<name>/evaluation", "title": "VoxelBoard evaluation"}


def layout(name: str | None = None, **kwargs: Any) -> html.Div:
    """The evaluation page of run ``name``; a clear message if there is no such run."""
    name = url_part(name)
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return run_not_found(name, "eval-missing")
    stamps = ev.result_stamps(run_dir)
    results = [result for result, *_stamps in stamps]
    first = ev.first_view(run_dir, results)
    # a read-only dashboard evaluates, predicts and saves nothing: those controls stay hidden
    # (and app._check_callback_request refuses their callbacks)
    read_only = current_context().read_only
    seg = (
        sv.seg_meta(run_dir, first["result"], None, None, read_only)
        if "store" in first
        else sv.NO_SEG
    )
    return html.Div(
        [
            dcc.Store(id="eval-run", data=name),
            dcc.Store(id="eval-data", data=first.get("store")),
            dcc.Store(id="eval-t"),
            # the threshold the server was asked for, and its answers (assets/evaluation.js
            # keeps one such request in flight)
            dcc.Store(id="eval-t-server"),
            dcc.Store(id="eval-t-answered"),
            dcc.Store(id="eval-done"),
            dcc.Store(id="eval-seg-ready"),
            # the result files as last seen, and which shown result a shell rewrote
            dcc.Store(id="eval-files", data=stamps),
            dcc.Store(id="eval-rewritten"),
            # how often the page looks for new or rewritten result files (a listing and a
            # stat per file)
            dcc.Interval(id="eval-poll", interval=current_context().intervals.panel_ms),
            dcc.Store(id="eval-seg-drawn"),
            # this page load's id: its segmentation requests wait for each other, newest first
            # (app.limits.ComputeSlots)
            dcc.Store(id="eval-client", data=uuid.uuid4().hex),
            html.Div(
                [
                    html.H1(f"{name}: evaluation", className="vb-page-title"),
                    dcc.Link("curves", href=run_href(name)),
                    dcc.Link("previews", href=run_href(name, "/preview")),
                    dcc.Link("all runs", href="/"),
                ],
                style=ROW,
            ),
            el.result_row(results, first),
            el.evaluate_panel(ev.snapshot_options(run_dir), read_only),
            html.Div(id="eval-bg-msg", style=el.ERROR),
            html.Div(first.get("message", ""), id="eval-message", style=el.ERROR),
            empty_state(
                el.no_result_text(read_only), "eval-empty", hidden=bool(results), replaces_rest=True
            ),
            # a result or split that cannot be shown (unreadable, missing, one class): its
            # message instead of empty frames and controls
            empty_state(
                first.get("no_view", ""),
                "eval-no-view",
                hidden="no_view" not in first,
                replaces_rest=True,
            ),
            el.threshold_row(),
            el.presets_row(),
            el.figures_row(first.get("figures", {}), seg),
            *([neuroglancer_link("eval")] if current_context().viewer_host else []),
            el.compare_panel(ev.compare_options(root)),
            el.actions(read_only),
            html.Pre(id="eval-metrics-json", style={"display": "none"}),
        ],
        style={"padding": "10px 16px"},
    )


def _run_dir(name: Any) -> Path | None:
    return series.run_dir_for(series.app_runs_dir(), name)


# ---------------------------------------------------------------------------------- callbacks


@callback(
    Output("eval-result", "options"),
    Output("eval-result", "value"),
    Output("eval-result", "disabled"),
    Output("eval-message", "children", allow_duplicate=True),
    Output("eval-empty", "hidden"),
    Input("eval-run", "data"),
    Input("eval-done", "data"),
    Input("eval-files", "data"),
    State("eval-result", "value"),
    prevent_initial_call=True,  # the layout lists the results (ev.first_view)
)
def _on_results(name, done, _files, current):
    """The results choice: after an evaluation its result, after a change on disk the result
    shown (left alone, so a threshold being tuned stays), else the newest."""
    run_dir = _run_dir(name)
    if run_dir is None:
        return [], None, True, f"run {name!r} is gone from the runs directory", no_update
    names = ev.list_results(run_dir)
    if not names:  # the empty state says what to do instead of empty frames
        return [], None, True, "", False
    if "eval-done.data" in ctx.triggered_prop_ids:  # with a new listing too, often
        wanted = done.get("result") if isinstance(done, dict) else None
        return names, wanted if wanted in names else names[0], False, no_update, True
    return names, no_update if current in names else names[0], False, no_update, True


@callback(
    Output("eval-files", "data"),
    Output("eval-rewritten", "data"),
    Output("eval-seg-ready", "data", allow_duplicate=True),
    Input("eval-poll", "n_intervals"),
    Input("eval-done", "data"),
    State("eval-run", "data"),
    State("eval-result", "value"),
    State("eval-files", "data"),
    prevent_initial_call=True,
)
def _on_poll(_tick, _done, name, shown, known):
    """Result files written or rewritten from outside the page (``python run.py evaluate``):
    a listing and a stat per file every ``panel_ms`` (``app.refresh``), nothing more when nothing changed. A new
    listing updates the results choice (``_on_results``); a rewritten shown result is loaded
    again, its rewritten probability cache only redraws the segmentation view."""
    run_dir = _run_dir(name)
    if run_dir is None:
        return no_update, no_update, no_update
    files = ev.result_stamps(run_dir)
    if files == known:
        return no_update, no_update, no_update
    if "eval-done.data" in ctx.triggered_prop_ids:  # the page's own evaluation loads its result
        return files, no_update, no_update
    before, after = ev.stamps_of(known, shown), ev.stamps_of(files, shown)
    if before is None or after is None or before == after:
        return files, no_update, no_update
    signal = {"result": shown, "t": time.time()}
    return files, signal if before[0] != after[0] else no_update, signal


@callback(
    Output("eval-data", "data"),
    Output("eval-roc", "figure"),
    Output("eval-pr", "figure"),
    Output("eval-confusion", "figure"),
    Output("eval-curves", "figure"),
    Output("eval-hist", "figure"),
    Output("eval-message", "children"),
    Output("eval-summary", "children"),
    Output("eval-no-view", "children"),
    Output("eval-no-view", "hidden"),
    Input("eval-result", "value"),
    Input("eval-split", "value"),
    Input("eval-compare", "value"),
    Input("eval-hist-log", "value"),
    Input("eval-done", "data"),
    Input("eval-rewritten", "data"),
    State("eval-t", "data"),
    State("eval-run", "data"),
    prevent_initial_call=True,  # the layout carries the first result's store and figures
)
def _on_load(result, split, compare, hist_log, _done, rewritten, t, name):
    run_dir = _run_dir(name)
    if run_dir is None or not result:
        return (None, *[no_update] * 5, no_update, "", no_update, True)
    triggered = {p.split(".")[0] for p in ctx.triggered_prop_ids}
    if triggered == {"eval-rewritten"} and not _about(rewritten, result):
        return (no_update,) * 10  # a result no longer shown was rewritten
    split = ev.split_of(split)
    # a new store moves the browser's threshold to the result's own: only for new data
    reload = not triggered or bool(triggered & _NEW_DATA)
    try:
        view = ev.load_view(run_dir, result, split)
        data = ev.browser_view(view) if reload else no_update
    except ev.ResultViewError as e:
        empty = go.Figure(layout={"height": 380})
        figs = (empty, empty, go.Figure(layout={"height": 300}), empty, empty)
        # unreadable, no such split, a single class: the message instead of empty frames
        return (None, *figs, "", "", el.no_view_text(str(e)), False)
    threshold = ev.start_threshold(None if reload else t, view)
    log_y = "log" in inputs.strings(hist_log)
    figs = ev.build_figures(
        view, threshold, ev.compare_curves(series.app_runs_dir(), compare), log_y
    )
    return (
        data,
        figs["roc"],
        figs["pr"],
        figs["confusion"],
        figs["curves"],
        figs["hist"],
        "",
        ev.summary(view),
        no_update,
        True,
    )


#: the inputs of ``_on_load`` that bring a result's data anew (the others redraw figures)
_NEW_DATA = {"eval-result", "eval-split", "eval-done", "eval-rewritten"}


def _about(signal: Any, result: str) -> bool:
    """Whether ``signal`` (an ``eval-rewritten`` or ``eval-done`` value) is about ``result``."""
    return isinstance(signal, dict) and signal.get("result") == result


clientside_callback(
    ClientsideFunction(namespace="vbEval", function_name="onThreshold"),
    Output("eval-t", "data"),
    Output("eval-slider", "value"),
    Output("eval-t-input", "value"),
    Output("eval-t-label", "children"),
    Output("eval-preset-msg", "children"),
    Output("eval-metrics-json", "children"),
    Output("eval-label-fbeta", "children"),
    *[Output(f"eval-cell-{key}", "children") for key, _label in ev.METRIC_ROWS],
    Output("eval-t-server", "data"),
    Input("eval-slider", "value"),
    Input("eval-t-input", "value"),
    Input("eval-roc", "clickData"),
    Input("eval-pr", "clickData"),
    *[Input(f"eval-preset-{p}", "n_clicks") for p in el.PRESET_BUTTONS],
    Input("eval-beta", "value"),
    Input("eval-data", "data"),
    State("eval-t", "data"),
    State("eval-target", "value"),
)
clientside_callback(
    ClientsideFunction(namespace="vbEval", function_name="onAnswer"),
    Input("eval-t-answered", "data"),
    prevent_initial_call=True,
)


# ------------------------------------------------------------------------ segmentation view


@callback(
    Output("eval-seg-cube", "options"),
    Output("eval-seg-cube", "value"),
    Output("eval-seg-z", "max"),
    Output("eval-seg-z", "value"),
    Output("eval-seg-z", "marks"),
    Output("eval-seg-msg", "children"),
    Output("eval-seg-predict", "style"),
    Input("eval-result", "value"),
    Input("eval-seg-ready", "data"),
    State("eval-seg-cube", "value"),
    State("eval-seg-z", "value"),
    State("eval-run", "data"),
    prevent_initial_call=True,  # the layout carries the first result's (ev.first_view)
)
def _on_seg_meta(result, _ready, cube, z, name):
    run_dir = _run_dir(name)
    if run_dir is None or not result:
        return sv.NO_SEG
    return sv.seg_meta(run_dir, result, cube, z, current_context().read_only)


#: the inputs that change only the segmentation plane, not the Neurons panel's scores
_PLANE_ONLY = {"eval-seg-z.value", "eval-seg-colour.value"}
_N_NEURON_OUTPUTS = 4 + len(nv.SCORE_ROWS)


@callback(
    Output("eval-seg", "figure"),
    Output("eval-seg-drawn", "data"),
    Output("eval-seg-msg", "children", allow_duplicate=True),
    Output("eval-neurons", "figure"),
    Output("eval-neuron-drawn", "data"),
    Output("eval-neuron-msg", "children"),
    Output("eval-neuron-scores-t", "children"),
    *[Output(f"eval-neuron-{key}", "children") for key, _label in nv.SCORE_ROWS],
    Output("eval-t-answered", "data"),
    Input("eval-t-server", "data"),
    Input("eval-seg-z", "value"),
    Input("eval-seg-cube", "value"),
    Input("eval-seg-colour", "value"),
    State("eval-result", "value"),
    State("eval-run", "data"),
    State("eval-seg-drawn", "data"),
    State("eval-neuron-drawn", "data"),
    State("eval-client", "data"),
    prevent_initial_call=True,
)
def _on_plane_and_scores(t, z, cube, colour, result, name, seg_drawn, neuron_drawn, client):
    """One request per threshold step for everything the server draws: the segmentation plane
    and the Neurons panel's exact scores, from one segmentation of the cube (two callbacks
    were two requests competing for the same two cores, and segmented the cube twice in
    instance colours). A drawn figure gets a ``dash.Patch`` (the plane's PNG, its legend and
    title) or nothing (the neuron curves: the browser moves their threshold line).

    Segmenting holds one of the app's segmentation slots (``app.limits.segmentations``): with
    every slot taken by other pages the answer is a "busy" message under the figure, which
    stays as drawn; a request of this page that a newer one overtook while it waited draws
    nothing."""
    answered = time.time()  # every answer, even "nothing to draw", lets the next one go
    t = inputs.number(t, lo=0.0, hi=1.0)
    nothing = [no_update] * (3 + _N_NEURON_OUTPUTS) + [answered]
    if not result or not cube or t is None:
        return nothing
    z = inputs.integer(z, lo=0) or 0
    instances = colour == "instances"
    triggered = set(ctx.triggered_prop_ids)
    scores = not triggered or not triggered <= _PLANE_ONLY
    if not scores and not instances:  # one plane read: no segmentation, no slot
        run_dir = _run_dir(name)
        if run_dir is None:
            return nothing
        plane = sv.plane_outputs(run_dir, result, cube, z, t, False, None, None, seg_drawn)
        return [*plane, *[no_update] * _N_NEURON_OUTPUTS, answered]
    try:  # the slot first: a busy answer costs no look-up on disk
        with limits.segmentations(flask.current_app.config).hold(_client_id(client)):
            run_dir = _run_dir(name)
            if run_dir is None:
                return nothing
            segmented, error = sv.segment(run_dir, result, cube, t)
            plane = sv.plane_outputs(
                run_dir, result, cube, z, t, instances, segmented, error, seg_drawn
            )
    except limits.Superseded:
        return nothing
    except limits.Busy as e:
        return [no_update, no_update, str(e), *[no_update] * _N_NEURON_OUTPUTS, answered]
    if not scores:
        return [*plane, *[no_update] * _N_NEURON_OUTPUTS, answered]
    return [*plane, *sv.neuron_outputs(result, cube, t, segmented, error, neuron_drawn), answered]


def _client_id(sent: object) -> str:
    """The page's ``eval-client`` id, or ``addr:`` and the peer's address for a request
    without one (an id never has a colon)."""
    if isinstance(sent, str) and 0 < len(sent) <= 64 and ":" not in sent:
        return sent
    return f"addr:{flask.request.remote_addr}"


@callback(
    Output("eval-neuron-ws-head", "children"),
    *[Output(f"eval-neuron-ws-{key}", "children") for key, _label in nv.SCORE_ROWS],
    Input("eval-seg-cube", "value"),
    Input("eval-result", "value"),
    Input("eval-done", "data"),
    State("eval-run", "data"),
)
def _on_watershed(cube, result, _done, name):
    return nv.watershed_outputs(_run_dir(name), result, cube)


@callback(
    Output("eval-t-input", "value", allow_duplicate=True),
    Input("eval-neuron-best-voi", "n_clicks"),
    Input("eval-neuron-best-are", "n_clicks"),
    State("eval-seg-cube", "value"),
    State("eval-result", "value"),
    State("eval-run", "data"),
    prevent_initial_call=True,
)
def _on_neuron_preset(_voi, _are, cube, result, name):
    run_dir = _run_dir(name)
    if run_dir is None or not result or not cube:
        return no_update
    are = ctx.triggered_id == "eval-neuron-best-are"
    value = sv.neuron_threshold(
        run_dir, result, cube, "best_are_threshold" if are else "best_voi_threshold"
    )
    return no_update if value is None else value


# --------------------------------------------------------------------------------- evaluate


@callback(
    Output("eval-done", "data"),
    Output("eval-seg-ready", "data"),
    Output("eval-bg-msg", "children"),
    Input("eval-run-button", "n_clicks"),
    Input("eval-seg-predict", "n_clicks"),
    State("eval-run", "data"),
    State("eval-snapshot", "value"),
    State("eval-mode", "value"),
    State("eval-result", "value"),
    background=True,
    interval=500,  # ms between the browser's progress polls
    progress=[
        Output("eval-progress", "value"),
        Output("eval-progress", "max"),
        Output("eval-progress-text", "children"),
    ],
    running=[
        (Output("eval-run-button", "disabled"), True, False),
        (Output("eval-seg-predict", "disabled"), True, False),
        (Output("eval-cancel", "disabled"), False, True),
    ],
    cancel=[Input("eval-cancel", "n_clicks")],
    prevent_initial_call=True,
)
@changes_runs
def _on_evaluate(set_progress, _run, _predict, name, snapshot, mode, result):
    run_dir = _run_dir(name)
    if run_dir is None:
        return no_update, no_update, f"run {name!r} is gone from the runs directory"
    c = current_context()
    try:
        # the job runs in its own process, outside the request: confine its reads here too
        with (
            c.reading(),
            limits.job_slot(c.jobs_dir, run_dir.name, limits.MAX_EVALUATIONS, "evaluation"),
        ):
            if ctx.triggered_id == "eval-seg-predict":
                return _evaluate_again(run_dir, result, c.data_dir, set_progress)
            return _evaluate(run_dir, snapshot, mode, c.data_dir, set_progress)
    except limits.Busy as e:
        return no_update, no_update, str(e)
    except Exception as e:  # shown on the page; a traceback would help no user here
        set_progress(("0", "1", "failed"))
        return no_update, no_update, f"evaluation failed: {type(e).__name__}: {e}"


def _on_cube(set_progress):
    def on_cube(split: str, done: int, total: int) -> None:
        set_progress((str(done), str(total + 1), f"{split}: cube {done}/{total}"))

    return on_cube


def _evaluate_again(run_dir: Path, result: Any, data_dir: Path, set_progress) -> tuple:
    """A result written before probability caches existed: evaluate it again as it was made
    (this job's process imports torch, the dashboard's never does)."""
    if not result:
        return no_update, no_update, "evaluate the run first"
    ev.result_file(run_dir, result)  # a refused name fails here, before any work
    set_progress(("0", "1", "loading the model and the cubes ..."))
    from trainer.evaluation import evaluate_again

    evaluate_again(run_dir, result, progress=_on_cube(set_progress), data_dir=data_dir)
    set_progress(("1", "1", "done"))
    return {"result": result, "t": time.time()}, {"result": result, "t": time.time()}, ""


def _evaluate(run_dir: Path, snapshot: Any, mode: Any, data_dir: Path, set_progress) -> tuple:
    try:
        snap = ev.snapshot_file(run_dir, snapshot) if snapshot else None
    except ev.ResultViewError as e:
        return no_update, no_update, str(e)
    mode = inputs.choice(mode, MODES, "binned")
    set_progress(("0", "1", "loading the model and the cubes ..."))
    from trainer.evaluation import default_snapshot, evaluate_run  # torch, in this job only

    # chosen once: a running trainer keeps replacing LAST.pt and writing step-N.pt
    snap = snap or default_snapshot(run_dir)
    if snap is None:
        return no_update, no_update, f"{run_dir.name} has no snapshot to evaluate yet"
    # one pass: the result file and the probability cache of the segmentation view; the
    # neurons too where the config names them, as `run.py evaluate --instances`
    name, instances = nv.evaluation_plan(run_dir, snap.stem)
    evaluate_run(run_dir, snap, "valid", mode, name=name, instances=instances,
                 progress=_on_cube(set_progress), data_dir=data_dir)  # fmt: skip
    set_progress(("1", "1", "done"))
    return {"result": name, "t": time.time()}, {"result": name, "t": time.time()}, ""


# ------------------------------------------------------------------------ save and download


@callback(
    Output("eval-save-msg", "children"),
    Input("eval-save", "n_clicks"),
    State("eval-run", "data"),
    State("eval-result", "value"),
    State("eval-split", "value"),
    State("eval-t", "data"),
    State("eval-beta", "value"),
    State("eval-preset-msg", "children"),
    prevent_initial_call=True,
)
@changes_runs
def _on_save(_n, name, result, split, t, beta, how):
    run_dir = _run_dir(name)
    try:
        m = ev.current_metrics(run_dir, result, split, t, beta)
    except ev.ResultViewError as e:
        return str(e)
    if run_dir is None or m is None:
        return "nothing to save: load a result first"
    how = inputs.text(how) or "manual"
    split = ev.split_of(split)
    record = ev.threshold_record(m, run=name, result=result, split=split, method=how[:200])
    return ev.save_threshold(run_dir, record)


@callback(
    Output("eval-download-csv", "data"),
    Input("eval-csv", "n_clicks"),
    State("eval-run", "data"),
    State("eval-result", "value"),
    State("eval-split", "value"),
    State("eval-t", "data"),
    State("eval-beta", "value"),
    prevent_initial_call=True,
)
def _on_csv(_n, name, result, split, t, beta):
    try:
        m = ev.current_metrics(_run_dir(name), result, split, t, beta)
    except ev.ResultViewError:
        return no_update
    if m is None:
        return no_update
    split = ev.split_of(split)
    text = ev.metrics_csv(m, result=result, split=split)
    return {"content": text, "filename": f"{name}-{result}-{split}-metrics.csv", "type": "text/csv"}


@callback(
    Output("eval-download-html", "data"),
    Input("eval-html", "n_clicks"),
    State("eval-html-which", "value"),
    State("eval-run", "data"),
    State("eval-result", "value"),
    State("eval-split", "value"),
    State("eval-t", "data"),
    State("eval-compare", "value"),
    State("eval-hist-log", "value"),
    State("eval-seg-cube", "value"),
    State("eval-seg-z", "value"),
    prevent_initial_call=True,
)
def _on_html(_n, which, name, result, split, t, compare, hist_log, cube, z):
    run_dir, t = _run_dir(name), inputs.number(t, lo=0.0, hi=1.0)
    which, split = inputs.choice(which, el.FIGURES), ev.split_of(split)
    if run_dir is None or not result or t is None or which is None:
        return no_update
    try:
        if which == "segmentation":
            if not cube:
                return no_update
            fig = sv.render_segmentation(run_dir, result, cube, inputs.integer(z, lo=0) or 0, t)
        else:
            view = ev.load_view(run_dir, result, split)
            log_y = "log" in inputs.strings(hist_log)
            others = ev.compare_curves(series.app_runs_dir(), compare)
            fig = ev.build_figures(view, t, others, log_y)[which]
    except ev.ResultViewError:
        return no_update
    return {
        "content": ef.figure_html(fig),
        "filename": f"{name}-{result}-{split}-{which}.html",
        "type": "text/html",
    }


@callback(
    Output("eval-ng-link", "href"),
    Output("eval-ng-link", "children"),
    Output("eval-ng-link", "hidden"),
    Output("eval-ng-msg", "children"),
    Input("eval-ng-open", "n_clicks"),
    State("eval-result", "value"),
    State("eval-seg-cube", "value"),
    State("eval-t-input", "value"),
    State("eval-run", "data"),
    prevent_initial_call=True,
)
def _on_neuroglancer(_n, result, cube, t, name):
    host = current_context().viewer_host
    return vw.evaluation_outputs(_run_dir(name), result, cube, t, host)
