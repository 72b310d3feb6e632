"""The run-directory contract: atomic writes, tolerant status reading, lost detection, heartbeat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from trainer import runs


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    path = tmp_path / "status.json"
    runs.atomic_write_json(path, {"a": float("nan"), "b": [1, 2]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1, 2]}
    with pytest.raises(TypeError):
        runs.atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert json.loads(path.read_text())["b"] == [1, 2], "the old file survives a failed write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_atomic_path_replaces_on_success_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "preview.h5"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), runs.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    with runs.atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.h5"]


@pytest.mark.parametrize(
    ("content", "state", "problem"),
    [
        ('{"state": "runn', "failed", "corrupt status file"),
        ("[1, 2]", "failed", "expected a JSON object"),
        ('{"state": "weird", "step": 3}', "failed", "unknown state 'weird'"),
    ],
)
def test_read_status_never_raises_on_bad_files(tmp_path, content, state, problem):
    (tmp_path / runs.STATUS_FILE).write_text(content)
    status = runs.read_status(tmp_path)
    assert status.state == state and problem in status.error


def test_fields_of_the_wrong_type_fall_back_to_defaults(tmp_path):
    (tmp_path / runs.STATUS_FILE).write_text(
        json.dumps(
            {"state": "running", "step": None, "n_steps": "10", "heartbeat": "x", "device": "cpu"}
        )  # fmt: skip
    )
    status = runs.read_status(tmp_path)
    assert (status.state, status.step, status.n_steps, status.heartbeat) == ("running", 0, 0, 0.0)
    assert sorted(status.extra["status_problems"]) == ["heartbeat", "n_steps", "step"]
    assert status.extra["device"] == "cpu"
    assert runs.read_status(tmp_path / "absent") is None


def test_a_running_status_whose_process_died_is_lost(tmp_path):
    # a run started from a shell: its status file and no launcher record
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    now = time.time()

    def state_of(status: runs.Status) -> str:
        runs.write_status(tmp_path, status)
        return runs.read_run_state(tmp_path, now).state

    assert state_of(runs.Status(state="running", pid=proc.pid, heartbeat=now - 60)) == "lost"
    assert state_of(runs.Status(state="running", pid=os.getpid(), heartbeat=now - 60)) == "running"
    assert state_of(runs.Status(state="finished", pid=proc.pid, heartbeat=now - 60)) == "finished"
    assert state_of(runs.Status(state="queued")) == "queued"


def test_status_file_heartbeat_keeps_beating_during_a_long_step(tmp_path):
    with runs.StatusFile(tmp_path, runs.Status(state="running", n_steps=5), interval=0.1) as sf:
        first = runs.read_status(tmp_path).heartbeat
        sf.update(write=False, step=3, it_per_s=2.5)
        time.sleep(0.5)  # no update() call: only the heartbeat thread writes
        later = runs.read_status(tmp_path)
    assert later.heartbeat > first
    assert later.step == 3 and later.extra["it_per_s"] == 2.5
