"""The evaluation page's "Neurons" panel in a real Chromium: moving the threshold changes the
exact neuron scores (computed on the server) and the instance view; presets; no neuron scores."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from selenium.webdriver.common.keys import Keys

from app import create_app
from app import evaluation_view as ev
from trainer import runs
from trainer.evaluation.neurons import evaluate_neurons
from trainer.metrics import evaluate_arrays
from trainer.runs import Status, write_result, write_status
from trainer.segmentation import segmentation_scores, threshold_components
from trainer.synthetic import generate_cube_neurons

#: the dashboard's ``--refresh`` for these pages (default 2 s): the polls these tests wait
#: on come four times as often; intervals that matter are read from the app's context
REFRESH_S = 0.5

RUN = "neurons"
GRID = {"thresh": [20], "grow_it": [(0, 0, 0)], "hi_thresh": [240], "lo_thresh": [30]}


def make_run(runs_dir: Path, with_neurons: bool = True) -> tuple[Path, np.ndarray, np.ndarray]:
    d = runs_dir / RUN
    (d / "eval").mkdir(parents=True)
    write_status(d, Status(state="finished", step=10, n_steps=10))
    raw, lab, ids = generate_cube_neurons((12, 48, 48), np.random.default_rng(2))
    rng = np.random.default_rng(0)
    prob = np.clip(0.7 * lab + 0.45 * rng.random(lab.shape), 0, 1)
    prob = prob.astype(np.float16).astype(np.float32)  # what the cache holds
    res = evaluate_arrays(lab.astype(np.int8), prob, mode="exact")
    neurons = [evaluate_neurons(ids, prob, grid=GRID, n_proc=1)] if with_neurons else None
    write_result(d / "eval" / "FINAL.h5", {"valid": res}, {"snapshot": "", "step": 10}, neurons)
    runs.write_prob_cache(
        ev.prob_cache_path(d, "FINAL"), [(raw / 255.0, prob, lab.astype(np.int8))]
    )
    return d, ids, prob


def build_app(tmp_path):
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
        try:
            if predicate():
                return True
        except Exception:  # the page is still rendering
            pass
        time.sleep(0.1)
    return False


def type_threshold(dash_duo, value: float) -> None:
    box = dash_duo.find_element("#eval-t-input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(repr(value))


def cell(dash_duo, key: str) -> str:
    return dash_duo.find_element(f"#eval-neuron-{key}").text


def legend(dash_duo) -> list[str]:
    return dash_duo.driver.execute_script(
        "const g = document.querySelector('#eval-seg .js-plotly-plot');"
        "return g.data.map(d => d.name);"
    )


def neuron_marker(dash_duo) -> float:
    """The threshold line of the Neurons curves, scrolled into view (the browser moves the lines
    of figures out of view when they come into view)."""
    return dash_duo.driver.execute_script(
        "const g = document.querySelector('#eval-neurons .js-plotly-plot');"
        "g.scrollIntoView();"
        "return g.data.find(d => d.meta === 'vb-neuron-threshold').x[0];"
    )


def shows_scores_at(dash_duo, ids, prob, t: float) -> bool:
    s = segmentation_scores(ids, threshold_components(prob, t))
    want = {
        "voi_split": f"{s.voi_split:.4f}",
        "voi_merge": f"{s.voi_merge:.4f}",
        "adapted_rand_error": f"{s.adapted_rand_error:.4f}",
        "n_segments": f"{s.n_segments:,}",
        "n_merges": f"{s.n_merges:,}",
    }
    return _wait(lambda: all(cell(dash_duo, k) == v for k, v in want.items()))


@pytest.mark.browser
def test_threshold_moves_the_neuron_scores_and_the_instance_view(dash_duo, tmp_path):
    run_dir, ids, prob = make_run(tmp_path / "runs")
    record = runs.read_neurons(run_dir / "eval" / "FINAL.h5")[0]
    dash_duo.start_server(build_app(tmp_path))
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/evaluation")
    dash_duo.wait_for_contains_text("#eval-summary", "positive", timeout=15)

    for t in (0.3, 0.7):
        type_threshold(dash_duo, t)
        assert shows_scores_at(dash_duo, ids, prob, t), t
        assert _wait(lambda t=t: neuron_marker(dash_duo) == t)
        dash_duo.wait_for_text_to_equal(
            "#eval-neuron-scores-t", f"exact scores at threshold {t:.4f}"
        )
    # the two thresholds give different neurons: the test would not see a frozen panel pass
    low = segmentation_scores(ids, threshold_components(prob, 0.3))
    high = segmentation_scores(ids, threshold_components(prob, 0.7))
    assert (low.n_segments, low.voi_merge) != (high.n_segments, high.voi_merge)

    # presets: the best thresholds of the cube's curves
    dash_duo.find_element("#eval-neuron-best-are").click()
    best_are = float(record["best_are_threshold"])
    assert _wait(lambda: float(dash_duo.find_element("#eval-t-input").get_attribute("value"))
                 == best_are)  # fmt: skip
    assert shows_scores_at(dash_duo, ids, prob, best_are)
    dash_duo.find_element("#eval-neuron-best-voi").click()
    best_voi = float(record["best_voi_threshold"])
    assert shows_scores_at(dash_duo, ids, prob, best_voi)

    # instance colouring names the largest split and merge at the current threshold
    dash_duo.find_element("#eval-seg-colour input[value='instances']").click()
    for t in (0.3, 0.8):
        type_threshold(dash_duo, t)
        s = segmentation_scores(ids, threshold_components(prob, t))
        merge = f"largest merge: segment {s.largest_merge}" if s.largest_merge else "no merge"
        split = f"largest split: neuron {s.largest_split}" if s.largest_split else "no split"
        assert _wait(lambda merge=merge, split=split: legend(dash_duo)[1:] == [merge, split]), (
            legend(dash_duo),
            merge,
            split,
        )
    dash_duo.find_element("#eval-seg-colour input[value='errors']").click()
    assert _wait(lambda: "true positive" in json.dumps(legend(dash_duo)))


@pytest.mark.browser
def test_result_without_neurons_says_how_to_get_them(dash_duo, tmp_path):
    make_run(tmp_path / "runs", with_neurons=False)
    dash_duo.start_server(build_app(tmp_path))
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/evaluation")
    dash_duo.wait_for_contains_text("#eval-neuron-msg", "--instances", timeout=20)
    assert cell(dash_duo, "voi_split") == ""
    # the sentence alone: no empty frame with axes, ticks or grid under it (issue 28, 4d)
    axes = (
        "const g = document.querySelector('#eval-neurons .js-plotly-plot');"
        "return g && g._fullLayout ? g.querySelectorAll("
        "'.xtick, .ytick, .gridlayer path, .zerolinelayer path').length : null;"
    )
    assert _wait(lambda: dash_duo.driver.execute_script(axes) == 0), (
        f"{dash_duo.driver.execute_script(axes)} axis marks drawn in the Neurons panel"
    )


#: counts the page's segmentation-plane requests (the neuron scores come with them) and the
#: most that were in flight at once
IN_FLIGHT = """
window.__vbPlane = {sent: 0, open: 0, most: 0};
const realFetch = window.fetch;
window.fetch = function (url, init) {
  const body = String((init && init.body) || "");
  if (!String(url).includes("_dash-update-component") || !body.includes("eval-seg.figure")) {
    return realFetch.apply(this, arguments);
  }
  const p = window.__vbPlane;
  p.sent += 1; p.open += 1; p.most = Math.max(p.most, p.open);
  return realFetch.apply(this, arguments).finally(() => { p.open -= 1; });
};
"""


#: presses the slider handle's right arrow ``arguments[0]`` times, ``arguments[1]`` ms apart
PRESSES = """
const handle = document.querySelector('#eval-slider [role="slider"]');
let left = arguments[0];
const gap = arguments[1];
const press = () => {
  const e = new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true, cancelable: true});
  Object.defineProperty(e, 'keyCode', {get: () => 39});
  Object.defineProperty(e, 'which', {get: () => 39});
  handle.dispatchEvent(e);
  if (--left > 0) { setTimeout(press, gap); }
};
press();
"""


@pytest.mark.browser
def test_a_burst_of_slider_steps_asks_the_server_one_at_a_time_and_ends_at_the_last(
    dash_duo, tmp_path
):
    _run_dir, ids, prob = make_run(tmp_path / "runs")
    dash_duo.start_server(build_app(tmp_path))
    dash_duo.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": IN_FLIGHT})
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/evaluation")
    dash_duo.wait_for_contains_text("#eval-neuron-scores-t", "exact scores", timeout=20)
    type_threshold(dash_duo, 0.3)
    assert shows_scores_at(dash_duo, ids, prob, 0.3)
    # 25 right-arrow presses 5 ms apart: faster than the server answers
    dash_duo.driver.execute_script(PRESSES, 25, 5)
    shown = lambda: json.loads(  # noqa: E731
        dash_duo.find_element("#eval-metrics-json").get_attribute("textContent")
    )["threshold"]
    assert _wait(lambda: shown() > 0.302), shown()
    time.sleep(1.0)  # the presses are over (a press the slider drops under load changes nothing)
    t = shown()
    # the last threshold always reaches the server, and its answer is what the panel shows
    dash_duo.wait_for_text_to_equal("#eval-neuron-scores-t", f"exact scores at threshold {t:.4f}")
    assert shows_scores_at(dash_duo, ids, prob, t)
    plane = dash_duo.driver.execute_script("return window.__vbPlane")
    assert plane["most"] == 1, plane  # later thresholds waited for the answer in flight
