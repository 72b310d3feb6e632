"""Run page: live curves in a real Chromium, and the poll's Patch answer without a browser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import plotly
import plotly.graph_objects as go
import pytest
from dash import Patch, dcc, no_update

from app import app_context, create_app, readers, run_view
from app.series import DEFAULT_MAX_POINTS, Smoothing
from trainer.history import HistoryTracker
from trainer.runs import Status, atomic_write_json, read_status, write_status
from trainer.runs.history_store import table_path

#: the dashboard's ``--refresh`` for these pages (default 2 s): the polls these tests wait
#: on come four times as often; intervals that matter are read from the app's context
REFRESH_S = 0.5

RUN = "demo-run"


def make_run(
    runs_dir, name: str = RUN, n_timeline: int = 50, n_history: int = 3, extra_columns=()
) -> HistoryTracker:
    """A running run (this process is its 'trainer') with a history store; returns its tracker.

    ``extra_columns``: the trainer's optional history columns (e.g. ``valid_are``)."""
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    write_status(
        run_dir,
        Status(
            state="running",
            step=n_timeline,
            n_steps=1000,
            pid=os.getpid(),
            heartbeat=time.time() + 3600,
            started=time.time(),
            extra={"device": "cpu", "it_per_s": 12.5},
        ),
    )
    atomic_write_json(
        run_dir / "config.json",
        {
            "n_steps": 1000,
            "optimiser_params": {"lr": 0.01, "mom": 0.9},
            "schedules": {"lr": {"dec": 0.5, "period": 250}},
        },
    )
    tracker = HistoryTracker(run_dir / "history", extra_history_columns=extra_columns)
    add_timeline(tracker, 0, n_timeline)
    for i in range(n_history):
        tracker.update_history(
            [10 * i, i, 1.0 / (i + 1), 1.2 / (i + 1), 0.1, 0.3, 0.4, 0.01, 0.9, 0.0]
        )
    return tracker


def add_timeline(tracker: HistoryTracker, start: int, stop: int) -> None:
    for i in range(start, stop):
        tracker.update_timeline([0.1 * i, 1.0 / (1 + 0.05 * i), 0.5])


def build_app(tmp_path):
    return create_app(
        tmp_path / "runs",
        tmp_path / "configs",
        tmp_path / "data",
        start_launcher=False,
        gpus=[],
        refresh_s=REFRESH_S,
    )


@pytest.fixture
def run_page(tmp_path):
    """The app, the page module its pages were loaded as, and the run's tracker."""
    tracker = make_run(tmp_path / "runs")
    app = build_app(tmp_path)
    yield app, sys.modules["app.pages.run"], tracker
    tracker.close()


def test_poll_answers_a_small_patch_with_only_the_new_row(run_page, tmp_path):
    _app, page, tracker = run_page
    run_dir = tmp_path / "runs" / RUN
    smoothing = Smoothing("ema", 0.6)
    full = run_view.update_curves(run_dir, None, smoothing=smoothing, poll=False)
    assert full["timeline"].layout.annotations[0].text == "50 points"
    assert full["header"] and not full["stop"]
    add_timeline(tracker, 50, 51)
    up = run_view.update_curves(run_dir, full["cursor"], smoothing=smoothing, poll=True)
    assert isinstance(up["timeline"], Patch)
    ops = up["timeline"].to_plotly_json()["operations"]
    extended = {
        tuple(op["location"]): op["params"]["value"] for op in ops if op["operation"] == "Extend"
    }
    assert extended[("data", 0, "x")] == [50]
    assert len(extended[("data", 1, "y")]) == 1
    assert all(up[p] is no_update for p in ("loss", "error", "lr", "gain"))  # no new history rows
    assert up["cursor"]["timeline"]["rows"] == 51
    size = len(
        json.dumps([up["timeline"], up["cursor"], up["header"]], cls=plotly.utils.PlotlyJSONEncoder)
    )
    assert size < 10_000
    write_status(run_dir, Status(state="finished", step=51, n_steps=1000))
    assert run_view.update_curves(run_dir, up["cursor"], smoothing=smoothing)["stop"]


