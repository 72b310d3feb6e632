"""Shortened sweeps (issue 28, point 1): ``--n-runs``/``--n-steps``/``--batch-size``/``--lr``
recorded in ``sweep.json`` and given to every trial, a swept key refused; a trial that
``max_runtime`` ended before its ``n_steps`` shown and ranked as truncated; the config's
``save_path`` honoured by ``run.py sweep``; the sweeps list naming who drives a sweep.

A sweep is made here with the real ``create_sweep`` (the config runs, Optuna's study is
written) and its trials' files are written by the test: no trainer runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path

import pytest

from app import sweep_view, sweeper
from app.launcher import Launcher
from app.runs_table import table_rows
from app.security import LaunchError
from app.sweep_figures import TrialRow, best_run, sorted_rows
from app.sweep_view import driver_text, read_sweep_lines
from trainer.errors import ConfigError
from trainer.runs import LAUNCH_FILE, Status, is_truncated, pid_alive, write_status
from trainer.runs.sweeps import (
    clear_driver,
    live_driver,
    read_driver,
    read_sweep,
    write_driver,
)
from trainer.sweeps import Choice, SweepSpec, shorten

#: a config that runs without data (nothing trains it here): a grid of three learning rates
CONFIG = """
def create_model():
    raise RuntimeError("no trainer runs in these tests")


