"""Sweep page: real sweeps (``run.py sweep`` training tiny demo runs) shown in Chromium, and
the page's poll over a sweep folder written step by step."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dash import Patch, no_update

from app import app_context, create_app, sweep_view
from app.sweeper import create_sweep, sweep_folder
from trainer.history import HistoryTracker
from trainer.runs import TRUNCATED, Status, read_launcher_record, read_status, write_status
from trainer.runs.sweeps import (
    TrialEntry,
    clear_driver,
    read_trials,
    write_driver,
    write_trials,
)

#: the dashboard's ``--refresh`` for these pages (default 2 s): the polls these tests wait
#: on come four times as often; intervals that matter are read from the app's context
REFRESH_S = 0.5

sys.path.insert(0, str(Path(__file__).parent))
from tiny_config import TINY  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

#: three trials: a log range and a categorical parameter
SWEEP = (
    "dict(method='random', n_runs=3, seed=1, "
    "parameters=dict(lr=dict(low=1e-4, high=1e-2, log=True), optimiser=['Adam', 'AdamW']))"
)
GRID = "dict(method='grid', parameters=dict(lr=[1e-3, 3e-3]))"


def _wait(predicate, timeout: float = 30.0) -> bool:
    """Whether ``predicate`` holds within ``timeout``; an element the page redrew between its
    lookup and its use is looked up again at the next try."""
    from selenium.common.exceptions import StaleElementReferenceException

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if predicate():
                return True
        except StaleElementReferenceException:
            pass
        time.sleep(0.25)
    return False


@pytest.fixture(scope="module")
def data_dir(demo_data_dir) -> Path:
    """The session's demo data (read only)."""
    return demo_data_dir