def add_regression(tracker: HistoryTracker, start: int, stop: int) -> None:
    for i in range(start, stop):
        tracker.update_regression([1.0 + 0.01 * i], [1.0 + 0.012 * i])


def test_regression_panel_is_rebuilt_only_for_new_rows_and_bounded(run_page, tmp_path):
    _app, page, tracker = run_page
    run_dir = tmp_path / "runs" / RUN
    smoothing = Smoothing("ema", 0.6)
    full = run_view.update_curves(run_dir, None, smoothing=smoothing, poll=False)
    assert full["regression_style"]["display"] == "none"  # no regression rows: hidden
    assert len(full["regression"].data[0].x) == 0
    up = run_view.update_curves(run_dir, full["cursor"], smoothing=smoothing, poll=True)
    assert up["regression"] is no_update and up["regression_style"] is no_update
    add_regression(tracker, 0, 30)
    up = run_view.update_curves(run_dir, up["cursor"], smoothing=smoothing, poll=True)
    assert "display" not in up["regression_style"]
    assert up["regression"].data[0].x[-1] == pytest.approx(1.0 + 0.012 * 29)
    assert len(up["regression"].data[0].x) == 30 and up["cursor"]["regression"]["rows"] == 30
    # a control change rebuilds the curves but not an unchanged scatter
    again = run_view.update_curves(run_dir, up["cursor"], smoothing=smoothing, poll=False)
    assert again["regression"] is no_update
    store = run_dir / "history"
    fig, style, cursor = run_view.update_regression(store, None, max_points=10)
    assert fig.data[0].customdata == tuple(range(20, 30))  # the newest rows only
    assert fig.layout.annotations[0].text == "showing 10 of 30 points"
    (store / "regression.vbh").write_bytes(b"not a history table")
    fig, style, cursor = run_view.update_regression(store, up["cursor"]["regression"])
    assert "cannot read the regression table" in fig.layout.annotations[0].text
    assert "regression.vbh" in fig.layout.annotations[0].text and cursor == {}


def test_planned_schedules_follow_the_resolved_config(run_page):
    _app, page, _tracker = run_page
    plans = run_view.planned_schedules(
        {
            "n_steps": 600,
            "optimiser_params": {"lr": 0.1},
            "schedules": {"lr": {"dec": 0.5, "period": 250}, "mom": {"dec": 0.9}},
        }
    )
    assert list(plans) == ["lr"]  # mom has no start value in optimiser_params
    steps, values = plans["lr"]
    assert steps.tolist() == [0, 250, 500, 600] and values.tolist() == [0.1, 0.05, 0.025, 0.025]
    assert run_view.planned_schedules(None) == {}


def _points(dash_duo, graph_id: str) -> int:
    return dash_duo.driver.execute_script(
        f"const g = document.querySelector('#{graph_id} .js-plotly-plot');"
        "return g && g.data && g.data.length ? g.data[0].x.length : -1;"
    )


def _wait(predicate, timeout: float = 20.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.browser
def test_run_page_streams_new_points(dash_duo, run_page):
    app, _page, tracker = run_page
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}?odd=1&x=%2F..")
    dash_duo.wait_for_text_to_equal("#run-state", "running", timeout=20)
    assert _wait(lambda: _points(dash_duo, "run-graph-timeline") == 50)
    assert _points(dash_duo, "run-graph-loss") == 3
    dash_duo.wait_for_contains_text("#run-graph-timeline", "50 points")
    add_timeline(tracker, 50, 75)
    assert _wait(lambda: _points(dash_duo, "run-graph-timeline") == 75), _points(
        dash_duo, "run-graph-timeline"
    )
    dash_duo.wait_for_contains_text("#run-graph-timeline", "75 points")
    dash_duo.wait_for_contains_text("#run-progress", "12.50 it/s")
    assert dash_duo.get_logs() == [] or all(e["level"] != "SEVERE" for e in dash_duo.get_logs())


