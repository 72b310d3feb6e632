"""Pure figure builders for the dashboard: arrays in, ``plotly.graph_objects.Figure`` out.

Nothing here reads files or imports Dash, so every builder is testable on its own. The
live-update callbacks append to these figures by trace index, so the trace order of each
figure is part of the contract and is spelled out in ``TIMELINE_TRACES`` and
``HISTORY_PANELS``. Every curve figure carries exactly one annotation (index 0), the
"showing N of M points" note, which a live update rewrites in place.

Example:
    >>> import numpy as np
    >>> fig = timeline_figure(np.arange(3), np.array([1.0, 0.5, 0.4]), n_total=3)
    >>> [t.name for t in fig.data]
    ['loss', 'smoothed']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from trainer.class_metrics import CLASS_METRIC_RE
from trainer.colours import LR_COLOUR, MOM_COLOUR, TRAIN_COLOUR, VALID_COLOUR

#: trace order of ``timeline_figure``: raw loss (faded), then its smoothed line
TIMELINE_TRACES: tuple[str, ...] = ("loss", "smoothed")

#: panel name -> the history columns it draws, in trace order
HISTORY_PANELS: dict[str, tuple[str, ...]] = {
    "loss": ("train_loss", "valid_loss"),
    "error": ("train_err", "valid_err"),
    "lr": ("lr", "mom"),
    "gain": ("loss_gain",),
    "are": ("valid_are",),
}

#: history panels drawn only for runs whose history has their column (``valid_are`` is
#: written when the config sets ``history_are_threshold``)
OPTIONAL_PANELS = frozenset({"are"})

#: panels whose y axis follows the log-y toggle (loss gain can be negative)
LOG_PANELS = frozenset({"timeline", "loss", "error", "lr"})

PANEL_TITLES = {
    "timeline": "Training loss per step",
    "loss": "Loss",
    "error": "Classification error",
    "lr": "Learning rate and momentum",
    "gain": "Loss gain",
    "are": "Neurons: adapted Rand error (validation)",
}

COLUMN_LABELS = {
    "train_loss": "train loss",
    "valid_loss": "valid loss",
    "train_err": "train error",
    "valid_err": "valid error",
    "lr": "learning rate",
    "mom": "momentum",
    "loss_gain": "loss gain",
    "loss": "loss",
    "valid_iou_mean": "valid IoU (mean over classes)",
    "valid_dice_mean": "valid Dice (mean over classes)",
    "valid_are": "valid adapted Rand error",
}

X_TITLES = {"step": "step", "time": "training time (s)"}

#: the reports' colours too (``trainer.colours``): train and valid look the same everywhere
_COLOURS = {
    "loss": TRAIN_COLOUR,
    "smoothed": "#d62728",
    "train_loss": TRAIN_COLOUR,
    "valid_loss": VALID_COLOUR,
    "train_err": TRAIN_COLOUR,
    "valid_err": VALID_COLOUR,
    "lr": LR_COLOUR,
    "mom": MOM_COLOUR,
    "loss_gain": "#8c564b",
    "valid_are": VALID_COLOUR,
}

#: overlay colours of the classes in the preview viewer (class 0 is usually background)
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (228, 26, 28),
    (55, 126, 184),
    (77, 175, 74),
    (152, 78, 163),
    (255, 127, 0),
    (255, 255, 51),
    (166, 86, 40),
    (247, 129, 191),
)


#: fixed margins (pixels) of the curve figures, wide enough for their tick labels and axis
#: titles; ``MARGIN_RIGHT_Y2`` where a second y axis sits on the right
MARGIN = {"l": 70, "r": 15, "t": 40, "b": 45}
MARGIN_RIGHT_Y2 = 55

#: a small template instead of "plotly_white": the full templates are deep-copied into every
#: figure, which made building the run page's figures several times slower. Axes do not
#: grow the margins to fit their labels (``automargin``): plotly.js measures every tick
#: label for that and then draws the figure a second time with the new margins, which
#: made a page of curves take twice as long to draw; ``MARGIN`` leaves room for them. Nor
#: does plotly.js measure each label again to hide the ones past the graph's edge
#: (``ticklabeloverflow``, a fifth of the drawing time in Chromium's profile): none is.
_AXIS = {
    "gridcolor": "#ebf0f8",
    "zerolinecolor": "#ebf0f8",
    "linecolor": "#ccc",
    "automargin": False,
    "ticklabeloverflow": "allow",
}
_TEMPLATE = {
    "layout": {
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": pcolors.qualitative.Plotly,
        "xaxis": _AXIS,
        "yaxis": _AXIS,
    }
}


def points_note(n_shown: int, n_total: int) -> str:
    """The text of the point-count annotation, e.g. ``'showing 2,000 of 1,000,000 points'``."""
    if n_shown < n_total:
        return f"showing {n_shown:,} of {n_total:,} points"
    return f"{n_total:,} points"


def new_figure(data: Sequence | None = None, **layout) -> go.Figure:
    """A figure with ``_TEMPLATE`` and ``layout``. Given to the constructor they cost about a
    millisecond; set afterwards through ``update_layout`` the template alone cost tens of
    milliseconds per figure, most of the time the run page's first response took."""
    return go.Figure(data, layout={"template": _TEMPLATE, **layout})