def _write_config(folder: Path, sweep: str, n_steps: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.py"
    path.write_text(TINY.format(n_steps=n_steps, sweep=sweep))
    return path


def _sweep_cli(root: Path, data_dir: Path, config: Path, parallel: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(REPO / "run.py"),
        "sweep",
        str(config),
        "--runs-dir",
        str(root / "runs"),
        "--data-dir",
        str(data_dir),
        "--max-parallel",
        str(parallel),
        "--device",
        "cpu",
        "--poll",
        "0.3",
    ]
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    # its output to a file: a pipe nobody reads while the test waits could block it
    with (root / "sweep.log").open("w") as log:
        return subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _output(root: Path) -> str:
    """The end of what ``run.py sweep`` printed, for a failure's message."""
    return (root / "sweep.log").read_text()[-3000:]


def _end(proc: subprocess.Popen) -> None:
    """Kill a ``run.py sweep`` and every process it started (its trainers run in sessions
    of their own, so killing its process group would leave them)."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(family, timeout=30)
    proc.wait(timeout=30)


def _only_sweep(runs_dir: Path) -> str:
    (folder,) = list((runs_dir / ".sweeps").iterdir())
    return folder.name


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, data_dir):
    """A random sweep of three tiny runs, trained to its end by ``run.py sweep``."""
    root = tmp_path_factory.mktemp("sweep-page")
    config = _write_config(root / "configs", SWEEP, n_steps=6)
    proc = _sweep_cli(root, data_dir, config, parallel=3)
    try:
        proc.wait(timeout=480)
    finally:
        _end(proc)
    assert proc.returncode == 0, _output(root)
    runs_dir = root / "runs"
    return root, runs_dir, _only_sweep(runs_dir)


def _app(root: Path, runs_dir: Path, **kwargs):
    return create_app(
        runs_dir,
        root / "configs",
        root / "data",
        start_launcher=False,
        gpus=[],
        **{"refresh_s": REFRESH_S, **kwargs},
    )


def _plot(dash_duo, graph_id: str, expr: str):
    return dash_duo.driver.execute_script(
        f"const g = document.querySelector('#{graph_id} .js-plotly-plot');"
        f"return g && g.data ? {expr} : null;"
    )


#: axe-core, installed by .ci/run (as for tests/app/test_accessibility_browser.py)
AXE = REPO / ".cache" / "node" / "node_modules" / "axe-core" / "axe.min.js"
AXE_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document.getElementById("_pages_content"), {resultTypes: ["violations"]}).then(r => done(
  r.violations.filter(v => v.impact === "serious" || v.impact === "critical")
   .map(v => `${v.id}: ${v.help}; ` + v.nodes.map(n => n.target.join(" ")).join(" | "))
), error => done([`axe.run failed: ${error}`]));
"""


def _axe_violations(dash_duo) -> list[str]:
    """axe-core's serious and critical findings on the page's own content."""
    if not AXE.is_file():
        pytest.fail(f"axe-core is not installed ({AXE} is missing): run `bash .ci/run`")
    dash_duo.driver.set_script_timeout(120)
    dash_duo.driver.execute_script(AXE.read_text())
    return dash_duo.driver.execute_async_script(AXE_RUN)


def _present(dash_duo, selector: str) -> bool:
    """Whether the page has an element ``selector`` now (selenium's ``find_elements`` would
    first wait dash's implicit 2 s for one to appear)."""
    return dash_duo.driver.execute_script(f"return document.querySelector('{selector}') !== null")


def _table_rows(dash_duo) -> list[dict]:
    return dash_duo.driver.execute_script(
        "return [...document.querySelectorAll('#sweep-table tbody tr')].map(tr => ({"
        "  run: tr.dataset.run, best: tr.classList.contains('sweep-best'),"
        "  href: tr.querySelector('a').getAttribute('href'),"
        "  cells: [...tr.querySelectorAll('td')].map(td => td.innerText)}));"
    )


# ----------------------------------------------------------------------------- browser


@pytest.mark.browser
@pytest.mark.slow
def test_finished_sweep_shows_parcoords_table_curves_and_downloads_csv(dash_duo, finished_sweep):
    root, runs_dir, sweep_id = finished_sweep
    trials = read_trials(runs_dir / ".sweeps" / sweep_id)
    assert trials.state == "finished" and len(trials.trials) == 3
    values = {t.run: t.value for t in trials.trials}
    best = min(values, key=values.get)
    app = _app(root, runs_dir)
    try:
        dash_duo.start_server(app)
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/sweep/{sweep_id}")
        dash_duo.wait_for_text_to_equal("#sweep-state", "finished", timeout=30)
        spec = dash_duo.find_element("#sweep-spec").text
        assert "method random" in spec and "3 runs" in spec and "metric valid_loss (min)" in spec

        # parallel coordinates: a line per trial, an axis per parameter and the metric
        for graph in ("sweep-parcoords", "sweep-curves"):  # Plotly draws after the page text
            assert _wait(lambda g=graph: _plot(dash_duo, g, "g.data.length") is not None)
        dims = _plot(dash_duo, "sweep-parcoords", "g.data[0].dimensions")
        assert [d["label"] for d in dims] == ["lr (log)", "optimiser", "valid_loss (min)"]
        assert all(len(d["values"]) == 3 for d in dims)
        assert dims[1]["ticktext"] == ["Adam", "AdamW"] and dims[1]["tickvals"] == [0, 1]
        assert sorted(dims[2]["values"]) == pytest.approx(sorted(values.values()))

        # curves: one trace per trial, each with its history rows (steps 0, 3, 6 or so)
        names = _plot(dash_duo, "sweep-curves", "g.data.map(t => t.name)")
        assert names == [t.run + (" (best)" if t.run == best else "") for t in trials.trials]
        assert all(n >= 2 for n in _plot(dash_duo, "sweep-curves", "g.data.map(t => t.x.length)"))

        # the table: sorted by value, each run linked, the best one marked
        rows = _table_rows(dash_duo)
        assert [r["run"] for r in rows] == sorted(values, key=values.get)
        assert [r["href"] for r in rows] == [f"/run/{r['run']}" for r in rows]
        assert [r["run"] for r in rows if r["best"]] == [best]
        assert rows[0]["cells"][0] == "best" and rows[0]["cells"][3] == "finished"
        assert rows[0]["cells"][-1] == "6"  # steps trained
        assert dash_duo.find_element("#sweep-empty").get_attribute("hidden")

        dash_duo.find_element("#sweep-download-csv").click()
        path = Path(dash_duo.download_path) / f"{sweep_id}-trials.csv"
        assert _wait(lambda: path.is_file() and path.stat().st_size > 0)
        got = list(csv.DictReader(path.open()))
        assert [r["run"] for r in got] == [t.run for t in trials.trials]
        assert list(got[0]) == ["run", "number", "state", "value", "lr", "optimiser", "steps"]
        for row, t in zip(got, trials.trials, strict=True):
            assert float(row["value"]) == t.value and row["state"] == "finished"
            assert float(row["lr"]) == t.params["lr"] and row["optimiser"] == t.params["optimiser"]
            assert row["steps"] == "6"

        assert _axe_violations(dash_duo) == []

        # a run link leads to its run page
        dash_duo.find_element(f"#sweep-table a[href='/run/{best}']").click()
        dash_duo.wait_for_text_to_equal("#run-state", "finished", timeout=30)
        assert dash_duo.get_logs() == [] or all(e["level"] != "SEVERE" for e in dash_duo.get_logs())
    finally:
        app_context(app).close()


@pytest.mark.browser
@pytest.mark.slow
def test_read_only_dashboard_hides_stop_and_unknown_ids_get_a_message(
    dash_duo, finished_sweep, data_dir
):
    root, runs_dir, sweep_id = finished_sweep
    app = _app(root, runs_dir, read_only=True)
    try:
        dash_duo.start_server(app)
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/sweep/{sweep_id}")
        dash_duo.wait_for_text_to_equal("#sweep-state", "finished", timeout=30)
        assert len(_table_rows(dash_duo)) == 3
        assert _wait(lambda: dash_duo.find_element("#sweep-parcoords").is_displayed())
        assert not _present(dash_duo, "#sweep-stop")  # the page has drawn its plots by now

        # a sweep nothing drives yet: a sentence instead of empty plots
        with pytest.MonkeyPatch.context() as env:
            env.setenv("VOXELBOARD_DATA_DIR", str(data_dir))
            waiting = create_sweep(runs_dir, root / "configs" / "tiny.py")
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/sweep/{waiting}")
        dash_duo.wait_for_contains_text("#sweep-empty", "No trial has started yet", timeout=30)
        assert not dash_duo.find_element("#sweep-parcoords").is_displayed()
        assert not dash_duo.find_element("#sweep-curves").is_displayed()
        assert _table_rows(dash_duo) == []
        dash_duo.wait_for_text_to_equal("#sweep-state", "running")
        assert not _present(dash_duo, "#sweep-stop")
        # its first trial's first rows: the plots appear, as wide as their boxes, above the table
        folder = sweep_folder(runs_dir, waiting)
        trials = read_trials(folder)
        trials.trials = [TrialEntry(0, f"{waiting}-000", {"lr": 1e-3}, state="running")]
        write_trials(folder, trials)
        _trial_run(runs_dir, f"{waiting}-000", "running", 6)
        tracker = HistoryTracker(runs_dir / f"{waiting}-000" / "history")
        try:
            for step, value in ((0, 0.9), (3, 0.8)):
                tracker.update_history([step, step, 1.0, value, 0, 1, 1, 1e-3, 0.9, 0])
            assert _wait(lambda: dash_duo.find_element("#sweep-curves").is_displayed())
        finally:
            tracker.close()
        assert _wait(lambda: _plot(dash_duo, "sweep-curves", "g.data[0].x.length") == 2)
        sizes = dash_duo.driver.execute_script(
            "const box = q => document.querySelector(q).getBoundingClientRect();"
            "return [box('#sweep-parcoords .main-svg'), box('#sweep-parcoords'),"
            "        box('#sweep-curves .main-svg'), box('#sweep-table')];"
        )
        plot, panel, curves, table = sizes
        assert plot["width"] == pytest.approx(panel["width"], abs=2) and plot["width"] > 300
        assert curves["width"] == pytest.approx(panel["width"], abs=2)
        assert table["top"] >= plot["bottom"]

        # a trial max_runtime ended before its n_steps shows as truncated (its badge and the
        # count above the table), and a pruned trial's curve stays readable (issue 28, 1c, 4f)
        trials.trials += [
            TrialEntry(1, f"{waiting}-001", {"lr": 3e-3}, told="pruned", value=0.85,
                       state=TRUNCATED),
            TrialEntry(2, f"{waiting}-002", {"lr": 1e-2}, told="pruned", value=0.88,
                       state="pruned"),
        ]  # fmt: skip
        write_trials(folder, trials)
        _trial_run(runs_dir, f"{waiting}-001", "finished", 3)  # 3 of its 60 steps
        _trial_run(runs_dir, f"{waiting}-002", "pruned", 3)
        for run, value in ((f"{waiting}-001", 0.85), (f"{waiting}-002", 0.88)):
            tracker = HistoryTracker(runs_dir / run / "history")
            try:
                for step in (0, 3):
                    tracker.update_history([step, step, 1.0, value, 0, 1, 1, 1e-3, 0.9, 0])
            finally:
                tracker.close()
        dash_duo.wait_for_contains_text(
            "#sweep-progress", "1 truncated by max_runtime (ranked after full trials)", timeout=30
        )
        assert _wait(lambda: len(_table_rows(dash_duo)) == 3)
        states = {r["run"]: r["cells"][3] for r in _table_rows(dash_duo)}
        assert states[f"{waiting}-001"] == "truncated", states
        assert states[f"{waiting}-002"] == "pruned", states
        drawn = (
            "[...g.querySelectorAll('.scatterlayer .trace')].map((e, i) =>"
            " [g.data[i].name, parseFloat(getComputedStyle(e).opacity)])"
        )
        assert _wait(lambda: len(_plot(dash_duo, "sweep-curves", drawn) or []) == 3)
        opacity = dict(_plot(dash_duo, "sweep-curves", drawn))
        assert opacity[f"{waiting}-002 (pruned)"] >= 0.6, opacity
        assert opacity[f"{waiting}-001 (truncated)"] == 1.0, opacity

        # the sweeps list names the run.py sweep that drives it, by its pid (issue 28, 1e)
        write_driver(folder, os.getpid(), socket.gethostname(), time.time())
        try:
            dash_duo.wait_for_page(url=f"{dash_duo.server_url}/")
            dash_duo.wait_for_contains_text(
                "#exp-sweeps", f"driven by run.py sweep, pid {os.getpid()}", timeout=30
            )
        finally:
            clear_driver(folder, os.getpid())

        for bad, says in (
            ("no-such-sweep", "no such sweep"),
            ("..%2F..%2Fetc", "expected 1-80 letters"),
            ("x" * 120, "expected 1-80 letters"),
        ):
            dash_duo.wait_for_page(url=f"{dash_duo.server_url}/sweep/{bad}")
            dash_duo.wait_for_contains_text("#sweep-missing", says, timeout=30)
    finally:
        app_context(app).close()


@pytest.mark.browser
@pytest.mark.slow
def test_stop_sweep_stops_its_running_trials_and_leaves_no_process(dash_duo, tmp_path, data_dir):
    config = _write_config(tmp_path / "configs", GRID, n_steps=100_000)
    proc = _sweep_cli(tmp_path, data_dir, config, parallel=2)
    runs_dir = tmp_path / "runs"
    app = None
    try:
        assert _wait(
            lambda: (runs_dir / ".sweeps").is_dir() and any((runs_dir / ".sweeps").iterdir()), 120
        )
        sweep_id = _only_sweep(runs_dir)
        folder = runs_dir / ".sweeps" / sweep_id

        def training() -> bool:  # both trainers are past their start-up and write a status
            trials = read_trials(folder).trials
            return len(trials) == 2 and all(
                t.state == "running" and read_status(runs_dir / t.run) is not None for t in trials
            )

        assert _wait(training, 300), (read_trials(folder), _output(tmp_path))
        started = _trainers()  # the driver and its two trainers
        assert len(started) >= 3, started
        app = _app(tmp_path, runs_dir, grace_s=20.0)
        dash_duo.start_server(app)
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/sweep/{sweep_id}")
        dash_duo.wait_for_text_to_equal("#sweep-state", "running", timeout=30)
        dash_duo.wait_for_contains_text("#sweep-progress", "2 running", timeout=30)

        def points() -> int:
            return sum(_plot(dash_duo, "sweep-curves", "g.data.map(t => t.x.length)") or [0])

        # the page follows the trials: new history rows reach the curves, values the table
        assert _wait(lambda: _plot(dash_duo, "sweep-curves", "g.data.length") is not None)
        seen = points()
        assert _wait(lambda: points() > seen, 240), f"no new points after {seen}"
        assert _wait(lambda: dash_duo.find_element("#sweep-empty").get_attribute("hidden"), 30)
        assert _wait(lambda: all(r["cells"][4] != "—" for r in _table_rows(dash_duo)), 240)
        dash_duo.find_element("#sweep-stop").click()
        dash_duo.wait_for_contains_text("#sweep-msg", "2 trial(s) asked to stop", timeout=30)
        # the driver (run.py sweep) tells the study and ends the sweep; the page follows
        dash_duo.wait_for_text_to_equal("#sweep-state", "stopped", timeout=180)
        dash_duo.wait_for_contains_text("#sweep-reason", "stopped from the dashboard")
        assert _wait(lambda: not dash_duo.find_element("#sweep-stop").is_displayed(), 30)
        assert _wait(lambda: [r["cells"][3] for r in _table_rows(dash_duo)] == ["stopped"] * 2)
        assert proc.wait(timeout=120) != 0  # run.py sweep: a sweep that did not finish
        trials = read_trials(folder)
        assert trials.state == "stopped"
        assert [t.state for t in trials.trials] == ["stopped", "stopped"]
        # every process the sweep started ends (a trainer writes its final state just
        # before it exits, so the driver may end first)
        _gone, alive = psutil.wait_procs(started, timeout=90)
        assert not alive, f"processes left behind: {alive}"
        assert {read_launcher_record(runs_dir / t.run).pid for t in trials.trials} <= {
            p.pid for p in started
        }
    finally:
        if app is not None:
            app_context(app).close()
        _end(proc)


def _trainers() -> list[psutil.Process]:
    """This test process's descendants running run.py (the sweep driver and its trainers)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any(part.endswith("run.py") for part in p.cmdline()) and p.status() != "zombie":
                found.append(p)
        except psutil.Error:  # ended meanwhile
            continue
    return found


# ------------------------------------------------------------------- poll, without browser


def _trial_run(runs_dir: Path, name: str, state: str, step: int) -> None:
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    write_status(
        run_dir,
        Status(
            state=state,
            step=step,
            n_steps=60,
            pid=os.getpid(),
            heartbeat=time.time() + 3600,
            started=time.time(),
        ),
    )


def _history(trackers: dict, runs_dir: Path, name: str, rows: list[tuple[int, float]]) -> None:
    """Append history rows as the trial's trainer would (one tracker per run, kept open)."""
    if name not in trackers:
        trackers[name] = HistoryTracker(runs_dir / name / "history")
    for step, valid_loss in rows:
        trackers[name].update_history(
            [step, step / 10, 1.0, valid_loss, 0.0, 10.0, 12.0, 1e-3, 0.9, 0.0]
        )


@pytest.fixture
def written_sweep(tmp_path, data_dir, monkeypatch):
    """A sweep made with ``create_sweep`` whose trials' files the test writes itself."""
    monkeypatch.setenv("VOXELBOARD_DATA_DIR", str(data_dir))
    config = _write_config(tmp_path / "configs", GRID, n_steps=60)
    runs_dir = tmp_path / "runs"
    sweep_id = create_sweep(runs_dir, config)
    app = _app(tmp_path, runs_dir)
    trackers: dict[str, HistoryTracker] = {}
    folder = sweep_folder(runs_dir, sweep_id)
    yield runs_dir, folder, sys.modules["app.pages.sweep"], trackers, app
    for tracker in trackers.values():
        tracker.close()
    app_context(app).close()


def test_poll_reads_only_what_changed_and_patches_the_curves(written_sweep):
    runs_dir, folder, page, trackers, _app_ = written_sweep
    view = sweep_view.read_view(runs_dir, folder)
    assert view.rows == [] and not view.ended and len(view.curves.data) == 0

    trials = read_trials(folder)
    trials.trials = [
        TrialEntry(0, "t-000", {"lr": 1e-3}, state="running"),
        TrialEntry(1, "t-001", {"lr": 3e-3}, state="queued"),
    ]
    write_trials(folder, trials)
    _trial_run(runs_dir, "t-000", "running", 10)
    _history(trackers, runs_dir, "t-000", [(0, 0.9), (3, 0.7)])
    up = sweep_view.read_view(runs_dir, folder, view.cursor)
    assert isinstance(up.curves, Patch) and up.changed
    added = [op for op in up.curves.to_plotly_json()["operations"] if op["operation"] == "Append"]
    assert [op["params"]["value"]["name"] for op in added] == ["t-000 (best)", "t-001"]
    assert added[0]["params"]["value"]["y"] == [0.9, 0.7]
    assert [r.value for r in up.rows] == [0.7, None] and up.best == "t-000"

    same = sweep_view.read_view(runs_dir, folder, up.cursor)
    assert same.curves is no_update and not same.changed and same.cursor == up.cursor

    _history(trackers, runs_dir, "t-000", [(6, 0.5)])
    more = sweep_view.read_view(runs_dir, folder, up.cursor)
    ops = more.curves.to_plotly_json()["operations"]
    extended = {
        tuple(op["location"]): op["params"]["value"] for op in ops if op["operation"] == "Extend"
    }
    assert extended == {("data", 0, "x"): [6], ("data", 0, "y"): [0.5]}  # the new row only
    assert more.rows[0].value == 0.5

    # the second trial is pruned with a better value: restyled, dimmed, best moves to it
    _trial_run(runs_dir, "t-001", "pruned", 3)
    _history(trackers, runs_dir, "t-001", [(0, 0.8), (3, 0.4)])
    pruned = sweep_view.read_view(runs_dir, folder, more.cursor)
    ops = {
        tuple(op["location"]): op["params"]["value"]
        for op in pruned.curves.to_plotly_json()["operations"]
    }
    assert ops[("data", 1, "opacity")] == page.sweep_figures.DIMMED_OPACITY
    assert ops[("data", 1, "name")] == "t-001 (pruned, best)"
    assert ops[("data", 0, "name")] == "t-000"
    assert pruned.best == "t-001" and pruned.cursor["runs"][1]["done"]

    # an ended trial is not read again; a failed trial without a value stays in the table
    trials.trials[1].told, trials.trials[1].value = "pruned", 0.4
    trials.trials.append(TrialEntry(2, "t-002", {"lr": 1e-3}, told="fail", state="failed"))
    write_trials(folder, trials)
    _trial_run(runs_dir, "t-002", "failed", 0)
    last = sweep_view.read_view(runs_dir, folder, pruned.cursor)
    table = page.runs_table(last)
    shown = table.children[1].children
    assert [getattr(tr, "data-run") for tr in shown] == ["t-001", "t-000", "t-002"]
    assert "sweep-best" in shown[0].className
    text = page.sweep_figures.csv_text(last.rows, list(last.parameters))
    assert text.splitlines()[-1] == "t-002,2,failed,,0.001,0"


def test_a_cursor_from_elsewhere_or_with_odd_fields_means_a_full_read(written_sweep):
    runs_dir, folder, page, trackers, _app_ = written_sweep
    trials = read_trials(folder)
    trials.trials = [TrialEntry(0, "t-000", {"lr": 1e-3}, state="running")]
    write_trials(folder, trials)
    _trial_run(runs_dir, "t-000", "running", 10)
    _history(trackers, runs_dir, "t-000", [(0, 0.9), (3, 0.7)])
    good = sweep_view.read_view(runs_dir, folder).cursor
    entry = good["runs"][0]
    assert sweep_view.read_view(runs_dir, folder, good).curves is no_update
    odd_entries = [
        {**entry, "run": "../x"},
        {**entry, "rows": -1},
        {**entry, "rows": "3"},
        {**entry, "shown": float("nan")},
        {**entry, "state": ["running"]},
        {**entry, "state": ["finished"], "done": True},  # an ended trial is not read again
        {**entry, "done": "yes"},
        {**entry, "generation": {"a": 1}},
        {**entry, "best": float("inf")},
        {**entry, "steps": "10"},
        "t-000",
    ]
    for odd in (
        None,
        {},
        [],
        {"sweep": "other", "runs": good["runs"]},
        {"sweep": folder.name, "runs": "x"},
        {"sweep": folder.name, "runs": [entry, entry]},  # more trials than trials.json has
        *({"sweep": folder.name, "runs": [e]} for e in odd_entries),
    ):
        view = sweep_view.read_view(runs_dir, folder, odd)
        assert view.changed and not isinstance(view.curves, Patch), odd
        assert view.rows[0].value == 0.7 and view.rows[0].state == "running"
        page.runs_table(view), page.header(view)  # drawable
    # rows the cursor claims but the table does not have: that trial's curve is read again
    view = sweep_view.read_view(runs_dir, folder, {**good, "runs": [{**entry, "rows": 10**30}]})
    ops = view.curves.to_plotly_json()["operations"]
    assert {tuple(op["location"]): op["params"]["value"] for op in ops}[("data", 0, "y")] == [
        0.9,
        0.7,
    ]


HOST = "127.0.0.1:8050"


def _sweep_callbacks(app) -> list[dict]:
    """The sweep page's entries of ``/_dash-dependencies``."""
    client = app.server.test_client()
    deps = client.get("/_dash-dependencies", base_url=f"http://{HOST}").get_json()
    return [
        d
        for d in deps
        if d["output"].strip(".").startswith("sweep-") and not d.get("clientside_function")
    ]


def _post(app, dep: dict, values: dict) -> tuple[int, str]:
    """A callback request as the page sends it: ``values`` by ``id.property``, the first
    input as the trigger."""
    specs = dep["output"][2:-2].split("...") if dep["output"].startswith("..") else [dep["output"]]
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in specs]

    def slots(items: list[dict]) -> list[dict]:
        return [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in items]

    body = {
        "output": dep["output"],
        "outputs": outputs if len(outputs) > 1 else outputs[0],
        "inputs": slots(dep["inputs"]),
        "state": slots(dep["state"]),
        "changedPropIds": [f"{dep['inputs'][0]['id']}.{dep['inputs'][0]['property']}"],
    }
    response = app.server.test_client().post(
        "/_dash-update-component",
        base_url=f"http://{HOST}",
        data=json.dumps(body),  # NaN and Infinity as a browser's JSON would not, but Dash reads
        content_type="application/json",
        headers={"Origin": f"http://{HOST}"},
    )
    return response.status_code, response.get_data(as_text=True)


