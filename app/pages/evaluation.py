"""Evaluation page (``/run/<name>/evaluation``): threshold tuning on a run's evaluation results.

Picks a result file (``eval/<name>.h5``, written by ``trainer.evaluation``) and a split, and shows
ROC and PR curves, the metrics table, the confusion heatmap, metric-vs-threshold curves, the
error histogram and a thresholded segmentation slice, all at one threshold.

Speed: the layout carries the newest result's ``eval-data`` store (the split's cumulative
counts) and its figures, so the page draws with its first response (``_first_view``); the
loading callbacks only answer changes. Moving the threshold runs one clientside callback
(``assets/evaluation.js``) that computes the metrics, fills the table and moves the figure
markers in place. The server is asked by one callback per step, with at most one request in
flight (``eval-t-server`` / ``eval-t-answered``): the segmentation plane (one plane of a cached
probability volume, patched into the drawn figure; the evaluation is never recomputed) and, for
a result evaluated with ``--instances``, the "Neurons" panel's exact scores at the threshold
(``app.neurons_view``: threshold -> components -> scores of the chosen cube, tens of ms), its
curves and the instance colouring of the segmentation view (``app.neuron_figures``).

A result that cannot be shown (a file that cannot be read, a missing split, a single class)
shows its message in place of the figures and threshold controls, with the Evaluate button
and the result and split choices above it. Every ``POLL_MS`` the page lists the run's result
files and their modification stamps (``_on_poll``: no file opened): a result written from a
shell (``python run.py evaluate``) joins the results choice, is shown if there was none, and
the shown result is loaded again when rewritten; nothing else moves the threshold.

"Evaluate" runs ``trainer.evaluation.evaluate_run`` as a Dash background callback (a process
managed by a ``DiskcacheManager``, with progress and cancel): one prediction pass writes the
result file and the probability cache the segmentation view reads. The dashboard process never
predicts and never imports torch; only the background job does.

The page's view model is ``app.evaluation_view``, its figures ``app.evaluation_figures``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update

from app import changes_runs, current_context, inputs, limits, paths, series
from app import evaluation_figures as ef
from app import evaluation_view as ev
from app import neuron_figures as nf
from app import neurons_view as nv
from app.callbacks import callback, clientside_callback
from app.components import (
    ROW,
    button,
    empty_state,
    graph,
    labelled,
    run_href,
    run_not_found,
    screen_reader_label,
    url_part,
)
from trainer import runs
from trainer.metrics import MODES

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/run/<name>/evaluation", "title": "VoxelBoard evaluation"}
#: how often the page looks for new or rewritten result files (a listing and a stat per file)
POLL_MS = 5000

_HALF = {"flex": "1 1 520px", "minWidth": "0"}
_ERROR = {"color": "#dc3545", "padding": "4px 0", "whiteSpace": "pre-wrap"}
_GRAPH_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
FIGURES = {
    "roc": "ROC curve",
    "pr": "PR curve",
    "confusion": "confusion table",
    "curves": "metrics against threshold",
    "hist": "score distributions",
    "segmentation": "segmentation",
}


# --------------------------------------------------------------------------------------- layout


def _graph(graph_id: str, height: int = 380, figure: go.Figure | None = None) -> dcc.Graph:
    return graph(graph_id, height, _GRAPH_CONFIG, figure)


def _snapshot_options(run_dir: Path) -> list[dict[str, str]]:
    return [{"label": n, "value": n} for n in runs.snapshot_names(run_dir)]


def _compare_options(root: Path, name: str) -> list[dict[str, str]]:
    out = []
    for d in runs.iter_run_dirs(root):
        for result in runs.list_results(d):
            for split in runs.SPLITS:
                value = f"{d.name}|{result}|{split}"
                out.append({"label": f"{d.name} · {result} · {split}", "value": value})
    return out


def _metrics_table() -> html.Table:
    rows = []
    for key, label in ev.METRIC_ROWS:
        label_cell = html.Td(label, id="eval-label-fbeta") if key == "fbeta" else html.Td(label)
        rows.append(
            html.Tr([label_cell, html.Td("–", id=f"eval-cell-{key}", style={"textAlign": "right"})])
        )
    return html.Table(
        [html.Thead(html.Tr([html.Th("metric"), html.Th("value")])), html.Tbody(rows)],
        id="eval-table",
        style={
            "borderCollapse": "collapse",
            "minWidth": "300px",
            "fontVariantNumeric": "tabular-nums",
        },
    )


def layout(name: str | None = None, **kwargs: Any) -> html.Div:
    """The evaluation page of run ``name``; a clear message if there is no such run."""
    name = url_part(name)
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return run_not_found(name, "eval-missing")
    snapshots = _snapshot_options(run_dir)
    stamps = _result_stamps(run_dir)
    results = [result for result, *_stamps in stamps]
    first = _first_view(run_dir, results)
    figs = first.get("figures", {})
    seg_meta = first.get("seg", _NO_SEG)
    # a read-only dashboard evaluates, predicts and saves nothing: those controls stay hidden
    # (and app._check_callback_request refuses their callbacks)
    read_only = current_context().read_only
    preset_buttons = [
        button(ev.PRESET_LABELS[p], id=f"eval-preset-{p}", n_clicks=0)
        for p in ("max_f1", "max_accuracy", "max_youden", "eer", "precision_at", "chosen")
    ]
    evaluate_panel = html.Div(
        [
            labelled(
                "Snapshot",
                dcc.Dropdown(
                    id="eval-snapshot",
                    options=snapshots,
                    value=snapshots[0]["value"] if snapshots else None,
                    clearable=False,
                    style={"width": "170px"},
                ),
            ),
            labelled(
                "Counting",
                dcc.RadioItems(
                    id="eval-mode",
                    options=[{"label": m, "value": m} for m in sorted(MODES)],
                    value="binned",
                    inline=True,
                ),
            ),
            button("Evaluate", id="eval-run-button", kind="primary"),
            button("Cancel", id="eval-cancel", n_clicks=0, disabled=True),
            html.Progress(id="eval-progress", value="0", max="1", style={"width": "220px"}),
            html.Span(id="eval-progress-text"),
        ],
        className="vb-controls",
        hidden=read_only,
    )
    threshold_row = html.Div(
        [
            html.Div(
                [
                    dcc.Slider(
                        id="eval-slider",
                        min=0,
                        max=1,
                        step=0.0001,
                        value=0.5,
                        marks={i / 10: f"{i / 10:g}" for i in range(11)},
                        updatemode="drag",
                        allow_direct_input=False,
                    ),
                    screen_reader_label("Threshold", "eval-slider"),
                ],
                style={"flex": "1 1 480px"},
            ),
            labelled(
                "Threshold",
                dcc.Input(
                    id="eval-t-input",
                    type="number",
                    min=0,
                    max=1.0000001,
                    step="any",
                    style={"width": "190px"},
                ),
            ),  # fmt: skip
            html.Span(id="eval-t-label", style={"fontWeight": "bold"}),
        ],
        className="vb-controls",
    )
    presets_row = html.Div(
        [
            *preset_buttons,
            labelled(
                "Target precision",
                dcc.Input(
                    id="eval-target",
                    type="number",
                    min=0,
                    max=1,
                    step="any",
                    value=0.9,
                    style={"width": "80px"},
                ),
            ),  # fmt: skip
            labelled(
                "F-beta: beta",
                dcc.Input(
                    id="eval-beta",
                    type="number",
                    min=0.01,
                    step="any",
                    value=1,
                    style={"width": "70px"},
                ),
            ),  # fmt: skip
            html.Span(id="eval-preset-msg", style={"color": "#495057"}),
        ],
        className="vb-controls",
    )
    actions = html.Div(
        [
            button("Save threshold", id="eval-save", n_clicks=0, hidden=read_only),
            button("Metrics CSV", id="eval-csv", n_clicks=0),
            dcc.Dropdown(
                id="eval-html-which",
                options=[{"label": v, "value": k} for k, v in FIGURES.items()],
                value="roc",
                clearable=False,
                style={"width": "220px"},
            ),
            screen_reader_label("Figure to save as HTML", "eval-html-which"),
            button("Figure as HTML", id="eval-html", n_clicks=0),
            html.Span(id="eval-save-msg"),
            dcc.Download(id="eval-download-csv"),
            dcc.Download(id="eval-download-html"),
        ],
        className="vb-controls",
    )
    segmentation = html.Div(
        [
            html.H2("Thresholded segmentation", className="vb-section-title"),
            html.Div(
                [
                    labelled(
                        "Cube",
                        dcc.Dropdown(
                            id="eval-seg-cube",
                            options=seg_meta[0],
                            value=seg_meta[1],
                            clearable=False,
                            style={"width": "140px"},
                        ),
                    ),
                    button(
                        "Evaluate again for the segmentation",
                        id="eval-seg-predict",
                        n_clicks=0,
                        style=seg_meta[6],
                    ),
                ],
                style=ROW,
            ),
            labelled(
                "z plane",
                dcc.Slider(
                    id="eval-seg-z",
                    min=0,
                    max=seg_meta[2],
                    step=1,
                    value=seg_meta[3],
                    marks=seg_meta[4],
                ),
                "100%",
            ),
            dcc.RadioItems(
                id="eval-seg-colour",
                options=[
                    {"label": "TP / FP / FN", "value": "errors"},
                    {"label": "neurons (instance colours)", "value": "instances"},
                ],
                value="errors",
                inline=True,
            ),
            html.Div(seg_meta[5], id="eval-seg-msg", style=_ERROR),
            _graph("eval-seg", 520),
        ],
        style=_HALF,
    )
    neurons = html.Div(
        [
            html.H2("Neurons", className="vb-section-title"),
            html.Div(
                [
                    button("best VOI", id="eval-neuron-best-voi", n_clicks=0),
                    button("best adapted Rand", id="eval-neuron-best-are", n_clicks=0),
                    html.Span(id="eval-neuron-scores-t"),
                ],
                style=ROW,
            ),
            html.Div(id="eval-neuron-msg", style=_ERROR),
            dcc.Store(id="eval-neuron-drawn"),
            _graph("eval-neurons"),
            html.Table(
                html.Tbody(
                    [
                        html.Tr([html.Td(label), html.Td(id=f"eval-neuron-{key}")])
                        for key, label in nv.SCORE_ROWS
                    ]
                ),
                id="eval-neuron-table",
            ),
        ],
        style=_HALF,
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
            dcc.Interval(id="eval-poll", interval=POLL_MS),
            dcc.Store(id="eval-seg-drawn"),
            html.Div(
                [
                    html.H1(f"{name}: evaluation", className="vb-page-title"),
                    dcc.Link("curves", href=run_href(name)),
                    dcc.Link("previews", href=run_href(name, "/preview")),
                    dcc.Link("all runs", href="/"),
                ],
                style=ROW,
            ),
            html.Div(
                [
                    labelled(
                        "Result",
                        dcc.Dropdown(
                            id="eval-result",
                            options=results,
                            value=first.get("result"),
                            clearable=False,
                            style={"width": "220px"},
                        ),
                    ),
                    labelled(
                        "Split",
                        dcc.RadioItems(
                            id="eval-split",
                            options=[
                                {"label": "validation", "value": "valid"},
                                {"label": "training", "value": "train"},
                            ],
                            value="valid",
                            inline=True,
                        ),
                    ),
                    html.Span(first.get("summary", ""), id="eval-summary"),
                ],
                style=ROW,
            ),
            evaluate_panel,
            html.Div(id="eval-bg-msg", style=_ERROR),
            html.Div(first.get("message", ""), id="eval-message", style=_ERROR),
            empty_state(
                _no_result_text(read_only),
                "eval-empty",
                hidden=bool(results),
                replaces_rest=True,
            ),
            # a result or split that cannot be shown (unreadable, missing, one class): its
            # message instead of empty frames and controls
            empty_state(
                first.get("no_view", ""),
                "eval-no-view",
                hidden="no_view" not in first,
                replaces_rest=True,
            ),
            threshold_row,
            presets_row,
            html.Div(
                [
                    html.Div(_graph("eval-roc", figure=figs.get("roc")), style=_HALF),
                    html.Div(_graph("eval-pr", figure=figs.get("pr")), style=_HALF),
                    html.Div(
                        [
                            _metrics_table(),
                            html.Div(
                                _graph("eval-confusion", 320, figs.get("confusion")),
                                style={"flex": "1"},
                            ),
                        ],
                        style={**_HALF, "display": "flex", "gap": "12px", "flexWrap": "wrap"},
                    ),
                    html.Div(_graph("eval-curves", figure=figs.get("curves")), style=_HALF),
                    html.Div(
                        [
                            dcc.Checklist(
                                id="eval-hist-log",
                                options=[{"label": "log y", "value": "log"}],
                                value=["log"],
                                inline=True,
                            ),
                            _graph("eval-hist", figure=figs.get("hist")),
                        ],
                        style=_HALF,
                    ),
                    segmentation,
                    neurons,
                ],
                style=ROW,
            ),
            html.Div(
                [
                    html.H2("Compare", className="vb-section-title"),
                    dcc.Dropdown(
                        id="eval-compare",
                        options=_compare_options(root, name),
                        value=[],
                        multi=True,
                        placeholder="overlay ROC/PR curves of other results ...",
                    ),
                    screen_reader_label("Results to overlay", "eval-compare"),
                ]
            ),
            actions,
            html.Pre(id="eval-metrics-json", style={"display": "none"}),
        ],
        style={"padding": "10px 16px"},
    )


# ------------------------------------------------------------------------------------ helpers


def _run_dir(name: Any) -> Path | None:
    return series.run_dir_for(series.app_runs_dir(), name)


def _stamp(path: Path) -> str | None:
    """``"<mtime_ns>:<size>"`` of a file, ``None`` if there is none (a string: a browser's JSON
    numbers would round nanoseconds)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{st.st_mtime_ns}:{st.st_size}"


