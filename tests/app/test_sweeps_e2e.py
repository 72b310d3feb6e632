"""Sweeps end to end: `python run.py sweep` and a dashboard's launcher driving real demo runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from app import sweeper
from app.launcher import Launcher
from app.security import LaunchError
from trainer.runs import read_run_state, read_status
from trainer.runs.sweeps import read_sweep, read_trial, read_trials, study_path, write_trials
from trainer.sweeps import best_value, open_study

sys.path.insert(0, str(Path(__file__).parent))
from tiny_config import TINY  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(demo_data_dir) -> Path:
    """The session's demo data (read only)."""
    return demo_data_dir


def write_config(
    folder: Path, sweep: str, n_steps: int = 6, name: str = "tiny.py", extra: str = ""
) -> Path:
    path = folder / name
    path.write_text(TINY.format(n_steps=n_steps, sweep="None") + extra + f"sweep = {sweep}\n")
    return path


def env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "VOXELBOARD_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


def sweep_cli(tmp: Path, data_dir: Path, *args: str, timeout: float = 420):
    cmd = [sys.executable, str(REPO / "run.py"), "sweep", *args, "--runs-dir", str(tmp / "runs"),
           "--data-dir", str(data_dir), "--poll", "0.3"]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp, env=env(data_dir), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def only_sweep(runs: Path) -> Path:
    (folder,) = list((runs / ".sweeps").iterdir())
    return folder


def test_a_tpe_sweep_prunes_a_hopeless_trial(tmp_path, data_dir):
    # class weights [1, 100] multiply the weighted loss by ~30: that trial is far worse
    # than any other at every step, so the median pruner stops it at its first report
    sweep = ("dict(method='tpe', n_runs=2, seed=2, metric='valid_loss', prune=True, "
             "startup_runs=1, warmup_steps=0, max_parallel=1, "
             "parameters=dict(class_weights=[[1.0, 1.0], [1.0, 100.0]]))")  # fmt: skip
    config = write_config(tmp_path, sweep, n_steps=6)
    proc = sweep_cli(tmp_path, data_dir, str(config))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = read_trials(only_sweep(tmp_path / "runs"))
    assert trials.state == "finished" and len(trials.trials) == 2
    heavy = [t for t in trials.trials if t.params["class_weights"] == [1.0, 100.0]]
    assert [t.number for t in heavy] == [1]  # seed 2 draws light, then heavy
    assert trials.trials[0].told == "complete"  # nothing to compare the first trial with
    for pruned in heavy:
        run_dir = tmp_path / "runs" / pruned.run
        status = read_status(run_dir)
        assert pruned.told == "pruned" and pruned.state == "pruned"
        assert status.state == "pruned" and status.step < 6
        assert "pruned by the sweep's median pruner" in status.extra["stop_reason"]
        assert (run_dir / "snapshots" / "FINAL.pt").is_file()  # stopped like a SIGTERM stop
    assert "pruned" in proc.stdout


def test_a_sweep_whose_trials_fail_stops_after_max_failures(tmp_path, data_dir):
    # every model of the grid raises while it is built: each trial fails at set-up
    sweep = (
        "dict(method='grid', max_failures=2, max_parallel=1, parameters=dict("
        "create_model=[broken, broken, broken, broken]))\n"
    )
    broken = "def broken():\n    raise RuntimeError('a model that cannot be built')\n\n"
    config = write_config(tmp_path, sweep, extra=broken)
    proc = sweep_cli(tmp_path, data_dir, str(config))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = read_trials(only_sweep(tmp_path / "runs"))
    assert trials.state == "failed" and len(trials.trials) == 2
    assert "2 trials failed (max_failures = 2)" in trials.reason
    assert all(t.state == "failed" and t.told == "fail" for t in trials.trials)


@pytest.mark.parametrize(
    "sweep, message",
    [
        ("dict(parameters=dict(lr=[1e-3], bach_size=[1]))", "did you mean 'batch_size'"),
        ("dict(parameters=dict(lr=[]))", "parameter 'lr': empty list of values"),
        ("dict(method='random', n_runs=0, parameters=dict(lr=[1e-3]))", "'n_runs': expected"),
        ("dict(metric='dice', parameters=dict(lr=[1e-3]))", "'dice' is no history column"),
        ("dict(parameters=dict(batch_size=[1, -2]))", "parameter 'batch_size' value -2"),
    ],
)
def test_a_bad_sweep_exits_2_before_anything_starts(tmp_path, data_dir, sweep, message, cli):
    config = write_config(tmp_path, sweep)
    code, _, err = cli(["sweep", config, "--runs-dir", tmp_path / "runs", "--data-dir", data_dir],
                       env={"VOXELBOARD_DATA_DIR": str(data_dir)}, cwd=tmp_path)  # fmt: skip
    assert code == 2 and message in err, err[-2000:]
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / ".sweeps").exists() or not list(
        (tmp_path / "runs" / ".sweeps").iterdir()
    )


