"""Run page as a person first sees it, in a real Chromium: curves with the first response,
readable axes for constant series, and a compare panel that follows the live run."""

from __future__ import annotations

import os
import time

import pytest

from app import create_app
from trainer.history import HistoryTracker
from trainer.runs import Status, write_status

#: the dashboard's ``--refresh`` for these pages (default 2 s): the polls these tests wait
#: on come four times as often; intervals that matter are read from the app's context
REFRESH_S = 0.5


def make_run(
    runs_dir, name: str, lr=lambda i: 0.002, n_history: int = 3, extra_columns=()
) -> HistoryTracker:
    """A running run (this process is its trainer) with 40 timeline rows and a few history rows
    (and the trainer's ``extra_columns``, e.g. ``valid_are``, NaN unless a test writes them)."""
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    write_status(
        run_dir,
        Status(state="running", step=40, n_steps=1000, pid=os.getpid(),
               heartbeat=time.time() + 3600, started=time.time()),
    )  # fmt: skip
    tracker = HistoryTracker(run_dir / "history", extra_history_columns=extra_columns)
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


def start(dash_duo, tmp_path, path: str, record_page=None, refresh_s: float = REFRESH_S) -> None:
    app = create_app(
        tmp_path / "runs",
        tmp_path / "configs",
        tmp_path / "data",
        start_launcher=False,
        gpus=[],
        refresh_s=refresh_s,
    )
    dash_duo.start_server(app)
    if record_page is not None:  # the first drawn trace of the timeline graph
        record_page(dash_duo, 'document.querySelector("#run-graph-timeline g.trace")')
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
    dash_duo, runs_dir, tmp_path, record_page
):
    # the first poll (one refresh) comes after the first drawing even on a machine busy with
    # other tests, so a request before the drawing can only be one the page itself waits for
    tracker = make_run(runs_dir, "live")
    try:
        start(dash_duo, tmp_path, "/run/live", record_page, refresh_s=6.0)
        assert _wait(lambda: dash_duo.driver.execute_script("return window.__vbFirstDrawn"))
        first = dash_duo.driver.execute_script("return window.__vbFirstDrawn")
        requests = dash_duo.driver.execute_script("return window.__vbRequests")
        outputs = [output for t, output in requests if t < first]
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


#: every tick label and axis title of a graph, as [text, left, top, right, bottom] (pixels),
#: with the graph's own box first
LABEL_BOXES = """
const out = {};
for (const g of document.querySelectorAll(".js-plotly-plot")) {
  if (g.offsetParent === null) continue;  // a hidden panel
  const box = g.querySelector(".main-svg").getBoundingClientRect();
  const labels = [...g.querySelectorAll(
    ".xtick text, .ytick text, .y2tick text, .g-xtitle text, .g-ytitle text, .g-y2title text")];
  out[g.parentElement.id] = [[box.left, box.top, box.right, box.bottom],
    labels.filter(t => t.textContent).map(t => {
      const r = t.getBoundingClientRect();
      return [t.textContent, r.left, r.top, r.right, r.bottom];
    })];
}
return out;
"""


@pytest.mark.browser
def test_tick_labels_and_axis_titles_fit_inside_every_run_page_graph(dash_duo, runs_dir, tmp_path):
    """The axes keep fixed margins (no second draw to grow them): nothing may be cut off,
    with long tick labels on both sides of the lr panel."""
    tracker = make_run(runs_dir, "wide", lr=lambda i: 0.0012345 * (1 + i), n_history=6)
    try:
        start(dash_duo, tmp_path, "/run/wide")
        assert _wait(lambda: _graph(dash_duo, "run-graph-compare", "g.data.length") == 1)
        assert _wait(lambda: _graph(dash_duo, "run-graph-schedule", "g.data.length") is not None)
        graphs = dash_duo.driver.execute_script(LABEL_BOXES)
        assert {"run-graph-timeline", "run-graph-lr", "run-graph-compare"} <= set(graphs)
        for graph_id, ((left, top, right, bottom), labels) in graphs.items():
            assert labels, graph_id
            for text, lo, up, hi, down in labels:
                inside = lo >= left - 0.5 and hi <= right + 0.5 and up >= top and down <= bottom
                assert inside, (
                    f"{graph_id}: label {text!r} at {[lo, up, hi, down]} leaves the graph"
                )
        assert any(t == "momentum" for t, *_ in graphs["run-graph-lr"][1])
    finally:
        tracker.close()


