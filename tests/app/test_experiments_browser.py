"""Experiments page in a real (headless) Chromium: table, launch, stop, refusals, read-only.

Runs are started with the stand-in trainer tests/app/fake_run.py, as real child processes.
Run with ``python -m pytest --headless tests/app/test_experiments_browser.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from dash.testing.wait import until

from app import app_context, create_app
from trainer.runs import Status, read_launcher_record, write_status

pytestmark = pytest.mark.browser

FAKE_RUN = Path(__file__).with_name("fake_run.py")


@pytest.fixture
def folders(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "train.py").write_text("# stand-in config\n")
    (tmp_path / "outside.py").write_text("# not launchable\n")
    runs = tmp_path / "runs"
    premade = runs / "premade-run"
    premade.mkdir(parents=True)
    now = time.time()
    write_status(
        premade,
        Status(state="finished", step=40, n_steps=40, heartbeat=now, started=now - 60,
               extra={"config_file": "shell_config.py", "train_loss": 0.25, "ended": now}),
    )  # fmt: skip
    broken = runs / "broken-run"
    broken.mkdir()
    (broken / "status.json").write_text('{"state": "runn')
    return runs, configs, tmp_path / "data"


def _kill_children(runs: Path) -> None:
    for run_dir in runs.iterdir():
        pid = getattr(read_launcher_record(run_dir), "pid", None) if run_dir.is_dir() else None
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def make_app(folders):
    apps = []

    def make(**kwargs):
        app = create_app(*folders, run_py=FAKE_RUN, gpus=[], grace_s=3.0, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        context = app_context(app)
        context.close()
        _kill_children(folders[0])
        for child in list(context.launcher.backends["local"].children.values()):
            child.proc.wait(timeout=10)


def table_state(dash_duo, name: str) -> str | None:
    """The State cell of the table row whose Run cell is ``name``."""
    return dash_duo.driver.execute_script(
        """
        for (const tr of document.querySelectorAll('#exp-table tr')) {
            const cell = tr.querySelector('td[data-dash-column="name"]');
            if (cell && cell.textContent.trim() === arguments[0]) {
                return tr.querySelector('td[data-dash-column="state"]').textContent.trim();
            }
        }
        return null;
        """,
        name,
    )


def wait_for_state(dash_duo, name: str, state: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if table_state(dash_duo, name) == state:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} is {table_state(dash_duo, name)!r} in the table, not {state!r}")


def text_content(dash_duo, selector: str) -> str:
    return dash_duo.driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector
    )


def test_launch_watch_stop_and_refuse(dash_duo, make_app, folders):
    runs, _, _ = folders
    dash_duo.start_server(make_app())

    # runs started elsewhere are listed; a corrupt one gets a badge instead of breaking the page
    dash_duo.wait_for_contains_text("#exp-table", "premade-run", timeout=15)
    wait_for_state(dash_duo, "premade-run", "finished")
    dash_duo.wait_for_contains_text("#exp-table", "status.json is corrupt", timeout=5)

    dash_duo.find_element("#exp-save-name").send_keys("from-browser")
    dash_duo.find_element("#exp-n-steps").send_keys("100000")
    dash_duo.find_element("#exp-launch").click()
    dash_duo.wait_for_contains_text("#exp-launch-msg", "Launched from-browser.", timeout=10)
    wait_for_state(dash_duo, "from-browser", "running")
    # the new run is selected: its log is tailed and its links are offered
    dash_duo.wait_for_contains_text("#exp-selection", "from-browser", timeout=5)
    dash_duo.wait_for_contains_text("#exp-log", "step 1 loss", timeout=15)
    link = dash_duo.find_element("#exp-selection a[href='/run/from-browser']")
    assert link.text == "Curves"

    dash_duo.wait_for_element("#exp-stop:not([disabled])", timeout=10).click()
    dash_duo.wait_for_contains_text("#exp-action-msg", "from-browser: stopping.", timeout=10)
    wait_for_state(dash_duo, "from-browser", "stopped")
    pid = read_launcher_record(runs / "from-browser").pid

    def group_gone() -> bool:  # the trainer writes "stopped" a moment before it exits
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        return False

    deadline = time.monotonic() + 15
    while not group_gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_gone(), f"process group {pid} still alive after the stop"

    # a request for a config outside the configs folder, as a crafted client would send it
    before = sorted(p.name for p in runs.iterdir())
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props('exp-config', {value: '../outside.py'});"
    )
    dash_duo.find_element("#exp-launch").click()
    dash_duo.wait_for_contains_text("#exp-launch-msg", "outside the configs folder", timeout=10)
    assert "Not launched" in dash_duo.find_element("#exp-launch-msg").text
    # bad overrides are refused with the field named, before anything starts
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props('exp-config', {value: 'train.py'});"
    )
    dash_duo.find_element("#exp-batch-size").send_keys("5000")
    dash_duo.find_element("#exp-launch").click()
    dash_duo.wait_for_contains_text(
        "#exp-launch-msg", "batch_size: '5000' is out of range", timeout=10
    )
    assert sorted(p.name for p in runs.iterdir()) == before

    assert [e for e in dash_duo.get_logs() if e.get("level") == "SEVERE"] == []


def test_read_only_hides_controls_and_refuses(dash_duo, make_app, folders):
    runs, _, _ = folders
    dash_duo.start_server(make_app(read_only=True))
    dash_duo.wait_for_contains_text("#exp-table", "premade-run", timeout=15)
    assert dash_duo.find_element("#vb-read-only").text == "read-only"
    assert not dash_duo.find_element("#exp-launch-panel").is_displayed()
    assert not dash_duo.find_element("#exp-buttons").is_displayed()

    before = sorted(p.name for p in runs.iterdir())
    # a hidden button clicked anyway (as a crafted request would): the server refuses with
    # 403 before the callback runs, and the page says why in its error banner
    assert not dash_duo.find_element("#vb-callback-error").is_displayed()
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props('exp-config', {value: 'train.py'});"
        "document.getElementById('exp-launch').click();"
    )
    deadline = time.monotonic() + 10
    while "read-only" not in (text_content(dash_duo, "#vb-callback-error-text") or ""):
        assert time.monotonic() < deadline, "no read-only refusal shown"
        time.sleep(0.1)
    assert dash_duo.find_element("#vb-callback-error").is_displayed()
    assert "HTTP 403" in text_content(dash_duo, "#vb-callback-error-text")
    dash_duo.find_element("#vb-callback-error-close").click()
    until(lambda: not dash_duo.find_element("#vb-callback-error").is_displayed(), 5)
    assert sorted(p.name for p in runs.iterdir()) == before
