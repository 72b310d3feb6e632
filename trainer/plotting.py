"""The trainer's HTML report of a training history: DataFrames in, ``go.Figure`` out (pure).

``HistoryTracker.plot`` writes these as ``0-history.<kind>.html`` pages next to a run, in
ELEKTRONN2's layout (several panels per page, ELEKTRONN2's autoscaling). They are the trainer's
own report, named ``*_report``; the dashboard draws its live, incrementally updated figures with
``app/figures.py`` (``timeline_figure``, ``history_figure``, ``regression_figure``). Long curves are thinned with ``minmax_downsample`` (spikes survive) after smoothing
on the full data, so a 10^7-step run still gives a small page. Training and validation curves
take the dashboard's colours (``trainer.colours``), so a report and the run page read alike.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from trainer.colours import LR_COLOUR, MOM_COLOUR, TRAIN_COLOUR, VALID_COLOUR
from trainer.smoothing import minmax_downsample, sma

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "debug_report",
    "history_report",
    "loss_range",
    "regression_report",
    "runtime_label",
    "timeline_report",
]

LOSS_COLOUR = "#1f77b4"
RECENT = 200  # rows that define the "recent" range for autoscaling, as ELEKTRONN2
_DEBUG_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


def runtime_label(seconds: float) -> str:
    """``'<m> mins'`` below two hours, else ``'<h.h> hours'`` (ELEKTRONN2's wording)."""
    if not math.isfinite(seconds):
        return "unknown"
    minutes = seconds / 60.0
    return f"{int(minutes)} mins" if minutes < 120 else f"{minutes / 60.0:.1f} hours"


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std())


