"""The experiments table's Issue column in a real (headless) Chromium: a run that failed on a
full disk and a run with a corrupt snapshot say so where a person looks first.

Run with ``python -m pytest --headless tests/app/test_issue_column_browser.py``.
"""

from __future__ import annotations

import random
import time

import pytest

from app import app_context, create_app
from trainer.runs import Status, write_status

pytestmark = pytest.mark.browser

DISK_FULL = (
    "no space left on device while writing snapshots/LAST.pt; free space on its disk, then "
    "continue the run with `python run.py train --resume runs/disk-full`"
)


@pytest.fixture
def app(tmp_path):
    runs, configs = tmp_path / "runs", tmp_path / "configs"
    configs.mkdir()
    now = time.time()
    full = runs / "disk-full"
    full.mkdir(parents=True)
    write_status(full, Status(state="failed", step=6, n_steps=40, heartbeat=now,
                              started=now - 60, error=DISK_FULL, extra={"ended": now}))  # fmt: skip
    corrupt = runs / "corrupt-snapshot"
    (corrupt / "snapshots").mkdir(parents=True)
    write_status(corrupt, Status(state="finished", step=40, n_steps=40, heartbeat=now,
                                 started=now - 120, extra={"ended": now}))  # fmt: skip
    (corrupt / "snapshots" / "FINAL.pt").write_bytes(random.Random(0).randbytes(4096))
    app = create_app(runs, configs, tmp_path / "data", read_only=True, gpus=[])
    yield app
    app_context(app).close()


def issue_cell(dash_duo, name: str) -> str | None:
    return dash_duo.driver.execute_script(
        """
        const cell = document.querySelector(
            `#exp-table .ag-row[row-id="${arguments[0]}"] .ag-cell[col-id="issue"]`);
        return cell ? cell.textContent.trim() : null;
        """,
        name,
    )


def wait_for_issue(dash_duo, name: str, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (issue_cell(dash_duo, name) or ""):
            return
        time.sleep(0.1)
    raise AssertionError(f"Issue of {name} is {issue_cell(dash_duo, name)!r}, without {text!r}")


def test_disk_full_and_corrupt_snapshot_show_in_the_issue_column(dash_duo, app):
    dash_duo.start_server(app)
    wait_for_issue(dash_duo, "disk-full", "no space left on device while writing snapshots/LAST.pt")
    wait_for_issue(dash_duo, "corrupt-snapshot", "snapshots/FINAL.pt is corrupt or truncated")
