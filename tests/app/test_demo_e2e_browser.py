"""The newcomer's path, for real: open /, launch the demo config, watch curves grow, stop it.

The dashboard launches the real trainer (`python run.py train examples/demo_cnn3d.py`) as a child
process on the CPU; the page is driven in headless Chromium.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from app import app_context, create_app
from trainer import runs
from trainer.runs import read_launcher_record

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _points(dash_duo, graph_id: str) -> int:
    return dash_duo.driver.execute_script(
        f"const g = document.querySelector('#{graph_id} .js-plotly-plot');"
        "return g && g.data && g.data.length ? g.data[0].x.length : -1;"
    )


def _wait(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.25)
    return False


@pytest.fixture
def demo_app(tmp_path):
    runs_dir = tmp_path / "runs"
    app = create_app(runs_dir, REPO / "examples", tmp_path / "data", gpus=[], grace_s=10.0)
    yield app, runs_dir
    app_context(app).close()
    for run_dir in runs_dir.iterdir() if runs_dir.exists() else []:
        pid = getattr(read_launcher_record(run_dir), "pid", None)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_launch_demo_watch_curves_and_stop(dash_duo, demo_app, grid_select):
    app, runs_dir = demo_app
    dash_duo.start_server(app)
    dash_duo.wait_for_element("#exp-launch", timeout=15)
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props('exp-config', {value: 'demo_cnn3d.py'});"
        "window.dash_clientside.set_props('exp-device', {value: 'cpu'});"
    )
    dash_duo.find_element("#exp-save-name").send_keys("newcomer")
    dash_duo.find_element("#exp-n-steps").send_keys("100000")
    t_click = time.monotonic()
    dash_duo.find_element("#exp-launch").click()
    dash_duo.wait_for_contains_text("#exp-launch-msg", "Launched newcomer.", timeout=15)

    run_dir = runs_dir / "newcomer"
    assert _wait(lambda: runs.read_run_state(run_dir).state == "running", 90)

    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/newcomer")
    dash_duo.wait_for_text_to_equal("#run-state", "running", timeout=30)
    assert _wait(lambda: _points(dash_duo, "run-graph-timeline") > 0, 90), "no loss points"
    first_points = time.monotonic() - t_click
    seen = _points(dash_duo, "run-graph-timeline")
    assert _wait(lambda: _points(dash_duo, "run-graph-timeline") > seen, 90), "curve did not grow"
    print(f"first curve points {first_points:.1f} s after clicking Launch")

    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/")
    grid_select("newcomer")  # a running run: its row changes at every poll
    dash_duo.wait_for_element("#exp-stop:not([disabled])", timeout=15).click()
    dash_duo.wait_for_contains_text("#exp-stop-msg", "newcomer: stop", timeout=10)
    assert _wait(lambda: runs.read_run_state(run_dir).state == "stopped", 60)
    state = "return document.querySelector(arguments[0]).textContent"
    badge = "#exp-table .ag-row[row-id='newcomer'] [col-id='state'] .vb-badge"
    assert _wait(lambda: dash_duo.driver.execute_script(state, badge) == "stopped", 20)
    assert runs.snapshot_path(run_dir, "FINAL").exists()
