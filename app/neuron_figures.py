"""Figures of the evaluation page's "Neurons" panel: pure builders, arrays in, ``go.Figure`` out.

``neuron_curves_figure``: VOI split, VOI merge (bits, left axis) and adapted Rand error (right
axis) against the threshold, with the current threshold marked. ``instance_figure``: one z plane
of a segmentation in instance colours, the largest split (the true neuron cut into the most
information) and the largest merge (the segment joining the most) highlighted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from app.evaluation_figures import image_figure
from app.figures import TITLED_MARGIN_TOP, new_figure, title_above_plot
from app.image_figures import png_data_uri

__all__ = [
    "NEURON_MARKER",
    "instance_figure",
    "instance_parts",
    "instance_rgb",
    "neuron_curves_figure",
]

#: the threshold line's trace, moved by ``assets/evaluation.js`` when the threshold changes
NEURON_MARKER = "vb-neuron-threshold"
SPLIT_RGB = (255, 170, 0)
MERGE_RGB = (220, 20, 60)


def neuron_curves_figure(record: Mapping[str, Any], threshold: float, title: str = "") -> go.Figure:
    """The cube's neuron curves with a vertical line at ``threshold``."""
    t = np.asarray(record["curve/thresholds"], float)
    traces = [
        go.Scatter(x=t, y=record[key], name=name, line={"color": colour})
        for key, name, colour in (
            ("curve/voi_split", "VOI split", "#fd7e14"),
            ("curve/voi_merge", "VOI merge", "#dc3545"),
        )
    ]
    traces.append(
        go.Scatter(
            x=t,
            y=record["curve/adapted_rand_error"],
            name="adapted Rand error",
            line={"color": "#0d6efd", "dash": "dot"},
            yaxis="y2",
        )
    )
    traces.append(
        go.Scatter(
            x=[float(threshold)] * 2,
            y=[0, 1],
            yaxis="y2",
            mode="lines",
            line={"color": "#212529", "width": 1},
            name=f"threshold {threshold:.2f}",
            meta=NEURON_MARKER,
        )
    )
    # layout in the constructor (new_figure): set afterwards it cost most of the figure's time
    return new_figure(
        traces,
        title=title_above_plot(title),
        xaxis={"title": {"text": "threshold (membrane probability)"}, "range": [0, 1]},
        yaxis={"title": {"text": "VOI (bits)"}, "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "adapted Rand error"},
            "overlaying": "y",
            "side": "right",
            "range": [0, 1],
        },  # fmt: skip
        # the legend under the x axis title: above the plot it met the title and the modebar
        margin={"l": 50, "r": 50, "t": TITLED_MARGIN_TOP, "b": 85},
        height=410,
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
        uirevision="neurons",
    )


def message_figure(text: str, height: int = 120) -> go.Figure:
    """A figure that is only a sentence (no axes, no frame), for a panel with nothing to draw,
    e.g. a result without neuron scores."""
    note = {"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0,
            "xanchor": "left", "y": 0.5, "font": {"size": 14, "color": "#555"}}  # fmt: skip
    return new_figure(
        height=height,
        xaxis={"visible": False},
        yaxis={"visible": False},
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        annotations=[note],
    )


def instance_rgb(
    seg: np.ndarray, gt: np.ndarray, largest_split: int, largest_merge: int
) -> np.ndarray:
    """RGB of a segmentation plane: a fixed pseudo-random colour per segment id, black for 0;
    the largest merge's segment in red, the largest split's neuron in amber stripes."""
    ids = seg.astype(np.uint64)
    hashed = (ids * np.uint64(2654435761)) & np.uint64(0xFFFFFF)
    rgb = np.stack([(hashed >> np.uint64(s)) & np.uint64(0xFF) for s in (16, 8, 0)], -1)
    rgb = (80 + rgb.astype(np.float32) * 0.6).astype(np.uint8)
    rgb[seg == 0] = 0
    if largest_merge:
        rgb[seg == largest_merge] = MERGE_RGB
    if largest_split:
        yy, xx = np.indices(seg.shape)
        stripes = (gt == largest_split) & ((yy + xx) % 4 < 2)
        rgb[stripes] = SPLIT_RGB
    return rgb


def instance_figure(
    seg: np.ndarray, gt: np.ndarray, largest_split: int, largest_merge: int, title: str = ""
) -> go.Figure:
    """One z plane in instance colours with the largest split and merge named in the legend."""
    img, names = instance_parts(seg, gt, largest_split, largest_merge)
    colours = ["rgb({},{},{})".format(*rgb) for rgb in (MERGE_RGB, SPLIT_RGB)]
    image = go.Image(source=img, name="instances", hoverinfo="skip")
    return image_figure(image, list(zip(colours, names, strict=True)), title)


def instance_parts(
    seg: np.ndarray, gt: np.ndarray, largest_split: int, largest_merge: int
) -> tuple[str, list[str]]:
    """What changes in a drawn ``instance_figure`` with the plane or the threshold: its PNG
    ``data:`` URI and its legend names (largest merge, largest split)."""
    img = png_data_uri(instance_rgb(seg, gt, largest_split, largest_merge))
    names = [
        f"largest merge: segment {largest_merge}" if largest_merge else "no merge",
        f"largest split: neuron {largest_split}" if largest_split else "no split",
    ]
    return img, names