@pytest.mark.browser
def test_unknown_run_shows_a_message(dash_duo, run_page):
    app, _page, _tracker = run_page
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/no-such-run")
    dash_duo.wait_for_contains_text("#run-missing", "There is no run named 'no-such-run'")


def _regression_shown(dash_duo) -> bool:
    return dash_duo.find_element("#run-regression-panel").is_displayed()


@pytest.mark.browser
def test_run_page_shows_the_regression_scatter_only_with_rows(dash_duo, run_page, tmp_path):
    app, _page, tracker = run_page
    other = make_run(tmp_path / "runs", "tracing-run", n_timeline=10, n_history=1)
    try:
        add_regression(other, 0, 40)
        dash_duo.start_server(app)
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/tracing-run")
        assert _wait(lambda: _points(dash_duo, "run-graph-regression") == 40)
        assert _regression_shown(dash_duo)
        dash_duo.wait_for_contains_text("#run-graph-regression", "40 points")
        add_regression(other, 40, 55)
        assert _wait(lambda: _points(dash_duo, "run-graph-regression") == 55)

        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}")
        # the curves and the regression panel come from the same update
        assert _wait(lambda: _points(dash_duo, "run-graph-timeline") == 50)
        assert not _regression_shown(dash_duo)
        assert _points(dash_duo, "run-graph-regression") == -1  # hidden: nothing drawn
        add_regression(tracker, 0, 5)
        assert _wait(lambda: _regression_shown(dash_duo))
        assert _wait(lambda: _points(dash_duo, "run-graph-regression") == 5)
        assert all(e["level"] != "SEVERE" for e in dash_duo.get_logs())
    finally:
        other.close()


def make_class_run(runs_dir, name: str = "seg-run") -> HistoryTracker:
    """A run whose history has per-class IoU/Dice columns, best_metric valid_iou_mean at step 10
    and, being a regression-free class run, the classification error label."""
    from trainer.class_metrics import metric_columns

    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    extra = {"device": "cpu", "best_metric": "valid_iou_mean", "best_mode": "max",
             "best_step": 10, "best_value": 0.6, "best_time_s": 1.0,
             "error_metric": "mean squared error"}  # fmt: skip
    write_status(run_dir, Status(state="running", step=30, n_steps=1000, pid=os.getpid(),
                                 heartbeat=time.time() + 3600, started=time.time(), extra=extra))  # fmt: skip
    tracker = HistoryTracker(run_dir / "history", extra_history_columns=metric_columns(2))
    add_timeline(tracker, 0, 30)
    for i, (iou0, iou1) in enumerate([(0.5, 0.2), (0.8, 0.4), (0.7, 0.3)]):
        scores = {"valid_iou_0": iou0, "valid_iou_1": iou1, "valid_iou_mean": (iou0 + iou1) / 2,
                  "valid_dice_0": 2 * iou0 / (1 + iou0), "valid_dice_1": 2 * iou1 / (1 + iou1)}  # fmt: skip
        scores["valid_dice_mean"] = (scores["valid_dice_0"] + scores["valid_dice_1"]) / 2
        tracker.update_history(dict(steps=10 * i, time=i, train_loss=1.0, valid_loss=1.1,
                                    loss_gain=0.0, train_err=0.3, valid_err=0.4, lr=0.01, mom=0.9,
                                    gradnetrate=0.0, **scores))  # fmt: skip
    return tracker


def _traces(dash_duo, graph_id: str) -> list:
    return dash_duo.driver.execute_script(
        f"const g = document.querySelector('#{graph_id} .js-plotly-plot');"
        "return g && g.data ? g.data.map(t => [t.name, t.x, t.y]) : null;"
    )