def _result_stamps(run_dir: Path) -> list[list]:
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


def _stamps_of(files: Any, result: Any) -> list | None:
    """The two stamps of ``result`` in an ``eval-files`` value, ``None`` if it is not there."""
    for row in files if isinstance(files, list) else []:
        if isinstance(row, list) and len(row) == 3 and row[0] == result:
            return row[1:]
    return None


def _unreadable(run_dir: Path, result: Any) -> bool:
    """Whether result file ``result`` cannot be read at all (one read of its coarse counts)."""
    try:
        ev.read_split(ev.result_file(run_dir, result), "valid")
    except ev.UnreadableResultError:
        return True
    except ev.ResultViewError:  # a refused name or a missing split: readable, or not a file
        return False
    return False


def _threshold(t: Any, view: dict) -> float:
    t = inputs.number(t, lo=0.0, hi=1.0)
    if t is not None:
        return t
    chosen = view.get("chosen")
    return float(chosen["threshold"]) if chosen else float(view["presets"]["max_accuracy"])


def _others(root: Path | None, selected: Any) -> list[dict]:
    out = []
    for value in inputs.strings(selected):
        if value.count("|") != 2:
            continue
        run, result, split = value.split("|")
        d = series.run_dir_for(root, run)
        if d is None or split not in runs.SPLITS:
            continue
        try:
            res = ev.read_split(ev.result_file(d, result), split)
        except ev.ResultViewError:
            continue
        if not res.single_class:
            out.append(ev.compare_curve(res, f"{run} · {result} · {split}"))
    return out