#: a figure title just above the plot area, left, under the modebar (which plotly draws in the
#: top right corner of the figure, ``MODEBAR_HEIGHT`` pixels high): with a top margin of at
#: least ``TITLED_MARGIN_TOP`` the two never meet, however narrow the figure
TITLE_ABOVE_PLOT = {"x": 0.01, "xanchor": "left", "yref": "paper", "y": 1, "yanchor": "bottom",
                    "pad": {"b": 6}, "font": {"size": 14}}  # fmt: skip
MODEBAR_HEIGHT = 30
TITLED_MARGIN_TOP = 62
#: a legend in one column right of the plot area, below the modebar's corner
LEGEND_RIGHT = {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"}


def title_above_plot(text: str, **font) -> dict:
    """``TITLE_ABOVE_PLOT`` with ``text`` (and any font settings, e.g. ``size=15``)."""
    return {**TITLE_ABOVE_PLOT, "text": text, "font": {**TITLE_ABOVE_PLOT["font"], **font}}


def _curve_layout(title: str, x_title: str, uirevision: str, note: str) -> dict:
    """Title, size, legend and the point-count note (annotation 0) of a curve figure.

    The title sits left and the legend right in the band between the modebar and the plot.
    """
    return {
        "title": title_above_plot(title),
        "xaxis": {"title": {"text": x_title}},
        "uirevision": uirevision,
        "margin": {**MARGIN, "t": TITLED_MARGIN_TOP},
        "height": 320,
        "legend": {"orientation": "h", "y": 1, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        "hovermode": "x",
        "annotations": [
            {
                "text": note,
                "xref": "paper",
                "yref": "paper",
                "x": 1,
                "y": 0,
                "xanchor": "right",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 10, "color": "#777"},
            }
        ],
    }


def _list(a: np.ndarray) -> list:
    # plain lists, not numpy: plotly would ship arrays as typed-array blobs, which a Dash
    # Patch cannot extend in the browser
    return np.asarray(a).tolist()


def _line(x: np.ndarray, y: np.ndarray, name: str, colour: str, **kw) -> go.Scatter:
    return go.Scatter(x=_list(x), y=_list(y), name=name, mode="lines", line={"color": colour}, **kw)


def timeline_figure(
    x: np.ndarray,
    loss: np.ndarray,
    smoothed: np.ndarray | None = None,
    *,
    n_total: int | None = None,
    x_axis: str = "step",
    log_y: bool = False,
    smoothing_label: str = "smoothed",
    uirevision: str = "timeline",
) -> go.Figure:
    """Per-step training loss: the raw curve faded, its smoothed line on top.

    Args:
        x: step numbers or training times of the points shown (already downsampled).
        loss: raw loss at ``x``.
        smoothed: smoothed loss at ``x`` (computed on the full series); ``None`` draws an
            empty smoothed trace so the trace order stays fixed for live appends.
        n_total: number of points in the full series (for the "showing N of M" note).
        x_axis: ``'step'`` or ``'time'`` (axis title only).
        log_y: logarithmic y axis.
        smoothing_label: legend label of the smoothed line, e.g. ``'EMA 0.6'``.
        uirevision: keeps zoom and pan across updates while unchanged.

    Returns:
        A figure with the traces ``TIMELINE_TRACES``.
    """
    x = np.asarray(x)
    loss = np.asarray(loss)
    if x.shape != loss.shape:
        raise ValueError(f"timeline x and loss differ in length: {x.shape} vs {loss.shape}")
    sm = np.asarray(smoothed) if smoothed is not None else np.empty(0)
    sm_x = x if smoothed is not None else np.empty(0)
    if smoothed is not None and sm.shape != x.shape:
        raise ValueError(f"timeline x and smoothed differ in length: {x.shape} vs {sm.shape}")
    n_total = len(x) if n_total is None else n_total
    layout = _curve_layout(PANEL_TITLES["timeline"], X_TITLES.get(x_axis, x_axis), uirevision,
                           points_note(len(x), n_total))  # fmt: skip
    layout["yaxis"] = {"type": "log" if log_y else "linear", "title": {"text": "loss"}}
    return new_figure(
        [
            _line(x, loss, "loss", _COLOURS["loss"], opacity=0.3),
            _line(sm_x, sm, smoothing_label, _COLOURS["smoothed"]),
        ],
        **layout,
    )


def history_figure(
    panel: str,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    n_total: int | None = None,
    x_axis: str = "step",
    log_y: bool = False,
    uirevision: str | None = None,
) -> go.Figure:
    """One panel of the history table (see ``HISTORY_PANELS``).

    Args:
        panel: ``'loss'``, ``'error'``, ``'lr'``, ``'gain'`` or ``'are'`` (the validation
            neurons' adapted Rand error).
        curves: column name -> ``(x, y)`` of the points shown; a missing column draws an
            empty trace so trace indices stay fixed.
        n_total: number of rows in the full history (for the "showing N of M" note).
        x_axis: ``'step'`` or ``'time'``.
        log_y: logarithmic y axis (ignored for the loss gain panel, which may go negative).
        uirevision: keeps zoom and pan across updates; defaults to the panel name.

    Returns:
        A figure with one trace per column of ``HISTORY_PANELS[panel]``; in the ``'lr'``
        panel the momentum sits on a second y axis on the right.
    """
    if panel not in HISTORY_PANELS:
        raise ValueError(
            f"unknown history panel {panel!r}; expected one of {sorted(HISTORY_PANELS)}"
        )
    columns = HISTORY_PANELS[panel]
    traces, shown = [], 0
    for col in columns:
        x, y = curves.get(col, (np.empty(0), np.empty(0)))
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise ValueError(
                f"history column {col!r}: x and y differ in length: {x.shape} vs {y.shape}"
            )
        shown = max(shown, len(x))
        extra = {"yaxis": "y2"} if panel == "lr" and col == "mom" else {}
        traces.append(_line(x, y, COLUMN_LABELS[col], _COLOURS[col], **extra))
    n_total = shown if n_total is None else n_total
    layout = _curve_layout(PANEL_TITLES[panel], X_TITLES.get(x_axis, x_axis), uirevision or panel,
                           points_note(shown, n_total))  # fmt: skip
    xs = [np.ravel(curves.get(c, (np.empty(0), None))[0]) for c in columns]
    x_band = single_point_range(np.concatenate(xs) if xs else np.empty(0))
    if x_band is not None:
        # a lone point of a "lines" trace draws nothing, on plotly's -1..1 axes
        layout["xaxis"]["range"] = x_band
        for trace in traces:
            trace.mode = "lines+markers"
    left = [np.ravel(curves.get(c, (None, []))[1]) for c in columns if c != "mom"]
    left_y = np.concatenate(left) if left else np.empty(0)
    log = (log_y and panel in LOG_PANELS) or (panel == "lr" and spans_decade(left_y))
    layout["yaxis"] = _constant_range(
        {"type": "log" if log else "linear", "title": {"text": COLUMN_LABELS[columns[0]]}},
        left_y,
        log,
    )
    if panel == "lr":
        yaxis2 = {"overlaying": "y", "side": "right", "title": {"text": "momentum"},
                  "showgrid": False}  # fmt: skip
        layout["yaxis2"] = _constant_range(yaxis2, curves.get("mom", (None, []))[1], False)
        layout["margin"] = {**layout["margin"], "r": MARGIN_RIGHT_Y2}
    return new_figure(traces, **layout)


def _constant_range(axis: dict, y: Sequence[float] | np.ndarray, log: bool) -> dict:
    """``axis`` with the ``readable_range`` of a (near-)constant series, if it has one."""
    band = readable_range(y)
    if band is not None and (not log or band[0] > 0):
        axis["range"] = [float(np.log10(v)) for v in band] if log else band
    return axis


#: a series whose values differ by at most this fraction of their size counts as constant
NEAR_CONSTANT = 1e-3
#: half the height of the range a constant series is drawn in, as a fraction of its value
CONSTANT_MARGIN = 0.1


def readable_range(y: Sequence[float] | np.ndarray) -> list[float] | None:
    """The y range (data units) a (near-)constant non-zero series is drawn in, else ``None``.

    Plotly autoranges a constant series to ``value ± 1`` (and ignores
    ``autorangeoptions.include`` then), so a constant learning rate of 0.002 looks like zero.
    Such a series gets ``value ± 10%`` instead; the run page lets the axis autorange again
    once appended points leave that band (``outside_range``).

    Example:
        >>> readable_range([0.002, 0.002])
        [0.0018, 0.0022]
        >>> readable_range([1.0, 2.0]) is None
        True
    """
    a = np.asarray(y, dtype=float).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    lo, hi = float(a.min()), float(a.max())
    size = max(abs(lo), abs(hi))
    if size == 0 or hi - lo > NEAR_CONSTANT * size:
        return None
    mid = (lo + hi) / 2
    pad = CONSTANT_MARGIN * abs(mid)
    return [round_sig(mid - pad), round_sig(mid + pad)]


def single_point_range(x: Sequence[float] | np.ndarray) -> list[float] | None:
    """The x range a series drawn at one x value (a run's first history row) is shown in,
    else ``None``: the value ± 10%, or ± 0.5 around zero (step 0), not plotly's -1..1.

    Example:
        >>> single_point_range([200.0, 200.0])
        [180.0, 220.0]
        >>> single_point_range([0])
        [-0.5, 0.5]
        >>> single_point_range([0, 20]) is None
        True
    """
    a = np.asarray(x, dtype=float).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0 or float(a.min()) != float(a.max()):
        return None
    v = float(a[0])
    pad = CONSTANT_MARGIN * abs(v) if v else 0.5
    return [round_sig(v - pad), round_sig(v + pad)]


def fixed_ranges(fig: go.Figure) -> dict[str, list[float]]:
    """Axis name -> the data-unit band of each axis ``history_figure`` fixed (see
    ``readable_range`` and ``single_point_range``), so a later append can tell whether the
    band still fits."""
    layout = fig.layout.to_plotly_json()
    out = {}
    for name in ("xaxis", "yaxis", "yaxis2"):
        axis = layout.get(name) or {}
        if axis.get("range") is not None:
            band = [float(v) for v in axis["range"]]
            out[name] = [10**v for v in band] if axis.get("type") == "log" else band
    return out


def outside_range(y: Sequence[float] | np.ndarray, band: Sequence[float]) -> bool:
    """Whether a finite value of ``y`` lies outside ``band`` (``[lo, hi]``)."""
    a = np.asarray(y, dtype=float).ravel()
    a = a[np.isfinite(a)]
    return bool(a.size) and bool((a < band[0]).any() or (a > band[1]).any())


def spans_decade(y: Sequence[float] | np.ndarray) -> bool:
    """Whether the positive values of ``y`` span more than a factor of ten (a log axis reads
    better), e.g. a learning rate decayed from 0.01 to 0.0005."""
    a = np.asarray(y, dtype=float).ravel()
    a = a[np.isfinite(a) & (a > 0)]
    return a.size > 1 and float(a.max()) > 10 * float(a.min())


def round_sig(x: float, digits: int = 12) -> float:
    """``x`` to ``digits`` significant digits (drops float noise such as 0.0022000000000000001)."""
    return float(f"{x:.{digits}g}")


def history_figures(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    n_total: int | None = None,
    x_axis: str = "step",
    log_y: bool = False,
) -> dict[str, go.Figure]:
    """All history panels: ``{'loss': fig, 'error': fig, 'lr': fig, 'gain': fig, 'are': fig}``.

    The ``OPTIONAL_PANELS`` are built too (empty without their column), so a live update
    can address every panel; the page shows them only when ``curves`` has their column.

    Args:
        curves: column name -> ``(x, y)`` of the points shown, for any of the columns in
            ``HISTORY_PANELS``.
        n_total: number of rows in the full history table.
        x_axis: ``'step'`` or ``'time'``.
        log_y: logarithmic y axes where it makes sense (``LOG_PANELS``).
    """
    return {
        panel: history_figure(panel, curves, n_total=n_total, x_axis=x_axis, log_y=log_y)
        for panel in HISTORY_PANELS
    }


def label_error_panel(fig: go.Figure, error_label: str | None) -> go.Figure:
    """Name what the error columns hold (status.json's ``error_metric``, e.g. ``'mean squared
    error'`` for a regression loss) in the error panel's title and y axis."""
    if error_label:
        fig.update_layout(title={"text": f"Error: {error_label}"})
        fig.update_yaxes(title_text=error_label)
    return fig


def class_columns(columns: Iterable[str]) -> list[str]:
    """The per-class metric columns among ``columns`` in trace order: IoU per class, Dice per
    class, then the two means."""
    found = [c for c in columns if CLASS_METRIC_RE.match(c)]

    def key(c: str) -> tuple[int, int, int]:
        metric, which = CLASS_METRIC_RE.match(c).groups()
        mean = which == "mean"
        return (mean, metric != "iou", -1 if mean else int(which))

    return sorted(found, key=key)


def class_metric_label(column: str) -> str:
    """``valid_iou_1`` -> ``IoU class 1``, ``valid_dice_mean`` -> ``Dice mean``."""
    metric, which = CLASS_METRIC_RE.match(column).groups()
    name = "IoU" if metric == "iou" else "Dice"
    return f"{name} mean" if which == "mean" else f"{name} class {which}"


def class_metrics_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    n_total: int | None = None,
    x_axis: str = "step",
    uirevision: str = "classes",
) -> go.Figure:
    """Per-class validation IoU (solid) and Dice (dotted) and their means (thick), one trace per
    column in ``class_columns`` order, so live appends can address them by index."""
    traces, shown = [], 0
    for col in class_columns(curves):
        x, y = (np.asarray(a) for a in curves[col])
        metric, which = CLASS_METRIC_RE.match(col).groups()
        mean = which == "mean"
        rgb = (40, 40, 40) if mean else CLASS_COLOURS[int(which) % len(CLASS_COLOURS)]
        line = {"color": f"rgb{rgb}", "width": 3 if mean else 1.5}
        if metric == "dice":
            line["dash"] = "dot"
        traces.append(go.Scatter(x=_list(x), y=_list(y), name=class_metric_label(col),
                                 mode="lines", line=line))  # fmt: skip
        shown = max(shown, len(x))
    n_total = shown if n_total is None else n_total
    note = points_note(shown, n_total) if traces else "no per-class metrics in this run's history"
    layout = _curve_layout("Per-class IoU / Dice (validation)", X_TITLES.get(x_axis, x_axis),
                           uirevision, note)  # fmt: skip
    layout["yaxis"] = {"title": {"text": "IoU / Dice"}, "range": [0, 1.02]}
    # one row per class and metric: a column right of the plot, never over the title
    layout["legend"] = LEGEND_RIGHT
    layout["margin"] = {**layout["margin"], "r": CLASS_LEGEND_WIDTH}
    return new_figure(traces, **layout)


