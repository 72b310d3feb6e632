"""Evaluation page in a real Chromium: threshold tuning, presets, segmentation, bad files, Evaluate."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.keys import Keys

from app import create_app
from app import evaluation_figures as ef
from app import evaluation_view as ev
from trainer import runs
from trainer.metrics import SingleClassWarning, evaluate_arrays
from trainer.runs import Status, read_result, write_result, write_status

#: the dashboard's ``--refresh`` for these pages (default 2 s): the polls these tests wait
#: on come four times as often; intervals that matter are read from the app's context
REFRESH_S = 0.5

REPO = Path(__file__).resolve().parents[2]
RUN = "evald"
SHAPE = (6, 40, 48)


def cube(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw, class-1 probabilities (rounded: ties) and labels (some ignored) of one cube."""
    rng = np.random.default_rng(seed)
    label = (rng.random(SHAPE) < 0.35).astype(np.int8)
    prob = np.clip(rng.normal(0.35 + 0.3 * label, 0.15), 0, 1).round(3).astype(np.float32)
    label[rng.random(SHAPE) < 0.02] = -1
    raw = rng.random(SHAPE).astype(np.float32)
    return raw, prob, label


def finished_run(runs_dir: Path, name: str) -> Path:
    d = runs_dir / name
    (d / "eval").mkdir(parents=True)
    write_status(d, Status(state="finished", step=10, n_steps=10))
    return d


def make_evaluated_run(runs_dir: Path, name: str = RUN) -> Path:
    """A run with an exact-mode result (FINAL.h5) and the probability cache of its cube."""
    d = finished_run(runs_dir, name)
    raw, prob, label = cube()
    # float16 is what the cache stores: evaluate the same numbers the segmentation shows
    prob = prob.astype(np.float16).astype(np.float32)
    res = evaluate_arrays(label, prob, mode="exact")
    write_result(d / "eval" / "FINAL.h5", {"valid": res}, {"snapshot": "", "step": 10})
    runs.write_prob_cache(ev.prob_cache_path(d, "FINAL"), [(raw, prob, label)])
    return d


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


def shown(dash_duo) -> dict:
    text = dash_duo.find_element("#eval-metrics-json").get_attribute("textContent")
    return json.loads(text) if text else {}


def assert_shows(dash_duo, res, threshold: float, beta: float = 1.0) -> None:
    """The browser's numbers at ``threshold`` equal trainer.metrics' exactly, table included."""
    assert _wait(lambda: shown(dash_duo).get("threshold") == threshold), (
        shown(dash_duo),
        threshold,
    )
    got = shown(dash_duo)
    want = res.at(threshold, beta)
    for key, _label in ev.METRIC_ROWS:
        w, g = getattr(want, key), got[key]
        assert g == w or (g is None and math.isnan(w)), (key, g, w)
    for key in ("tp", "fp", "tn", "fn", "f1", "mcc"):
        assert _wait(
            lambda key=key: (
                dash_duo.find_element(f"#eval-cell-{key}").text
                == ev.format_value(key, getattr(want, key))
            )
        ), key
    # the confusion heatmap follows on the next animation frame
    texts = f"{want.tn:,}<br>", f"{want.tp:,}<br>"
    assert _wait(
        lambda: all(
            t in json.dumps(dash_duo.driver.execute_script(
                "return document.querySelector('#eval-confusion .js-plotly-plot').data[0].text"
            ))
            for t in texts
        )
    )  # fmt: skip


def marker(dash_duo, graph: str) -> list:
    return dash_duo.driver.execute_script(
        f"const g = document.querySelector('#{graph} .js-plotly-plot');"
        "const t = g.data.find(d => d.meta === 'vb-marker'); return [t.x[0], t.y[0]];"
    )


