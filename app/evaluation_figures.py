"""The evaluation page's figures: pure builders, a ``load_view`` dict or arrays in, ``go.Figure`` out.

ROC and PR curves with a marker at the threshold and curves of other results overlaid, the
confusion heatmap, metric-vs-threshold curves, the error histogram with FP/FN mass shaded, and
the thresholded segmentation slice. Traces the browser updates in place carry a ``meta`` tag
(``MARKER``, ``FP_SHADE``, ...), so the clientside code (``assets/evaluation.js``) finds them
whatever other traces a figure holds. The run page's figures are in ``app/figures.py``; the
trainer's own HTML report figures in ``trainer/evaluation/figures.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from dash import Patch

from app.figures import TITLED_MARGIN_TOP, new_figure, title_above_plot
from app.image_figures import png_data_uri
from trainer.curves import MAX_CURVE_POINTS, thin_indices
from trainer.metrics import derived_metrics

__all__ = [
    "CONFUSION",
    "FN_SHADE",
    "FP_SHADE",
    "MAIN_CURVE",
    "MARKER",
    "MAX_CURVE_POINTS",
    "SEG_COLOURS",
    "THRESHOLD_LINE",
    "confusion_figure",
    "confusion_z",
    "error_hist_figure",
    "figure_html",
    "image_figure",
    "image_patch",
    "metric_curves_figure",
    "pr_figure",
    "roc_figure",
    "segmentation_counts",
    "segmentation_figure",
    "segmentation_parts",
    "segmentation_rgb",
    "shaded_mass",
    "threshold_index",
]

# trace tags the browser looks for (assets/evaluation.js)
MARKER = "vb-marker"
MAIN_CURVE = "vb-curve"
FN_SHADE = "vb-fn-shade"
FP_SHADE = "vb-fp-shade"
CONFUSION = "vb-confusion"
THRESHOLD_LINE = "vb-threshold"

COLOURS = {
    "main": "#0d6efd",
    "marker": "#dc3545",
    "pos": "#198754",
    "neg": "#6c757d",
    "fn": "rgba(13,110,253,0.45)",
    "fp": "rgba(220,53,69,0.45)",
    "baseline": "#adb5bd",
}
_OTHER_COLOURS = ("#fd7e14", "#6f42c1", "#20c997", "#d63384", "#795548", "#17a2b8")
#: segmentation colours (RGB): true positives, false positives, false negatives
SEG_COLOURS = {"tp": (25, 175, 84), "fp": (230, 50, 60), "fn": (40, 120, 255)}

# the title sits at the top of the margin, the legend below it (the modebar takes the right)
#: (built by ``app.figures.new_figure``: its small template and fixed margins, layout given to
#: the constructor, as the run page's figures)
_LAYOUT = {
    "margin": {"l": 55, "r": 15, "t": 80, "b": 45},
    "height": 400,
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0, "font": {"size": 11}},
}


def _title(text: str) -> dict[str, Any]:
    return {"text": text, "x": 0.01, "y": 0.985, "yanchor": "top", "font": {"size": 15}}


#: the confusion table's margins: room on the left for "actual negative" (the template does
#: not grow margins to fit labels) and on top for the modebar, then the title
CONFUSION_MARGIN = {"l": 115, "r": 15, "t": TITLED_MARGIN_TOP + 4, "b": 45}


def threshold_index(thresholds: np.ndarray, threshold: float) -> int:
    """Where the counts at ``threshold`` are: the first stored threshold at or above it (as the
    slider; at most the last one, ``NOTHING_POSITIVE``)."""
    i = int(np.searchsorted(thresholds, threshold, side="left"))
    return min(i, thresholds.size - 1)


def _curve_arrays(view: Mapping[str, Any]) -> dict[str, np.ndarray]:
    tp, fp = np.asarray(view["tp"], np.int64), np.asarray(view["fp"], np.int64)
    tn, fn = np.asarray(view["tn"], np.int64), np.asarray(view["fn"], np.int64)
    d = derived_metrics(tp, fp, tn, fn, names=("tpr", "fpr", "precision", "f1", "accuracy"))
    d["recall"] = d["tpr"]
    d["thresholds"] = np.asarray(view["thresholds"], np.float64)
    d["recall_all"] = d["tpr"]
    return d


def _fmt_area(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _marker_trace(x: float, y: float, threshold: float) -> go.Scatter:
    return go.Scatter(
        x=[x],
        y=[y],
        mode="markers",
        name=f"threshold {threshold:.4f}",
        marker={"size": 12, "color": COLOURS["marker"], "line": {"width": 1, "color": "white"}},
        meta=MARKER,
        hoverinfo="skip",
    )


def _t_label(t: float) -> str:
    return "none positive" if t > 1.0 else f"{t:.4f}"


#: what differs between the ROC and PR figures: the main curve's and the others' keys, the
#: area and its label, the line shape, the axes' names and ranges and the hover text
_CURVES = {
    "roc": {
        "x": "fpr",
        "y": "tpr",
        "area": ("roc_auc", "AUC"),
        "shape": None,  # plotly's default: straight segments
        "axes": (("false positive rate", 1.01), ("true positive rate", 1.01)),
        "hover": "FPR %{x:.4f}<br>TPR %{y:.4f}",
    },
    "pr": {
        "x": "recall",
        "y": "precision",
        "area": ("average_precision", "AP"),
        "shape": "vh",
        "axes": (("recall", 1.01), ("precision", 1.02)),
        "hover": "recall %{x:.4f}<br>precision %{y:.4f}",
    },
}


def _curve_figure(
    kind: str,
    view: Mapping[str, Any],
    threshold: float,
    others: Sequence[Mapping[str, Any]],
    title: str,
    baseline: go.Scatter,
) -> go.Figure:
    """The ROC (``kind='roc'``) or PR figure: ``baseline``, the ``others``, the main curve of
    ``view`` (thinned to ``MAX_CURVE_POINTS``, each point's threshold as ``customdata``) and the
    marker at ``threshold``."""
    c = _CURVES[kind]
    d = _curve_arrays(view)
    t = d["thresholds"]
    keep = thin_indices(np.arange(len(t)))
    area, area_label = c["area"]
    traces = [baseline]
    for k, o in enumerate(others):
        traces.append(
            go.Scatter(
                x=o[c["x"]],
                y=o[c["y"]],
                mode="lines",
                line_shape=c["shape"],
                name=f"{o['label']} ({area_label} {_fmt_area(o.get(area))})",
                line={"color": _OTHER_COLOURS[k % len(_OTHER_COLOURS)], "width": 1.5},
            )
        )
    name = f"{view.get('result', '')} {view.get('split', '')}"
    traces.append(
        go.Scatter(
            x=d[c["x"]][keep],
            y=d[c["y"]][keep],
            customdata=t[keep],
            mode="lines",
            line_shape=c["shape"],
            name=f"{name} ({area_label} {_fmt_area(view.get(area))})",
            line={"color": COLOURS["main"], "width": 2},
            hovertemplate=f"{c['hover']}<br>threshold %{{customdata:.4f}}<extra></extra>",
            meta=MAIN_CURVE,
        )
    )
    i = threshold_index(t, threshold)
    traces.append(_marker_trace(float(d[c["x"]][i]), float(d[c["y"]][i]), threshold))
    (x_title, x_top), (y_title, y_top) = c["axes"]
    return new_figure(
        traces,
        **_LAYOUT,
        title=_title(title),
        xaxis={"title": x_title, "range": [-0.01, x_top]},
        yaxis={"title": y_title, "range": [-0.01, y_top]},
        hovermode="closest",
        uirevision=kind,
    )


def roc_figure(
    view: Mapping[str, Any],
    threshold: float,
    others: Sequence[Mapping[str, Any]] = (),
    title: str = "ROC curve",
) -> go.Figure:
    """ROC curve of ``view`` with a marker at ``threshold``, the chance diagonal and ``others``.

    Args:
        view: a ``load_view`` dict.
        threshold: where the marker sits (counts at the stored threshold at or above it).
        others: curves to overlay, each ``{'label', 'fpr', 'tpr', 'roc_auc'}`` (``compare_curve``).
        title: figure title.

    The main curve's points carry their threshold as ``customdata`` (clicking picks it: the
    browser reads it at the clicked point's index), a float64 array that goes to the browser as
    a typed array; at most ``MAX_CURVE_POINTS`` of them.
    """
    chance = go.Scatter(
        x=[0, 1],
        y=[0, 1],
        mode="lines",
        name="chance",
        line={"dash": "dot", "color": COLOURS["baseline"]},
        hoverinfo="skip",
    )
    return _curve_figure("roc", view, threshold, others, title, chance)


def pr_figure(
    view: Mapping[str, Any],
    threshold: float,
    others: Sequence[Mapping[str, Any]] = (),
    title: str = "Precision-recall curve",
) -> go.Figure:
    """PR curve of ``view`` (step-wise, as AP sums it) with the prevalence baseline and a marker.

    ``others``: curves to overlay, each ``{'label', 'recall', 'precision', 'average_precision',
    'prevalence'}``.
    """
    n_pos, n_neg = view["n_pos"], view["n_neg"]
    prevalence = n_pos / (n_pos + n_neg)
    baseline = go.Scatter(
        x=[0, 1],
        y=[prevalence, prevalence],
        mode="lines",
        name=f"prevalence {prevalence:.3f}",
        line={"dash": "dot", "color": COLOURS["baseline"]},
        hoverinfo="skip",
    )
    return _curve_figure("pr", view, threshold, others, title, baseline)


def confusion_z(tp: int, fp: int, tn: int, fn: int) -> tuple[list[list[float]], list[list[str]]]:
    """Heatmap cells ``[[TN, FP], [FN, TP]]`` (rows: actual negative, positive) as row fractions,
    and their texts (count and row percentage)."""
    rows = ((tn, fp), (fn, tp))
    z, text = [], []
    for a, b in rows:
        n = a + b
        fa, fb = (a / n, b / n) if n else (0.0, 0.0)
        z.append([fa, fb])
        text.append([f"{a:,}<br>{100 * fa:.1f}%", f"{b:,}<br>{100 * fb:.1f}%"])
    return z, text


def confusion_figure(tp: int, fp: int, tn: int, fn: int, threshold: float) -> go.Figure:
    """The 2x2 confusion table as an annotated heatmap: counts and row percentages."""
    z, text = confusion_z(tp, fp, tn, fn)
    return new_figure(
        [
            go.Heatmap(
                z=z,
                x=["predicted negative", "predicted positive"],
                y=["actual negative", "actual positive"],
                text=text,
                texttemplate="%{text}",
                textfont={"size": 15},
                colorscale="Blues",
                zmin=0,
                zmax=1,
                showscale=False,
                hovertemplate="%{y}, %{x}: %{text}<extra></extra>",
                meta=CONFUSION,
            )
        ],
        height=320,
        margin=CONFUSION_MARGIN,
        title=title_above_plot(f"Confusion at threshold {_t_label(threshold)}", size=15),
        xaxis={"side": "bottom", "tickfont": {"size": 12}},
        yaxis={"autorange": "reversed", "tickfont": {"size": 12}},
    )


def _vline(threshold: float) -> dict[str, Any]:
    x = min(max(float(threshold), 0.0), 1.0)
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": x,
        "x1": x,
        "y0": 0,
        "y1": 1,
        "line": {"color": COLOURS["marker"], "width": 2, "dash": "dash"},
        "name": THRESHOLD_LINE,
    }


def metric_curves_figure(view: Mapping[str, Any], threshold: float) -> go.Figure:
    """Precision, recall, F1 and accuracy against threshold, with a line at ``threshold``
    (every ``k``-th stored threshold and the last, at most ``MAX_CURVE_POINTS``)."""
    d = _curve_arrays(view)
    t = d["thresholds"]
    keep = thin_indices(np.flatnonzero(t <= 1.0))  # NOTHING_POSITIVE has no place on [0, 1]
    traces = [
        go.Scatter(
            x=t[keep],
            y=d[key][keep],
            mode="lines",
            name=key,
            line={"color": colour, "width": 1.8},
        )
        for key, colour in (
            ("precision", "#d63384"),
            ("recall", "#198754"),
            ("f1", "#0d6efd"),
            ("accuracy", "#fd7e14"),
        )
    ]
    return new_figure(
        traces,
        **_LAYOUT,
        title=_title("Metrics against threshold"),
        xaxis={"title": "threshold", "range": [0, 1]},
        yaxis={"range": [-0.01, 1.02]},
        hovermode="x unified",
        shapes=[_vline(threshold)],
        uirevision="metric-curves",
    )


def shaded_mass(view: Mapping[str, Any], threshold: float) -> tuple[list[int], list[int], int, int]:
    """Per histogram bin: the FN part (positives below ``threshold``) and the FP part (negatives
    at or above it). A bin counts as above when its left edge is >= ``threshold``, so the shading
    is exact at the bin edges and off by at most one bin elsewhere. Also returns the exact FN and
    FP counts (from the cumulative counts) for the legend.
    """
    edges = np.asarray(view["hist"]["edges"], np.float64)
    pos = np.asarray(view["hist"]["pos"], np.int64)
    neg = np.asarray(view["hist"]["neg"], np.int64)
    above = edges[:-1] >= threshold
    fn_bins = np.where(above, 0, pos)
    fp_bins = np.where(above, neg, 0)
    i = threshold_index(np.asarray(view["thresholds"], np.float64), threshold)
    return fn_bins.tolist(), fp_bins.tolist(), int(view["fn"][i]), int(view["fp"][i])


def error_hist_figure(view: Mapping[str, Any], threshold: float, log_y: bool = True) -> go.Figure:
    """Score histograms of positive and negative voxels with the threshold line; the FN mass
    (positives below it) and the FP mass (negatives at or above it) shaded."""
    edges = np.asarray(view["hist"]["edges"], np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    widths = np.diff(edges)
    fn_bins, fp_bins, n_fn, n_fp = shaded_mass(view, threshold)
    traces = [
        go.Bar(
            x=centres,
            y=fn_bins,
            width=widths,
            name=f"false negatives ({n_fn:,})",
            marker={"color": COLOURS["fn"], "line": {"width": 0}},
            meta=FN_SHADE,
        ),
        go.Bar(
            x=centres,
            y=fp_bins,
            width=widths,
            name=f"false positives ({n_fp:,})",
            marker={"color": COLOURS["fp"], "line": {"width": 0}},
            meta=FP_SHADE,
        ),
    ]
    for key, label, colour in (
        ("pos", "positives", COLOURS["pos"]),
        ("neg", "negatives", COLOURS["neg"]),
    ):
        traces.append(
            go.Scatter(
                x=edges,
                y=list(view["hist"][key]) + [view["hist"][key][-1]],
                mode="lines",
                line={"shape": "hv", "color": colour, "width": 1.8},
                name=label,
            )
        )
    return new_figure(
        traces,
        **_LAYOUT,
        title=_title("Score distributions"),
        xaxis={"title": "predicted probability of class 1", "range": [0, 1]},
        yaxis={"title": "voxels", "type": "log" if log_y else "linear"},
        barmode="overlay",
        bargap=0,
        shapes=[_vline(threshold)],
        uirevision=f"hist-{log_y}",
    )


def figure_html(fig: go.Figure) -> str:
    """A standalone HTML page of ``fig`` with plotly.js inline (opens without internet)."""
    return fig.to_html(include_plotlyjs=True, full_html=True)


# ----------------------------------------------------------------------------------------------
# thresholded segmentation


def segmentation_rgb(
    raw: np.ndarray, prob: np.ndarray, label: np.ndarray, threshold: float, opacity: float = 0.6
) -> np.ndarray:
    """Grey raw slice with TP, FP and FN voxels at ``threshold`` in ``SEG_COLOURS``.

    Predicted positive means ``prob >= threshold`` (as the counts); label -1 voxels stay grey.

    Returns:
        uint8 RGB ``(h, w, 3)``.
    """
    raw = np.clip(np.nan_to_num(np.asarray(raw, np.float32)), 0.0, 1.0)
    prob, label = np.asarray(prob), np.asarray(label)
    if not raw.shape == prob.shape == label.shape or raw.ndim != 2:
        raise ValueError(
            f"raw, probability and label slices must be 2-d of one shape, got {raw.shape}, "
            f"{prob.shape} and {label.shape}"
        )
    pred = prob >= threshold
    rgb = np.repeat(raw[..., None], 3, axis=2)
    a = float(np.clip(opacity, 0.0, 1.0))
    for key, mask in (
        ("tp", pred & (label == 1)),
        ("fp", pred & (label == 0)),
        ("fn", ~pred & (label == 1)),
    ):
        col = np.asarray(SEG_COLOURS[key], np.float32) / 255.0
        rgb[mask] = rgb[mask] * (1.0 - a) + col * a
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def segmentation_counts(prob: np.ndarray, label: np.ndarray, threshold: float) -> dict[str, int]:
    """TP, FP, FN, TN of one slice (or cube) at ``threshold``; label -1 ignored."""
    pred = np.asarray(prob) >= threshold
    label = np.asarray(label)
    pos, neg = label == 1, label == 0
    return {
        "tp": int(np.count_nonzero(pred & pos)),
        "fp": int(np.count_nonzero(pred & neg)),
        "fn": int(np.count_nonzero(~pred & pos)),
        "tn": int(np.count_nonzero(~pred & neg)),
    }


def segmentation_figure(
    raw: np.ndarray,
    prob: np.ndarray,
    label: np.ndarray,
    threshold: float,
    title: str = "",
    opacity: float = 0.6,
) -> go.Figure:
    """One z plane: raw grey with TP (green), FP (red) and FN (blue) at ``threshold``."""
    img, names = segmentation_parts(raw, prob, label, threshold, opacity)
    colours = ["rgb({},{},{})".format(*SEG_COLOURS[key]) for key in ("tp", "fp", "fn")]
    image = go.Image(source=img, name="segmentation", hoverinfo="skip")
    return image_figure(image, list(zip(colours, names, strict=True)), title)


def segmentation_parts(
    raw: np.ndarray, prob: np.ndarray, label: np.ndarray, threshold: float, opacity: float = 0.6
) -> tuple[str, list[str]]:
    """What changes in a drawn ``segmentation_figure`` with the plane or the threshold: its PNG
    ``data:`` URI and its legend names (TP, FP, FN with their counts)."""
    c = segmentation_counts(prob, label, threshold)
    img = png_data_uri(segmentation_rgb(raw, prob, label, threshold, opacity))
    names = [
        f"{name} ({c[key]:,})"
        for key, name in (
            ("tp", "true positive"),
            ("fp", "false positive"),
            ("fn", "false negative"),
        )
    ]
    return img, names


def image_patch(source: str, names: list[str], title: str) -> Patch:
    """A ``dash.Patch`` turning a drawn image figure (``segmentation_figure``,
    ``app.neuron_figures.instance_figure``: the image, then one legend trace per name) into
    another plane or threshold: the PNG, the legend names and the title, not a new figure
    (building a ``go.Figure`` costs ~100x the PNG on the server)."""
    patch = Patch()
    patch["data"][0]["source"] = source
    for i, name in enumerate(names, start=1):
        patch["data"][i]["name"] = name
    patch["layout"]["title"]["text"] = title
    return patch


def image_figure(image: go.Image, legend: list[tuple[str, str]], title: str) -> go.Figure:
    """An image (a z plane) with a colour legend under it: one square marker per
    ``(colour, name)``, no axes, zoom kept across redraws. Built in one constructor call
    (``new_figure``): a layout set afterwards cost about 15 ms a figure, most of its time."""
    squares = [
        go.Scatter(x=[None], y=[None], mode="markers", name=name,
                   marker={"size": 12, "symbol": "square", "color": colour})
        for colour, name in legend
    ]  # fmt: skip
    bare = {"showticklabels": False, "showgrid": False, "zeroline": False}
    return new_figure(
        [image, *squares],
        title=title_above_plot(title),
        # the colour legend under the image: above it, it met the title and the modebar
        margin={"l": 10, "r": 10, "t": TITLED_MARGIN_TOP, "b": 40},
        height=520,
        legend={"orientation": "h", "yanchor": "top", "y": 0, "x": 0},
        uirevision="segmentation",
        xaxis=bare,
        yaxis=bare,
    )