#: right margin (pixels) of the per-class panel: its legend column ("Dice class 12")
CLASS_LEGEND_WIDTH = 120


def add_best_marker(fig: go.Figure, x: float | None, y: float | None, label: str) -> go.Figure:
    """Append the "best" marker trace (always the figure's last trace; empty until a best)."""
    fig.add_trace(
        go.Scatter(
            x=[] if x is None else [x],
            y=[] if y is None else [y],
            name=label,
            mode="markers",
            marker={
                "symbol": "star",
                "size": 14,
                "color": "#ffd700",
                "line": {"color": "black", "width": 1},
            },
        )  # fmt: skip
    )
    return fig


def compare_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    column: str = "valid_loss",
    x_axis: str = "step",
    log_y: bool = False,
    n_totals: Mapping[str, int] | None = None,
) -> go.Figure:
    """The same history column of several runs, one trace per run.

    Args:
        curves: run name -> ``(x, y)`` of the points shown.
        column: the column drawn (axis title and figure title).
        x_axis: ``'step'`` or ``'time'``.
        log_y: logarithmic y axis.
        n_totals: run name -> rows in that run's full series, for the point-count note.
    """
    palette = pcolors.qualitative.Plotly
    traces, shown, total = [], 0, 0
    for i, (name, (x, y)) in enumerate(curves.items()):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise ValueError(f"run {name!r}: x and y differ in length: {x.shape} vs {y.shape}")
        traces.append(_line(x, y, name, palette[i % len(palette)]))
        shown += len(x)
        total += (n_totals or {}).get(name, len(x))
    label = COLUMN_LABELS.get(column, column)
    note = points_note(shown, total) if curves else "choose runs to compare"
    layout = _curve_layout(f"Compare: {label}", X_TITLES.get(x_axis, x_axis),
                           f"compare-{column}", note)  # fmt: skip
    layout["yaxis"] = {"type": "log" if log_y else "linear", "title": {"text": label}}
    return new_figure(traces, **layout)