data_class = "BatchCreatorImage"
data_init_kwargs = dict(d_path="/nonexistent/", l_path="/nonexistent/", d_files=[], l_files=[])
n_steps = 100
history_freq = 10
monitor_batch_size = 1
batch_size = 2
optimiser = "Adam"
optimiser_params = dict(lr=1e-3)
save_path = {save_path!r}
sweep = dict(method="grid", parameters=dict(lr=[1e-3, 3e-3, 1e-2]))
"""


def _spec(**parameters) -> SweepSpec:
    return SweepSpec(
        method="grid", n_runs=3, metric="valid_loss", goal="min",
        parameters={k: Choice(tuple(v)) for k, v in parameters.items()}, prune=False,
        pruner="median", warmup_steps=0, startup_runs=2, max_failures=3, max_parallel=1, seed=0,
    )  # fmt: skip


# ------------------------------------------------------------------------------ pure parts


def test_shorten_sets_runs_and_trial_values_and_refuses_a_swept_key():
    spec, given = shorten(_spec(lr=[1e-3, 3e-3, 1e-2]), n_runs=2, n_steps=50, batch_size=None)
    assert (spec.n_runs, given) == (2, {"n_steps": 50})
    assert shorten(_spec(lr=[1, 2, 3]), n_runs=99)[0].n_runs == 3  # a grid has 3 points
    with pytest.raises(ConfigError, match=r"--lr 0.1: the sweep draws 'lr' for each trial"):
        shorten(_spec(lr=[1e-3, 3e-3]), lr=0.1)
    with pytest.raises(ConfigError, match=r"--batch-size 4: the sweep draws 'batch_size'"):
        shorten(_spec(batch_size=[1, 2]), batch_size=4)
    with pytest.raises(ConfigError, match=r"'--n-runs': expected an integer from 1 to"):
        shorten(_spec(lr=[1]), n_runs=0)
    with pytest.raises(ConfigError, match=r"'--n-steps': expected an integer >= 1"):
        shorten(_spec(lr=[1]), n_steps=-5)
    with pytest.raises(ConfigError, match=r"--lr -1: expected a learning rate > 0"):
        shorten(_spec(batch_size=[1]), lr=-1)


@pytest.mark.parametrize(
    ("state", "step", "n_steps", "truncated"),
    [
        ("finished", 40, 100, True),  # max_runtime ended it
        ("finished", 100, 100, False),
        ("stopped", 40, 100, False),  # stopped by hand: its own state says so
        ("finished", 5, 0, False),  # no plan known
    ],
)
def test_a_run_finished_before_its_steps_is_truncated(state, step, n_steps, truncated):
    assert is_truncated(state, Status(state=state, step=step, n_steps=n_steps)) is truncated


def test_truncated_trials_rank_after_full_ones_and_are_never_best():
    rows = [
        TrialRow("full-bad", 0, "finished", 0.9, {}),
        TrialRow("short-good", 1, "truncated", 0.1, {}),
        TrialRow("full-good", 2, "finished", 0.5, {}),
        TrialRow("running", 3, "running", None, {}),
    ]
    assert [r.run for r in sorted_rows(rows, "min")] == [
        "full-good", "full-bad", "short-good", "running",
    ]  # fmt: skip
    assert best_run(rows, "min") == "full-good"
    assert best_run([rows[1]], "min") is None  # a truncated trial alone is no best


def test_the_runs_table_shows_a_truncated_run_as_truncated():
    base = dict.fromkeys(
        ("config", "eta_s", "it_per_s", "train_loss", "valid_loss", "train_err", "valid_err",
         "device", "started", "duration_s", "job_id", "slurm_state", "slurm_reason"),
    )  # fmt: skip
    rows = [
        {**base, "name": n, "state": "finished", "step": s, "n_steps": 100, "progress": s,
         "error": None, "badge": None, "truncated": s < 100}
        for n, s in (("short", 40), ("full", 100))
    ]  # fmt: skip
    short, full = table_rows(rows)
    assert (
        short["state"] == "truncated" and "max_runtime ended it at step 40 of 100" in short["issue"]
    )
    assert full["state"] == "finished" and full["issue"] == ""


def test_a_driver_record_counts_while_its_process_lives_and_is_fresh(tmp_path):
    host, now = socket.gethostname(), time.time()
    assert live_driver({"pid": os.getpid(), "host": host, "seen": now}, now, host, pid_alive)
    assert live_driver({"pid": 1, "host": host, "seen": now - 60}, now, host, pid_alive) is None
    dead = {"pid": 2**22 + 12345, "host": host, "seen": now}
    assert live_driver(dead, now, host, pid_alive) is None
    assert live_driver({**dead, "host": "node7"}, now, host, pid_alive) == dead["pid"]  # elsewhere
    write_driver(tmp_path, 42, host, now)
    clear_driver(tmp_path, 41)  # not its own: left alone
    assert read_driver(tmp_path)["pid"] == 42
    clear_driver(tmp_path, 42)
    assert read_driver(tmp_path) is None
    assert driver_text("s-1", "running", 42, "local", "local") == "driven by run.py sweep, pid 42"
    assert driver_text("s-1", "running", None, "local", "local") == "driven by this dashboard"
    assert "run.py sweep --resume s-1" in driver_text("s-1", "running", None, "slurm", "local")
    assert driver_text("s-1", "finished", None, "local", "local") == ""


# ------------------------------------------------------------- a real sweep, files written


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "configs" / "mini.py"
    path.parent.mkdir()
    path.write_text(CONFIG.format(save_path=str(tmp_path / "from-config")))
    return path


def test_a_shortened_sweep_records_it_and_gives_it_to_every_trial(tmp_path, config):
    runs = tmp_path / "runs"
    sweep_id = sweeper.create_sweep(runs, config, n_runs=2, overrides={"n_steps": 7, "lr": None})
    folder = sweeper.sweep_folder(runs, sweep_id)
    record = read_sweep(folder)
    assert record["overrides"] == {"n_steps": 7} and record["spec"]["n_runs"] == 2
    launcher = Launcher(runs, config.parent, tmp_path, gpus=[], max_cpu_runs=1)
    trials = sweeper.tick(launcher, folder)  # queues the first trial; nothing starts it
    (first,) = trials.trials
    launch = json.loads((runs / first.run / LAUNCH_FILE).read_text())
    assert launch["overrides"] == {"n_steps": 7}
    assert launcher._argv(runs / first.run, launch, "cpu")[-2:] == ["--n-steps", "7"]

    # max_runtime ends it at step 3 of 7: truncated, told pruned, never the sweep's best
    now = time.time() + 1  # after the launch: the trainer's status is the newer word
    write_status(runs / first.run, Status(state="finished", step=3, n_steps=7, started=now,
                                          heartbeat=now, extra={"ended": now}))  # fmt: skip
    trials = sweeper.tick(launcher, folder)
    assert (trials.trials[0].state, trials.trials[0].told) == ("truncated", "pruned")
    assert sweeper.summary(folder)["best_run"] is None
    (line,) = read_sweep_lines(runs, "local")
    assert line["driver"] == "driven by this dashboard" and line["best_run"] is None

    # the sweep page: a truncated badge in its table, counted and explained in its header
    from app.pages import sweep as page

    view = sweep_view.read_view(runs, folder)
    assert [r.state for r in view.rows] == ["truncated", "queued"] and view.best is None
    text = _text(page.header(view))
    assert "1 truncated by max_runtime (ranked after full trials)" in text
    assert "every trial: n_steps 7" in text
    assert "truncated" in _text(page.runs_table(view))


def test_swept_keys_are_refused_with_the_flag_named(tmp_path, config):
    with pytest.raises(ConfigError, match="--lr 0.1: the sweep draws 'lr'"):
        sweeper.create_sweep(tmp_path / "runs", config, overrides={"lr": 0.1})
    assert not (tmp_path / "runs" / ".sweeps").exists() or not any(
        (tmp_path / "runs" / ".sweeps").iterdir()
    )


def test_the_dashboards_sweep_start_passes_the_form_fields_to_run_py_sweep(tmp_path):
    argv = sweeper.sweep_argv(
        tmp_path / "c.py", python="py", runs_dir=tmp_path, data_dir=tmp_path, backend="local",
        max_parallel=1, device="cpu", shortened={"n_runs": 2, "n_steps": 50, "lr": 0.001},
    )  # fmt: skip
    assert argv[-3:] == ["--n-runs=2", "--n-steps=50", "--lr=0.001"]
    launcher = Launcher(tmp_path, tmp_path, tmp_path, gpus=[], max_cpu_runs=1)
    with pytest.raises(LaunchError, match="Runs: expected a whole number"):
        sweeper.start_sweep(launcher, "c.py", "cpu", 1, None, {}, "two")
    with pytest.raises(LaunchError, match="n_steps"):
        sweeper.start_sweep(launcher, "c.py", "cpu", 1, None, {"n_steps": "-3"}, None)


def test_run_py_sweep_puts_trials_in_the_configs_save_path(tmp_path, config):
    import run

    def args(**kw):
        return argparse.Namespace(**{"runs_dir": None, "resume": None, "config": None, **kw})

    assert run._sweep_runs_dir(args(config=str(config))) == str(tmp_path / "from-config")
    assert run._sweep_runs_dir(args(config=str(config), runs_dir="x")) == "x"
    assert run._sweep_runs_dir(args(resume="s-1")) == "runs"
    parsed = run.build_parser().parse_args(
        ["sweep", str(config), "--n-runs", "2", "--n-steps", "50", "--batch-size", "1"]
    )
    assert (parsed.n_runs, parsed.n_steps, parsed.batch_size, parsed.lr) == (2, 50, 1, None)


def _text(component) -> str:
    """The text a Dash component tree shows."""
    if isinstance(component, list):
        return " ".join(_text(c) for c in component)
    if component is None or isinstance(component, str | int | float):
        return "" if component is None else str(component)
    return _text(getattr(component, "children", None))