def _are_rows(tracker: HistoryTracker, start: int, stop: int) -> None:
    for i in range(start, stop):
        tracker.update_history(
            {"steps": 10 * i, "time": i, "train_loss": 1.0 / (i + 1), "valid_loss": 1.2 / (i + 1),
             "valid_err": 0.4, "lr": 0.002, "mom": 0.9, "valid_are": 0.8 / (i + 1)}
        )  # fmt: skip


@pytest.mark.browser
def test_the_neurons_adapted_rand_error_has_a_panel_only_in_runs_that_record_it(
    dash_duo, runs_dir, tmp_path
):
    neurons = make_run(runs_dir, "neurons", n_history=0, extra_columns=("valid_are",))
    plain = make_run(runs_dir, "plain")
    try:
        _are_rows(neurons, 0, 3)
        start(dash_duo, tmp_path, "/run/neurons")
        assert _wait(lambda: _graph(dash_duo, "run-graph-are", "g.data[0].y.length") == 3)
        assert dash_duo.find_element("#run-are-panel").is_displayed()
        ys = _graph(dash_duo, "run-graph-are", "g.data[0].y")
        assert ys == pytest.approx([0.8, 0.4, 0.8 / 3])
        title = _graph(dash_duo, "run-graph-are", "g._fullLayout.title.text")
        assert title == "Neurons: adapted Rand error (validation)"
        # the next monitoring step's value is appended by the poll
        _are_rows(neurons, 3, 4)
        assert _wait(lambda: _graph(dash_duo, "run-graph-are", "g.data[0].y.length") == 4)
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/plain")
        assert _wait(lambda: _graph(dash_duo, "run-graph-loss", "g.data[0].x.length") == 3)
        assert not dash_duo.find_element("#run-are-panel").is_displayed()
    finally:
        neurons.close()
        plain.close()


#: (start time, address) of each resource the page loaded, in the order they were asked for
RESOURCES = """
return performance.getEntriesByType("resource").map(e => [e.startTime, e.name]);
"""


#: for each graph, the number of the DOM mutation report (one per task that changed the page,
#: delivered when the task's work is done) in which it first showed a trace, and in which it
#: was first drawn at all (an empty figure draws no trace)
DRAWS = """
window.__vbReports = 0;
window.__vbDrawnIn = {};
window.__vbPlottedIn = {};
new MutationObserver(function () {
  window.__vbReports += 1;
  document.querySelectorAll(".dash-graph").forEach(function (el) {
    if (el.id && !(el.id in window.__vbDrawnIn) && el.querySelector("g.trace")) {
      window.__vbDrawnIn[el.id] = window.__vbReports;
    }
    if (el.id && !(el.id in window.__vbPlottedIn) && el.querySelector(".main-svg")) {
      window.__vbPlottedIn[el.id] = window.__vbReports;
    }
  });
}).observe(document, {subtree: true, childList: true});
"""


@pytest.mark.browser
def test_a_run_pages_graphs_are_first_drawn_one_per_task(dash_duo, runs_dir, tmp_path):
    """assets/plots.js: the browser shows the first graph before the others are drawn (all of
    them in one task showed nothing until the last was drawn)."""
    tracker = make_run(runs_dir, "live")
    try:
        start(dash_duo, tmp_path, "/")
        dash_duo.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": DRAWS})
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/live")
        drawn = "return window.__vbDrawnIn"
        assert _wait(lambda: len(dash_duo.driver.execute_script(drawn)) >= 5)
        time.sleep(1.0)  # the rest of the queue
        frames = dash_duo.driver.execute_script(drawn)
        assert {"run-graph-timeline", "run-graph-loss"} <= set(frames), frames
        assert len(set(frames.values())) >= 3, frames  # drawn in several tasks, not in one
        assert _graph(dash_duo, "run-graph-loss", "g.data[0].x.length") == 3
        # panels hidden for want of data (no per-class metrics here) are drawn after the
        # graphs on screen, when the page is idle
        hidden = dash_duo.driver.execute_script(
            "return Array.from(document.querySelectorAll('#_pages_content .dash-graph'))"
            ".filter(g => g.offsetParent === null).map(g => g.id);"
        )
        plotted = dash_duo.driver.execute_script("return window.__vbPlottedIn")
        assert hidden and set(hidden) <= set(plotted), (hidden, plotted)
        assert min(plotted[h] for h in hidden) > max(frames.values()), (plotted, frames)
    finally:
        tracker.close()


