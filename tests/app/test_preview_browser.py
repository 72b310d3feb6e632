"""Preview page: reading preview files, clear errors for bad ones, and in Chromium the first
image with the page, the z slider, and a run's first preview arriving."""

from __future__ import annotations

import json
import os
import sys
import time

import h5py
import numpy as np
import pytest
from selenium.webdriver.common.keys import Keys

from app import create_app, preview_view
from trainer.runs import (
    RESOLVED_CONFIG_FILE,
    PreviewError,
    Status,
    read_preview_block,
    read_preview_meta,
    write_status,
)

#: the dashboard's ``--refresh`` for these pages (default 2 s): the polls these tests wait
#: on come four times as often; intervals that matter are read from the app's context
REFRESH_S = 0.5

RUN = "prev-run"


def write_preview(run_dir, step: int, shape=(6, 16, 20), n_classes: int = 2, n_blocks: int = 1):
    """A preview file in the documented format; plane z of the raw data is uniform grey z / nz."""
    d = run_dir / "previews"
    d.mkdir(exist_ok=True)
    path = d / f"preview-{step:08d}.h5"
    nz = shape[0]
    with h5py.File(path, "w") as f:
        f.attrs.update(step=step, hours=step / 3600.0, n_classes=n_classes, save_name=run_dir.name)
        for b in range(n_blocks):
            g = f.create_group(f"block{b}")
            raw = np.broadcast_to((np.arange(nz) / nz)[:, None, None], shape).astype(np.float32)
            prob = np.zeros((n_classes, *shape), np.float16)
            prob[1 % n_classes, :, :, : shape[2] // 2] = min(1.0, step / 1000)
            prob[0] = 1 - prob[1 % n_classes]
            g["raw"], g["prob"] = raw, prob
            g.attrs.update(source=f"synthetic.h5:raw{b}", z0=100)
    return path


def make_preview_app(tmp_path, refresh_s: float = REFRESH_S):
    """The app, the page module its pages were loaded as, the run directory and its two
    preview files (steps 500 and 1000)."""
    run_dir = tmp_path / "runs" / RUN
    run_dir.mkdir(parents=True)
    write_status(run_dir, Status(state="finished", step=1000, n_steps=1000))
    files = [write_preview(run_dir, 500), write_preview(run_dir, 1000, n_blocks=2)]
    app = create_app(
        tmp_path / "runs",
        tmp_path / "configs",
        tmp_path / "data",
        start_launcher=False,
        gpus=[],
        refresh_s=refresh_s,
    )
    return app, sys.modules["app.pages.preview"], run_dir, files


@pytest.fixture
def preview_app(tmp_path):
    return make_preview_app(tmp_path)


def test_meta_and_block_reads_follow_the_format_and_the_cache_sees_rewrites(preview_app):
    _app, page, run_dir, files = preview_app
    meta = read_preview_meta(files[1])
    assert (meta.step, meta.n_classes, list(meta.blocks)) == (1000, 2, ["block0", "block1"])
    assert meta.blocks["block0"] == (6, 16, 20) and meta.z0["block0"] == 100
    raw, prob = read_preview_block(files[0], "block0")
    assert raw.dtype == prob.dtype == np.float32 and prob.shape == (2, 6, 16, 20)
    assert read_preview_block(files[0], "block0")[0] is raw  # cached
    write_preview(run_dir, 500, shape=(4, 8, 8))  # rewritten in place: new mtime, new decode
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert read_preview_block(files[0], "block0")[0].shape == (4, 8, 8)
    fig = preview_view.render_preview(files[1], "block1", z=99, cls=1, opacity=0.5, mode="side")
    assert "z 105" in fig.layout.title.text  # z clamped to the last plane, shown as z0 + z


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not an h5 file", "cannot read preview file"),
        (None, "holds no block0"),
    ],
)
def test_unreadable_preview_files_raise_a_clear_error(preview_app, content, match):
    _app, page, run_dir, _files = preview_app
    path = run_dir / "previews" / "preview-00002000.h5"
    if content is None:
        with h5py.File(path, "w") as f:
            f.attrs["step"] = 2000
    else:
        path.write_bytes(content)
    with pytest.raises(PreviewError, match=match):
        read_preview_meta(path)
    with pytest.raises(PreviewError, match="is gone"):
        read_preview_meta(run_dir / "previews" / "preview-00009999.h5")


