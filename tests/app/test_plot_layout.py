"""Layout values of the dashboard's figures (issue 28, point 4): a run's first point, the planned
schedules' axes, titles placed under the modebar, the confusion table's label margin, the
Neurons panel without scores and the pruned trials' opacity. The Chromium check of the boxes is
tests/app/test_plot_titles_browser.py."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from dash import Patch

from app import evaluation_figures as ef
from app import figures, run_view, segmentation_view, sweep_figures
from app import neuron_figures as nf
from app.series import Smoothing
from trainer.history import HistoryTracker
from trainer.runs import Status, write_status


@pytest.mark.parametrize(
    "x, band", [([0], [-0.5, 0.5]), ([200, 200], [180.0, 220.0]), ([3.5], [3.15, 3.85]),
                ([0, 20], None), ([], None), ([np.nan], None)],
)  # fmt: skip
def test_single_point_range(x, band):
    assert figures.single_point_range(x) == band


def test_a_first_history_row_is_drawn_as_markers_around_its_step():
    one = {"train_loss": ([0], [0.7]), "valid_loss": ([0], [0.8])}
    fig = figures.history_figure("loss", one)
    assert list(fig.layout.xaxis.range) == [-0.5, 0.5]
    assert all(t.mode == "lines+markers" for t in fig.data)
    two = {k: (np.array([0, 20]), np.array([0.7, 0.6])) for k in ("train_loss", "valid_loss")}
    fig = figures.history_figure("loss", two)
    assert fig.layout.xaxis.range is None and all(t.mode == "lines" for t in fig.data)


def test_the_first_points_band_is_released_with_the_second_row(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    write_status(run_dir, Status(state="running", step=0, n_steps=100, pid=os.getpid(),
                                 heartbeat=time.time() + 3600, started=time.time()))  # fmt: skip
    with HistoryTracker(run_dir / "history") as tracker:
        tracker.update_timeline([0.0, 0.7, 0.0])
        tracker.update_history([0, 1, 0.7, 0.8, 0.0, 0.3, 0.35, 0.002, 0.9, 0.0])
        smoothing = Smoothing("ema", 0.6)
        full = run_view.update_curves(run_dir, None, smoothing=smoothing, poll=False)
        assert list(full["loss"].layout.xaxis.range) == [-0.5, 0.5]
        assert full["cursor"]["ranges"]["loss"]["xaxis"] == [-0.5, 0.5]
        tracker.update_history([20, 2, 0.6, 0.7, 0.0, 0.2, 0.3, 0.002, 0.9, 0.0])
        up = run_view.update_curves(run_dir, full["cursor"], smoothing=smoothing, poll=True)
    assert isinstance(up["loss"], Patch)
    ops = {tuple(o["location"]): o["params"].get("value")
           for o in up["loss"].to_plotly_json()["operations"] if o["operation"] == "Assign"}  # fmt: skip
    assert ops[("layout", "xaxis", "autorange")] is True
    assert ops[("data", 0, "mode")] == ops[("data", 1, "mode")] == "lines"
    assert "xaxis" not in up["cursor"]["ranges"].get("loss", {})


def test_planned_lr_fills_its_own_row():
    steps = np.array([0, 500, 1000, 1500])
    lr = 0.002 * 0.8 ** np.array([0, 1, 2, 2])
    fig = figures.schedule_figure({"lr": (steps, lr), "mom": (steps, np.full(4, 0.9))})
    lo, hi = fig.layout.yaxis.range
    assert fig.layout.yaxis.type == "linear"
    assert lo < lr.min() and lr.max() < hi and hi - lo < 1.2 * (lr.max() - lr.min())
    assert list(fig.layout.yaxis2.range) == pytest.approx([0.81, 0.99])  # constant: ±10%
    decay = 0.01 * 0.1 ** np.arange(3)
    fig = figures.schedule_figure({"lr": (np.arange(3), decay)})
    assert fig.layout.yaxis.type == "log"
    lo, hi = fig.layout.yaxis.range
    assert lo < np.log10(decay.min()) and np.log10(decay.max()) < hi


@pytest.mark.parametrize(
    "fig",
    [
        figures.class_metrics_figure({"valid_iou_0": ([0, 1], [0.1, 0.2])}),
        figures.schedule_figure({"lr": ([0, 10], [0.1, 0.05])}),
        figures.history_figure("lr", {"lr": ([0, 10], [0.1, 0.1])}),
        ef.confusion_figure(1, 2, 3, 4, 0.5),
        nf.neuron_curves_figure(
            {
                "curve/thresholds": [0, 1],
                "curve/voi_split": [1, 0],
                "curve/voi_merge": [0, 1],
                "curve/adapted_rand_error": [1, 0],
            },
            0.5,
            "t",
        ),  # fmt: skip
        ef.segmentation_figure(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4), int), 0.5),
    ],
)
def test_titles_sit_above_the_plot_under_the_modebar(fig):
    title, margin = fig.layout.title, fig.layout.margin
    assert (title.yref, title.y, title.yanchor) == ("paper", 1, "bottom")
    assert margin.t >= figures.TITLED_MARGIN_TOP > figures.MODEBAR_HEIGHT + 20  # a title's line
    legend = fig.layout.legend
    # a legend is right of the plot (plotly's default), under it, or in the band above the plot
    # but right-aligned, away from the title
    assert (
        not legend.to_plotly_json()
        or legend.x > 1
        or (legend.y is not None and legend.y <= 0)
        or legend.xanchor == "right"
    )


def test_per_class_legend_is_a_column_right_of_the_plot():
    fig = figures.class_metrics_figure({"valid_iou_0": ([0, 1], [0.1, 0.2])})
    assert fig.layout.legend.orientation == "v" and fig.layout.legend.x > 1
    assert fig.layout.margin.r >= figures.CLASS_LEGEND_WIDTH


def test_confusion_labels_have_room():
    fig = ef.confusion_figure(1, 2, 3, 4, 0.5)
    # "actual negative" at 12 px is ~95 px wide; the template does not grow margins
    assert fig.layout.margin.l >= 110
    assert list(fig.data[0].y) == ["actual negative", "actual positive"]


def test_neurons_panel_without_scores_is_a_sentence_not_axes():
    fig, drawn, msg, *_ = segmentation_view.neuron_outputs("FINAL", "cube0", 0.5, None, "no", None)
    assert drawn is None and msg == "no"
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    fig = segmentation_view.neuron_outputs("FINAL", "cube0", 0.5, None, None, None)[0]
    assert fig.layout.annotations[0].text == "No neuron scores to draw."
    assert fig.layout.xaxis.visible is False


def test_pruned_trials_are_dimmed_but_readable():
    pruned = sweep_figures.curve_style("pruned", best=False)
    assert 0.6 <= pruned["opacity"] < 1 and pruned["dash"] == "dot"
    assert sweep_figures.curve_style("completed", best=False)["opacity"] == 1.0
