""" "Open in neuroglancer" in a real Chromium: the evaluation page's button gives a link, the
link opens neuroglancer's bundled client, which lists the layers and fetches their voxels
(headless Chromium draws WebGL in software)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import neuroglancer
import numpy as np

from app import create_app
from app import viewer as vw


def _wait(predicate, timeout: float = 30.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the page is still loading
            pass
        time.sleep(0.2)
    return None


class Counting:
    """An array that counts the boxes the viewer's server read from it for the browser."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, 0

    def __getitem__(self, box):
        self.reads += 1
        return self.data[box]


def test_open_in_neuroglancer_from_the_evaluation_page(dash_duo, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_viewer import make_evaluated_run  # a run with a probability cache and neurons

    make_evaluated_run(tmp_path / "runs", neurons=True)
    app = create_app(
        tmp_path / "runs", tmp_path / "configs", tmp_path / "data", start_launcher=False, gpus=[]
    )
    try:
        dash_duo.start_server(app)
        dash_duo.wait_for_page(f"{dash_duo.server_url}/run/ev/evaluation")
        dash_duo.wait_for_element("#eval-seg-cube")
        dash_duo.find_element("#eval-ng-open").click()
        link = _wait(lambda: dash_duo.find_element("#eval-ng-link").get_attribute("href"))
        assert link and link.startswith("http://127.0.0.1:") and "/v/" in link, link
        shown = vw.viewer_for(link)
        names = [layer.name for layer in shown.state.layers]
        assert names[:4] == ["raw", "probability", "true labels", "true neurons"]
        t = float(dash_duo.find_element("#eval-t-input").get_attribute("value"))
        assert names[4] == f"segmentation at {t:.4f}"  # the page's threshold
        # the raw's voxels, observed as the browser fetches them
        raw = vw.layer_source(shown, "raw")
        counting = Counting(np.asarray(raw.data[(slice(None),) * 3]))
        with shown.txn() as state:
            state.layers["raw"].source = neuroglancer.LocalVolume(counting, raw.dimensions)

        dash_duo.driver.get(link)
        listed = _wait(
            lambda: dash_duo.driver.execute_script(
                "return Array.from(document.querySelectorAll('.neuroglancer-layer-item-label'))"
                ".map(e => e.textContent)"
            )
        )
        assert listed == names
        assert _wait(lambda: counting.reads > 0), "the browser fetched no voxel of the raw layer"
    finally:
        vw.stop()  # before Dash's test server stops its threads