def schedule_figure(
    plans: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    actual: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    current_step: int | None = None,
    log_y: bool = False,
) -> go.Figure:
    """Planned schedules (from the resolved config), one row per scheduled parameter.

    Args:
        plans: parameter name (``'lr'``, ``'mom'``, ...) -> ``(steps, values)`` of the plan.
        actual: parameter name -> ``(x, y)`` of the values the trainer logged, drawn as
            markers over the plan so a deviation is visible.
        current_step: draws a vertical line at the run's current step.
        log_y: logarithmic y axes.
    """
    names = list(plans)
    fig = make_subplots(
        rows=max(len(names), 1),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        figure=new_figure(),
    )
    for row, name in enumerate(names, start=1):
        steps, values = (np.asarray(a) for a in plans[name])
        label = COLUMN_LABELS.get(name, name)
        colour = _COLOURS.get(name, "#444")
        fig.add_trace(
            go.Scatter(
                x=_list(steps),
                y=_list(values),
                name=f"{label} (planned)",
                mode="lines",
                line={"color": colour, "dash": "dash", "shape": "hv"},
            ),
            row=row,
            col=1,
        )
        if actual and name in actual:
            ax, ay = (np.asarray(a) for a in actual[name])
            fig.add_trace(
                go.Scatter(
                    x=_list(ax),
                    y=_list(ay),
                    name=f"{label} (logged)",
                    mode="markers",
                    marker={"color": colour, "size": 4},
                ),
                row=row,
                col=1,
            )
        shown = [values] + ([np.asarray(actual[name][1])] if actual and name in actual else [])
        axis = schedule_axis(np.concatenate([np.ravel(v) for v in shown]), log_y)
        fig.update_yaxes(title_text=label, **axis, row=row, col=1)
    if current_step is not None and names:
        fig.add_vline(x=current_step, line={"color": "#999", "dash": "dot"})
    fig.update_layout(
        title=title_above_plot("Planned schedules"),
        height=max(220, 180 * len(names) + 60),
        margin={**MARGIN, "t": TITLED_MARGIN_TOP},
        uirevision="schedules",
    )
    if not names:
        fig.add_annotation(
            text="no schedules in the resolved config", showarrow=False, xref="paper", yref="paper"
        )
    fig.update_xaxes(title_text="step", row=max(len(names), 1), col=1)
    return fig


