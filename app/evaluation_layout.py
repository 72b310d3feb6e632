"""The evaluation page's layout pieces: builders of its panels, without callbacks.

``app/pages/evaluation.py`` assembles these and wires their ids to callbacks; the ids (the
``eval-`` prefix) are what ``assets/evaluation.js`` and the browser tests look for, so a
builder here keeps them as they are. Each builder takes what it shows (options, the first
view's figures) and reads nothing.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from dash import dcc, html

from app import evaluation_view as ev
from app import neurons_view as nv
from app.components import ROW, button, graph, labelled, screen_reader_label
from trainer.metrics import MODES

HALF = {"flex": "1 1 520px", "minWidth": "0"}
ERROR = {"color": "var(--vb-danger)", "padding": "4px 0", "whiteSpace": "pre-wrap"}
_GRAPH_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
#: the figures "Figure as HTML" saves: key -> label
FIGURES = {
    "roc": "ROC curve",
    "pr": "PR curve",
    "confusion": "confusion table",
    "curves": "metrics against threshold",
    "hist": "score distributions",
    "segmentation": "segmentation",
}
#: the threshold presets, one button each (``eval-preset-<key>``)
PRESET_BUTTONS = ("max_f1", "max_accuracy", "max_youden", "eer", "precision_at", "chosen")

__all__ = [
    "ERROR",
    "FIGURES",
    "HALF",
    "PRESET_BUTTONS",
    "actions",
    "compare_panel",
    "evaluate_panel",
    "figures_row",
    "metrics_table",
    "neurons_panel",
    "no_result_text",
    "no_view_text",
    "presets_row",
    "result_row",
    "segmentation_panel",
    "threshold_row",
]


def _graph(graph_id: str, height: int = 380, figure: go.Figure | None = None) -> dcc.Graph:
    return graph(graph_id, height, _GRAPH_CONFIG, figure)


def metrics_table() -> html.Table:
    """The metrics table (``eval-cell-<key>``), filled in by the browser at each threshold."""
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


#: what the result choice says before the run has a result
NO_RESULT = "no result yet"


def result_row(results: list[str], first: dict[str, Any]) -> html.Div:
    """The result and split choices, with the shown result's summary; before the run has a
    result the choice says ``NO_RESULT`` and is disabled (not an empty, clickable box)."""
    return html.Div(
        [
            labelled(
                "Result",
                dcc.Dropdown(
                    id="eval-result",
                    options=results,
                    value=first.get("result"),
                    clearable=False,
                    placeholder=NO_RESULT,
                    disabled=not results,
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
    )


def evaluate_panel(snapshots: list[dict[str, str]], read_only: bool) -> html.Div:
    """The snapshot, counting mode, Evaluate and Cancel buttons and the progress bar; hidden
    on a read-only dashboard, which evaluates nothing."""
    return html.Div(
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


def threshold_row() -> html.Div:
    """The threshold slider and its number field."""
    return html.Div(
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


def presets_row() -> html.Div:
    """The preset buttons with the target precision and F-beta's beta they use."""
    return html.Div(
        [
            *[
                button(ev.PRESET_LABELS[p], id=f"eval-preset-{p}", n_clicks=0)
                for p in PRESET_BUTTONS
            ],
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


def figures_row(figs: dict[str, go.Figure], seg: tuple) -> html.Div:
    """The figures: ROC, PR, metrics table and confusion, metric curves, score histograms,
    the segmentation view (controls ``seg``, see ``segmentation_view.NO_SEG``) and neurons."""
    return html.Div(
        [
            html.Div(_graph("eval-roc", figure=figs.get("roc")), style=HALF),
            html.Div(_graph("eval-pr", figure=figs.get("pr")), style=HALF),
            html.Div(
                [
                    metrics_table(),
                    html.Div(
                        _graph("eval-confusion", 320, figs.get("confusion")),
                        style={"flex": "1"},
                    ),
                ],
                style={**HALF, "display": "flex", "gap": "12px", "flexWrap": "wrap"},
            ),
            html.Div(_graph("eval-curves", figure=figs.get("curves")), style=HALF),
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
                style=HALF,
            ),
            segmentation_panel(seg),
            neurons_panel(),
        ],
        style=ROW,
    )


def segmentation_panel(seg: tuple) -> html.Div:
    """The thresholded segmentation view, its controls as ``seg`` says (see
    ``segmentation_view.NO_SEG``)."""
    return html.Div(
        [
            html.H2("Thresholded segmentation", className="vb-section-title"),
            html.Div(
                [
                    labelled(
                        "Cube",
                        dcc.Dropdown(
                            id="eval-seg-cube",
                            options=seg[0],
                            value=seg[1],
                            clearable=False,
                            style={"width": "140px"},
                        ),
                    ),
                    button(
                        "Evaluate again for the segmentation",
                        id="eval-seg-predict",
                        n_clicks=0,
                        style=seg[6],
                    ),
                ],
                style=ROW,
            ),
            labelled(
                "z plane",
                dcc.Slider(
                    id="eval-seg-z",
                    min=0,
                    max=seg[2],
                    step=1,
                    value=seg[3],
                    marks=seg[4],
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
            html.Div(seg[5], id="eval-seg-msg", style=ERROR),
            _graph("eval-seg", 520),
        ],
        style=HALF,
    )


def neurons_panel() -> html.Div:
    """The "Neurons" panel: best-threshold buttons, the curves and the exact scores' table."""
    return html.Div(
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
            html.Div(id="eval-neuron-msg", style=ERROR),
            dcc.Store(id="eval-neuron-drawn"),
            _graph("eval-neurons"),
            html.Table(
                [
                    # the two segmentations the scores are of, named: the components of the
                    # page's threshold, and evaluate --instances' optimised seeded watershed
                    html.Thead(
                        html.Tr(
                            [
                                html.Th("score"),
                                html.Th("components at the threshold"),
                                html.Th(id="eval-neuron-ws-head"),
                            ]
                        )
                    ),
                    html.Tbody(
                        [
                            html.Tr(
                                [
                                    html.Td(label),
                                    html.Td(id=f"eval-neuron-{key}"),
                                    html.Td(id=f"eval-neuron-ws-{key}"),
                                ]
                            )
                            for key, label in nv.SCORE_ROWS
                        ]
                    ),
                ],
                id="eval-neuron-table",
            ),
        ],
        style=HALF,
    )


def compare_panel(options: list[dict[str, str]]) -> html.Div:
    """The choice of other results whose ROC and PR curves are overlaid."""
    return html.Div(
        [
            html.H2("Compare", className="vb-section-title"),
            dcc.Dropdown(
                id="eval-compare",
                options=options,
                value=[],
                multi=True,
                placeholder="overlay ROC/PR curves of other results ...",
            ),
            screen_reader_label("Results to overlay", "eval-compare"),
        ]
    )


def actions(read_only: bool) -> html.Div:
    """Save threshold (hidden when read-only), the metrics CSV and a figure as HTML."""
    return html.Div(
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


def no_result_text(read_only: bool) -> str:
    """The evaluation page's sentence for a run without a result."""
    if read_only:
        return "No evaluation yet: run `python run.py evaluate RUN_DIR` where the run trains."
    return "No evaluation yet: press Evaluate above (about a minute for the demo on a CPU)."


def no_view_text(message: str) -> list:
    """The children of the ``eval-no-view`` empty state (as ``empty_state`` makes them)."""
    return [html.Span(message, className="vb-empty-text")]