def _layout_ids(node) -> set[str]:
    """Every component id in a layout as ``/_dash-layout`` sends it."""
    out: set[str] = set()
    if isinstance(node, list):
        for child in node:
            out |= _layout_ids(child)
    elif isinstance(node, dict):
        props = node.get("props", {})
        if isinstance(props.get("id"), str):
            out.add(props["id"])
        out |= _layout_ids(props.get("children"))
    return out


WARM_UP = {"vb-warm-graph", "vb-warm-slider", "vb-warm-dropdown"}


def test_the_page_frame_of_a_run_page_loads_the_lazy_graph_slider_and_dropdown(tmp_path):
    app = create_app(
        tmp_path / "runs", tmp_path / "configs", tmp_path / "data", start_launcher=False, gpus=[]
    )
    client = app.server.test_client()

    def frame(referrer: str | None) -> set[str]:
        headers = {"Referer": referrer} if referrer else {}
        response = client.get("/_dash-layout", headers=headers)
        assert response.status_code == 200
        return _layout_ids(response.get_json())

    for page in ("/run/a", "/run/a/evaluation", "/run/a/preview"):
        assert WARM_UP <= frame(f"http://127.0.0.1:8050{page}"), page
    for referrer in ("http://127.0.0.1:8050/", "http://127.0.0.1:8050/sweep/x", None):
        ids = frame(referrer)
        assert not WARM_UP & ids, referrer
        assert "_pages_content" in ids  # the frame itself


@pytest.mark.browser
def test_a_run_page_loads_the_graph_code_before_its_content_comes(dash_duo, runs_dir, tmp_path):
    """The hidden warm-up graph asks for dcc.Graph's code while the server builds the page, so
    the page's graphs draw when they mount (a React lazy component held the whole page back)."""
    tracker = make_run(runs_dir, "live")
    try:
        start(dash_duo, tmp_path, "/run/live")
        assert _wait(lambda: _graph(dash_duo, "run-graph-loss", "g.data[0].x.length") == 3)
        timing = dash_duo.driver.execute_script(
            "return performance.getEntriesByType('resource').map("
            "e => [e.name, e.startTime, e.responseEnd, e.initiatorType]);"
        )
        graph_code = [
            t for name, t, _end, _i in timing if name.split("?")[0].endswith("async-graph.js")
        ]
        content = [end for name, _t, end, i in timing if "_dash-update-component" in name]
        assert graph_code and content, timing
        assert graph_code[0] < content[0], timing  # asked for before the page's content came
    finally:
        tracker.close()


@pytest.mark.browser
def test_run_pages_ask_for_plotly_before_their_layout_and_only_once(dash_duo, runs_dir, tmp_path):
    tracker = make_run(runs_dir, "live")
    try:
        start(dash_duo, tmp_path, "/run/live")
        assert _wait(lambda: _graph(dash_duo, "run-graph-loss", "g.data[0].x.length") == 3)
        loaded = dash_duo.driver.execute_script(RESOURCES)
        plotly_js = [t for t, url in loaded if url.endswith("/plotly.min.js")]
        callbacks = [t for t, url in loaded if "_dash-update-component" in url]
        assert len(plotly_js) == 1, loaded  # dcc.Graph used the early request
        assert plotly_js[0] < min(callbacks), loaded  # before the page's layout was asked for
        # the experiments page draws no Plotly figure and does not load it
        dash_duo.driver.get(f"{dash_duo.server_url}/")
        dash_duo.wait_for_element("#exp-config", timeout=20)
        loaded = dash_duo.driver.execute_script(RESOURCES)
        assert not [url for _t, url in loaded if url.endswith("/plotly.min.js")], loaded
    finally:
        tracker.close()