@pytest.mark.browser
def test_run_page_draws_per_class_curves_and_marks_the_best_point(dash_duo, run_page, tmp_path):
    app, _page, _tracker = run_page
    tracker = make_class_run(tmp_path / "runs")
    try:
        dash_duo.start_server(app)
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/seg-run")
        assert _wait(lambda: (_traces(dash_duo, "run-graph-classes") or [[0, []]])[0][1] != [])
        assert dash_duo.find_element("#run-classes-panel").is_displayed()
        traces = {name: (x, y) for name, x, y in _traces(dash_duo, "run-graph-classes")}
        assert traces["IoU class 0"] == ([0, 10, 20], [0.5, 0.8, 0.7])
        assert traces["IoU class 1"] == ([0, 10, 20], [0.2, 0.4, 0.3])
        assert traces["Dice mean"][1] == pytest.approx([0.5, 0.7302, 0.6425], abs=1e-4)
        # the best valid_iou_mean (0.6 at step 10) is marked on its curve
        best = traces["best valid IoU (mean over classes)"]
        assert best == ([10], [0.6]) and best[1][0] == pytest.approx(traces["IoU mean"][1][1])
        dash_duo.wait_for_contains_text("#run-graph-classes", "Per-class IoU / Dice")
        # the error panel says what its columns hold
        dash_duo.wait_for_contains_text("#run-graph-error", "mean squared error")
        # a new history row is appended to every per-class curve
        tracker.update_history(dict(steps=30, time=3, valid_iou_0=0.9, valid_iou_1=0.5,
                                    valid_iou_mean=0.7, valid_dice_0=0.9, valid_dice_1=0.6,
                                    valid_dice_mean=0.75))  # fmt: skip
        assert _wait(lambda: _traces(dash_duo, "run-graph-classes")[0][1] == [0, 10, 20, 30])
        # a new best moves the marker
        status = read_status(tmp_path / "runs" / "seg-run")
        status.extra.update(best_step=30, best_value=0.7, best_time_s=3.0)
        write_status(tmp_path / "runs" / "seg-run", status)
        assert _wait(lambda: _traces(dash_duo, "run-graph-classes")[-1][1:] == [[30], [0.7]])
        assert all(e["level"] != "SEVERE" for e in dash_duo.get_logs())
    finally:
        tracker.close()


def test_compare_offers_and_draws_the_per_class_columns(tmp_path):
    tracker = make_class_run(tmp_path / "runs")
    try:
        build_app(tmp_path)
        columns = run_view.compare_columns(tmp_path / "runs" / "seg-run")
        assert {"valid_iou_0", "valid_iou_1", "valid_dice_0", "valid_iou_mean"} <= set(columns)
        fig = run_view.compare_view(tmp_path / "runs", "seg-run", [], "valid_dice_1")
        assert list(fig.data[0].y) == pytest.approx([1 / 3, 0.5714, 0.4615], abs=1e-4)
    finally:
        tracker.close()


def test_the_best_valid_loss_is_marked_on_the_loss_panel(run_page, tmp_path):
    _app, page, _tracker = run_page
    run_dir = tmp_path / "runs" / RUN
    status = read_status(run_dir)
    status.extra.update(best_metric="valid_loss", best_mode="min", best_step=20,
                        best_value=0.4, best_time_s=2.0)  # fmt: skip
    write_status(run_dir, status)
    full = run_view.update_curves(run_dir, None, smoothing=Smoothing("none"), poll=False)
    marker = full["loss"].data[-1]
    assert (marker.name, list(marker.x), list(marker.y)) == ("best valid loss", [20], [0.4])
    assert full["cursor"]["best"] == {"panel": "loss", "index": 2, "xy": [20, 0.4]}
    timed = run_view.update_curves(run_dir, None, smoothing=Smoothing("none"), x_axis="time",
                               poll=False)  # fmt: skip
    assert list(timed["loss"].data[-1].x) == [2.0]
    # no best_metric in status.json (an older run): no marker
    for key in ("best_metric", "best_value", "best_step"):
        status.extra.pop(key)
    write_status(run_dir, status)
    plain = run_view.update_curves(run_dir, None, smoothing=Smoothing("none"), poll=False)
    assert [t.name for t in plain["loss"].data] == ["train loss", "valid loss"]


