"""``trainer.runs.merge_state``: status.json + launcher.json + supervisor.json -> one state."""

from __future__ import annotations

import json

import pytest

from trainer import runs
from trainer.runs import LauncherRecord, Status, merge_state

NOW = 1_000_000.0
ALIVE = {111, 222}.__contains__  # pids that "exist" in these rows
Q = NOW - 100  # when the current attempt was queued


def status(state="running", pid=111, beat=NOW - 1, error=None, **extra) -> Status:
    return Status(state=state, pid=pid, heartbeat=beat, started=Q + 1, error=error, extra=extra)


def rec(**kw) -> LauncherRecord:
    return LauncherRecord(**{"queued": Q, **kw})


def job(state, reason=None, **kw) -> LauncherRecord:
    return rec(backend="slurm", job_id="42", submitted=Q, slurm_state=state, slurm_reason=reason,
               **kw)  # fmt: skip


@pytest.mark.parametrize(
    "st, record, expected",
    [
        # started from a shell: no launcher record
        (None, None, "queued"),
        (status(), None, "running"),
        (status(pid=999, beat=NOW - 60), None, "lost"),  # process gone, heartbeat stale
        (status(pid=999, beat=NOW - 2), None, "running"),  # just died: a moment's grace
        (status(pid=999, beat=NOW - 10), None, "lost"),  # gone and no final state since
        (status(pid=None, beat=NOW - 10), None, "running"),  # no pid: only staleness counts
        (status("finished", pid=999, beat=NOW - 600), None, "finished"),
        # local launches
        (None, rec(), "queued"),  # queued, no status.json yet
        (None, rec(stop_requested=NOW, ended=NOW), "stopped"),  # a queued run stopped
        (None, rec(pid=222, started=NOW - 60), "running"),  # child alive, no status yet
        (None, rec(pid=999, started=NOW - 60), "lost"),  # child gone, nobody noticed
        (status(), rec(pid=111, started=Q + 1), "running"),
        (status(pid=999, beat=NOW - 60), rec(pid=999, started=Q + 1), "lost"),
        (status("stopped"), rec(pid=111, stop_requested=NOW, exit_code=0, ended=NOW), "stopped"),
        (status(), rec(pid=111, stop_requested=NOW, exit_code=-9, ended=NOW), "stopped"),
        (status(), rec(pid=111, exit_code=3, ended=NOW), "failed"),  # exit without final state
        (status("failed", error="config: bad"), rec(pid=111, exit_code=1, ended=NOW), "failed"),
        (status("finished"), rec(pid=111, exit_code=0, ended=NOW), "finished"),
        (status(), rec(error="could not start: config: gone", ended=NOW), "failed"),
        # a resumed run: status.json is the earlier attempt's until the trainer writes
        (status("stopped", beat=Q - 50), rec(), "queued"),
        (status("stopped", beat=Q - 50), rec(pid=222, started=NOW - 1), "running"),
        (status("failed", beat=Q - 50), rec(pid=999, exit_code=2, ended=NOW), "failed"),
        # Slurm
        (None, rec(backend="slurm", job_id="42", submitted=Q), "queued"),  # not polled yet
        (None, job("PENDING", "Resources"), "queued"),
        (None, job("RUNNING"), "running"),
        (status(pid=999, beat=NOW - 60), job("RUNNING"), "running"),  # a pid on another node
        (status(pid=999, beat=NOW - 60), job("PENDING"), "lost"),  # requeued: heartbeat decides
        (status("finished"), job("COMPLETED", ended=NOW), "finished"),
        (status(), job("COMPLETED", ended=NOW), "finished"),
        (status(), job("FAILED", "NonZeroExitCode", exit_code=3, ended=NOW), "failed"),
        (status(), job("CANCELLED", ended=NOW), "stopped"),  # cancelled outside the dashboard
        (None, job("CANCELLED", stop_requested=NOW, ended=NOW), "stopped"),
        (status("stopped"), job("RUNNING", stop_requested=NOW), "stopped"),  # trainer's word
        (status(), job("RUNNING", stop_requested=NOW), "running"),  # stopping
        (None, job(None, error="Slurm job 42 is known to neither", ended=NOW), "failed"),
        (status(), job("SOMETHING_NEW"), "running"),  # unknown word: the status decides
    ],
)
def test_merge_state(st, record, expected):
    assert merge_state(st, record, NOW, ALIVE).state == expected


