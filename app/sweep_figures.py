"""Pure builders for the sweep page: trial rows in, figures, table order and CSV out.

Nothing here reads files or imports Dash. A trial is a ``TrialRow`` (what ``trials.json``
and the trial's run directory say about it); a parameter is described as ``sweep.json``
writes it (``trainer.sweeps.SweepSpec.to_json``): ``{'values': [...]}`` for a list of
values, ``{'low', 'high', 'log', 'int'}`` for a range.

The curves figure has one trace per trial, in trial order (trace ``i`` is trial ``i`` of
``trials.json``, which only ever grows), so a live update appends points and restyles
traces by index.

Example:
    >>> rows = [TrialRow("s-000", 0, "finished", 0.5, {"lr": 0.001}, 60),
    ...         TrialRow("s-001", 1, "pruned", 0.7, {"lr": 0.01}, 20)]
    >>> fig = parcoords_figure({"lr": {"low": 1e-4, "high": 1e-1, "log": True, "int": False}},
    ...                        rows, "valid_loss", "min")
    >>> [d.label for d in fig.data[0].dimensions]
    ['lr (log)', 'valid_loss (min)']
    >>> [r.run for r in sorted_rows(rows, "min")]
    ['s-000', 's-001']
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go

from app.figures import readable_range
from trainer.runs import TRUNCATED

#: run states whose curve is dimmed: the pruner or a failure ended the trial early (a trial
#: stopped by hand keeps its look: stopping a whole sweep would dim every curve)
DIMMED_STATES = frozenset({"pruned", "failed", "diverged", "lost"})
#: opacity of a dimmed curve (dotted too, so it still reads apart); a completed or running
#: trial's is 1. At 0.3 a pruned trial's thin dotted line was too faint to follow.
DIMMED_OPACITY = 0.65
#: line width of the best trial's curve and of the others'
BEST_WIDTH, LINE_WIDTH = 3.5, 1.5

_LAYOUT = {
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "font": {"size": 12},
}


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One trial as the sweep page shows it.

    Attributes:
        run: the trial's run directory name.
        number: Optuna's trial number.
        state: the run's state (``queued``, ``running``, ``finished``, ``pruned``, ...).
        value: the best value of the sweep's metric so far (the value the study was told
            once the run ended), ``None`` while the run has no finite value.
        params: the values the trial got, by parameter name.
        steps: training steps done (``None`` when the run wrote no status yet).
    """

    run: str
    number: int
    state: str
    value: float | None
    params: Mapping[str, Any]
    steps: int | None = None


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def best_run(rows: Sequence[TrialRow], goal: str) -> str | None:
    """The run with the best finite value (the lowest for ``goal='min'``) among the trials
    that ran all their steps, ties to the earlier trial; ``None`` when none has a value."""
    ranked = sorted_rows(rows, goal)
    ok = ranked and _finite(ranked[0].value) and ranked[0].state != TRUNCATED
    return ranked[0].run if ok else None


def sorted_rows(rows: Sequence[TrialRow], goal: str) -> list[TrialRow]:
    """Best value first (``goal`` ``'min'`` or ``'max'``); then the truncated trials (ended by
    ``max_runtime`` before their ``n_steps``), ranked among themselves: never beside trials
    that ran all their steps; trials without a value last, each group in trial order."""
    sign = -1.0 if goal == "max" else 1.0

    def key(r: TrialRow) -> tuple:
        if not _finite(r.value):
            return (2, 0.0, r.number)
        return (int(r.state == TRUNCATED), sign * float(r.value), r.number)

    return sorted(rows, key=key)


def fmt_value(v: Any) -> str:
    """A parameter or metric value for a table cell or an axis tick: numbers with 4
    significant digits, everything else as JSON (``None`` as an empty cell)."""
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return v if isinstance(v, str) else json.dumps(v)
    return f"{float(v):.4g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------- parallel coordinates