def schedule_axis(values: Sequence[float] | np.ndarray, log_y: bool = False) -> dict:
    """Type and range of one schedule's own y axis, fitted to its values.

    A decay over more than a decade (or ``log_y``) gets a log axis; a constant value its
    ``readable_range``; any other series its span plus 5% each side, so a learning rate of
    0.002 fills its row instead of sitting on a -0.5..1 autorange as a flat line at zero.

    Example:
        >>> schedule_axis([0.002, 0.0016, 0.00128])
        {'type': 'linear', 'range': [0.001244, 0.002036]}
        >>> schedule_axis([0.002, 0.002])
        {'type': 'linear', 'range': [0.0018, 0.0022]}
    """
    a = np.asarray(values, dtype=float).ravel()
    a = a[np.isfinite(a)]
    log = (log_y or spans_decade(a)) and a.size > 0 and bool((a > 0).all())
    if a.size == 0 or not a.any():
        return {"type": "log" if log else "linear"}
    band = readable_range(a)
    if band is None:
        lo, hi = float(a.min()), float(a.max())
        if log:
            lo, hi = np.log10(lo), np.log10(hi)
        pad = 0.05 * (hi - lo)
        band = [round_sig(lo - pad), round_sig(hi + pad)]
        if log:
            return {"type": "log", "range": band}
        return {"type": "linear", "range": band}
    if log:
        return {"type": "log", "range": [float(np.log10(v)) for v in band]}
    return {"type": "linear", "range": band}


