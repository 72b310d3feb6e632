"""A failed run's explanation, the experiments page's buttons and its stop message, and the
runs table's Run and Config columns (issue 28, points 3 and 5): pure rules, no browser."""

from __future__ import annotations

import json
import time

import pytest

from app import run_view
from app.run_actions import after_stop, buttons, explain_failure
from app.runs_table import NAME_MAX_PX, NAME_MIN_PX, column_defs, name_width, table_rows
from trainer.runs import Status, write_status


@pytest.mark.parametrize(
    ("state", "error", "snapshot", "kind", "resumable", "todo"),
    [
        ("failed", "FileNotFoundError: [Errno 2] No such file: '/d/raw.h5'", True, "data",
         False, "check the data files and paths"),
        ("failed", "ConfigError: x.py: invalid config (1 problem(s))", True, "config", False,
         "fix the config"),
        ("failed", "OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB", True,
         "memory", True, "then Resume: it continues from its newest snapshot"),
        ("failed", "OutOfMemoryError: CUDA out of memory", False, "memory", False,
         "it has no snapshot to resume from"),
        ("lost", None, True, "lost", True, "then Resume"),
        ("diverged", "loss is nan at step 40", True, "diverged", False,
         "lower the learning rate"),
        ("failed", "RuntimeError: something new", True, "unknown", True, "read the traceback"),
    ],
)  # fmt: skip
def test_a_failure_says_its_cause_and_what_to_do(state, error, snapshot, kind, resumable, todo):
    f = explain_failure(state, error, 120, snapshot)
    assert (f.kind, f.resumable) == (kind, resumable)
    assert todo in f.todo and f.todo.startswith("What to do: ")
    assert f.cause == (error or "no error message was written")
    assert f.title == f"{state.capitalize()} at step 120."
    if not resumable and f.kind in ("data", "config", "diverged"):
        assert "Resume would repeat the failure" in f.todo


def test_a_run_that_did_not_fail_has_no_failure_and_step_0_is_before_the_first():
    assert explain_failure("finished", None, 100, True) is None
    assert explain_failure("running", "x", 5, True) is None
    assert explain_failure("failed", "x", 0, False).title == "Failed before its first step."


@pytest.mark.parametrize(
    ("row", "snapshot", "disabled"),
    [
        (None, True, (True, True, True)),  # nothing selected: nothing to act on
        ({"state": "running"}, True, (False, True, True)),
        ({"state": "stopped"}, True, (True, False, False)),
        ({"state": "stopped"}, False, (True, True, False)),  # nothing to resume from
        ({"state": "failed", "error": "FileNotFoundError: raw.h5", "step": 3}, True,
         (True, True, False)),  # a data error: resuming repeats it
        ({"state": "failed", "error": "OutOfMemoryError: CUDA", "step": 3}, True,
         (True, False, False)),
        ({"state": "diverged", "error": "nan", "step": 3}, True, (True, True, False)),
    ],
)  # fmt: skip
def test_buttons_act_only_where_they_can_help(row, snapshot, disabled):
    assert buttons(row, snapshot) == disabled


def test_the_stopping_message_ends_when_the_run_has_ended():
    assert after_stop("t_exp", {"state": "running"}) is None
    assert after_stop("t_exp", {"state": "stopped"}) == "t_exp: stopped."
    assert after_stop("t_exp", {"state": "lost"}) == "t_exp: lost."
    assert after_stop("t_exp", None) == "t_exp: gone."
    assert after_stop(None, {"state": "stopped"}) is None


def test_the_run_column_fits_sweep_trial_names_and_is_pinned():
    trial = "demo_sweep-sweep-1-003"
    assert name_width([trial]) >= len(trial) * 7 + 32  # 7 px a character at the grid's font
    assert name_width([]) == NAME_MIN_PX and name_width(["x" * 500]) == NAME_MAX_PX
    defs = {c["field"]: c for c in column_defs([trial])}
    assert defs["name"]["pinned"] == "left" and defs["name"]["width"] == name_width([trial])
    fields = [c["field"] for c in column_defs()]
    # the losses and errors come before the wide, less read columns
    assert fields.index("valid_loss") < fields.index("valid_curve") < fields.index("started")


def test_a_trial_shows_its_sweeps_config_not_the_copy_it_trains():
    row = dict.fromkeys(
        ("eta_s", "it_per_s", "train_loss", "valid_loss", "train_err", "valid_err", "device",
         "started", "duration_s", "job_id", "slurm_state", "slurm_reason"),
    )  # fmt: skip
    runs = [
        {**row, "name": n, "config": "config.py", "state": "running", "step": 1, "n_steps": 9,
         "progress": 11.1, "error": None, "badge": None}
        for n in ("s-sweep-1-000", "plain")
    ]  # fmt: skip
    trial, plain = table_rows(runs, sweeps={"s-sweep-1-000": "s-sweep-1"},
                              sweep_configs={"s-sweep-1": "demo_sweep.py"})  # fmt: skip
    assert (trial["config"], plain["config"]) == ("demo_sweep.py", "config.py")


def test_the_header_says_starting_until_the_trainer_writes_its_status(tmp_path):
    run_dir = tmp_path / "young"
    run_dir.mkdir()
    items, state, failure = run_view.status_header(run_dir)
    assert "starting…" in items[1].children and failure is None
    now = time.time()
    write_status(run_dir, Status(state="failed", step=0, n_steps=10, started=now, heartbeat=now,
                                 error="FileNotFoundError: /data/raw.h5"))  # fmt: skip
    items, state, failure = run_view.status_header(run_dir)
    assert state == "failed" and "starting" not in json.dumps(items[1].to_plotly_json())
    texts = [c.children for c in failure]
    assert texts[0] == "Failed before its first step."
    assert texts[1] == "FileNotFoundError: /data/raw.h5"
    assert "check the data files" in texts[2] and "launch it again" in texts[2]