def _append_timeline_records(store, start: int, stop: int) -> None:
    """Timeline rows ``[start, stop)`` appended as the writer appends them (float64 records,
    one ``O_APPEND`` write), so a test gets 10^6 rows in a second instead of minutes."""
    i = np.arange(start, stop, dtype=np.float64)
    rows = np.column_stack([0.01 * i, 1.0 / (1.0 + 1e-4 * i) + 0.05 * np.sin(i) ** 2, 0.5 + 0 * i])
    with open(table_path(store, "timeline"), "ab") as f:
        f.write(np.ascontiguousarray(rows, dtype="<f8").tobytes())


def _graphs(component) -> dict:
    """``id -> figure`` of every ``dcc.Graph`` in a layout."""
    found = {}
    if isinstance(component, dcc.Graph):
        found[component.id] = component.figure
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            found.update(_graphs(child))
    return found


def test_a_million_row_run_page_response_is_bounded_and_ends_at_the_last_step(tmp_path):
    """The page's first response carries downsampled curves (spikes and the newest point
    kept), not one point per step: its size does not grow with the run."""
    n = 1_000_000
    tracker = make_run(tmp_path / "runs", "big", n_timeline=1, n_history=3)
    try:
        store = tmp_path / "runs" / "big" / "history"
        _append_timeline_records(store, 1, n)
        app = build_app(tmp_path)
        page = sys.modules["app.pages.run"]
        with app.server.test_request_context("/run/big"):
            layout = page.layout(name="big")
        graphs = _graphs(layout)
        timeline = graphs["run-graph-timeline"]
        assert timeline.data[0].x[-1] == n - 1 and timeline.data[1].x[-1] == n - 1
        # the hidden panels (no per-class, regression or valid_are data) hold nothing to draw
        for hidden in ("run-graph-classes", "run-graph-regression", "run-graph-are"):
            assert graphs[hidden]["data"] == [] and not graphs[hidden]["layout"]["xaxis"]["visible"]
        figs = [f for f in graphs.values() if isinstance(f, go.Figure)]  # schedule: a callback
        points = max(len(t.x) for fig in figs for t in fig.data)
        assert points <= DEFAULT_MAX_POINTS + 2
        assert timeline.layout.annotations[0].text.endswith(f"of {n:,} points")
        size = len(json.dumps(layout, cls=plotly.utils.PlotlyJSONEncoder))
        assert size < 400_000, size
    finally:
        tracker.close()


def make_neurons_run(runs_dir, name: str = "neurons", n_history: int = 3) -> HistoryTracker:
    """A running run whose history has the trainer's ``valid_are`` column."""
    tracker = make_run(runs_dir, name, n_history=0, extra_columns=("valid_are",))
    for i in range(n_history):
        tracker.update_history(
            {"steps": 10 * i, "time": i, "valid_loss": 1.0 / (i + 1), "valid_are": 0.5 / (i + 1)}
        )
    return tracker