def build_figures(view: dict, threshold: float, others: list, log_y: bool) -> dict[str, go.Figure]:
    """Every figure of the page at ``threshold`` (the browser moves them afterwards)."""
    c = ev.counts_at(view, threshold)
    return {
        "roc": ef.roc_figure(view, threshold, others),
        "pr": ef.pr_figure(view, threshold, others),
        "confusion": ef.confusion_figure(c["tp"], c["fp"], c["tn"], c["fn"], threshold),
        "curves": ef.metric_curves_figure(view, threshold),
        "hist": ef.error_hist_figure(view, threshold, log_y),
    }


#: the segmentation view's controls without a result: cube options and value, z max, value and
#: marks, message, style of "Evaluate again for the segmentation"
_NO_SEG = ([], None, 0, 0, {}, "", {"display": "none"})


def _first_view(run_dir: Path, results: list[str]) -> dict[str, Any]:
    """What the page shows before any callback: the newest listed result's validation split
    (its store, its figures at the threshold the browser starts from, the summary) and the
    segmentation view's cube and plane, or the message saying why the result cannot be shown.
    The callbacks then only answer changes, so the page draws with its first response."""
    if not results:
        return {}
    result = results[0]
    try:
        view = ev.load_view(run_dir, result, "valid")
        store = ev.browser_view(view)
    except ev.ResultViewError as e:  # unreadable, a single class: nothing to draw
        return {"result": result, "no_view": str(e)}
    t = _threshold(None, view)  # where assets/evaluation.js starts: chosen, else max accuracy
    figures = build_figures(view, t, [], log_y=True)  # the "log y" box starts ticked
    return {
        "result": result,
        "seg": _seg_meta(run_dir, result, None, None),
        "store": store,
        "figures": figures,
        "summary": _summary(view),
    }


