"""Pages before they have data, in a real Chromium: one sentence and the action that helps,
instead of empty plot frames, an empty table or an empty log bar."""

from __future__ import annotations

import os
import time

import pytest

from app import create_app
from trainer.history import HistoryTracker
from trainer.runs import Status, atomic_write_json, snapshot_path, write_status

#: the dashboard's ``--refresh`` for these pages (default 2 s): the polls these tests wait
#: on come four times as often; intervals that matter are read from the app's context
REFRESH_S = 0.5


def build_app(tmp_path):
    for sub in ("runs", "configs", "data"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return create_app(
        tmp_path / "runs",
        tmp_path / "configs",
        tmp_path / "data",
        start_launcher=False,
        gpus=[],
        refresh_s=REFRESH_S,
    )


def _wait(predicate, timeout: float = 20.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _shown(dash_duo, selector: str) -> bool:
    found = dash_duo.driver.find_elements("css selector", selector)
    return bool(found) and found[0].is_displayed()


def running(run_dir, step: int = 0) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_status(
        run_dir,
        Status(state="running", step=step, n_steps=1000, pid=os.getpid(),
               heartbeat=time.time() + 3600, started=time.time()),
    )  # fmt: skip


@pytest.mark.browser
def test_experiments_first_start_says_what_to_do_then_shows_the_table(
    dash_duo, tmp_path, grid_select
):
    app = build_app(tmp_path)
    (tmp_path / "configs" / "demo_cnn3d.py").write_text("n_steps = 10\n")
    (tmp_path / "configs" / "a_first.py").write_text("n_steps = 10\n")  # listed first
    dash_duo.start_server(app)
    dash_duo.wait_for_contains_text(
        "#exp-empty", "No runs yet: pick demo_cnn3d.py and press Launch", timeout=15
    )
    # the Config dropdown already holds the config the sentence names
    assert dash_duo.find_element("#exp-config .dash-dropdown-value").text.strip() == "demo_cnn3d.py"
    assert not _shown(dash_duo, "#exp-runs-panel")  # no empty table, no filter row
    assert not _shown(dash_duo, "#exp-log-panel")  # no empty log bar
    running(tmp_path / "runs" / "first")
    (tmp_path / "runs" / "first" / "train.log").write_text("step 0\n")
    assert _wait(lambda: _shown(dash_duo, "#exp-runs-panel"))
    assert not _shown(dash_duo, "#exp-empty")
    filters = dash_duo.driver.find_elements("css selector", "#exp-table .ag-floating-filter input")
    assert filters and {f.get_attribute("placeholder") for f in filters} == {"filter"}
    assert not _shown(dash_duo, "#exp-log-panel")
    grid_select("first")
    assert _wait(lambda: _shown(dash_duo, "#exp-log-panel"))


@pytest.mark.browser
def test_evaluation_page_without_results_shows_one_sentence_and_no_frames(dash_duo, tmp_path):
    app = build_app(tmp_path)
    run_dir = tmp_path / "runs" / "fresh"
    run_dir.mkdir(parents=True)
    write_status(run_dir, Status(state="finished", step=10, n_steps=10))
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/fresh/evaluation")
    dash_duo.wait_for_contains_text("#eval-empty", "No evaluation yet: press Evaluate", timeout=15)
    assert _shown(dash_duo, "#eval-run-button")  # the one action
    # the result choice says there is none yet instead of an empty box
    dash_duo.wait_for_contains_text("#eval-result", "no result yet", timeout=15)
    assert _wait(lambda: dash_duo.driver.find_elements("css selector", "#eval-roc .js-plotly-plot"))
    for frame in (
        "#eval-roc",
        "#eval-pr",
        "#eval-confusion",
        "#eval-hist",
        "#eval-seg",
        "#eval-table",
    ):
        assert not _shown(dash_duo, frame), frame


@pytest.mark.browser
def test_run_page_before_its_first_history_row_says_it_waits(dash_duo, tmp_path):
    app = build_app(tmp_path)
    run_dir = tmp_path / "runs" / "young"
    running(run_dir, step=5)
    atomic_write_json(run_dir / "config.json", {"n_steps": 1000, "history_freq": 20})
    tracker = HistoryTracker(run_dir / "history")
    try:
        for i in range(5):
            tracker.update_timeline([0.1 * i, 1.0, 0.5])
        dash_duo.start_server(app)
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/young")
        dash_duo.wait_for_contains_text(
            "#run-waiting", "Waiting for the first history row (every 20 steps)", timeout=15
        )
        assert _wait(lambda: _shown(dash_duo, "#run-graph-timeline .js-plotly-plot"))
        for frame in ("#run-graph-loss", "#run-graph-error", "#run-graph-lr", "#run-graph-gain"):
            assert not _shown(dash_duo, frame), frame
        tracker.update_history([0, 1, 0.5, 0.6, 0.1, 0.3, 0.4, 0.01, 0.9, 0.0])
        assert _wait(lambda: _shown(dash_duo, "#run-graph-loss"))
        assert not _shown(dash_duo, "#run-waiting")
        # the one row is drawn around its step and values, not on -1..1 axes (issue 28, 4b)
        ranges = (
            "const g = document.querySelector('#run-graph-loss .js-plotly-plot');"
            "const l = g && g._fullLayout;"
            "return l && l.xaxis && g.data.length ? [l.xaxis.range, l.yaxis.range] : null;"
        )
        assert _wait(lambda: dash_duo.driver.execute_script(ranges) is not None)
        (x0, x1), (y0, y1) = dash_duo.driver.execute_script(ranges)
        assert x0 < 0 < x1 and x1 - x0 < 2, (x0, x1)  # a band around step 0, narrower
        assert y0 < 0.5 and 0.6 < y1 and y1 - y0 < 1, (y0, y1)  # both losses, not -1..1
    finally:
        tracker.close()


@pytest.mark.browser
def test_run_page_before_its_first_step_draws_no_per_step_frame(dash_duo, tmp_path):
    app = build_app(tmp_path)
    run_dir = tmp_path / "runs" / "starting"
    running(run_dir, step=0)
    atomic_write_json(run_dir / "config.json", {"n_steps": 1000, "history_freq": 20})
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/starting")
    dash_duo.wait_for_contains_text("#run-waiting", "Waiting for the first history row")
    assert not _shown(dash_duo, "#run-graph-timeline")
    tracker = HistoryTracker(run_dir / "history")  # the trainer's first steps
    try:
        for i in range(3):
            tracker.update_timeline([0.1 * i, 1.0, 0.5])
        assert _wait(lambda: _shown(dash_duo, "#run-graph-timeline .js-plotly-plot"))
        assert _wait(lambda: dash_duo.driver.execute_script(
            "const g = document.querySelector('#run-graph-timeline .js-plotly-plot');"
            "return !!(g && g.data.length && g.data[0].x.length === 3);"))  # fmt: skip
        assert _shown(dash_duo, "#run-waiting")  # still no history row
    finally:
        tracker.close()


@pytest.mark.browser
def test_a_failed_run_says_why_and_a_starting_one_says_starting(dash_duo, tmp_path, grid_select):
    app = build_app(tmp_path)
    failed = tmp_path / "runs" / "bad-data"
    failed.mkdir(parents=True)
    atomic_write_json(failed / "config.json", {"n_steps": 1000, "history_freq": 20})
    now = time.time()
    write_status(
        failed,
        Status(state="failed", step=0, n_steps=1000, started=now, heartbeat=now,
               error="FileNotFoundError: [Errno 2] No such file or directory: '/data/raw.h5'"),
    )  # fmt: skip
    (tmp_path / "runs" / "young").mkdir()  # launched: no status.json yet
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/bad-data")
    # the failure, its cause and what to do, where the waiting sentence was; no empty frames
    dash_duo.wait_for_contains_text("#run-failure", "Failed before its first step.", timeout=15)
    text = dash_duo.find_element("#run-failure").text
    assert "No such file or directory: '/data/raw.h5'" in text
    assert "check the data files" in text and "Resume would repeat the failure" in text
    for frame in ("#run-waiting", "#run-compare-panel", "#run-history-panels"):
        assert not _shown(dash_duo, frame), frame
    # a run whose trainer has not written its status yet is starting, until it does
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/young")
    dash_duo.wait_for_contains_text("#run-header", "starting…", timeout=15)
    assert not _shown(dash_duo, "#run-failure")
    running(tmp_path / "runs" / "young", step=3)
    dash_duo.wait_for_contains_text("#run-header", "step 3 / 1,000", timeout=15)
    assert "starting" not in dash_duo.find_element("#run-header").text
    # a data error: Resume stays disabled even with a snapshot to resume from, since it would
    # repeat the failure (issue 28, 3); Delete is offered, so the row is selected
    snapshot = snapshot_path(failed, "LAST")
    snapshot.parent.mkdir()
    snapshot.write_bytes(b"weights")
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/")
    grid_select("bad-data")
    dash_duo.wait_for_element("#exp-delete:not([disabled])", timeout=15)
    assert dash_duo.find_element("#exp-resume").get_attribute("disabled") is not None