#: marker symbols of the regression outputs; colour is taken by row age, so outputs differ by shape
_REGRESSION_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x")


def _as_columns(a: np.ndarray | Sequence, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"regression {what} must be (n,) or (n, k), got shape {arr.shape}")
    return arr


def regression_figure(
    pred: np.ndarray | Sequence,
    target: np.ndarray | Sequence,
    *,
    n_total: int | None = None,
    max_points: int = 5000,
    uirevision: str = "regression",
) -> go.Figure:
    """Predicted against true value of a regression output, newest rows brightest.

    Rows are drawn in table order and only the newest ``max_points`` of them are kept, so
    the marker colour (the row number, viridis: old dark, new yellow) shows whether the
    recent predictions moved towards the identity line. Both axes share one range and one
    scale, so the identity line is the diagonal.

    Args:
        pred: predictions, ``(n,)`` or ``(n, k)`` for ``k`` outputs (the ``pred_*`` columns
            of the history's ``regression`` table, oldest row first).
        target: true values, same shape as ``pred`` (the ``target_*`` columns).
        n_total: rows in the whole table when ``pred`` holds only its newest rows; the
            row numbers in the hover text and the "showing N of M points" note count
            from it. Defaults to ``len(pred)``.
        max_points: newest rows kept (points per output).
        uirevision: keeps zoom and pan across updates while unchanged.

    Returns:
        One ``Scattergl`` trace per output (``x`` true, ``y`` predicted), then the
        identity line; non-finite pairs are left out.

    Raises:
        ValueError: ``pred`` and ``target`` differ in shape, are not 1-d or 2-d, or
            ``max_points`` is below 1.

    Example:
        >>> fig = regression_figure([1.0, 2.1, 2.9], [1.0, 2.0, 3.0])
        >>> [t.name for t in fig.data], len(fig.data[0].x)
        (['prediction', 'identity'], 3)
    """
    p, t = _as_columns(pred, "pred"), _as_columns(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"regression pred and target differ in shape: {p.shape} vs {t.shape}")
    if max_points < 1:
        raise ValueError(f"regression max_points must be at least 1, got {max_points}")
    n, k = p.shape
    n_total = n if n_total is None else max(int(n_total), n)
    p, t = p[-max_points:], t[-max_points:]
    rows = np.arange(n_total - len(p), n_total)
    traces, shown, lo, hi = [], 0, np.inf, -np.inf
    for i in range(k):
        ok = np.isfinite(p[:, i]) & np.isfinite(t[:, i])
        x, y, r = t[ok, i], p[ok, i], rows[ok]
        if len(x):
            lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
        shown = max(shown, len(x))
        traces.append(
            go.Scattergl(
                x=_list(x),
                y=_list(y),
                customdata=_list(r),
                name="prediction" if k == 1 else f"output {i}",
                mode="markers",
                marker={
                    "color": _list(r),
                    "colorscale": "Viridis",
                    "cmin": int(rows[0]) if len(rows) else 0,
                    "cmax": int(rows[-1]) if len(rows) else 1,
                    "symbol": _REGRESSION_SYMBOLS[i % len(_REGRESSION_SYMBOLS)],
                    "size": 5,
                    "opacity": 0.7,
                    # one colour bar is enough: every output shares the row scale
                    "showscale": i == 0,
                    "colorbar": {"title": {"text": "row"}, "thickness": 12},
                },
                hovertemplate="row %{customdata}<br>true %{x:.4g}<br>predicted %{y:.4g}"
                "<extra>%{fullData.name}</extra>",
            )
        )
    if not np.isfinite(lo):
        lo, hi = 0.0, 1.0
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
    span = [float(lo - pad), float(hi + pad)]
    traces.append(
        go.Scatter(
            x=span,
            y=span,
            name="identity",
            mode="lines",
            line={"color": "#999", "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    note = points_note(shown, n_total) if n_total else "no regression rows yet"
    layout = _curve_layout("Regression: predicted vs true", "true", uirevision, note)
    layout.update(height=400, hovermode="closest")
    layout["xaxis"].update(range=span, constrain="domain")
    layout["yaxis"] = {"range": span, "title": {"text": "predicted"}, "scaleanchor": "x",
                       "scaleratio": 1}  # fmt: skip
    return new_figure(traces, **layout)