def _same(a: Any, b: Any) -> bool:
    # trials.json holds JSON values: a tuple shape comes back as a list
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _decades(low: float, high: float) -> list[float]:
    """Tick positions (log10) for a log axis from ``low`` to ``high``: the powers of ten
    inside, or the ends and their geometric middle when there are fewer than two."""
    lo, hi = math.log10(low), math.log10(high)
    inside = [float(k) for k in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
    return inside if len(inside) >= 2 else [lo, (lo + hi) / 2, hi]


def parameter_dimension(name: str, spec: Mapping[str, Any], values: Sequence[Any]) -> dict:
    """The parcoords dimension of one swept parameter for the trials' ``values``.

    * a range with ``log=True``: log10 of the values, ticks labelled with the values;
    * a range: the values, from ``low`` to ``high``;
    * a list of numbers: the numbers, a tick at each (log10 when all are positive and they
      span at least a decade);
    * any other list: categorical; each value drawn at its index, ticks labelled with it.

    A trial whose value is not among the axis's (a sweep.json edited by hand) sits at
    ``NaN``, as Plotly draws nothing there.
    """
    if "values" not in spec:
        low, high = float(spec["low"]), float(spec["high"])
        if spec.get("log"):
            ticks = _decades(low, high)
            return {
                "label": f"{name} (log)",
                "values": [math.log10(v) if _finite(v) and v > 0 else math.nan for v in values],
                "range": [math.log10(low), math.log10(high)],
                "tickvals": ticks,
                "ticktext": [f"{10**t:.3g}" for t in ticks],
            }
        return {
            "label": name,
            "values": [float(v) if _finite(v) else math.nan for v in values],
            "range": [low, high],
        }
    choices = list(spec["values"])
    if choices and all(_finite(c) for c in choices):
        numbers_ = sorted({float(c) for c in choices})
        log = numbers_[0] > 0 and numbers_[-1] / numbers_[0] >= 10
        f = math.log10 if log else float
        ticks = [f(c) for c in numbers_]
        lo, hi = ticks[0], ticks[-1]
        pad = 0.5 if hi == lo else 0.0  # one value: a range Plotly can draw
        return {
            "label": f"{name} (log)" if log else name,
            "values": [
                f(float(v)) if _finite(v) and (not log or v > 0) else math.nan for v in values
            ],
            "range": [lo - pad, hi + pad],
            "tickvals": ticks,
            "ticktext": [fmt_value(c) for c in sorted({c for c in choices}, key=float)],
        }
    index = [next((i for i, c in enumerate(choices) if _same(c, v)), None) for v in values]
    n = len(choices)
    return {
        "label": name,
        "values": [math.nan if i is None else i for i in index],
        "range": [-0.5, n - 0.5] if n == 1 else [0, n - 1],
        "tickvals": list(range(n)),
        "ticktext": [fmt_value(c) if c is not None else "None" for c in choices],
    }


def parcoords_figure(
    parameters: Mapping[str, Mapping[str, Any]],
    rows: Sequence[TrialRow],
    metric: str,
    goal: str,
    *,
    height: int = 380,
) -> go.Figure:
    """Parallel coordinates: one line per trial with a finite value, an axis per swept
    parameter (in ``parameters`` order) and a last axis for the metric, lines coloured by
    the metric (the colour bar's top is the best end).

    Trials without a value yet have no line; the title says how many.
    """
    drawn = [r for r in rows if _finite(r.value)]
    dims = [
        parameter_dimension(name, spec, [r.params.get(name) for r in drawn])
        for name, spec in parameters.items()
    ]
    values = [float(r.value) for r in drawn]
    dims.append({"label": f"{metric} ({goal})", "values": values})
    # one value, or all the same: a band around it (Plotly's own is value - 0.2 .. value + 0.6)
    band = readable_range(values)
    if band is not None:
        dims[-1]["range"] = band
    missing = len(rows) - len(drawn)
    title = f"{len(drawn)} trial{'s' * (len(drawn) != 1)} by {metric}"
    if missing:
        title += f" ({missing} without a value yet)"
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={
                "color": values,
                "colorscale": "Viridis",
                # the best end of the metric at the bright top of the colour bar
                "reversescale": goal == "min",
                "showscale": bool(values),
                **({"cmin": band[0], "cmax": band[1]} if band is not None else {}),
                # clear of the metric axis's tick labels
                "colorbar": {"title": {"text": metric}, "x": 1.06, "thickness": 14},
            },
            labelangle=0,
            unselected={"line": {"opacity": 0.1}},
        )
    )
    fig.update_layout(
        # the title above the axis labels, which parcoords draws above the plot area
        title={"text": title, "x": 0.01, "y": 0.98, "yanchor": "top", "font": {"size": 14}},
        margin={"l": 60, "r": 90, "t": 90, "b": 30},
        height=height,
        uirevision="sweep-parcoords",
        **_LAYOUT,
    )
    return fig