def _summary(view: dict) -> str:
    parts = [
        f"{view['mode']} counts",
        f"{view['n_pos']:,} positive / {view['n_neg']:,} negative voxels",
    ]
    if view.get("n_ignored"):
        parts.append(f"{view['n_ignored']:,} ignored")
    if view.get("step") is not None and view["step"] >= 0:
        parts.append(f"snapshot step {view['step']:,}")
    return " · ".join(parts)


# ---------------------------------------------------------------------------------- callbacks


@callback(
    Output("eval-result", "options"),
    Output("eval-result", "value"),
    Output("eval-message", "children", allow_duplicate=True),
    Output("eval-empty", "hidden"),
    Input("eval-run", "data"),
    Input("eval-done", "data"),
    Input("eval-files", "data"),
    State("eval-result", "value"),
    prevent_initial_call=True,  # the layout lists the results (_first_view)
)
def _on_results(name, done, _files, current):
    """The results choice: after an evaluation its result, after a change on disk the result
    shown (left alone, so a threshold being tuned stays), else the newest."""
    run_dir = _run_dir(name)
    if run_dir is None:
        return [], None, f"run {name!r} is gone from the runs directory", no_update
    names = runs.list_results(run_dir)
    if not names:  # the empty state says what to do instead of empty frames
        return [], None, "", False
    if "eval-done.data" in ctx.triggered_prop_ids:  # with a new listing too, often
        wanted = done.get("result") if isinstance(done, dict) else None
        return names, wanted if wanted in names else names[0], no_update, True
    return names, no_update if current in names else names[0], no_update, True


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
    a listing and a stat per file every ``POLL_MS``, nothing more when nothing changed. A new
    listing updates the results choice (``_on_results``); a rewritten shown result is loaded
    again, its rewritten probability cache only redraws the segmentation view."""
    run_dir = _run_dir(name)
    if run_dir is None:
        return no_update, no_update, no_update
    files = _result_stamps(run_dir)
    if files == known:
        return no_update, no_update, no_update
    if "eval-done.data" in ctx.triggered_prop_ids:  # the page's own evaluation loads its result
        return files, no_update, no_update
    before, after = _stamps_of(known, shown), _stamps_of(files, shown)
    if before is None or after is None or before == after:
        return files, no_update, no_update
    signal = {"result": shown, "t": time.time()}
    return files, signal if before[0] != after[0] else no_update, signal


def _no_result_text(read_only: bool) -> str:
    """The evaluation page's sentence for a run without a result."""
    if read_only:
        return "No evaluation yet: run `python run.py evaluate RUN_DIR` where the run trains."
    return "No evaluation yet: press Evaluate above (about a minute for the demo on a CPU)."


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
    split = inputs.choice(split, runs.SPLITS, "valid")
    # a new store moves the browser's threshold to the result's own: only for new data
    reload = not triggered or bool(triggered & _NEW_DATA)
    try:
        view = ev.load_view(run_dir, result, split)
        data = ev.browser_view(view) if reload else no_update
    except ev.ResultViewError as e:
        empty = go.Figure(layout={"height": 380})
        figs = (empty, empty, go.Figure(layout={"height": 300}), empty, empty)
        # unreadable, no such split, a single class: the message instead of empty frames
        return (None, *figs, "", "", _no_view_text(str(e)), False)
    threshold = _threshold(None if reload else t, view)
    log_y = "log" in inputs.strings(hist_log)
    figs = build_figures(view, threshold, _others(series.app_runs_dir(), compare), log_y)
    return (
        data,
        figs["roc"],
        figs["pr"],
        figs["confusion"],
        figs["curves"],
        figs["hist"],
        "",
        _summary(view),
        no_update,
        True,
    )


