"""One look on every page, in a real Chromium: buttons styled as the experiments page's,
labels spaced off their controls, one grid of controls (components.controls / labelled)."""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest

from app import create_app
from trainer.history import HistoryTracker
from trainer.runs import Status, write_status

RUN = "looks"

BUTTON_LOOK = """
return Array.from(document.querySelectorAll(arguments[0])).map(b => {
  const s = getComputedStyle(b);
  return [b.id, s.paddingTop, s.paddingLeft, s.borderRadius, s.fontFamily];
});
"""

#: the evaluation page's buttons (its dropdowns draw buttons of their own)
EVAL_BUTTONS = (
    "button[id^=eval-preset-], #eval-run-button, #eval-cancel, #eval-save, #eval-csv, #eval-html,"
    " #eval-seg-predict, #eval-neuron-best-voi, #eval-neuron-best-are"
)

#: for each visible label (not an option's label, not one only screen readers read): the gap in
#: pixels to the control drawn under it
LABEL_GAPS = """
return Array.from(document.querySelectorAll("#_pages_content label:not(.vb-sr-only)"))
  .filter(l => l.offsetParent !== null && l.nextElementSibling && !l.querySelector("input"))
  .map(l => [l.textContent,
             l.nextElementSibling.getBoundingClientRect().top - l.getBoundingClientRect().bottom]);
"""


def make_run(runs_dir) -> HistoryTracker:
    run_dir = runs_dir / RUN
    run_dir.mkdir(parents=True)
    write_status(
        run_dir,
        Status(state="running", step=30, n_steps=100, pid=os.getpid(),
               heartbeat=time.time() + 3600, started=time.time()),
    )  # fmt: skip
    (run_dir / "eval").mkdir()
    (run_dir / "previews").mkdir()
    with h5py.File(run_dir / "previews" / "preview-00000030.h5", "w") as f:
        f.attrs.update(step=30, hours=0.01, n_classes=2, save_name=RUN)
        g = f.create_group("block0")
        g["raw"] = np.zeros((4, 16, 16), np.float32)
        g["prob"] = np.full((2, 4, 16, 16), 0.5, np.float16)
        g.attrs.update(source="synthetic.h5:raw", z0=0)
    tracker = HistoryTracker(run_dir / "history")
    for i in range(30):
        tracker.update_timeline([0.1 * i, 1.0 / (1 + i), 0.5])
    tracker.update_history([20, 1, 0.5, 0.6, 0.1, 0.3, 0.4, 0.01, 0.9, 0.0])
    return tracker


@pytest.fixture
def served(dash_duo, tmp_path):
    for sub in ("configs", "data"):
        (tmp_path / sub).mkdir()
    tracker = make_run(tmp_path / "runs")
    app = create_app(
        tmp_path / "runs", tmp_path / "configs", tmp_path / "data", start_launcher=False, gpus=[]
    )
    dash_duo.start_server(app)
    yield dash_duo
    tracker.close()


def _open(dash_duo, path: str, ready: str) -> None:
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}{path}")
    dash_duo.wait_for_element(ready, timeout=15)
    time.sleep(0.5)  # fonts and component chunks settle; the assertions are not about time


@pytest.mark.browser
def test_evaluation_buttons_look_like_the_experiments_page_buttons(served):
    dash_duo = served
    _open(dash_duo, "/", "#exp-stop")
    (reference,) = dash_duo.driver.execute_script(BUTTON_LOOK, "#exp-stop")
    _open(dash_duo, f"/run/{RUN}/evaluation", "#eval-run-button")
    looks = dash_duo.driver.execute_script(BUTTON_LOOK, EVAL_BUTTONS)
    assert len(looks) >= 8
    odd = [look for look in looks if look[1:] != reference[1:]]
    assert not odd, (reference, odd)


@pytest.mark.browser
@pytest.mark.parametrize(
    "path, ready",
    [(f"/run/{RUN}", "#run-ema-weight"), (f"/run/{RUN}/preview", "#prev-opacity"),
     (f"/run/{RUN}/evaluation", "#eval-run-button")],
)  # fmt: skip
def test_labels_sit_above_their_controls_in_one_grid_of_controls(served, path, ready):
    dash_duo = served
    _open(dash_duo, path, ready)
    gaps = dash_duo.driver.execute_script(LABEL_GAPS)
    assert gaps and all(gap >= 4 for _text, gap in gaps), gaps
    grids = dash_duo.driver.find_elements("css selector", "#_pages_content .vb-controls")
    assert any(g.find_elements("css selector", ".vb-control-label") for g in grids)
