"""Sweeps on the experiments page: the runs grid's Sweep column, the sweeps list above it and
a sweep launched from the launch form (``run.py sweep --detach`` in a child process, driven
by the dashboard's launcher), in a real (headless) Chromium over real tiny sweeps.

The pure parts (reading a config's ``sweep`` section without running it, the form's
sentence, a sweeps-list line) are checked first, without a browser.
Run with ``python -m pytest --headless tests/app/test_sweeps_experiments_browser.py``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

import psutil
import pytest
from dash.testing.wait import until

from app import app_context, create_app, limits
from app.launcher import Launcher
from app.sweep_view import read_sweep_lines, sweep_hint, sweep_line
from app.sweeper import (
    DamagedSweepError,
    SweepError,
    SweepStarts,
    stop_sweep,
    sweep_argv,
    sweep_folder,
)
from trainer.runs.sweeps import TrialEntry, TrialsRecord, read_sweep, read_trials, write_trials
from trainer.sweeps import SweepSection

REPO = Path(__file__).resolve().parents[2]
#: the demo config made tiny: 6 steps, a history row every 3, a grid of two learning rates
TINY_SWEEP = (
    (REPO / "examples" / "demo_cnn3d.py").read_text()
    + """
n_steps = 6
history_freq = 3
monitor_batch_size = 1
batch_size = 1
plot_on = False
sweep = dict(method='grid', parameters=dict(lr=[1e-3, 3e-3]))
"""
)
#: a sweep whose parameter names no config key
BAD_SWEEP = (
    (REPO / "examples" / "demo_cnn3d.py").read_text()
    + """
sweep = dict(method='grid', parameters=dict(histroy_freq=[1, 2]))
"""
)


# -- the launch form's sentence and the sweeps list (pure) ------------------------------


def test_sweep_hint_says_the_size_and_the_backends_limit(tmp_path):
    def limit(backend: str, max_cpu_runs: int) -> str:
        launcher = Launcher(tmp_path, tmp_path, tmp_path, gpus=[], backend=backend,
                            max_cpu_runs=max_cpu_runs)  # fmt: skip
        return launcher.runner.sweep_limit()

    assert sweep_hint(None, limit("local", 1)) == ""
    two = sweep_hint(SweepSection(2), limit("local", 1))
    assert two.startswith("This config defines a sweep of 2 runs.")
    assert "at most 1 CPU run at once" in two
    assert sweep_hint(SweepSection(1), limit("local", 3)).startswith(
        "This config defines a sweep of 1 run."
    )
    assert "3 CPU runs at once" in sweep_hint(SweepSection(1), limit("local", 3))
    unknown = sweep_hint(SweepSection(None), limit("slurm", 1))
    assert unknown.startswith("This config defines a sweep (its size is known when it starts).")
    assert "CPU run" not in unknown and unknown.endswith("trials at once.")


def test_sweep_argv_is_a_detached_run_py_sweep(tmp_path):
    argv = sweep_argv(tmp_path / "c.py", python="py", runs_dir=tmp_path / "r",
                      data_dir=tmp_path / "d", backend="slurm", max_parallel=3, device="cpu",
                      resources={"partition": "gpu"})  # fmt: skip
    assert argv[:5] == ["py", str(REPO / "run.py"), "sweep", str(tmp_path / "c.py"), "--detach"]
    assert argv[5:] == [f"--runs-dir={tmp_path / 'r'}", f"--data-dir={tmp_path / 'd'}",
                        "--backend=slurm", "--max-parallel=3", "--device=cpu",
                        "--slurm-partition=gpu"]  # fmt: skip


#: a stand-in for ``run.py sweep --detach``: waits for a file, then says what it was told to
FAKE_SWEEP = """
import os, sys, time
flag, code = sys.argv[1], int(sys.argv[2])
while not os.path.exists(flag):
    time.sleep(0.02)
