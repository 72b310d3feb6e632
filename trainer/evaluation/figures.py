"""The evaluation's own HTML figures (Plotly): the performance grid and the error histogram.

ELEKTRONN2 wrote these two figures next to every evaluation; ``trainer.evaluation`` writes them
as ``eval/<name>_<split>.performance.html`` and ``.error_histogram.html`` (self-contained, they
open without internet). They are the trainer's report, not the dashboard's: the evaluation page
draws its own interactive figures from the result file (``app/evaluation_view.py``). Pure:
results in, ``go.Figure`` out; ``write_html`` is the one function that writes.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from trainer.curves import thin_result
from trainer.metrics import ErrorHistogram, EvaluationResult, derived_metrics
from trainer.runs import atomic_write_bytes

__all__ = [
    "PERF_ROWS",
    "REFERENCE_GRID",
    "error_histogram_figure",
    "performance_figure",
    "write_html",
]

#: ELEKTRONN2's threshold grid for ``evaluate``'s performance table
REFERENCE_GRID = np.linspace(0.0, 1.0, 64)
#: rows of ELEKTRONN2's performance table, in its order
PERF_ROWS = ("tpr", "fpr", "precision", "recall", "balanced_accuracy", "accuracy", "f1")


def performance_figure(
    res: EvaluationResult, perf: np.ndarray | None = None, grid: Any = None, title: str = ""
) -> Any:
    """2 x 2 figure: F1 and accuracy against threshold, the PR curve and the ROC curve.

    Curves are drawn from ``res`` thinned to at most 4096 thresholds (``trainer.curves``: the
    same thinning as the result file's, so a thinned result is drawn as it is);
    ``perf``/``grid`` (ELEKTRONN2's table) are drawn as markers when given. The chosen threshold
    is a vertical line.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    small = thin_result(res)
    keep = small.thresholds <= 1.0  # the NOTHING_POSITIVE end point has no place on a 0..1 axis
    t = small.thresholds[keep]
    d = derived_metrics(small.tp, small.fp, small.tn, small.fn, names=("f1", "accuracy"))
    fpr, tpr = small.roc()
    rec, prec = small.pr()
    chosen = res.chosen.threshold if res.chosen else math.nan
    at = res.at(chosen) if res.chosen else None
    f1_title = f"F1={at.f1:.2f} at {chosen:.4f}" if at else "F1"
    acc_title = f"Accuracy max={float(np.max(d['accuracy'])):.2f} at {chosen:.4f}"
    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=(
            f1_title,
            acc_title,
            f"Precision-Recall AP={res.average_precision:.4f}",
            f"ROC AUC={res.roc_auc:.4f}",
        ),
    )
    fig.add_trace(go.Scatter(x=t, y=d["f1"][keep], name="F1", mode="lines"), row=1, col=1)
    fig.add_trace(
        go.Scatter(x=t, y=d["accuracy"][keep], name="accuracy", mode="lines"), row=1, col=2
    )
    if perf is not None:
        g = REFERENCE_GRID if grid is None else np.asarray(grid)
        for col, row_name in ((1, "f1"), (2, "accuracy")):
            fig.add_trace(
                go.Scatter(
                    x=g,
                    y=perf[PERF_ROWS.index(row_name)],
                    mode="markers",
                    marker_size=4,
                    name=f"{row_name} (grid)",
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
    fig.add_trace(go.Scatter(x=rec, y=prec, name="PR", mode="lines", line_shape="vh"), row=2, col=1)
    fig.add_trace(go.Scatter(x=fpr, y=tpr, name="ROC", mode="lines"), row=2, col=2)
    if at is not None:
        # plain layout shapes: add_vline costs a quarter of a second per call
        fig.layout.shapes = [
            {"type": "line", "xref": x, "yref": f"{y} domain", "x0": chosen, "x1": chosen,
             "y0": 0, "y1": 1, "line": {"color": "grey"}}
            for x, y in (("x", "y"), ("x2", "y2"))
        ]  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=[at.recall], y=[at.precision], mode="markers", name="chosen", marker_size=9
            ),
            row=2,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=[at.fpr],
                y=[at.tpr],
                mode="markers",
                name="chosen",
                marker_size=9,
                showlegend=False,
            ),
            row=2,
            col=2,
        )
    fig.update_xaxes(title_text="threshold", range=[0, 1], row=1)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(title_text="recall", row=2, col=1)
    fig.update_yaxes(title_text="precision", row=2, col=1)
    fig.update_xaxes(title_text="FPR", row=2, col=2)
    fig.update_yaxes(title_text="TPR", row=2, col=2)
    fig.update_layout(title_text=title, width=1100, height=850, showlegend=False)
    return fig


def error_histogram_figure(hist: ErrorHistogram, title: str = "Error Histogram") -> Any:
    """Score histograms of all voxels, positives and negatives (log y) with the threshold line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for y, name, colour in (
        (hist.total, "total", "black"),
        (hist.pos, "pos GT label", "green"),
        (hist.neg, "neg GT label", "red"),
    ):
        fig.add_trace(
            go.Scatter(x=hist.centres, y=y, name=name, line_color=colour, line_shape="hvh")
        )
    t = hist.threshold
    fig.layout.shapes = [
        {"type": "line", "xref": "x", "yref": "y domain", "x0": t, "x1": t, "y0": 0, "y1": 1,
         "line": {"color": "grey"}}
    ]  # fmt: skip
    fig.layout.annotations = [
        {"x": t, "xref": "x", "y": 1, "yref": "y domain", "text": f"{t:.3f}", "showarrow": False,
         "xanchor": "left", "yanchor": "top"}
    ]  # fmt: skip
    fig.update_yaxes(type="log", title_text="voxels")
    fig.update_xaxes(range=[0, 1], title_text="predicted probability of class 1")
    fig.update_layout(
        title_text=title, legend={"orientation": "h", "x": 0.5, "xanchor": "center", "y": 1.02}
    )
    return fig


def write_html(path: str | os.PathLike, fig: Any) -> None:
    """Write ``fig`` as a self-contained HTML page (plotly.js inline), atomically."""
    atomic_write_bytes(path, fig.to_html(include_plotlyjs=True, full_html=True).encode())