def _post_stop(app, sweep_id: str) -> tuple[int, str]:
    """A Stop sweep request as the page's button sends it."""
    (dep,) = [d for d in _sweep_callbacks(app) if "sweep-msg.children" in d["output"]]
    return _post(app, dep, {"sweep-stop.n_clicks": 1, "sweep-id.data": sweep_id})


#: values a forged request may put in any slot
HOSTILE = [None, True, -1, 10**30, 1e308, float("inf"), float("nan"), "", "x" * 300,
           "../../etc/passwd", "/tmp/x", "a\x00b", [], {}, [[[]]], {"a": {"b": [1]}}]  # fmt: skip


def test_sweep_callbacks_answer_hostile_values_without_a_server_error(written_sweep, caplog):
    runs_dir, folder, _page, trackers, app = written_sweep
    trials = read_trials(folder)
    trials.trials = [TrialEntry(0, "t-000", {"lr": 1e-3}, state="finished")]
    write_trials(folder, trials)
    # a finished trial: a Stop sweep request that gets through stops nothing of this process
    _trial_run(runs_dir, "t-000", "finished", 6)
    _history(trackers, runs_dir, "t-000", [(0, 0.9), (3, 0.7)])
    cursor = sweep_view.read_view(runs_dir, folder).cursor
    base = {"sweep-id.data": folder.name, "sweep-cursor.data": cursor}
    deps = _sweep_callbacks(app)
    assert len(deps) == 4, [d["output"] for d in deps]
    failures = []
    for dep in deps:
        slots = [f"{i['id']}.{i['property']}" for i in (*dep["inputs"], *dep["state"])]
        counters = {s: 1 for s in slots if s.endswith(("n_clicks", "n_intervals"))}
        cases = [(s, v) for s in slots for v in HOSTILE] + [("every slot", v) for v in HOSTILE]
        for slot, value in cases:
            values = {**counters, **base}
            values.update(dict.fromkeys(slots, value) if slot == "every slot" else {slot: value})
            caplog.clear()
            status, text = _post(app, dep, values)
            logged = [r for r in caplog.records if r.exc_info]
            if status >= 500 or logged:
                failures.append(f"{dep['output'][:40]} {slot}={value!r:.30} {status} {logged}")
    assert not failures, "\n".join(failures)


