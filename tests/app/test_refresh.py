"""The dashboard's refresh interval (``run.py dashboard --refresh``, ``app.refresh``): every
page interval is a fixed multiple of it, the pages' layouts read it from the app, and a value
out of range is refused naming the option, the value and the range."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from app import app_context, create_app, refresh, run_view
from trainer.history import HistoryTracker
from trainer.runs import Status, write_status


@pytest.mark.parametrize(
    ("refresh_s", "live", "slow", "panel"),
    [
        (2.0, 2000, 10_000, 5000),  # the default: the intervals the pages always had
        (0.5, 500, 2500, 1250),
        (0.25, 250, 1250, 625),
        (60, 60_000, 300_000, 150_000),
        (1.3, 1300, 6500, 3250),
    ],
)
def test_each_interval_is_its_multiple_of_the_refresh(refresh_s, live, slow, panel):
    every = refresh.intervals(refresh_s)
    assert (every.live_ms, every.slow_ms, every.panel_ms) == (live, slow, panel)
    assert every.refresh_s == refresh_s


@pytest.mark.parametrize("value", [0.1, 0.2499, 60.01, 0, -2, math.nan, math.inf, "2", True])
def test_a_refresh_out_of_range_is_refused_naming_value_and_range(value, tmp_path):
    with pytest.raises(ValueError, match=r"^--refresh .*: expected seconds .* in 0\.25\.\.60 "):
        refresh.check_refresh(value, "--refresh")
    with pytest.raises(ValueError, match=r"^refresh_s .*0\.25\.\.60"):
        create_app(tmp_path / "runs", tmp_path, tmp_path, start_launcher=False, gpus=[],
                   refresh_s=value)  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--refresh", "0.1"], "voxelboard: --refresh 0.1: expected seconds between two page "
                               "refreshes in 0.25..60 (e.g. --refresh 2)"),
        (["--refresh", "nan"], "voxelboard: --refresh nan: expected seconds"),
        (["--refresh", "61"], "voxelboard: --refresh 61.0: expected seconds"),
        (["--refresh", "soon"], "argument --refresh: invalid float value: 'soon'"),
    ],
)  # fmt: skip
def test_the_command_refuses_a_bad_refresh_before_serving(cli, tmp_path, argv, said):
    code, out, err = cli(["dashboard", "--runs-dir", tmp_path / "runs", "--data-dir",
                          tmp_path / "data", "--port", "1", *argv])  # fmt: skip
    assert code == 2
    assert said in err.strip().splitlines()[-1], err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def _intervals(app, path: str) -> dict[str, tuple[int, bool]]:
    """``{id: (interval, disabled)}`` of the ``dcc.Interval``s of the page at ``path``, as the
    browser gets them (Dash's page router callback)."""
    body = {
        "output": ".._pages_content.children..._pages_store.data..",
        "outputs": [{"id": "_pages_content", "property": "children"},
                    {"id": "_pages_store", "property": "data"}],
        "inputs": [{"id": "_pages_location", "property": "pathname", "value": path},
                   {"id": "_pages_location", "property": "search", "value": ""}],
        "changedPropIds": ["_pages_location.pathname"],
        "state": [],
    }  # fmt: skip
    answer = app.server.test_client().post("/_dash-update-component", json=body)
    assert answer.status_code == 200, answer.text[:300]
    found: dict[str, tuple[int, bool]] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Interval":
                props = node["props"]
                found[props["id"]] = (props["interval"], bool(props.get("disabled")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(answer.data))
    return found


def _run(runs_dir, name: str, **status) -> None:
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    write_status(run_dir, Status(n_steps=100, step=10, started=time.time(), **status))
    tracker = HistoryTracker(run_dir / "history")
    for i in range(3):
        tracker.update_timeline([0.1 * i, 1.0, 0.5])
    tracker.close()


def test_the_pages_poll_at_the_apps_refresh(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "live", state="running", pid=os.getpid(), heartbeat=time.time() + 3600)
    _run(runs, "lost", state="running", pid=2**22 + 7, heartbeat=time.time() - 3600)
    _run(runs, "done", state="finished")
    app = create_app(runs, tmp_path, tmp_path, start_launcher=False, gpus=[], refresh_s=0.75)
    try:
        assert app_context(app).refresh_s == 0.75
        assert _intervals(app, "/") == {"exp-interval": (750, False),
                                        "exp-sys-interval": (1875, False)}  # fmt: skip
        assert _intervals(app, "/run/live") == {"run-interval": (750, False)}
        assert _intervals(app, "/run/lost") == {"run-interval": (3750, False)}  # 5 refreshes
        assert _intervals(app, "/run/done")["run-interval"][1]  # final: no more polls
        assert _intervals(app, "/run/live/evaluation") == {"eval-poll": (1875, False)}
        assert _intervals(app, "/run/live/preview") == {"prev-wait": (1875, False)}
        assert _intervals(app, "/jobs")["jobs-interval"][0] == 750
    finally:
        app_context(app).close()


def test_the_run_views_poll_interval_follows_the_refresh_it_is_given():
    every = refresh.intervals(0.5)
    assert run_view.poll_interval("running", every=every) == every.live_ms == 500
    assert run_view.poll_interval("lost", every=every) == every.slow_ms == 2500
    assert run_view.poll_interval("failed", damaged=True, every=every) == every.slow_ms
    assert run_view.poll_interval("finished", every=every) is None