def loss_range(
    timeline_loss: np.ndarray, history: pd.DataFrame | None = None
) -> tuple[float, float] | None:
    """ELEKTRONN2's y range for loss plots: room for the recent losses, outliers cut.

    Top: the larger of mean + 2 std of the last 10 monitored losses (valid if it has no NaN,
    else train) and of the last ``RECENT`` timeline losses. Bottom: 0 if no loss is negative,
    else recent mean - 2 std. ``None`` when there is nothing finite to scale to.
    """
    loss = np.asarray(timeline_loss, dtype=np.float64)
    caps = []
    lt_m, lt_s = _mean_std(loss[-RECENT:])
    if math.isfinite(lt_m):
        caps.append(lt_m + 2 * lt_s)
    if history is not None and len(history):
        valid = history["valid_loss"].to_numpy(dtype=np.float64)
        col = valid if not np.isnan(valid).any() else history["train_loss"].to_numpy(np.float64)
        m, s = _mean_std(col[-10:])
        if math.isfinite(m):
            caps.append(m + 2 * s)
    if not caps:
        return None
    finite = loss[np.isfinite(loss)]
    floor = 0.0 if (len(finite) == 0 or finite.min() >= 0) else lt_m - 2 * lt_s
    top = max(caps)
    if not top > floor:
        return None
    return floor, top


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def timeline_report(
    timeline: pd.DataFrame,
    history: pd.DataFrame | None = None,
    smoothing_length: int = 200,
    autoscale: bool = True,
    max_points: int = 4000,
) -> go.Figure:
    """Loss of every update step (faded), its moving average, and loss vs. batch character.

    Args:
        timeline: ``time, loss, batch_char`` indexed by step.
        history: the monitoring history, used only to scale the y axis.
        smoothing_length: window of the box moving average (``config.loss_smoothing_length``).
        autoscale: cut the y axis to the recent range (``loss_range``).
        max_points: about how many points each curve keeps.
    """
    fig = make_subplots(
        rows=2, cols=1, row_heights=[0.65, 0.35], vertical_spacing=0.12,
        subplot_titles=("Loss per update step", "Loss vs. mean target of the batch"),
    )  # fmt: skip
    fig.update_layout(height=900, template="plotly_white", hovermode="x")
    n = len(timeline)
    if n == 0:
        return _empty(fig, "no training steps yet")
    steps = timeline.index.to_numpy(dtype=np.int64)
    loss = timeline["loss"].to_numpy(dtype=np.float64)
    t = timeline["time"].to_numpy(dtype=np.float64)
    char = timeline["batch_char"].to_numpy(dtype=np.float64)
    smooth = sma(loss, smoothing_length)
    buckets = max(max_points // 2, 1)
    keep = minmax_downsample(steps, loss, buckets)
    fig.add_trace(
        go.Scatter(x=steps[keep], y=loss[keep], name="loss", mode="lines",
                   line={"color": LOSS_COLOUR, "width": 1}, opacity=0.4),
        row=1, col=1,
    )  # fmt: skip
    keep_s = minmax_downsample(steps, smooth, buckets)
    fig.add_trace(
        go.Scatter(x=steps[keep_s], y=smooth[keep_s], name=f"moving average ({smoothing_length})",
                   mode="lines", line={"color": "black", "width": 3}),
        row=1, col=1,
    )  # fmt: skip
    lt_m, lt_s = _mean_std(loss[-RECENT:])
    if math.isfinite(lt_m):
        fig.add_hline(y=lt_m, line={"color": "red", "dash": "dash", "width": 1}, row=1, col=1)
        for y in (lt_m - lt_s, lt_m + lt_s):
            fig.add_hline(y=y, line={"color": "red", "dash": "dot", "width": 1}, row=1, col=1)
    if autoscale:
        yr = loss_range(loss, history)
        if yr is not None:
            fig.update_yaxes(range=list(yr), row=1, col=1)
    fig.update_xaxes(
        title_text=f"Update steps {steps[-1]}, total runtime {runtime_label(t[-1])}",
        range=[0, steps[-1]], row=1, col=1,
    )  # fmt: skip
    fig.update_yaxes(title_text="loss", row=1, col=1)

    stride = max(n // max(max_points // 2, 1), 1)
    sel = slice(None, None, stride)
    age = t[sel] / t[-1] if t[-1] > 0 else np.zeros_like(t[sel])
    fig.add_trace(
        go.Scatter(x=char[sel], y=loss[sel], mode="markers", name="batches",
                   marker={"color": age, "colorscale": "Greys", "size": 4, "opacity": 0.6,
                           "colorbar": {"title": "time", "len": 0.3, "y": 0.15}},
                   customdata=steps[sel], hovertemplate="step %{customdata}<br>mean target "
                   "%{x:.3g}<br>loss %{y:.4g}<extra></extra>"),
        row=2, col=1,
    )  # fmt: skip
    fig.update_xaxes(title_text="mean target of batch", row=2, col=1)
    fig.update_yaxes(title_text="loss", row=2, col=1)
    if autoscale:
        c_m, c_s = _mean_std(char[-RECENT:])
        if math.isfinite(c_m) and c_s > 0:
            lo = -0.01 if np.nanmin(char) >= 0 else c_m - 2 * c_s
            fig.update_xaxes(range=[lo, c_m + 2 * c_s], row=2, col=1)
        yr = loss_range(loss, history)
        if yr is not None:
            fig.update_yaxes(range=list(yr), row=2, col=1)
    return fig


def history_report(history: pd.DataFrame, autoscale: bool = True) -> go.Figure:
    """Monitoring history: losses, loss gain, lr/momentum, errors (raw dashed, SMA(8) solid).

    Args:
        history: the ``HISTORY_COLUMNS`` table.
        autoscale: ELEKTRONN2's y ranges (recent losses and errors, early loss gain).
    """
    fig = make_subplots(
        rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05,
        specs=[[{}], [{}], [{"secondary_y": True}], [{}]],
        subplot_titles=("Loss", "Loss gain of the update (negative: the step helped)",
                        "Learning rate and momentum", "Error"),
    )  # fmt: skip
    fig.update_layout(height=1100, template="plotly_white", hovermode="x unified")
    n = len(history)
    if n == 0:
        return _empty(fig, "no monitoring steps yet")
    steps = history["steps"].to_numpy()
    col = {c: history[c].to_numpy(dtype=np.float64) for c in history.columns if c != "steps"}

    def line(y: np.ndarray, name: str, colour: str, row: int, **kw: object) -> None:
        fig.add_trace(
            go.Scatter(x=steps, y=y, name=name, mode="lines", line={"color": colour, **kw}),
            row=row, col=1, secondary_y=False if row == 3 else None,
        )  # fmt: skip

    line(col["train_loss"], "train loss", TRAIN_COLOUR, 1)
    if not np.isnan(col["valid_loss"]).all():
        line(col["valid_loss"], "valid loss", VALID_COLOUR, 1)
    line(col["loss_gain"], "loss gain", LOSS_COLOUR, 2)
    fig.add_hline(y=0, line={"color": "grey", "dash": "dot", "width": 1}, row=2, col=1)
    line(col["lr"], "lr", LR_COLOUR, 3)
    for name, dash in (("mom", "solid"), ("gradnetrate", "dot")):
        fig.add_trace(
            go.Scatter(x=steps, y=col[name], name=name, mode="lines",
                       line={"color": MOM_COLOUR, "dash": dash}),
            row=3, col=1, secondary_y=True,
        )  # fmt: skip
    lr = col["lr"]
    if len(lr[np.isfinite(lr)]) and np.nanmin(lr) > 0:
        fig.update_yaxes(type="log", row=3, col=1, secondary_y=False)
    fig.update_yaxes(title_text="lr", row=3, col=1, secondary_y=False)
    fig.update_yaxes(
        title_text="mom", range=[-1.05, 1.05], tickmode="auto", showgrid=False,
        row=3, col=1, secondary_y=True,
    )  # fmt: skip

    first = 2 if n > 3 else 0  # the first errors are often off the scale
    es = steps[first:]
    for name, colour in (("train_err", TRAIN_COLOUR), ("valid_err", VALID_COLOUR)):
        e = col[name][first:]
        if np.isnan(e).all():
            continue
        fig.add_trace(
            go.Scatter(x=es, y=e, name=name.replace("_", " "), mode="lines",
                       line={"color": colour, "dash": "dash", "width": 1}),
            row=4, col=1,
        )  # fmt: skip
        if not np.isnan(e).any():
            fig.add_trace(
                go.Scatter(x=es, y=sma(e, 8), name=f"{name.replace('_', ' ')} (SMA 8)",
                           mode="lines", line={"color": colour, "width": 3}),
                row=4, col=1,
            )  # fmt: skip
    fig.update_xaxes(title_text="update steps", row=4, col=1)

    if autoscale:
        _autoscale_history(fig, col)
    return fig


def _autoscale_history(fig: go.Figure, col: dict[str, np.ndarray]) -> None:
    valid = col["valid_loss"]
    recent = (valid if not np.isnan(valid).any() else col["train_loss"])[-10:]
    m, s = _mean_std(recent)
    both = np.concatenate([col["train_loss"][-10:], valid[-10:]])
    both = both[np.isfinite(both)]
    if math.isfinite(m) and len(both):
        top = max(m + 2 * s, float(both.max()))
        losses = np.concatenate([col["train_loss"], valid])
        floor = 0.0 if np.nanmin(losses) >= 0 else m - 2 * s
        if top > floor:
            fig.update_yaxes(range=[floor, top * 1.05], row=1, col=1)
    gain = col["loss_gain"]
    if len(gain) > 6:
        g = 2 * _mean_std(gain[:5])[1] + 1e-10
        if math.isfinite(g):
            fig.update_yaxes(range=[-g, g], row=2, col=1)
    err = col["valid_err"] if not np.isnan(col["valid_err"]).all() else col["train_err"]
    m, s = _mean_std(err[-RECENT:])
    if math.isfinite(m) and s > 0:
        lo = 0.0 if np.nanmin(err) > 0 else m - 2 * s
        fig.update_yaxes(range=[lo, m + 2 * s], row=4, col=1)


def debug_report(
    debug: pd.DataFrame, smoothing_length: int = 70, max_points: int = 2000
) -> go.Figure:
    """Moving averages of the total loss and of every debug output (``step, loss, <names>``)."""
    fig = go.Figure()
    fig.update_layout(height=600, template="plotly_white", hovermode="x unified",
                      title="Debug outputs (moving average)", xaxis_title="update steps")  # fmt: skip
    if debug is None or len(debug) == 0:
        return _empty(fig, "no debug outputs yet")
    steps = debug["step"].to_numpy()
    stride = max(len(debug) // max_points, 1)
    fig.add_trace(go.Scatter(x=steps[::stride], y=sma(debug["loss"].to_numpy(), smoothing_length)[::stride],
                             name="loss", line={"color": "black", "width": 3}))  # fmt: skip
    for i, name in enumerate(debug.columns[2:]):
        y = sma(debug[name].to_numpy(dtype=np.float64), smoothing_length)[::stride]
        colour = _DEBUG_COLOURS[i % len(_DEBUG_COLOURS)]
        dash = "solid" if i < len(_DEBUG_COLOURS) else "dot"
        fig.add_trace(go.Scatter(x=steps[::stride], y=y, name=str(name),
                                 line={"color": colour, "dash": dash}))  # fmt: skip
    fig.add_hline(y=0, line={"color": "grey", "width": 1})
    return fig


def regression_report(regression: pd.DataFrame, max_points: int = 2000) -> go.Figure:
    """Prediction vs. target for each regression component, with the identity line.

    The last ``max_points`` pairs are drawn as points, over a density contour of all pairs.
    """
    fig = go.Figure()
    fig.update_layout(height=700, template="plotly_white", title="Regression: prediction vs. target",
                      xaxis_title="target", yaxis_title="prediction")  # fmt: skip
    if regression is None or len(regression) == 0:
        return _empty(fig, "no regression rows yet")
    k = len(regression.columns) // 2
    lo, hi = math.inf, -math.inf
    for i in range(k):
        p = regression[f"pred_{i}"].to_numpy(dtype=np.float64)
        t = regression[f"target_{i}"].to_numpy(dtype=np.float64)
        ok = np.isfinite(p) & np.isfinite(t)
        p, t = p[ok], t[ok]
        if len(p) == 0:
            continue
        lo, hi = min(lo, t.min(), p.min()), max(hi, t.max(), p.max())
        colour = _DEBUG_COLOURS[i % len(_DEBUG_COLOURS)]
        if len(p) > 20:
            fig.add_trace(go.Histogram2dContour(x=t, y=p, colorscale="Blues", showscale=False,
                                                ncontours=12, opacity=0.5, name=f"density {i}",
                                                contours={"coloring": "lines"}))  # fmt: skip
        fig.add_trace(go.Scatter(x=t[-max_points:], y=p[-max_points:], mode="markers",
                                 name=f"component {i}", marker={"size": 3, "color": colour,
                                                                 "opacity": 0.5}))  # fmt: skip
    if math.isfinite(lo):
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="identity",
                                 line={"color": "black", "dash": "dash"}))  # fmt: skip
    return fig


def batch_figure(data: np.ndarray, labels: np.ndarray, offsets: tuple[int, ...]) -> go.Figure:
    """ELEKTRONN2's ``plot_trainingtarget`` for one example: data, target and overlay panels.

    Args:
        data: ``(C, z, y, x)`` input of one example; channel 0 is shown.
        labels: ``(T, z', y', x')`` dense labels under the output (``force_dense=True``);
            target 0 is shown, negative (ignored) labels as 0.
        offsets: the model's ``(z, y, x)`` offsets between input and output.

    Returns:
        Three heat maps of the middle target section ``t`` and input section ``offsets[0] + t``;
        the target is zero-padded to the input size, the overlay is
        ``0.75 * data + 0.25 * (1 - target)``.
    """
    t = labels.shape[1] // 2
    img = np.asarray(data[0, offsets[0] + t], dtype=np.float64)
    lab = np.clip(np.asarray(labels[0, t], dtype=np.float64), 0, None)
    padded = np.zeros_like(img)
    oy, ox = (img.shape[0] - lab.shape[0]) // 2, (img.shape[1] - lab.shape[1]) // 2
    padded[oy : oy + lab.shape[0], ox : ox + lab.shape[1]] = lab
    fig = make_subplots(rows=1, cols=3, subplot_titles=("data", "target", "overlay"))
    for col, z in enumerate((img, padded, 0.75 * img + 0.25 * (1 - padded)), start=1):
        fig.add_trace(go.Heatmap(z=z, colorscale="gray", showscale=False), row=1, col=col)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{col}", row=1, col=col)
    fig.update_layout(template="plotly_white", height=420,
                      title=f"Training batch, example 0: input z {offsets[0] + t}, target z {t}")  # fmt: skip
    return fig