def test_valid_are_gets_its_panel_appends_compare_column_and_best_marker(run_page, tmp_path):
    _app, page, _tracker = run_page
    plain = run_view.update_curves(tmp_path / "runs" / RUN, None, smoothing=Smoothing(), poll=False)
    assert plain["are_style"]["display"] == "none"  # no such column: the panel stays hidden
    assert "valid_are" not in run_view.compare_columns(tmp_path / "runs" / RUN)
    tracker = make_neurons_run(tmp_path / "runs")
    try:
        run_dir = tmp_path / "runs" / "neurons"
        status = read_status(run_dir)
        status.extra.update(best_metric="valid_are", best_step=20, best_value=0.5 / 3)
        write_status(run_dir, status)
        full = run_view.update_curves(run_dir, None, smoothing=Smoothing(), poll=False)
        assert "display" not in full["are_style"]
        assert list(full["are"].data[0].y) == pytest.approx([0.5, 0.25, 0.5 / 3])
        assert full["are"].data[-1].name == "best valid adapted Rand error"
        tracker.update_history({"steps": 30, "time": 3.0, "valid_are": 0.1})
        up = run_view.update_curves(run_dir, full["cursor"], smoothing=Smoothing(), poll=True)
        ops = up["are"].to_plotly_json()["operations"]
        extended = {tuple(op["location"]): op["params"]["value"] for op in ops
                    if op["operation"] == "Extend"}  # fmt: skip
        assert extended[("data", 0, "y")] == [0.1] and up["are_style"] is no_update
        assert "valid_are" in run_view.compare_columns(run_dir)
        fig = run_view.compare_view(tmp_path / "runs", "neurons", [RUN], "valid_are")
        assert [t.name for t in fig.data] == ["neurons"]  # the other run has no such column
    finally:
        tracker.close()


# ------------------------------------------------------------------------- damaged run files


def _corrupt_timeline(run_dir) -> bytes:
    """Overwrite the timeline table's magic bytes in place; returns the original bytes."""
    path = table_path(run_dir / "history", "timeline")
    original = path.read_bytes()
    path.write_bytes(b"XXXX" + original[4:])
    return original


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("state", "damaged", "expected"),
    [
        ("running", False, "live_ms"),
        ("queued", False, "live_ms"),
        ("unknown", False, "live_ms"),
        ("finished", False, None),  # nothing new will come: the poll stops
        ("failed", False, None),
        ("stopped", False, None),
        ("lost", False, "slow_ms"),  # its trainer may come back
        ("failed", True, "slow_ms"),  # read from a damaged status.json
        ("unknown", True, "slow_ms"),
        ("running", True, "live_ms"),
    ],
)
def test_poll_interval_stops_only_for_a_final_state_it_can_trust(
    run_page, state, damaged, expected
):
    app, page, _tracker = run_page
    every = app_context(app).intervals
    want = expected and getattr(every, expected)
    assert run_view.poll_interval(state, damaged, every) == want
    # the default refresh (2 s) keeps the page's intervals of old: 2 s, and 10 s for the slow
    assert run_view.poll_interval(state, damaged) == {None: None, "live_ms": 2000,
                                                      "slow_ms": 10_000}[expected]  # fmt: skip


@pytest.mark.parametrize(
    ("status_text", "state"),
    [("{garbage", "unknown"), ("", "unknown"), ('{"state": "exploded", "step": 3}', "failed")],
)
def test_a_damaged_status_shows_the_tables_state_and_keeps_the_poll(
    run_page, tmp_path, status_text, state
):
    _app, page, _tracker = run_page
    run_dir = tmp_path / "runs" / RUN
    (run_dir / "status.json").write_text(status_text)
    every = app_context(_app).intervals
    up = run_view.update_curves(run_dir, None, smoothing=Smoothing(), poll=False, every=every)
    assert up["header"][0].children == state == readers.run_summary(run_dir)["state"]
    assert not up["stop"] and up["poll_ms"] == every.slow_ms == 5 * every.live_ms
    write_status(run_dir, Status(state="finished", step=50, n_steps=1000))
    up = run_view.update_curves(run_dir, up["cursor"], smoothing=Smoothing(), every=every)
    assert up["header"][0].children == "finished" and up["stop"]


def test_compare_names_a_run_whose_history_cannot_be_read_and_draws_the_others(run_page, tmp_path):
    _app, page, _tracker = run_page
    other = make_run(tmp_path / "runs", "other", n_timeline=20)
    try:
        _corrupt_timeline(tmp_path / "runs" / RUN)
        fig, _sig = run_view.compare_update(
            tmp_path / "runs", RUN, ["other"], "loss", "step", False, None
        )
        assert [t.name for t in fig.data] == ["other"] and len(fig.data[0].x) == 20
        assert fig.layout.title.text == "Compare: loss"
        assert fig.layout.yaxis.title.text == "loss"
        assert fig.layout.annotations[0].text == (f"20 points; cannot read the history of {RUN}")
        alone, _sig = run_view.compare_update(
            tmp_path / "runs", RUN, [], "loss", "step", False, None
        )
        assert alone.layout.title.text == "Compare: loss" and alone.data == ()
        assert alone.layout.annotations[0].text == f"cannot read the history of {RUN}"
    finally:
        other.close()