print("making...")
print("fake-sweep-1")
print("line one\\n\\n  line two  ", file=sys.stderr)
sys.exit(code)
"""


def _start(starts: SweepStarts, tmp_path: Path, code: int) -> tuple[str, Path]:
    flag = tmp_path / f"go-{code}"
    argv = [sys.executable, "-c", FAKE_SWEEP, str(flag), str(code)]
    return starts.start(argv, dict(os.environ), tmp_path, "c.py", 3), flag


def _outcome(starts: SweepStarts, token: str):
    until(lambda: starts.get(token).done, 30)
    return starts.get(token)


def test_a_sweep_start_returns_at_once_and_tells_the_sweep_it_made(tmp_path):
    starts = SweepStarts()
    token, flag = _start(starts, tmp_path, 0)
    start = starts.get(token)  # the child waits for the flag: nothing is known yet
    assert not start.done and (start.config, start.max_parallel) == ("c.py", 3)
    assert starts.pending() == 1
    flag.touch()
    made = _outcome(starts, token)
    assert (made.sweep_id, made.problems, made.timed_out) == ("fake-sweep-1", None, False)
    assert starts.pending() == 0
    assert starts.get("not-a-token") is None and starts.get(None) is None


def test_a_refused_sweep_start_keeps_the_complaint_and_a_slow_one_is_killed(tmp_path):
    starts = SweepStarts()
    token, flag = _start(starts, tmp_path, 2)
    flag.touch()
    refused = _outcome(starts, token)
    assert (refused.sweep_id, refused.problems) == (None, ["line one", "line two"])

    slow = SweepStarts(timeout_s=0.5)
    token, _never = _start(slow, tmp_path, 0)
    late = _outcome(slow, token)
    assert late.timed_out and late.sweep_id is None
    assert "did not make the sweep within 0.5 s" in late.problems[0]
    # the child was killed, not left waiting
    left = [p for p in psutil.process_iter(["cmdline"]) if str(_never) in (p.info["cmdline"] or [])]
    assert left == []


def _trials(*entries: tuple[str, float | None, str | None], **kwargs) -> TrialsRecord:
    return TrialsRecord(
        trials=[TrialEntry(i, run, {}, told, "finished", value)
                for i, (run, value, told) in enumerate(entries)],
        **kwargs,
    )  # fmt: skip


def test_sweep_line_counts_trials_and_finds_the_best():
    record = {"spec": {"n_runs": 4, "metric": "valid_err", "goal": "min"}}
    trials = _trials(("s-000", 0.5, "complete"), ("s-001", 0.25, "complete"),
                     ("s-002", float("nan"), "fail"), ("s-003", None, None))  # fmt: skip
    line = sweep_line("s", record, trials)
    assert line == {"id": "s", "state": "running", "done": 3, "total": 4, "metric": "valid_err",
                    "best": 0.25, "best_run": "s-001"}  # fmt: skip
    high = sweep_line("s", {"spec": {"goal": "max", "metric": "valid_iou1"}}, trials)
    assert (high["best_run"], high["total"]) == ("s-000", None)
    stopping = sweep_line("s", record, _trials(("s-000", None, None), stop_requested=1.0))
    assert (stopping["state"], stopping["best_run"], stopping["done"]) == ("stopping", None, 0)
    assert sweep_line("s", None, TrialsRecord(state="failed"))["state"] == "failed"


def test_a_damaged_sweep_json_is_listed_as_damaged_and_its_page_says_which_file(tmp_path):
    runs = tmp_path / "runs"
    folder = runs / ".sweeps" / "broken-sweep-1"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text('{"id": "broken-sweep-1", "spec": ')  # cut short
    write_trials(folder, _trials(("broken-sweep-1-000", 0.5, "complete")))  # says running
    (line,) = read_sweep_lines(runs)
    assert line["state"] == "damaged" and line["problem"].startswith("sweep.json: ")
    with pytest.raises(DamagedSweepError, match=r"sweep\.json is damaged .* restore that file"):
        sweep_folder(runs, "broken-sweep-1")
    with pytest.raises(SweepError, match="no such sweep") as missing:
        sweep_folder(runs, "other-sweep-1")
    assert not isinstance(missing.value, DamagedSweepError)


# -- in the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(demo_data_dir) -> Path:
    """The session's demo data (read only)."""
    return demo_data_dir


def _configs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_sweep.py").write_text(TINY_SWEEP)
    (folder / "bad_sweep.py").write_text(BAD_SWEEP)
    (folder / "plain.py").write_text("n_steps = 5\n")
    return folder


@pytest.fixture(scope="module")
def swept(tmp_path_factory, demo_screens):
    """The runs folder docs/screenshots.py kept (tests/conftest.py's ``demo_screens``, read
    only): a finished grid sweep of two 1-step trials (``run.py sweep``) and an ordinary run,
    ``demo_cnn3d``, beside them."""
    assert demo_screens.returncode == 0, demo_screens.output[-3000:]
    configs = _configs(tmp_path_factory.mktemp("swept") / "configs")
    runs = demo_screens.work / "runs"
    (sweep_id,) = [p.name for p in (runs / ".sweeps").iterdir()]
    return runs, configs, sweep_id