def type_threshold(dash_duo, value: float) -> None:
    box = dash_duo.find_element("#eval-t-input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(repr(value))


@pytest.fixture
def evaluated(tmp_path):
    d = make_evaluated_run(tmp_path / "runs")
    app = build_app(tmp_path)
    return app, d, read_result(d / "eval" / "FINAL.h5", coarse=True)["valid"]


#: the confusion figure's box and each tick label's text and box (left, top, right, bottom)
CONFUSION_LABELS = """
const g = document.querySelector('#eval-confusion .js-plotly-plot');
if (!g) return null;
const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
return {svg: box(g.querySelector('.main-svg')),
        ticks: [...g.querySelectorAll('.xtick text, .ytick text')].map(t => [t.textContent, ...box(t)])};
"""


@pytest.mark.browser
def test_threshold_drives_table_confusion_markers_and_segmentation(dash_duo, evaluated):
    app, run_dir, res = evaluated
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/evaluation?x=%2F..")
    dash_duo.wait_for_contains_text("#eval-summary", "positive", timeout=15)
    # opens at the threshold the evaluation chose
    assert_shows(dash_duo, res, res.chosen.threshold)
    # the confusion table's labels lie whole inside its drawing (issue 28, 4e: cut off)
    labels = dash_duo.driver.execute_script(CONFUSION_LABELS)
    assert labels and len(labels["ticks"]) >= 4, labels
    svg = labels["svg"]
    cut = [t for t in labels["ticks"] if t[1] < svg[0] or t[2] < svg[1] or t[3] > svg[2]
           or t[4] > svg[3]]  # fmt: skip
    assert not cut, f"labels outside the figure {svg}: {cut}"

    for t in (0.25, 0.5, 0.6125, 0.9):
        type_threshold(dash_duo, t)
        assert_shows(dash_duo, res, t)
    m = res.at(0.9)
    assert _wait(lambda: marker(dash_duo, "eval-roc") == [m.fpr, m.tpr])
    assert _wait(lambda: marker(dash_duo, "eval-pr") == [m.recall, m.precision])

    # the slider: Home is threshold 0 (everything positive), then one step to the right
    handle = dash_duo.find_element('#eval-slider [role="slider"]')
    handle.send_keys(Keys.HOME)
    assert_shows(dash_duo, res, 0)
    assert shown(dash_duo)["tp"] == res.n_pos and shown(dash_duo)["fn"] == 0
    handle.send_keys(Keys.PAGE_UP)
    assert _wait(lambda: shown(dash_duo)["threshold"] > 0)
    assert_shows(dash_duo, res, shown(dash_duo)["threshold"])

    # beta of F-beta
    beta = dash_duo.find_element("#eval-beta")
    beta.send_keys(Keys.CONTROL, "a")
    beta.send_keys("2")
    assert _wait(lambda: shown(dash_duo)["beta"] == 2)
    assert shown(dash_duo)["fbeta"] == res.at(shown(dash_duo)["threshold"], 2.0).fbeta
    dash_duo.wait_for_text_to_equal("#eval-label-fbeta", "F-beta (beta=2)")
    beta.send_keys(Keys.CONTROL, "a")
    beta.send_keys("1")

    # presets
    for preset in ("max_f1", "max_accuracy", "max_youden", "eer"):
        dash_duo.find_element(f"#eval-preset-{preset}").click()
        assert_shows(dash_duo, res, res.choose(preset).threshold)
    target = dash_duo.find_element("#eval-target")
    target.send_keys(Keys.CONTROL, "a")
    target.send_keys("0.8")
    dash_duo.find_element("#eval-preset-precision_at").click()
    assert_shows(dash_duo, res, res.choose("precision_at", 0.8).threshold)
    dash_duo.find_element("#eval-preset-chosen").click()
    assert_shows(dash_duo, res, res.chosen.threshold)

    # a click on the ROC curve picks the threshold of the point under the mouse
    point = len(res.thresholds) // 3
    fpr, tpr = res.roc()
    xy = dash_duo.driver.execute_script(
        "const g = document.querySelector('#eval-roc .js-plotly-plot'); g.scrollIntoView();"
        "const L = g._fullLayout, r = g.querySelector('.nsewdrag').getBoundingClientRect();"
        "return [r.left + L.xaxis.l2p(arguments[0]), r.top + L.yaxis.l2p(arguments[1])];",
        float(fpr[point]),
        float(tpr[point]),
    )
    click = ActionBuilder(dash_duo.driver)
    click.pointer_action.move_to_location(int(xy[0]), int(xy[1])).pause(0.3).click()
    click.perform()
    assert _wait(
        lambda: dash_duo.find_element("#eval-preset-msg").text.startswith("threshold picked")
    )
    picked = shown(dash_duo)["threshold"]
    assert picked in res.thresholds.tolist()
    assert abs(fpr[res.index(picked)] - fpr[point]) < 0.05  # a point near the one clicked
    assert_shows(dash_duo, res, picked)

    # the segmentation slice follows the threshold (server round trip, no re-evaluation)
    type_threshold(dash_duo, 0.5)
    assert_shows(dash_duo, res, 0.5)
    raw, prob, label = runs.read_prob_slice(
        ev.prob_cache_path(run_dir, "FINAL"), "cube0", SHAPE[0] // 2
    )
    c = ef.segmentation_counts(prob, label, 0.5)
    names = lambda: dash_duo.driver.execute_script(  # noqa: E731
        "return document.querySelector('#eval-seg .js-plotly-plot').data.slice(1).map(t => t.name)"
    )
    assert _wait(lambda: names() == [
        f"true positive ({c['tp']:,})", f"false positive ({c['fp']:,})", f"false negative ({c['fn']:,})"
    ]), names()  # fmt: skip

    # save the threshold with its metrics
    dash_duo.find_element("#eval-save").click()
    dash_duo.wait_for_contains_text("#eval-save-msg", "saved threshold 0.5000")
    saved = json.loads((run_dir / "eval" / "threshold.json").read_text())
    assert saved["threshold"] == 0.5 and saved["metrics"]["tp"] == res.at(0.5).tp
    assert saved["result"] == "FINAL" and saved["split"] == "valid"
    assert all(e["level"] != "SEVERE" for e in dash_duo.get_logs() or [])


@pytest.mark.browser
def test_figures_come_with_the_page_and_callbacks_answer_changes(dash_duo, tmp_path, record_page):
    d = finished_run(tmp_path / "runs", RUN)
    raw, prob, label = cube()
    prob = prob.astype(np.float16).astype(np.float32)
    _raw, train_prob, train_label = cube(seed=1)
    valid = evaluate_arrays(label, prob, mode="exact")
    train = evaluate_arrays(train_label[:3], train_prob[:3], mode="exact")
    write_result(d / "eval" / "FINAL.h5", {"valid": valid, "train": train}, {"step": 10})
    runs.write_prob_cache(ev.prob_cache_path(d, "FINAL"), [(raw, prob, label)])
    res = read_result(d / "eval" / "FINAL.h5", coarse=True)
    dash_duo.start_server(build_app(tmp_path))
    record_page(dash_duo, 'document.querySelector("#eval-roc g.trace")')
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/evaluation")
    assert _wait(lambda: dash_duo.driver.execute_script("return window.__vbFirstDrawn"))
    first = dash_duo.driver.execute_script("return window.__vbFirstDrawn")
    # every figure, the store and the summary are in the page's layout: drawn with it
    for graph in ("eval-roc", "eval-pr", "eval-confusion", "eval-curves", "eval-hist"):
        drawn = f"return document.querySelectorAll('#{graph} g.trace, #{graph} g.hm').length"
        assert _wait(lambda drawn=drawn: dash_duo.driver.execute_script(drawn) > 0), graph
    assert f"{res['valid'].n_pos:,} positive" in dash_duo.find_element("#eval-summary").text
    assert_shows(dash_duo, res["valid"], res["valid"].chosen.threshold)
    m = res["valid"].at(res["valid"].chosen.threshold)
    assert marker(dash_duo, "eval-roc") == [m.fpr, m.tpr]
    # ... and no callback read the result to draw them, before or after the first drawing;
    # the segmentation plane (drawn at the browser's threshold) is the one request
    requests = lambda: dash_duo.driver.execute_script("return window.__vbRequests")  # noqa: E731
    assert _wait(lambda: any("eval-seg.figure" in o for _t, o in requests()))
    loading = ("eval-roc.figure", "eval-data.data", "eval-result.value", "eval-seg-cube.value")
    outputs = [o for _t, o in requests()]
    assert not any(k in o for o in outputs for k in loading), outputs
    assert not any("eval-roc" in o for t, o in requests() if t < first)

    # a change is answered by the callbacks: the training split loads its store and figures
    dash_duo.find_element("#eval-split input[value='train']").click()
    assert _wait(
        lambda: f"{res['train'].n_pos:,} positive" in dash_duo.find_element("#eval-summary").text
    )
    t = shown(dash_duo)["threshold"]
    assert_shows(dash_duo, res["train"], t)
    m = res["train"].at(t)
    assert _wait(lambda: marker(dash_duo, "eval-roc") == [m.fpr, m.tpr])
    assert any("eval-roc.figure" in o for _t, o in requests())


@pytest.mark.browser
def test_bad_result_files_show_a_message(dash_duo, tmp_path):
    runs_dir = tmp_path / "runs"
    (finished_run(runs_dir, "corrupt") / "eval" / "FINAL.h5").write_bytes(b"garbage")
    with h5py.File(finished_run(runs_dir, "old") / "eval" / "FINAL.h5", "w") as f:
        f["valid/thresholds"] = np.linspace(0, 1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        single = evaluate_arrays(np.ones(30), np.linspace(0, 1, 30))
    write_result(finished_run(runs_dir, "single") / "eval" / "FINAL.h5", {"valid": single})
    finished_run(runs_dir, "fresh")
    dash_duo.start_server(build_app(tmp_path))
    for run, text in (
        ("corrupt", "The result file is damaged or incomplete"),
        ("old", "The result file is from an older VoxelBoard"),
        ("single", "holds only positives"),
        ("fresh", "No evaluation yet: press Evaluate"),
    ):
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{run}/evaluation")
        where = "#eval-empty" if run == "fresh" else "#eval-no-view"
        dash_duo.wait_for_contains_text(where, text, timeout=15)
        assert not any(_displayed(dash_duo, f) for f in FRAMES), run  # no empty frames
        assert "Traceback" not in dash_duo.find_element("body").text
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/no-such-run/evaluation")
    dash_duo.wait_for_contains_text("#eval-missing", "There is no run named 'no-such-run'")


def _displayed(dash_duo, selector: str) -> bool:
    found = dash_duo.driver.find_elements("css selector", selector)
    return bool(found) and found[0].is_displayed()


def _text(dash_duo, selector: str) -> str:
    return dash_duo.find_element(selector).get_attribute("textContent")


def choose_result(dash_duo, result: str) -> None:
    dash_duo.select_dcc_dropdown("#eval-result", value=result)
    assert _wait(lambda: _text(dash_duo, "#eval-result .dash-dropdown-value").strip() == result)


#: what a result that can be read shows, and one that cannot must not
FRAMES = ("#eval-roc", "#eval-pr", "#eval-confusion", "#eval-table", "#eval-curves", "#eval-hist",
          "#eval-seg", "#eval-seg-cube", "#eval-neurons", "#eval-slider", "#eval-t-input",
          "#eval-preset-max_f1")  # fmt: skip


@pytest.mark.browser
def test_an_unreadable_result_shows_its_message_and_evaluate_only(dash_duo, tmp_path):
    """A damaged result: one sentence and the Evaluate button, no empty frames, no threshold
    controls, no segmentation hint; a good result of the same run shows as ever."""
    d = make_evaluated_run(tmp_path / "runs")
    good = d / "eval" / "LAST.h5"
    (d / "eval" / "FINAL.h5").rename(good)
    ev.prob_cache_path(d, "FINAL").rename(ev.prob_cache_path(d, "LAST"))
    os.utime(good, (time.time() - 60, time.time() - 60))
    (d / "eval" / "FINAL.h5").write_bytes(b"garbage")  # the newest: the page opens on it
    res = read_result(good, coarse=True)["valid"]
    dash_duo.start_server(build_app(tmp_path))
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/evaluation")

    def shows_only_the_damage():
        dash_duo.wait_for_contains_text(
            "#eval-no-view", "The result file is damaged or incomplete", timeout=15
        )
        assert "not a readable HDF5 file" in _text(dash_duo, "#eval-no-view")
        assert _displayed(dash_duo, "#eval-run-button")  # the one action that helps
        assert _wait(lambda: not any(_displayed(dash_duo, f) for f in FRAMES)), [
            f for f in FRAMES if _displayed(dash_duo, f)
        ]
        assert not _displayed(dash_duo, "#eval-empty")
        assert _text(dash_duo, "#eval-message") == ""  # said once, in the empty state
        assert _text(dash_duo, "#eval-seg-msg") == ""  # no "Evaluate again" hint

    shows_only_the_damage()  # as the page comes
    choose_result(dash_duo, "LAST")
    dash_duo.wait_for_contains_text("#eval-summary", "positive", timeout=15)
    assert_shows(dash_duo, res, res.chosen.threshold)
    assert _wait(lambda: all(_displayed(dash_duo, f) for f in FRAMES if f != "#eval-neurons"))
    assert not _displayed(dash_duo, "#eval-no-view")
    assert _wait(lambda: "true positive" in json.dumps(dash_duo.driver.execute_script(
        "return document.querySelector('#eval-seg .js-plotly-plot').data.map(t => t.name)"
    )))  # fmt: skip
    # a split the result lacks: its message instead of empty frames, and back
    dash_duo.find_element("#eval-split input[value='train']").click()
    dash_duo.wait_for_contains_text("#eval-no-view", "has no 'train' split", timeout=15)
    assert _wait(lambda: not any(_displayed(dash_duo, f) for f in FRAMES))
    dash_duo.find_element("#eval-split input[value='valid']").click()
    assert _wait(lambda: all(_displayed(dash_duo, f) for f in FRAMES if f != "#eval-neurons"))
    assert not _displayed(dash_duo, "#eval-no-view")
    choose_result(dash_duo, "FINAL")
    shows_only_the_damage()  # as the callbacks answer a choice
    assert "Traceback" not in dash_duo.find_element("body").text


def _requests(dash_duo) -> list[str]:
    return dash_duo.driver.execute_script("return window.__vbRequests").copy()


def _seg_names(dash_duo) -> str:
    return json.dumps(dash_duo.driver.execute_script(
        "return document.querySelector('#eval-seg .js-plotly-plot').data.map(t => t.name)"
    ))  # fmt: skip


@pytest.mark.browser
def test_results_written_from_a_shell_show_without_a_reload(dash_duo, tmp_path, record_page):
    """``python run.py evaluate`` beside an open page: the page shows the new result, lists a
    second one without touching the threshold being tuned, and loads a rewritten one again."""
    d = finished_run(tmp_path / "runs", RUN)
    dash_duo.start_server(build_app(tmp_path))
    record_page(dash_duo, "false")  # the callback requests only
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/evaluation")
    dash_duo.wait_for_contains_text("#eval-empty", "No evaluation yet", timeout=15)

    def evaluate(name: str, seed: int, cache: bool = True):
        raw, prob, label = cube(seed)
        prob = prob.astype(np.float16).astype(np.float32)
        path = d / "eval" / f"{name}.h5"
        write_result(path, {"valid": evaluate_arrays(label, prob, mode="exact")}, {"step": seed})
        if cache:  # the evaluation writes its probability cache after the result
            runs.write_prob_cache(ev.prob_cache_path(d, name), [(raw, prob, label)])
        return read_result(path, coarse=True)["valid"]

    # the first result: shown as it comes, its segmentation once its cache comes
    first = evaluate("FINAL", 0, cache=False)
    dash_duo.wait_for_contains_text("#eval-summary", f"{first.n_pos:,} positive", timeout=20)
    assert not _displayed(dash_duo, "#eval-empty")
    assert_shows(dash_duo, first, first.chosen.threshold)
    dash_duo.wait_for_contains_text("#eval-seg-msg", "without probability maps", timeout=10)
    raw, prob, label = cube(0)
    prob = prob.astype(np.float16).astype(np.float32)
    runs.write_prob_cache(ev.prob_cache_path(d, "FINAL"), [(raw, prob, label)])
    assert _wait(lambda: "true positive" in _seg_names(dash_duo), 20)
    assert _text(dash_duo, "#eval-seg-msg") == ""

    # a second result is listed; the threshold being tuned on the shown one stays
    type_threshold(dash_duo, 0.25)
    # a figure out of view is drawn when it comes into view: bring the confusion table
    dash_duo.driver.execute_script(
        "document.getElementById('eval-confusion').scrollIntoView({block: 'center'})"
    )
    assert_shows(dash_duo, first, 0.25)
    before = len(_requests(dash_duo))
    second = evaluate("LAST", 1)

    def since(i: int, output: str) -> list[int]:
        return [k for k, (_t, o) in enumerate(_requests(dash_duo)) if k >= i and output in o]

    assert _wait(lambda: since(before, "eval-result.options"), 20)  # LAST listed
    # the next poll goes out after everything the listing set off
    assert _wait(lambda: since(since(before, "eval-result.options")[0] + 1, "eval-files"), 20)
    assert not any("eval-data.data" in o for _t, o in _requests(dash_duo)[before:])
    assert shown(dash_duo)["threshold"] == 0.25
    assert _text(dash_duo, "#eval-result .dash-dropdown-value").strip() == "FINAL"

    # the shown result rewritten: loaded again, at its own chosen threshold
    third = evaluate("FINAL", 2)
    assert third.n_pos != first.n_pos
    dash_duo.wait_for_contains_text("#eval-summary", f"{third.n_pos:,} positive", timeout=20)
    assert_shows(dash_duo, third, third.chosen.threshold)

    choose_result(dash_duo, "LAST")
    assert_shows(dash_duo, second, second.chosen.threshold)
    assert all(e["level"] != "SEVERE" for e in dash_duo.get_logs() or [])


@pytest.mark.browser
def test_read_only_evaluation_page_shows_no_writing_controls(dash_duo, tmp_path):
    run_dir = make_evaluated_run(tmp_path / "runs")
    (run_dir / "eval" / "FINAL_valid_prob.h5").unlink()
    app = create_app(tmp_path / "runs", tmp_path / "configs", tmp_path / "data",
                     read_only=True, start_launcher=False, gpus=[], refresh_s=REFRESH_S)  # fmt: skip
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/evaluation")
    dash_duo.wait_for_contains_text("#eval-summary", "positive", timeout=15)  # reading works
    dash_duo.wait_for_contains_text("#eval-seg-msg", "not read-only predicts them", timeout=10)
    for hidden in ("#eval-run-button", "#eval-cancel", "#eval-snapshot", "#eval-save",
                   "#eval-seg-predict"):  # fmt: skip
        assert not dash_duo.find_element(hidden).is_displayed(), hidden
    for shown_ in ("#eval-csv", "#eval-html", "#eval-slider"):
        assert dash_duo.find_element(shown_).is_displayed(), shown_
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == ["FINAL.h5"]


@pytest.mark.browser
def test_a_failing_callback_shows_its_cause(dash_duo, tmp_path):
    """Whatever a callback raises, in the server or in a background job, the page says it."""
    from dash import Input, Output, html

    app = build_app(tmp_path)
    frame = app.layout  # the page frame is built per request
    app.layout = lambda: html.Div(
        [
            frame(),
            html.Button("a", id="t-fail"),
            html.Button("b", id="t-fail-bg"),
            html.Span(id="t-out"),
            html.Span(id="t-out-bg"),
        ]
    )  # fmt: skip

    @app.callback(Output("t-out", "children"), Input("t-fail", "n_clicks"),
                  prevent_initial_call=True)  # fmt: skip
    def fail(_n):
        raise OSError(28, "No space left on device", "eval/FINAL.h5")

    @app.callback(Output("t-out-bg", "children"), Input("t-fail-bg", "n_clicks"),
                  background=True, prevent_initial_call=True)  # fmt: skip
    def fail_in_job(_n):
        raise RuntimeError("the model does not fit this cube")

    dash_duo.start_server(app)
    dash_duo.wait_for_element("#t-fail")
    assert not dash_duo.find_element("#vb-callback-error").is_displayed()
    dash_duo.find_element("#t-fail").click()
    dash_duo.wait_for_contains_text("#vb-callback-error-text", "No space left on device", 10)
    assert "OSError" in dash_duo.find_element("#vb-callback-error-text").text
    assert dash_duo.find_element("#vb-callback-error").is_displayed()
    dash_duo.find_element("#t-fail-bg").click()
    dash_duo.wait_for_contains_text(
        "#vb-callback-error-text", "the model does not fit this cube", 30
    )
    assert "Traceback" not in dash_duo.find_element("body").text
    # answered by the app's error handler, not by a server error
    assert [e for e in dash_duo.get_logs() if "status of 500" in e.get("message", "")] == []


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_data_dir):
    """A real run: the demo config trained for 3 steps (~15 s), not evaluated yet."""
    root = tmp_path_factory.mktemp("trained")
    (root / "data").symlink_to(demo_data_dir)  # the session's demo data, read only
    env = dict(os.environ, VOXELBOARD_DATA_DIR=str(root / "data"), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, str(REPO / "run.py"), "train", str(REPO / "examples" / "demo_cnn3d.py"),
        "--n-steps", "3", "--save-path", str(root / "runs"), "--save-name", "trained",
        "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root


@pytest.mark.browser
@pytest.mark.slow
def test_evaluate_button_shows_progress_then_curves(dash_duo, trained_run):
    root = trained_run
    app = create_app(root / "runs", root / "configs", root / "data", start_launcher=False, gpus=[],
                     refresh_s=REFRESH_S)  # fmt: skip
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/trained/evaluation")
    dash_duo.wait_for_contains_text("#eval-empty", "No evaluation yet", timeout=15)
    dash_duo.wait_for_text_to_equal("#eval-snapshot .Select-value-label, #eval-snapshot", "FINAL")
    # every text the progress line shows, recorded by the page itself (a one-pass evaluation
    # can pass through its steps between two polls of this test)
    dash_duo.driver.execute_script(
        "window.vbSeen = [];"
        "new MutationObserver(() => window.vbSeen.push("
        "  document.getElementById('eval-progress-text').textContent)"
        ").observe(document.getElementById('eval-progress-text'),"
        "  {childList: true, characterData: true, subtree: true});"
    )
    dash_duo.find_element("#eval-run-button").click()
    # running: the button is disabled, cancel enabled, and the progress text moves
    assert _wait(lambda: dash_duo.find_element("#eval-run-button").get_attribute("disabled"), 10)
    assert dash_duo.find_element("#eval-cancel").get_attribute("disabled") is None
    assert _wait(lambda: dash_duo.find_element("#eval-progress-text").text == "done", 120)
    seen = dash_duo.driver.execute_script("return window.vbSeen")
    assert any("cube" in s or "loading" in s for s in seen), seen
    # the curves and table come from the new result file
    res = read_result(root / "runs" / "trained" / "eval" / "FINAL.h5", coarse=True)["valid"]
    assert_shows(dash_duo, res, res.chosen.threshold)
    assert _wait(
        lambda: (
            marker(dash_duo, "eval-roc")
            == [res.at(res.chosen.threshold).fpr, res.at(res.chosen.threshold).tpr]
        )
    )
    assert ev.prob_cache_path(root / "runs" / "trained", "FINAL").is_file()
    assert _wait(lambda: "true positive" in json.dumps(dash_duo.driver.execute_script(
        "return document.querySelector('#eval-seg .js-plotly-plot').data.map(t => t.name)"
    )))  # fmt: skip