#: the inputs of ``_on_load`` that bring a result's data anew (the others redraw figures)
_NEW_DATA = {"eval-result", "eval-split", "eval-done", "eval-rewritten"}


def _about(signal: Any, result: str) -> bool:
    """Whether ``signal`` (an ``eval-rewritten`` or ``eval-done`` value) is about ``result``."""
    return isinstance(signal, dict) and signal.get("result") == result


def _no_view_text(message: str) -> list:
    """The children of the ``eval-no-view`` empty state (as ``empty_state`` makes them)."""
    return [html.Span(message, className="vb-empty-text")]


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
    *[
        Input(f"eval-preset-{p}", "n_clicks")
        for p in ("max_f1", "max_accuracy", "max_youden", "eer", "precision_at", "chosen")
    ],
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
    prevent_initial_call=True,  # the layout carries the first result's (_first_view)
)
def _on_seg_meta(result, _ready, cube, z, name):
    run_dir = _run_dir(name)
    if run_dir is None or not result:
        return _NO_SEG
    return _seg_meta(run_dir, result, cube, z)


def _seg_meta(run_dir: Path, result: Any, cube: Any, z: Any) -> tuple:
    """The segmentation view's controls for ``result`` (see ``_NO_SEG``), keeping ``cube`` and
    ``z`` where the probability cache has them."""
    hidden = {"display": "none"}
    shown = hidden if current_context().read_only else {}
    try:
        path = ev.prob_cache_path(run_dir, result)
    except ev.ResultViewError as e:
        return [], None, 0, 0, {}, str(e), hidden
    if not path.is_file():
        if _unreadable(run_dir, result):
            return _NO_SEG  # the page says why (eval-no-view); predicting would not help
        how = (
            "a dashboard that is not read-only predicts them by evaluating it again"
            if current_context().read_only
            else "press 'Evaluate again for the segmentation' (its snapshot, counting and splits)"
        )
        message = (
            "This result was written without probability maps of the validation cubes (an "
            f"evaluation writes them with the result): {how}."
        )
        return [], None, 0, 0, {}, message, shown
    try:
        meta = runs.read_prob_cache(path)
    except runs.ProbCacheError as e:
        return [], None, 0, 0, {}, str(e), shown
    cubes = list(meta["cubes"])
    cube = cube if cube in cubes else cubes[0]
    nz = meta["cubes"][cube][0]
    z = z if isinstance(z, int) and 0 <= z < nz else nz // 2
    marks = {i: str(i) for i in sorted({0, nz // 2, nz - 1})}
    return cubes, cube, nz - 1, z, marks, "", hidden


def _read_plane(run_dir: Path, result: str, cube: str, z: int) -> tuple:
    """``(raw, prob, label)`` of plane ``z`` of ``cube`` from the result's probability cache.

    Raises:
        ResultViewError: a refused result or cube name, or an unreadable cache.
    """
    path = ev.prob_cache_path(run_dir, result)
    try:
        paths.check_name("cube", cube)
    except paths.ClientPathError as e:
        raise ev.ResultViewError(str(e)) from None
    try:
        return runs.read_prob_slice(path, cube, z)
    except runs.ProbCacheError as e:
        raise ev.ResultViewError(str(e)) from None


def _plane_title(result: str, cube: str, z: int, threshold: float) -> str:
    return f"{result} · {cube} · z {int(z)} · threshold {threshold:.4f}"


def render_segmentation(
    run_dir: Path, result: str, cube: str, z: int, threshold: float
) -> go.Figure:
    """The segmentation figure of plane ``z`` of ``cube`` at ``threshold`` (one plane read).

    Raises:
        ResultViewError: a refused result or cube name, or an unreadable cache.
    """
    raw, prob, label = _read_plane(run_dir, result, cube, z)
    title = _plane_title(result, cube, z, threshold)
    return ef.segmentation_figure(raw, prob, label, threshold, title=title)


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
    prevent_initial_call=True,
)
def _on_plane_and_scores(t, z, cube, colour, result, name, seg_drawn, neuron_drawn):
    """One request per threshold step for everything the server draws: the segmentation plane
    and the Neurons panel's exact scores, from one segmentation of the cube (two callbacks
    were two requests competing for the same two cores, and segmented the cube twice in
    instance colours). A drawn figure gets a ``dash.Patch`` (the plane's PNG, its legend and
    title) or nothing (the neuron curves: the browser moves their threshold line)."""
    answered = time.time()  # every answer, even "nothing to draw", lets the next one go
    run_dir, t = _run_dir(name), inputs.number(t, lo=0.0, hi=1.0)
    if run_dir is None or not result or not cube or t is None:
        return [no_update] * (3 + _N_NEURON_OUTPUTS) + [answered]
    z = inputs.integer(z, lo=0) or 0
    instances = colour == "instances"
    triggered = set(ctx.triggered_prop_ids)
    scores = not triggered or not triggered <= _PLANE_ONLY
    segmented = error = None
    if scores or instances:
        try:
            paths.check_name("cube", cube)
            segmented = nv.segment_cube(run_dir, result, cube, t)
        except (paths.ClientPathError, nv.NeuronViewError) as e:
            error = str(e)
    plane = _plane_outputs(run_dir, result, cube, z, t, instances, segmented, error, seg_drawn)
    if not scores:
        return [*plane, *[no_update] * _N_NEURON_OUTPUTS, answered]
    return [*plane, *_neuron_outputs(result, cube, t, segmented, error, neuron_drawn), answered]


def _plane_outputs(run_dir, result, cube, z, t, instances, segmented, error, drawn) -> list:
    """``[figure, drawn, message]`` of the segmentation view: a Patch of the drawn figure when
    its kind (result, cube, colouring) is unchanged, a new figure otherwise."""
    kind = [result, cube, "instances" if instances else "errors"]
    try:
        if instances:
            if segmented is None:
                raise nv.NeuronViewError(error)
            seg, gt, _prob, _record, s = segmented
            z = min(z, seg.shape[0] - 1)
            title = f"{_plane_title(result, cube, z, t)} · {s.n_segments} segments"
            if drawn == kind:
                source, names = nf.instance_parts(seg[z], gt[z], s.largest_split, s.largest_merge)
                return [ef.image_patch(source, names, title), kind, ""]
            fig = nf.instance_figure(seg[z], gt[z], s.largest_split, s.largest_merge, title)
            return [fig, kind, ""]
        raw, prob, label = _read_plane(run_dir, result, cube, z)
        title = _plane_title(result, cube, z, t)
        if drawn == kind:
            source, names = ef.segmentation_parts(raw, prob, label, t)
            return [ef.image_patch(source, names, title), kind, ""]
        return [ef.segmentation_figure(raw, prob, label, t, title=title), kind, ""]
    except (ev.ResultViewError, nv.NeuronViewError) as e:
        return [go.Figure(layout={"height": 520}), None, str(e)]


def _neuron_outputs(result, cube, t, segmented, error, drawn) -> list:
    """The Neurons panel: its curves (drawn once per result and cube), message and table."""
    blank = [""] * len(nv.SCORE_ROWS)
    if segmented is None:
        # nothing drawn stays as it is; curves of another cube are cleared
        fig = no_update if drawn is None else go.Figure(layout={"height": 380})
        return [fig, None, error, "", *blank]
    _seg, _gt, _prob, record, s = segmented
    if drawn == [result, cube]:
        fig = no_update  # drawn: assets/evaluation.js moves their threshold line in place
    else:
        fig = nf.neuron_curves_figure(
            record, t, title=f"{result} · {cube}: neurons against threshold"
        )
    cells = [
        f"{getattr(s, k):.4f}" if k[:2] != "n_" else f"{getattr(s, k):,}" for k, _ in nv.SCORE_ROWS
    ]
    return [fig, [result, cube], "", f"exact scores at threshold {t:.4f}", *cells]


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
    key = (
        "best_are_threshold" if ctx.triggered_id == "eval-neuron-best-are" else "best_voi_threshold"
    )
    try:
        paths.check_name("cube", cube)
        value = float(nv.neuron_records(run_dir, result)[nv.cube_index(cube)][key])
    except (paths.ClientPathError, nv.NeuronViewError, IndexError, KeyError):
        return no_update
    return value


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
        with limits.job_slot(c.jobs_dir, run_dir.name, limits.MAX_EVALUATIONS, "evaluation"):
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
    snap = None
    if snapshot:
        try:
            snap = paths.run_file(
                run_dir, runs.SNAPSHOT_DIR, "snapshot", snapshot, runs.SNAPSHOT_SUFFIX
            )
        except paths.ClientPathError as e:
            return no_update, no_update, str(e)
        if not snap.is_file():
            return no_update, no_update, f"snapshot {snapshot!r} not found in {run_dir.name}"
    mode = inputs.choice(mode, MODES, "binned")
    set_progress(("0", "1", "loading the model and the cubes ..."))
    from trainer.evaluation import default_snapshot, evaluate_run  # torch, in this job only

    # chosen once: a running trainer keeps replacing LAST.pt and writing step-N.pt
    snap = snap or default_snapshot(run_dir)
    if snap is None:
        return no_update, no_update, f"{run_dir.name} has no snapshot to evaluate yet"
    # one pass: the result file and the probability cache of the segmentation view
    evaluate_run(run_dir, snap, "valid", mode, progress=_on_cube(set_progress), data_dir=data_dir)
    name = snap.stem
    set_progress(("1", "1", "done"))
    return {"result": name, "t": time.time()}, {"result": name, "t": time.time()}, ""


# ------------------------------------------------------------------------ save and download


def _current(name: Any, result: Any, split: Any, t: Any, beta: Any):
    """``(run_dir, ThresholdMetrics)`` at the browser's threshold, from the same coarse counts."""
    run_dir, t = _run_dir(name), inputs.number(t, lo=0.0, hi=1.0)
    if run_dir is None or not result or t is None:
        return None, None
    res = ev.read_split(ev.result_file(run_dir, result), _split(split))
    # beta weighs recall against precision; beyond these bounds F-beta is recall or precision
    b = inputs.number(beta, lo=1e-3, hi=1e3)
    return run_dir, ev.metrics_at(res, t, 1.0 if b is None or b <= 0 else b)


def _split(split: Any) -> str:
    return inputs.choice(split, runs.SPLITS, "valid")


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
    try:
        run_dir, m = _current(name, result, split, t, beta)
    except ev.ResultViewError as e:
        return str(e)
    if m is None:
        return "nothing to save: load a result first"
    how = inputs.text(how) or "manual"
    record = ev.threshold_record(m, run=name, result=result, split=_split(split), method=how[:200])
    try:
        path = runs.write_threshold(run_dir, record)
    except OSError as e:
        return f"cannot write {runs.threshold_path(run_dir)}: {e.strerror or e}; check that folder"
    return f"saved threshold {m.threshold:.4f} to {path.relative_to(run_dir.parent)}"


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
        _run_dir_, m = _current(name, result, split, t, beta)
    except ev.ResultViewError:
        return no_update
    if m is None:
        return no_update
    split = _split(split)
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
    which, split = inputs.choice(which, FIGURES), _split(split)
    if run_dir is None or not result or t is None or which is None:
        return no_update
    try:
        if which == "segmentation":
            if not cube:
                return no_update
            fig = render_segmentation(run_dir, result, cube, inputs.integer(z, lo=0) or 0, t)
        else:
            view = ev.load_view(run_dir, result, split)
            log_y = "log" in inputs.strings(hist_log)
            fig = build_figures(view, t, _others(series.app_runs_dir(), compare), log_y)[which]
    except ev.ResultViewError:
        return no_update
    return {
        "content": ef.figure_html(fig),
        "filename": f"{name}-{result}-{split}-{which}.html",
        "type": "text/html",
    }