#: ``run.py sweep ARGV`` in a fresh interpreter; prints whether torch was imported
WITHOUT_TORCH = """
import sys
import run

code = run.main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules, "exit", code)
"""


def test_a_sweep_of_a_config_that_imports_its_model_lazily_is_made_without_torch(
    tmp_path, data_dir
):
    """Checking the config (its loss names included) needs no torch: a dashboard's
    ``run.py sweep --detach`` child and a sweep driver, which never train, skip its start-up."""
    config = write_config(tmp_path, "dict(method='grid', parameters=dict(lr=[1e-3]))")
    cmd = [sys.executable, "-c", WITHOUT_TORCH, "sweep", str(config), "--detach",
           "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env(data_dir), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.stdout.splitlines()[-1] == "torch imported: False exit 0", done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "tiny-sweep-1"


def test_a_dashboard_launcher_resumes_a_sweep_whose_driver_died(tmp_path, data_dir):
    config = write_config(
        tmp_path, "dict(method='grid', max_parallel=1, parameters=dict(lr=[1e-3, 3e-3]))"
    )
    cmd = [sys.executable, str(REPO / "run.py"), "sweep", str(config), "--runs-dir",
           str(tmp_path / "runs"), "--data-dir", str(data_dir), "--poll", "0.3"]  # fmt: skip
    driver = subprocess.Popen(cmd, cwd=tmp_path, env=env(data_dir), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            folder = tmp_path / "runs" / ".sweeps" / "tiny-sweep-1"
            if folder.is_dir() and read_trials(folder).trials:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep queued no trial within 120 s")
    finally:
        driver.kill()  # the terminal closed: nobody drives the sweep now
        driver.wait(timeout=30)
    assert read_trials(folder).state == "running"

    launcher = Launcher(tmp_path / "runs", REPO / "examples", data_dir, gpus=[], poll_s=0.3)
    with launcher:  # as a dashboard (re)started on the runs folder
        deadline = time.monotonic() + 600
        while read_trials(folder).state == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
    trials = read_trials(folder)
    assert trials.state == "finished" and [t.number for t in trials.trials] == [0, 1]
    assert {t.params["lr"] for t in trials.trials} == {1e-3, 3e-3}
    assert all(t.told == "complete" for t in trials.trials)


def test_stopping_a_sweep_stops_its_trials_and_queues_no_more(tmp_path, data_dir):
    config = write_config(
        tmp_path, "dict(method='grid', max_parallel=1, parameters=dict(lr=[1e-3, 2e-3]))",
        n_steps=100_000,
    )  # fmt: skip
    os.environ["VOXELBOARD_DATA_DIR"] = str(data_dir)
    try:
        sweep_id = sweeper.create_sweep(tmp_path / "runs", config)
    finally:
        del os.environ["VOXELBOARD_DATA_DIR"]
    folder = sweeper.sweep_folder(tmp_path / "runs", sweep_id)
    launcher = Launcher(tmp_path / "runs", tmp_path, data_dir, gpus=[], poll_s=0.3, grace_s=20)
    with launcher:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            trials = read_trials(folder)
            if (
                trials.trials
                and read_run_state(tmp_path / "runs" / trials.trials[0].run).state == "running"
            ):
                status = read_status(tmp_path / "runs" / trials.trials[0].run)
                if status is not None and status.step > 0:
                    break
            time.sleep(0.3)
        else:
            pytest.fail("the first trial did not start training within 120 s")
        assert sweeper.stop_sweep(launcher, folder, "stopped by a test") == [trials.trials[0].run]
        deadline = time.monotonic() + 90
        while read_trials(folder).state == "running" and time.monotonic() < deadline:
            time.sleep(0.3)
        # the sweep records the stop it asked for; the trainer writes its own end as it leaves
        run_dir = tmp_path / "runs" / read_trials(folder).trials[0].run
        while read_status(run_dir).state == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
    trials = read_trials(folder)
    said = _evidence(run_dir, folder)
    assert trials.state == "stopped" and trials.reason == "stopped by a test", said
    assert len(trials.trials) == 1 and trials.trials[0].state == "stopped", said
    assert trials.trials[0].told == "pruned", said  # ended early: Optuna's word for it
    status = read_status(tmp_path / "runs" / trials.trials[0].run)
    assert status.state == "stopped" and 0 < status.step < 100_000, said


def _evidence(run_dir: Path, folder: Path) -> str:
    """What a failed stop test needs to be understood: the trial's files and the sweep's."""
    parts = []
    for path in [folder / "trials.json", *(run_dir / name for name in
                 ("status.json", "launcher.json", "console.log", "train.log"))]:  # fmt: skip
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            text = f"({e})"
        parts.append(f"--- {path.name}:\n{text[-3000:]}")
    return "\n".join(parts)


def _queue_only_launcher(tmp_path, data_dir, monkeypatch, max_queued: int) -> Launcher:
    """A launcher that starts nothing (no CPU slot) and drives sweeps only when a test ticks."""
    launcher = Launcher(tmp_path / "runs", tmp_path, data_dir, gpus=[], max_cpu_runs=0,
                        max_queued=max_queued)  # fmt: skip
    monkeypatch.setattr(launcher, "drive_sweeps", lambda: None)
    return launcher


def test_a_full_launch_queue_makes_trials_wait_and_never_loses_a_grid_point(
    tmp_path, data_dir, monkeypatch
):
    config = write_config(
        tmp_path, "dict(method='grid', max_parallel=3, parameters=dict(lr=[1e-3, 2e-3, 3e-3]))"
    )
    monkeypatch.setenv("VOXELBOARD_DATA_DIR", str(data_dir))
    sweep_id = sweeper.create_sweep(tmp_path / "runs", config, device="cpu")
    folder = sweeper.sweep_folder(tmp_path / "runs", sweep_id)
    launcher = _queue_only_launcher(tmp_path, data_dir, monkeypatch, max_queued=2)
    other = launcher.launch("tiny.py", device="cpu")  # a dashboard user's run, waiting
    trials = sweeper.tick(launcher, folder)
    assert [(t.number, t.state) for t in trials.trials] == [(0, "queued")]  # one place left
    trials = sweeper.tick(launcher, folder)  # full: nothing drawn, nothing failed
    assert len(trials.trials) == 1 and trials.state == "running"
    # the queue fills between the sweep's look at it and its launch (another dashboard's
    # launch): the drawn trial waits, keeping its number and values
    launcher.stop(other)
    monkeypatch.setattr(launcher, "queue_room", lambda: 2)
    launcher.launch("tiny.py", device="cpu")
    trials = sweeper.tick(launcher, folder)
    assert [(t.number, t.state, t.told) for t in trials.trials][1:] == [(1, "waiting", None)]
    waiting_lr = trials.trials[1].params["lr"]
    assert not (tmp_path / "runs" / trials.trials[1].run).exists()
    trials = sweeper.tick(launcher, folder)  # still full, still a stale look: no new trial
    assert [(t.number, t.state) for t in trials.trials][1:] == [(1, "waiting")]
    monkeypatch.undo()  # the real queue_room and drive_sweeps again
    monkeypatch.setattr(launcher, "drive_sweeps", lambda: None)
    launcher.max_queued = 5
    trials = sweeper.tick(launcher, folder)
    assert [t.number for t in trials.trials] == [0, 1, 2]
    assert trials.trials[1].params["lr"] == waiting_lr and trials.trials[1].state == "queued"
    assert sorted(t.params["lr"] for t in trials.trials) == [1e-3, 2e-3, 3e-3]  # every point
    assert all(t.told is None for t in trials.trials) and trials.state == "running"
    assert {t.run for t in trials.trials} <= set(launcher.queued_runs())


def test_a_trial_whose_driver_died_before_queueing_it_is_queued_again(
    tmp_path, data_dir, monkeypatch
):
    """A driver records a trial as queued, then makes its run folder, then queues the run:
    killed between those steps, it leaves a trial with no run, or a run folder holding only
    trial.json. The next driver queues that very trial (same number and values), neither
    waiting for it forever nor counting it as failed."""
    config = write_config(tmp_path, "dict(method='grid', parameters=dict(lr=[1e-3, 2e-3]))")
    monkeypatch.setenv("VOXELBOARD_DATA_DIR", str(data_dir))
    runs = tmp_path / "runs"
    folder = sweeper.sweep_folder(runs, sweeper.create_sweep(runs, config, device="cpu"))
    launcher = _queue_only_launcher(tmp_path, data_dir, monkeypatch, max_queued=5)
    (first,) = sweeper.tick(launcher, folder).trials
    drawn = first.params
    run = runs / first.run
    for leftover in ("no run folder", "only trial.json"):
        if leftover == "no run folder":
            shutil.rmtree(run)
        else:
            for path in run.iterdir():
                if path.name != "trial.json":
                    path.unlink()
        trials = sweeper.tick(launcher, folder)
        assert [(t.number, t.state, t.told) for t in trials.trials] == [(0, "queued", None)]
        assert trials.trials[0].params == drawn and trials.state == "running"
        assert first.run in launcher.queued_runs(), leftover
        assert read_trial(run)["number"] == 0
    # a trial seen running whose folder then went away is lost, not queued again
    trials = read_trials(folder)
    trials.trials[0].state = "running"
    write_trials(folder, trials)
    shutil.rmtree(run)
    trials = sweeper.tick(launcher, folder)
    assert (trials.trials[0].state, trials.trials[0].told) == ("lost", "fail")
    assert not run.exists()


def test_a_launch_never_takes_over_a_folder_that_is_not_its_own_unfinished_launch(
    tmp_path, data_dir, monkeypatch
):
    monkeypatch.setenv("VOXELBOARD_DATA_DIR", str(data_dir))
    config = write_config(tmp_path, "dict(method='grid', parameters=dict(lr=[1e-3, 2e-3]))")
    launcher = _queue_only_launcher(tmp_path, data_dir, monkeypatch, max_queued=5)
    trial = {"sweep": "tiny-sweep-1", "number": 0, "drawn": {}, "params": {}, "metric": "loss"}
    other_trial = tmp_path / "runs" / "tiny-sweep-1-000"
    other_trial.mkdir(parents=True)
    (other_trial / "trial.json").write_text(json.dumps({**trial, "number": 7}))
    with_files = tmp_path / "runs" / "tiny-sweep-1-001"
    with_files.mkdir()
    (with_files / "notes.txt").write_text("a user's notes")
    for name in ("tiny-sweep-1-000", "tiny-sweep-1-001"):
        with pytest.raises(LaunchError, match="exists already"):
            launcher.launch_trial(config, name, trial, device="cpu")
    assert json.loads((other_trial / "trial.json").read_text())["number"] == 7
    assert (with_files / "notes.txt").read_text() == "a user's notes"
    assert launcher.queued_runs() == []


def test_a_stopped_sweep_ends_its_waiting_trials(tmp_path, data_dir, monkeypatch):
    config = write_config(tmp_path, "dict(method='grid', parameters=dict(lr=[1e-3, 2e-3]))")
    monkeypatch.setenv("VOXELBOARD_DATA_DIR", str(data_dir))
    folder = sweeper.sweep_folder(
        tmp_path / "runs", sweeper.create_sweep(tmp_path / "runs", config, device="cpu")
    )
    launcher = _queue_only_launcher(tmp_path, data_dir, monkeypatch, max_queued=1)
    launcher.launch("tiny.py", device="cpu")
    monkeypatch.setattr(launcher, "queue_room", lambda: 1)  # a stale look at the queue
    trials = sweeper.tick(launcher, folder)
    assert [(t.number, t.state) for t in trials.trials] == [(0, "waiting")]
    assert sweeper.stop_sweep(launcher, folder, "stopped by a test") == []
    trials = sweeper.tick(launcher, folder)
    assert trials.state == "stopped" and trials.trials[0].state == "stopped"
    assert trials.trials[0].told == "fail"


#: a driver killed between asking the study for a trial and recording it in trials.json:
#: the real ``tick``, whose drawing of the values signals the test and then waits for the kill
KILLED_DRIVER = """
import sys, time
from pathlib import Path
from app import sweeper
from app.launcher import Launcher

runs, folder, configs, data = map(Path, sys.argv[1:5])
drawn = sweeper.suggest_params

def draw_then_wait(trial, spec):
    values = drawn(trial, spec)
    print("asked", trial.number, flush=True)
    time.sleep(600)
    return values

sweeper.suggest_params = draw_then_wait
sweeper.tick(Launcher(runs, configs, data, gpus=[]), folder)
"""


@pytest.fixture(scope="module")
def resumed_grid(tmp_path_factory, data_dir) -> SimpleNamespace:
    """A grid sweep of two points whose first driver was killed while it held a trial that
    trials.json does not know, then driven to its end by ``run.py sweep --resume``.

    The driver holds the sweep's lock while it asks the study for a trial and records it.
    Killed with SIGKILL in between (``KILLED_DRIVER``), it leaves a trial RUNNING in the
    journal. Fields: ``runs``, ``folder``, ``sweep_id``, ``said`` (the killed driver's first
    line), ``before`` (the study's trial states and the trials.json entries then), ``done``
    (the resume's ``CompletedProcess``). Two trials train at once (``max_parallel=2``)."""
    tmp = tmp_path_factory.mktemp("resumed-grid")
    config = write_config(
        tmp, "dict(method='grid', parameters=dict(lr=[1e-3, 3e-3], batch_size=[1]))"
    )
    runs = tmp / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VOXELBOARD_DATA_DIR", str(data_dir))
        sweep_id = sweeper.create_sweep(runs, config, device="cpu", max_parallel=2)
    folder = sweeper.sweep_folder(runs, sweep_id)
    driver = subprocess.Popen(
        [sys.executable, "-c", KILLED_DRIVER, str(runs), str(folder), str(tmp), str(data_dir)],
        cwd=REPO, env=env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        said = driver.stdout.readline()
        if not said.startswith("asked"):
            said += driver.stdout.read()
    finally:
        driver.kill()  # SIGKILL: no clean-up, the lock goes with the process
        driver.wait(timeout=30)
    study = open_study(study_path(folder), sweep_id, sweeper.spec_of(read_sweep(folder)))
    before = ([t.state for t in study.get_trials()], read_trials(folder).trials)
    done = sweep_cli(tmp, data_dir, "--resume", sweep_id)
    return SimpleNamespace(
        runs=runs, folder=folder, sweep_id=sweep_id, said=said, before=before, done=done
    )


def test_a_grid_sweep_trains_each_point_once_and_tells_the_study(resumed_grid):
    done, folder, runs = resumed_grid.done, resumed_grid.folder, resumed_grid.runs
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    record, trials = read_sweep(folder), read_trials(folder)
    assert trials.state == "finished" and len(trials.trials) == 2
    assert "sweep tiny-sweep-1 finished; best run tiny-sweep-1-00" in done.stdout
    lrs = set()
    study = open_study(study_path(folder), record["id"], sweeper.spec_of(record))
    for entry in trials.trials:
        run_dir = runs / entry.run
        resolved = json.loads((run_dir / "config.json").read_text())
        lr = resolved["optimiser_params"]["lr"]
        lrs.add(lr)
        assert entry.params == {"lr": lr, "batch_size": 1}
        assert read_trial(run_dir)["sweep"] == record["id"]
        assert read_run_state(run_dir).state == "finished" and entry.told == "complete"
        values = sweeper._metric_values(run_dir, "valid_loss")
        assert entry.value == best_value(values, "min") and len(values) == 3
        frozen = study.trials[entry.number]
        assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.value == entry.value
        assert sorted(frozen.intermediate_values) == [0, 3, 5]  # every history row reported
    assert lrs == {1e-3, 3e-3}


def test_a_trial_asked_by_a_killed_driver_is_failed_and_its_values_asked_again(resumed_grid):
    """Killed between asking and recording (``resumed_grid``), the first driver leaves a
    trial RUNNING in the journal that trials.json does not know; the next driver marks it
    FAIL, asks its values again and finishes the sweep with every grid point trained and no
    trial RUNNING."""
    assert resumed_grid.said.startswith("asked 0"), resumed_grid.said
    assert resumed_grid.before == ([optuna.trial.TrialState.RUNNING], [])
    done, folder = resumed_grid.done, resumed_grid.folder
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = read_trials(folder)
    assert trials.state == "finished" and [t.number for t in trials.trials] == [1, 2]
    assert sorted(t.params["lr"] for t in trials.trials) == [1e-3, 3e-3]
    study = open_study(
        study_path(folder), resumed_grid.sweep_id, sweeper.spec_of(read_sweep(folder))
    )
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {
        0: optuna.trial.TrialState.FAIL,
        1: optuna.trial.TrialState.COMPLETE,
        2: optuna.trial.TrialState.COMPLETE,
    }