def free_port() -> int:
    """A loopback port nobody listens on (browser tests of other files may hold Dash's 8050)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grid_cell(dash_duo, name: str, column: str) -> str | None:
    return dash_duo.driver.execute_script(
        """
        const cell = document.querySelector(
            `#exp-table .ag-row[row-id="${CSS.escape(arguments[0])}"] ` +
            `.ag-cell[col-id="${arguments[1]}"]`);
        return cell ? cell.textContent.trim() : null;
        """,
        name,
        column,
    )


def shown_rows(dash_duo) -> list[str]:
    return dash_duo.driver.execute_script(
        """
        const rows = document.querySelectorAll('#exp-table .ag-center-cols-container .ag-row');
        return Array.from(rows)
            .sort((a, b) => a.getAttribute('row-index') - b.getAttribute('row-index'))
            .map(r => r.getAttribute('row-id'));
        """
    )


def text_of(dash_duo, selector: str) -> str:
    return dash_duo.driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector
    )


@pytest.mark.browser
def test_sweep_column_and_sweeps_list_show_a_real_sweep(dash_duo, swept, data_dir):
    runs, configs, sweep_id = swept
    trials = [t.run for t in read_trials(runs / ".sweeps" / sweep_id).trials]
    assert trials == [f"{sweep_id}-000", f"{sweep_id}-001"]
    lab = configs.parent / "lab"  # a second --configs-dir
    lab.mkdir(exist_ok=True)
    (lab / "mine.py").write_text("n_steps = 5\n")
    app = create_app(runs, [configs, lab], data_dir, start_launcher=False, gpus=[])
    try:
        dash_duo.start_server(app, port=free_port())
        dash_duo.wait_for_element(f"#exp-table .ag-row[row-id='{trials[1]}']", timeout=15)
        until(lambda: sorted(shown_rows(dash_duo)) == sorted([*trials, "demo_cnn3d"]), 10)

        # the Sweep column: the sweep id of each trial, a link to its page; empty elsewhere
        for run in trials:
            assert grid_cell(dash_duo, run, "sweep") == sweep_id
            link = dash_duo.find_element(f"#exp-table .ag-row[row-id='{run}'] [col-id='sweep'] a")
            assert link.get_attribute("href").endswith(f"/sweep/{sweep_id}")
        assert grid_cell(dash_duo, "demo_cnn3d", "sweep") == ""

        # sortable: empty sweeps first when ascending
        dash_duo.find_element(
            "#exp-table .ag-header-cell[col-id='sweep'] .ag-header-cell-label"
        ).click()
        until(lambda: shown_rows(dash_duo)[0] == "demo_cnn3d", 10)

        # the sweeps list: the sweep's page, its state, trials done, the best value and run
        line = text_of(dash_duo, "#exp-sweeps li")
        assert dash_duo.find_element("#exp-sweeps-panel").is_displayed()
        assert "finished" in line and "2 of 2 trials done" in line, line
        values = {t.run: t.value for t in read_trials(runs / ".sweeps" / sweep_id).trials}
        best = min(values, key=values.get)
        assert f"best valid_loss {values[best]:.4g}" in line, line
        hrefs = [a.get_attribute("href") for a in dash_duo.find_elements("#exp-sweeps li a")]
        assert [h.split("/", 3)[3] for h in hrefs] == [f"sweep/{sweep_id}", f"run/{best}"]

        # its button filters the grid to the sweep's trials, with the filter shown in the box
        dash_duo.find_element("#exp-sweeps li button").click()
        until(lambda: sorted(shown_rows(dash_duo)) == trials, 10,
              msg=f"rows {shown_rows(dash_duo)}")  # fmt: skip
        box = dash_duo.find_element("#exp-table input[aria-label='Sweep Filter Input']")
        assert box.get_attribute("value") == sweep_id

        # the Config dropdown lists both configs folders, each under its path (issue 28, 6)
        dash_duo.find_element("#exp-config").click()
        until(lambda: len(options(dash_duo)) == 6, 10, msg=f"options {options(dash_duo)}")
        assert options(dash_duo) == [
            str(configs), "configs/bad_sweep.py", "configs/plain.py", "configs/tiny_sweep.py",
            str(lab), "lab/mine.py",
        ]  # fmt: skip
        assert [e for e in dash_duo.get_logs() if e.get("level") == "SEVERE"] == []
    finally:
        app_context(app).close()


def options(dash_duo) -> list[str]:
    """The open dropdown's options as shown, each one's text."""
    return dash_duo.driver.execute_script(
        "return [...document.querySelectorAll('.dash-dropdown-option')]"
        ".map(o => o.textContent.trim());"
    )


@pytest.fixture
def launching(tmp_path, data_dir):
    """A dashboard with a running launcher (the real trainer) over an empty runs folder; at
    the end every sweep it made is stopped and every trainer it started has exited."""
    configs, runs = _configs(tmp_path / "configs"), tmp_path / "runs"
    app = create_app(runs, configs, data_dir, gpus=[], grace_s=3.0)
    yield app, runs
    context = app_context(app)
    for folder in (runs / ".sweeps").glob("*"):
        stop_sweep(context.launcher, folder)
    context.close()
    children = [c.proc for c in context.launcher.backends["local"].children.values()]
    for proc in children:
        with contextlib.suppress(psutil.Error):
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
            psutil.wait_procs(family, timeout=20)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def choose(dash_duo, config: str) -> None:
    dash_duo.driver.execute_script(
        "window.dash_clientside.set_props('exp-config', {value: arguments[0]});", config
    )


@pytest.mark.browser
def test_launch_form_makes_a_sweep_and_refuses_a_bad_one(dash_duo, launching, monkeypatch):
    app, runs = launching
    dash_duo.start_server(app, port=free_port())
    dash_duo.wait_for_element("#exp-launch", timeout=15)

    # an ordinary config: no sweep sentence, the override fields shown
    choose(dash_duo, "plain.py")
    until(lambda: not dash_duo.find_element("#exp-sweep-fields").is_displayed(), 10)
    assert dash_duo.find_element("#exp-override-fields").is_displayed()

    # a sweep config: its size in words, max parallel from the section; Steps, Batch size
    # and Learning rate for every trial and the number of Runs, but no Save name
    choose(dash_duo, "tiny_sweep.py")
    dash_duo.wait_for_contains_text("#exp-sweep-hint", "defines a sweep of 2 runs", timeout=10)
    assert "at most 1 CPU run at once" in dash_duo.find_element("#exp-sweep-hint").text
    assert dash_duo.find_element("#exp-sweep-fields").is_displayed()
    assert dash_duo.find_element("#exp-n-steps").is_displayed()
    assert dash_duo.find_element("#exp-n-runs").is_displayed()
    assert not dash_duo.find_element("#exp-save-name").is_displayed()
    assert dash_duo.find_element("#exp-max-parallel").get_attribute("value") == "1"

    # a bad sweep: the problems from run.py sweep, line by line, and nothing written
    before = tree(runs)
    choose(dash_duo, "bad_sweep.py")
    dash_duo.wait_for_contains_text("#exp-sweep-hint", "defines a sweep of 2 runs", timeout=10)
    dash_duo.find_element("#exp-launch").click()
    dash_duo.wait_for_contains_text("#exp-sweep-msg", "no valid sweep", timeout=90)
    lines = [e.text for e in dash_duo.find_elements("#exp-sweep-msg li")]
    assert any("'histroy_freq' is no config key: did you mean 'history_freq'?" in ln
               for ln in lines), lines  # fmt: skip
    assert tree(runs) == before
    assert not (runs / ".sweeps").exists() or not any((runs / ".sweeps").iterdir())

    # a good one, shortened: the new sweep's id and page, its folder with what was asked, its
    # first trial in the grid, and who drives it in the sweeps list
    choose(dash_duo, "tiny_sweep.py")
    dash_duo.wait_for_contains_text("#exp-sweep-hint", "defines a sweep of 2 runs", timeout=10)
    dash_duo.find_element("#exp-n-runs").send_keys("1")
    dash_duo.find_element("#exp-n-steps").send_keys("4")
    dash_duo.find_element("#exp-launch").click()
    link = dash_duo.wait_for_element("#exp-sweep-msg #exp-new-sweep", timeout=90)
    sweep_id = link.text
    assert sweep_id == "tiny_sweep-sweep-1"
    assert link.get_attribute("href").endswith(f"/sweep/{sweep_id}")
    record = read_sweep(sweep_folder(runs, sweep_id))
    assert (record["overrides"], record["spec"]["n_runs"]) == ({"n_steps": 4}, 1)
    first = f"{sweep_id}-000"
    dash_duo.wait_for_element(f"#exp-table .ag-row[row-id='{first}']", timeout=30)
    assert grid_cell(dash_duo, first, "sweep") == sweep_id
    dash_duo.wait_for_contains_text("#exp-sweeps", sweep_id, timeout=10)
    line = text_of(dash_duo, "#exp-sweeps li")
    assert "running" in line and "driven by this dashboard" in line, line
    assert [e for e in dash_duo.get_logs() if e.get("level") == "SEVERE"] == []

    # another sweep while this one runs, past the dashboard's cap on unfinished sweeps: refused
    # before run.py sweep starts, nothing made
    monkeypatch.setattr(limits, "MAX_SWEEPS", 1)
    made = sorted(p.name for p in (runs / ".sweeps").iterdir())
    dash_duo.find_element("#exp-launch").click()
    dash_duo.wait_for_contains_text("#exp-launch-msg", "1 sweep is unfinished", timeout=30)
    assert "stop one on its sweep page" in text_of(dash_duo, "#exp-launch-msg")
    assert sorted(p.name for p in (runs / ".sweeps").iterdir()) == made