# ----------------------------------------------------------------------------------- curves


def curve_style(state: str, best: bool) -> dict[str, Any]:
    """A trial curve's look: dimmed and dotted when the pruner or a failure ended its run
    (``DIMMED_STATES``), wide when it is the best trial."""
    return {
        "opacity": DIMMED_OPACITY if state in DIMMED_STATES else 1.0,
        "width": BEST_WIDTH if best else LINE_WIDTH,
        "dash": "dot" if state in DIMMED_STATES else "solid",
    }


def trace_name(row: TrialRow, best: bool) -> str:
    """A curve's legend entry: the run, its state when it did not complete, and 'best'."""
    extra = [row.state] if row.state in DIMMED_STATES | {"stopped", TRUNCATED} else []
    if best:
        extra.append("best")
    return f"{row.run} ({', '.join(extra)})" if extra else row.run


def curves_figure(
    rows: Sequence[TrialRow],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    metric: str,
    best: str | None,
    *,
    log_y: bool = False,
    height: int = 380,
) -> go.Figure:
    """The metric of every trial against the step on one plot, one trace per trial in
    ``rows`` order (a trial without points gets an empty trace, so trace ``i`` stays trial
    ``i``); dimmed and dotted for trials the pruner or a failure ended, wide for the best
    one.

    Args:
        rows: the trials, in trial order.
        curves: run -> ``(steps, values)``.
        metric: the metric's name (axis title).
        best: the best run, or ``None``.
        log_y: logarithmic y axis.
    """
    palette = pcolors.qualitative.Plotly
    fig = go.Figure()
    for i, row in enumerate(rows):
        x, y = curves.get(row.run, ((), ()))
        x, y = np.asarray(x).tolist(), np.asarray(y, dtype=np.float64).tolist()
        if len(x) != len(y):
            raise ValueError(f"run {row.run!r}: x and y differ in length: {len(x)} vs {len(y)}")
        style = curve_style(row.state, row.run == best)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                name=trace_name(row, row.run == best),
                mode="lines+markers",
                marker={"size": 4},
                opacity=style["opacity"],
                line={
                    "color": palette[i % len(palette)],
                    "width": style["width"],
                    "dash": style["dash"],
                },
                hovertemplate=f"{row.run}<br>step %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_layout(
        title={"text": f"{metric} of every trial", "x": 0.01, "font": {"size": 14}},
        xaxis_title="step",
        yaxis_title=metric,
        yaxis_type="log" if log_y else "linear",
        margin={"l": 60, "r": 15, "t": 40, "b": 40},
        height=height,
        hovermode="closest",
        uirevision="sweep-curves",
        legend={"font": {"size": 11}},
        xaxis={"gridcolor": "#ebf0f8"},
        yaxis={"gridcolor": "#ebf0f8"},
        **_LAYOUT,
    )
    return fig


# --------------------------------------------------------------------------------------- CSV


def csv_text(rows: Sequence[TrialRow], parameters: Sequence[str]) -> str:
    """One CSV row per trial, in trial order: ``run, number, state, value``, each parameter,
    ``steps``. A missing value or step is an empty cell; a parameter that is a list or a
    dict is written as JSON."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["run", "number", "state", "value", *parameters, "steps"])
    for r in sorted(rows, key=lambda r: r.number):
        value = repr(float(r.value)) if _finite(r.value) else ""
        cells = [_csv_cell(r.params.get(p)) for p in parameters]
        w.writerow([r.run, r.number, r.state, value, *cells, "" if r.steps is None else r.steps])
    return out.getvalue()


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool | str | int | float):
        return v
    return json.dumps(v)