def test_stop_sweep_is_refused_on_a_read_only_dashboard_and_stops_on_others(
    tmp_path, data_dir, monkeypatch
):
    monkeypatch.setenv("VOXELBOARD_DATA_DIR", str(data_dir))
    config = _write_config(tmp_path / "configs", GRID, n_steps=60)
    runs_dir = tmp_path / "runs"
    sweep_id = create_sweep(runs_dir, config)
    folder = sweep_folder(runs_dir, sweep_id)
    trials = read_trials(folder)
    trials.trials = [TrialEntry(0, f"{sweep_id}-000", {"lr": 1e-3})]  # queued, no run yet
    write_trials(folder, trials)
    read_only = _app(tmp_path, runs_dir, read_only=True)
    try:
        status, text = _post_stop(read_only, sweep_id)
        assert status == 403 and "read-only" in text
        assert read_trials(folder).stop_requested is None
    finally:
        app_context(read_only).close()
    app = _app(tmp_path, runs_dir)
    try:
        status, text = _post_stop(app, "../../etc")
        assert status == 200 and "expected 1-80 letters" in text
        status, text = _post_stop(app, sweep_id)
        assert status == 200 and "Stopping the sweep" in text, text
        after = read_trials(folder)
        assert after.stop_requested is not None and after.reason == "stopped from the dashboard"
        # the queued trial is not ended yet: the sweep shows as stopping, in a readable colour
        page = sys.modules["app.pages.sweep"]
        badge = page.header(sweep_view.read_view(runs_dir, folder))[0]
        assert badge.children == "stopping" and badge.style["backgroundColor"] == "#495057"
    finally:
        app_context(app).close()