@pytest.mark.parametrize(
    "st, record, error",
    [
        (
            status(),
            rec(pid=111, exit_code=3, ended=NOW, last_output="crashing on purpose"),
            "process exited with code 3 without writing a final state: crashing on purpose "
            "(see runs/a/console.log)",
        ),
        (
            status(),
            rec(pid=111, ended=NOW),
            "process exited without exit code without writing a final state "
            "(see runs/a/console.log)",
        ),
        (
            status(),
            job("FAILED", "NonZeroExitCode", exit_code=3, ended=NOW, last_output="boom"),
            "Slurm job 42 ended FAILED (NonZeroExitCode, exit 3) without the trainer writing a "
            "final state: boom (see runs/a/console.log)",
        ),
        (
            status("failed", error="config: bad"),
            rec(pid=111, exit_code=1, ended=NOW),
            "config: bad",
        ),
        (status("stopped", beat=Q - 50, error=None), rec(), None),
        (status("failed", beat=Q - 50, error="old"), rec(), None),  # the earlier attempt's
        (status(), rec(stop_requested=NOW, exit_code=-9, ended=NOW), None),
    ],
)
def test_merge_state_error_text(st, record, error):
    shown = merge_state(st, record, NOW, ALIVE, console="runs/a/console.log")
    assert shown.error == error


def test_merge_keeps_exit_code_job_and_device():
    shown = merge_state(
        status("finished", device="cuda:0"), rec(pid=111, device="cuda:1", exit_code=0, ended=NOW),
        NOW, ALIVE,
    )  # fmt: skip
    assert (shown.exit_code, shown.device, shown.pid, shown.current) == (0, "cuda:1", 111, True)
    pending = merge_state(None, job("PENDING", "Priority"), NOW, ALIVE)
    assert (pending.job_id, pending.slurm_state, pending.slurm_reason) == (
        "42",
        "PENDING",
        "Priority",
    )
    assert merge_state(None, rec(), NOW, ALIVE).current is False


@pytest.mark.parametrize(
    "st, sup, expected",
    [
        (status(), LauncherRecord("torchrun", pid=5, started=Q), "running"),
        (status(), LauncherRecord("torchrun", pid=5, started=Q, exit_code=1, ended=NOW), "failed"),
        (
            status("finished"),
            LauncherRecord("torchrun", started=Q, exit_code=0, ended=NOW),
            "finished",
        ),  # fmt: skip
        # the trainer's final word stands even when torchrun then exits non-zero
        (
            status("diverged"),
            LauncherRecord("torchrun", started=Q, exit_code=3, ended=NOW),
            "diverged",
        ),  # fmt: skip
        # an earlier attempt's final state does not hide this attempt's failure
        (
            status("stopped", beat=Q - 5),
            LauncherRecord("torchrun", started=Q, exit_code=1, ended=NOW),
            "failed",
        ),  # fmt: skip
    ],
)
def test_supervisor_exit(st, sup, expected):
    shown = merge_state(st, None, NOW, ALIVE, supervisor=sup)
    assert shown.state == expected
    if expected == "failed":
        assert "torchrun exit code 1" in shown.error


def test_old_run_directory_reads_sensibly(tmp_path):
    """A run written before launcher.json: launcher fields in status.json and launch.json."""
    (tmp_path / "status.json").write_text(json.dumps({
        "state": "stopped", "step": 7, "n_steps": 10, "pid": 999_999, "heartbeat": NOW,
        "started": NOW - 50, "ended": NOW, "device": "cpu",
        "slurm": {"job_id": "9", "state": "CANCELLED", "reason": None},
    }))  # fmt: skip
    (tmp_path / "launch.json").write_text(json.dumps({
        "backend": "slurm", "created": NOW - 60, "slurm": {"job_id": "9", "submitted": NOW - 59},
    }))  # fmt: skip
    record = runs.read_launcher_record(tmp_path)
    assert (record.backend, record.job_id, record.queued) == ("slurm", "9", NOW - 60)
    shown = runs.read_run_state(tmp_path, now=NOW + 5)
    assert (shown.state, shown.device, shown.ended, shown.job_id) == ("stopped", "cpu", NOW, "9")


def test_launcher_record_round_trip_and_tolerant_read(tmp_path):
    record = LauncherRecord("local", queued=1.0, pid=5, device="cpu", exit_code=-15, ended=2.0)
    runs.write_launcher_record(tmp_path, record)
    assert runs.read_launcher_record(tmp_path) == record
    (tmp_path / "launcher.json").write_text('{"pid": "five", "device": "cpu", "new_key": 1}')
    assert runs.read_launcher_record(tmp_path) == LauncherRecord(device="cpu")
    (tmp_path / "launcher.json").write_text('{"pid": ')
    assert runs.read_launcher_record(tmp_path) is None


@pytest.mark.parametrize("text, code", [("3:0", 3), ("0:15", -15), ("0:0", 0), ("x", None)])
def test_slurm_exit_code(text, code):
    assert runs.slurm_exit_code(text) == code