def _shown(dash_duo, selector: str) -> bool:
    return dash_duo.find_element(selector).is_displayed()


@pytest.mark.browser
def test_an_unreadable_timeline_shows_the_header_and_one_sentence_then_recovers(
    dash_duo, run_page, tmp_path
):
    app, _page, _tracker = run_page
    original = _corrupt_timeline(tmp_path / "runs" / RUN)
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}")
    dash_duo.wait_for_text_to_equal("#run-state", "running", timeout=20)
    dash_duo.wait_for_contains_text("#run-progress", "step 50 / 1,000")
    dash_duo.wait_for_contains_text("#run-error", "history/timeline.vbh does not start with")
    dash_duo.wait_for_contains_text("#run-error", "move it out of the history directory")
    # the sentence stands alone: no empty timeline frame, no history panels, no waiting text
    assert _wait(lambda: not _shown(dash_duo, "#run-waiting"))
    assert not _shown(dash_duo, "#run-timeline-panel")
    assert not _shown(dash_duo, "#run-history-panels")
    # the file is put back: the open page draws the curves without a reload
    table_path(tmp_path / "runs" / RUN / "history", "timeline").write_bytes(original)
    assert _wait(lambda: _points(dash_duo, "run-graph-timeline") == 50, timeout=30)
    assert _wait(lambda: _shown(dash_duo, "#run-timeline-panel"))
    dash_duo.wait_for_text_to_equal("#run-error", "")
    assert _wait(lambda: _shown(dash_duo, "#run-history-panels"))
    assert _points(dash_duo, "run-graph-loss") == 3
    assert not _shown(dash_duo, "#run-waiting")


@pytest.mark.browser
def test_a_corrupt_status_shows_unknown_and_the_page_follows_a_rewritten_one(
    dash_duo, run_page, tmp_path
):
    app, _page, _tracker = run_page
    run_dir = tmp_path / "runs" / RUN
    (run_dir / "status.json").write_text("{garbage")
    assert readers.run_summary(run_dir)["state"] == "unknown"  # what the experiments table says
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}")
    dash_duo.wait_for_text_to_equal("#run-state", "unknown", timeout=20)
    dash_duo.wait_for_contains_text("#run-header", "status.json is corrupt (not valid JSON)")
    write_status(run_dir, Status(state="running", step=60, n_steps=1000, pid=os.getpid(),
                                 heartbeat=time.time() + 3600, started=time.time()))  # fmt: skip
    dash_duo.wait_for_text_to_equal("#run-state", "running", timeout=30)
    dash_duo.wait_for_contains_text("#run-progress", "step 60 / 1,000")


@pytest.mark.browser
def test_a_lost_run_page_follows_its_trainer_when_it_comes_back(dash_duo, run_page, tmp_path):
    app, _page, _tracker = run_page
    run_dir = tmp_path / "runs" / RUN
    write_status(run_dir, Status(state="running", step=50, n_steps=1000, pid=_dead_pid(),
                                 heartbeat=time.time() - 3600, started=time.time() - 7200))  # fmt: skip
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}")
    dash_duo.wait_for_text_to_equal("#run-state", "lost", timeout=20)
    write_status(run_dir, Status(state="running", step=70, n_steps=1000, pid=os.getpid(),
                                 heartbeat=time.time() + 3600, started=time.time()))  # fmt: skip
    dash_duo.wait_for_text_to_equal("#run-state", "running", timeout=30)
    dash_duo.wait_for_contains_text("#run-progress", "step 70 / 1,000")
