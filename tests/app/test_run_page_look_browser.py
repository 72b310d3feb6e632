"""Run page as a person first sees it, in a real Chromium: curves with the first response,
readable axes for constant series, and a compare panel that follows the live run."""

from __future__ import annotations

import json
import os
import time

import pytest

from app import create_app
from trainer.history import HistoryTracker
from trainer.runs import Status, write_status

#: records every Dash callback request (time since navigation start, body) before the
#: page's own scripts run, and the time of the first drawn trace of the timeline graph
RECORDER = """
window.__vbRequests = [];
window.__vbFirstTrace = null;
const realFetch = window.fetch;
window.fetch = function (url, init) {
  if (String(url).includes("_dash-update-component")) {
    window.__vbRequests.push([performance.now(), String((init && init.body) || "")]);
  }
  return realFetch.apply(this, arguments);
};
(function check() {
  if (document.querySelector("#run-graph-timeline g.trace")) {
    window.__vbFirstTrace = performance.now();
    return;
  }
  requestAnimationFrame(check);
})();
"""


def make_run(runs_dir, name: str, lr=lambda i: 0.002, n_history: int = 3) -> HistoryTracker:
    """A running run (this process is its trainer) with 40 timeline rows and a few history rows."""
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    write_status(
        run_dir,
        Status(state="running", step=40, n_steps=1000, pid=os.getpid(),
               heartbeat=time.time() + 3600, started=time.time()),
    )  # fmt: skip
    tracker = HistoryTracker(run_dir / "history")
    for i in range(40):
        tracker.update_timeline([0.1 * i, 1.0 / (1 + 0.05 * i), 0.5])
    add_history(tracker, 0, n_history, lr)
    return tracker


def add_history(tracker: HistoryTracker, start: int, stop: int, lr=lambda i: 0.002) -> None:
    for i in range(start, stop):
        tracker.update_history(
            [10 * i, i, 1.0 / (i + 1), 1.2 / (i + 1), 0.1, 0.3, 0.4, lr(i), 0.9, 0.0]
        )


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


def start(dash_duo, tmp_path, path: str, recorder: bool = False) -> None:
    app = create_app(
        tmp_path / "runs", tmp_path / "configs", tmp_path / "data", start_launcher=False, gpus=[]
    )
    dash_duo.start_server(app)
    if recorder:
        dash_duo.driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER}
        )
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}{path}")


def _wait(predicate, timeout: float = 20.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _graph(dash_duo, graph_id: str, script: str):
    return dash_duo.driver.execute_script(
        f"const g = document.querySelector('#{graph_id} .js-plotly-plot');"
        f"return g && g._fullLayout ? {script} : null;"
    )


@pytest.mark.browser
def test_curves_are_drawn_from_the_page_response_without_a_curves_callback(
    dash_duo, runs_dir, tmp_path
):
    tracker = make_run(runs_dir, "live")
    try:
        start(dash_duo, tmp_path, "/run/live", recorder=True)
        assert _wait(lambda: dash_duo.driver.execute_script("return window.__vbFirstTrace"))
        first = dash_duo.driver.execute_script("return window.__vbFirstTrace")
        requests = dash_duo.driver.execute_script("return window.__vbRequests")
        before = [json.loads(body) for t, body in requests if t < first]
        outputs = [b.get("output", "") for b in before]
        assert not any("run-graph-timeline" in o for o in outputs), outputs
        assert _graph(dash_duo, "run-graph-loss", "g.data[0].x.length") == 3
        # polling then appends: a new history row reaches the drawn loss panel
        add_history(tracker, 3, 4)
        assert _wait(lambda: _graph(dash_duo, "run-graph-loss", "g.data[0].x.length") == 4)
    finally:
        tracker.close()


@pytest.mark.browser
def test_a_constant_lr_and_momentum_get_a_readable_range_and_a_decaying_lr_a_log_axis(
    dash_duo, runs_dir, tmp_path
):
    flat = make_run(runs_dir, "flat")
    decay = make_run(runs_dir, "decay", lr=lambda i: 0.01 * 0.1**i, n_history=4)
    try:
        start(dash_duo, tmp_path, "/run/flat")
        assert _wait(lambda: _graph(dash_duo, "run-graph-lr", "g.data[0].x.length") == 3)
        lo, hi = _graph(dash_duo, "run-graph-lr", "g._fullLayout.yaxis.range")
        assert 0.0017 <= lo < 0.002 < hi <= 0.0023
        lo2, hi2 = _graph(dash_duo, "run-graph-lr", "g._fullLayout.yaxis2.range")
        assert 0.8 <= lo2 < 0.9 < hi2 <= 1.0
        assert _graph(dash_duo, "run-graph-lr", "g._fullLayout.yaxis.type") == "linear"
        # a later step of the schedule leaves the band: the axis follows it
        add_history(flat, 3, 4, lr=lambda i: 0.0005)
        assert _wait(
            lambda: _graph(dash_duo, "run-graph-lr", "g._fullLayout.yaxis.range[0]") < 5e-4
        )
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/decay")
        assert _wait(lambda: _graph(dash_duo, "run-graph-lr", "g.data[0].x.length") == 4)
        assert _graph(dash_duo, "run-graph-lr", "g._fullLayout.yaxis.type") == "log"
    finally:
        flat.close()
        decay.close()


@pytest.mark.browser
def test_compare_grows_with_the_live_run(dash_duo, runs_dir, tmp_path):
    tracker = make_run(runs_dir, "live")
    try:
        start(dash_duo, tmp_path, "/run/live")
        assert _wait(lambda: _graph(dash_duo, "run-graph-compare", "g.data.length") == 1)
        assert _graph(dash_duo, "run-graph-compare", "g.data[0].x.length") == 3
        add_history(tracker, 3, 6)
        assert _wait(lambda: _graph(dash_duo, "run-graph-loss", "g.data[0].x.length") == 6)
        assert _wait(lambda: _graph(dash_duo, "run-graph-compare", "g.data[0].x.length") == 6)
    finally:
        tracker.close()