def _image_src(dash_duo) -> str | None:
    return dash_duo.driver.execute_script(
        "const g = document.querySelector('#prev-graph .js-plotly-plot');"
        "return g && g.data && g.data.length ? g.data[0].source : null;"
    )


def _wait(predicate, timeout: float = 20.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.browser
def test_moving_the_z_slider_changes_the_image(dash_duo, preview_app):
    app, _page, run_dir, _files = preview_app
    (run_dir / "previews" / "preview-00002000.h5").write_bytes(b"corrupt")
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/preview?z=abc")
    # the newest preview is corrupt: a message naming it, not a traceback
    dash_duo.wait_for_contains_text("#prev-file-label", "preview-00002000.h5", timeout=20)
    dash_duo.wait_for_contains_text("#prev-message", "cannot read preview file", timeout=20)
    assert "cannot read" not in dash_duo.find_element("#prev-file-label").text  # said once
    assert not dash_duo.find_element("#prev-graph-box").is_displayed()  # no empty frame
    # step back to the previous preview with the keyboard on the preview slider
    dash_duo.find_element("#prev-file [role='slider']").send_keys(Keys.ARROW_LEFT)
    dash_duo.wait_for_contains_text("#prev-file-label", "step 1,000", timeout=20)
    assert _wait(lambda: (_image_src(dash_duo) or "").startswith("data:image/png"))
    assert _wait(lambda: dash_duo.find_element("#prev-graph-box").is_displayed())
    assert dash_duo.find_element("#prev-message").text == ""
    before = _image_src(dash_duo)
    dash_duo.find_element("#prev-z [role='slider']").send_keys(Keys.ARROW_RIGHT)
    assert _wait(lambda: _image_src(dash_duo) not in (None, before)), "the image did not change"
    dash_duo.wait_for_contains_text("#prev-graph", "z 104")
    # the number box beside the z slider shows the plane's z and takes one typed in
    box = dash_duo.find_element("#prev-z input[type='number']")
    assert _wait(lambda: box.get_attribute("value") == "104"), box.get_attribute("value")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("101", Keys.TAB)
    dash_duo.wait_for_contains_text("#prev-graph", "z 101")


@pytest.mark.browser
def test_the_newest_image_comes_with_the_page_and_no_callback_redraws_it(
    dash_duo, tmp_path, record_page
):
    # the page's first look for new previews (2.5 refreshes) comes after the checks below
    # even on a machine busy with other tests, so a request seen can only be one that redraws
    app, _page, _run_dir, _files = make_preview_app(tmp_path, refresh_s=6.0)
    dash_duo.start_server(app)
    record_page(dash_duo, 'document.querySelector("#prev-graph image")')  # the image drawn
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/preview")
    assert _wait(lambda: dash_duo.driver.execute_script("return window.__vbFirstDrawn"))
    dash_duo.wait_for_contains_text("#prev-file-label", "step 1,000", timeout=20)
    dash_duo.wait_for_contains_text("#prev-graph", "z 103")  # the middle plane of 6, z0 100
    # the number boxes beside the sliders show their values: the step and the z plane
    assert dash_duo.find_element("#prev-file input[type='number']").get_attribute("value") == "1000"
    assert dash_duo.find_element("#prev-z input[type='number']").get_attribute("value") == "103"
    assert dash_duo.find_element("#prev-block").text.startswith("block0")
    time.sleep(1.0)  # room for any late callback to show itself
    outputs = [output for _t, output in dash_duo.driver.execute_script(
        "return window.__vbRequests")]  # fmt: skip
    assert not any(o.startswith(("..prev-", "prev-")) for o in outputs), outputs
    # the controls still drive the image: the side by side view
    dash_duo.find_element("#prev-mode input[value='side']").click()
    assert _wait(lambda: dash_duo.driver.execute_script(
        "const g = document.querySelector('#prev-graph .js-plotly-plot');"
        "return g && g.data.length === 2;"))  # fmt: skip


@pytest.mark.browser
def test_a_run_without_previews_says_when_the_first_comes_and_then_shows_it(dash_duo, tmp_path):
    run_dir = tmp_path / "runs" / RUN
    run_dir.mkdir(parents=True)
    write_status(run_dir, Status(state="running", step=10, n_steps=1000))
    (run_dir / RESOLVED_CONFIG_FILE).write_text(
        json.dumps({"preview_every": 250, "preview_data_path": "/data/raw.h5"})
    )
    app = create_app(
        tmp_path / "runs",
        tmp_path / "configs",
        tmp_path / "data",
        start_launcher=False,
        gpus=[],
        refresh_s=REFRESH_S,
    )
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{RUN}/preview")
    dash_duo.wait_for_contains_text("#prev-empty", "every 250 steps", timeout=20)
    assert not dash_duo.driver.find_elements("css selector", "#prev-graph")  # no empty frame
    write_preview(run_dir, 250)
    assert _wait(lambda: (_image_src(dash_duo) or "").startswith("data:image/png"), 30)
    dash_duo.wait_for_contains_text("#prev-file-label", "step 250", timeout=20)
    assert not dash_duo.driver.find_elements("css selector", "#prev-empty")


@pytest.mark.parametrize(
    ("steps", "slider", "value", "picked"),
    [
        # evenly spaced: the slider and its number box hold the training step
        ([500, 1000], (500, 1000, 500, True), 1000, 1000),
        ([500, 1000], (500, 1000, 500, True), 700, 500),
        # unevenly spaced: positions, no box (it would show a position as a step)
        ([100, 300, 1000], (0, 2, 1, False), 1, 300),
        ([100, 300, 1000], (0, 2, 1, False), "abc", 1000),  # not a number: the newest
    ],
)
def test_the_file_slider_holds_training_steps_or_shows_no_box(
    tmp_path, steps, slider, value, picked
):
    files = [tmp_path / f"preview-{s:08d}.h5" for s in steps]
    got = preview_view.file_slider(files)
    assert (got["min"], got["max"], got["step"], got["allow_direct_input"]) == slider
    assert got["marks"][got["max"]] == f"{steps[-1]:,}"  # labelled with the step
    assert preview_view.pick(files, value) == tmp_path / f"preview-{picked:08d}.h5"


def test_the_z_slider_holds_the_datas_own_z(preview_app):
    _app, _page, _run_dir, files = preview_app
    # 6 planes from z0 100: the slider runs 100..105, keeps a plane it has, else the middle
    assert preview_view.z_choices(files, 1000, "block0", None)[:3] == (100, 105, 103)
    assert preview_view.z_choices(files, 1000, "block0", 101)[2] == 101
    assert preview_view.z_choices(files, 1000, "block0", 2)[2] == 103  # an index is not a z
    fig, message, hidden = preview_view.render(files, 1000, "block0", 104, 1, 0.5, "overlay")
    assert (message, hidden) == ("", False) and "z 104" in fig.layout.title.text


@pytest.mark.parametrize(
    ("config", "text"),
    [
        ({"preview_data_path": None}, "makes no previews"),
        ({"preview_data_path": "x.h5", "preview_every": 1000}, "every 1,000 steps"),
        (
            {"preview_data_path": "x.h5", "initial_prev_h": 1.0, "prev_save_h": 3.0},
            "after 1 h of training, then one every 3 h",
        ),
        (None, "while it trains"),
    ],
)
def test_the_waiting_sentence_follows_the_runs_preview_settings(tmp_path, config, text):
    if config is not None:
        (tmp_path / RESOLVED_CONFIG_FILE).write_text(json.dumps(config))
    assert text in preview_view.waiting_text(tmp_path)
