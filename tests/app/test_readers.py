"""Run-directory readers: table rows for good, odd, corrupt and half-written run directories."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from app.readers import list_runs, log_path, run_summary, tail_lines
from trainer.history import HistoryTracker
from trainer.runs import Status, write_status

NOW = 1_800_000_000.0


def make_run(root: Path, name: str, **status) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    if status:
        write_status(
            run_dir,
            Status(
                **{k: v for k, v in status.items() if k != "extra"}, extra=status.get("extra", {})
            ),
        )
    return run_dir


def test_running_run_with_trainer_extras(tmp_path):
    run_dir = make_run(
        tmp_path, "good", state="running", step=250, n_steps=1000, pid=os.getpid(),
        heartbeat=NOW - 1, started=NOW - 100,
        extra={"config_file": "/x/configs/demo_cnn3d.py", "device": "cpu", "it_per_s": 2.5,
               "eta_s": 300.0, "train_loss": 0.5, "valid_loss": 0.6, "train_err": 0.1,
               "valid_err": 0.2},
    )  # fmt: skip
    row = run_summary(run_dir, now=NOW)
    assert row["name"] == "good"
    assert row["config"] == "demo_cnn3d.py"
    assert (row["state"], row["step"], row["n_steps"], row["progress"]) == (
        "running",
        250,
        1000,
        25.0,
    )
    assert (row["eta_s"], row["it_per_s"], row["duration_s"]) == (300.0, 2.5, 100.0)
    assert [row[k] for k in ("train_loss", "valid_loss", "train_err", "valid_err")] == [
        0.5,
        0.6,
        0.1,
        0.2,
    ]
    assert (row["device"], row["badge"], row["error"]) == ("cpu", None, None)


def test_eta_from_speed_when_trainer_gives_none(tmp_path):
    run_dir = make_run(
        tmp_path,
        "r",
        state="running",
        step=100,
        n_steps=300,
        pid=os.getpid(),
        heartbeat=NOW,
        started=NOW - 10,
        extra={"it_per_s": 4.0},
    )
    assert run_summary(run_dir, now=NOW)["eta_s"] == 50.0


def test_lost_run(tmp_path):
    dead_pid = 2**22 + 12345  # above any pid_max we will meet
    run_dir = make_run(
        tmp_path,
        "lost",
        state="running",
        step=3,
        n_steps=10,
        pid=dead_pid,
        heartbeat=NOW - 120,
        started=NOW - 200,
    )
    row = run_summary(run_dir, now=NOW)
    assert row["state"] == "lost"
    assert row["eta_s"] is None
    assert row["duration_s"] == 80.0  # until the last sign of life


def test_finished_run_duration_and_history_fallback(tmp_path):
    run_dir = make_run(
        tmp_path,
        "done",
        state="finished",
        step=20,
        n_steps=20,
        pid=None,
        heartbeat=NOW - 5,
        started=NOW - 65,
        extra={"ended": NOW - 5},
    )
    tracker = HistoryTracker(run_dir / "history")
    tracker.update_history([10, 1.0, 0.9, 0.95, 0.0, 0.4, 0.45, 0.01, 0.9, 0.0])
    tracker.update_history([20, 2.0, 0.7, 0.75, 0.2, 0.3, 0.35, 0.01, 0.9, 0.0])
    tracker.close()
    row = run_summary(run_dir, now=NOW)
    assert (row["state"], row["progress"], row["duration_s"]) == ("finished", 100.0, 60.0)
    assert [row[k] for k in ("train_loss", "valid_loss", "train_err", "valid_err")] == [
        0.7,
        0.75,
        0.3,
        0.35,
    ]


@pytest.mark.parametrize(
    "content, badge",
    [
        (b"", "status.json is empty (half-written?)"),
        (b'{"state": "running", "step": 1', "status.json is corrupt (not valid JSON)"),
        (b"\xff\xfe\x00garbage", "status.json is corrupt (not valid JSON)"),
        (b"[1, 2, 3]", "status.json is corrupt (not a JSON object)"),
        (b'{"state": "running", "step": "seven", "n_steps": 10}', "status.json: bad step"),
        (b'{"state": "dancing", "step": 1, "n_steps": 10}', "status.json: bad state 'dancing'"),
    ],
)
def test_broken_status_gives_a_badge_not_an_exception(tmp_path, content, badge):
    run_dir = make_run(tmp_path, "broken")
    (run_dir / "status.json").write_bytes(content)
    row = run_summary(run_dir, now=NOW)
    assert row["badge"] == badge
    assert row["name"] == "broken"
    assert row["state"] in ("unknown", "failed", "running", "lost")


def test_missing_status_and_corrupt_launch_file(tmp_path):
    run_dir = make_run(tmp_path, "nostatus")
    (run_dir / "config.json").write_text("{}")
    (run_dir / "0-my_config.py").write_text("x = 1\n")
    row = run_summary(run_dir, now=NOW)
    assert (row["state"], row["badge"], row["config"]) == (
        "unknown",
        "no status.json",
        "my_config.py",
    )

    queued = make_run(tmp_path, "queued", state="queued", heartbeat=NOW)
    (queued / "launch.json").write_text('{"config": ')
    assert run_summary(queued, now=NOW)["badge"] == "launch.json is corrupt (not valid JSON)"


def test_summary_follows_rewrites(tmp_path):
    run_dir = make_run(
        tmp_path,
        "r",
        state="running",
        step=1,
        n_steps=10,
        pid=os.getpid(),
        heartbeat=NOW,
        started=NOW,
    )
    assert run_summary(run_dir, now=NOW)["step"] == 1
    write_status(
        run_dir,
        Status(state="running", step=77, n_steps=100, pid=os.getpid(), heartbeat=NOW, started=NOW),
    )
    assert run_summary(run_dir, now=NOW)["step"] == 77


def test_list_runs(tmp_path):
    now = time.time()
    make_run(tmp_path, "older", state="finished", step=1, n_steps=1, started=now - 100)
    make_run(tmp_path, "newer", state="finished", step=1, n_steps=1, started=now - 10)
    launched = make_run(tmp_path, "launched")
    (launched / "launch.json").write_text(json.dumps({"config": "demo.py"}))
    make_run(tmp_path, ".hidden", state="finished")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    names = [r["name"] for r in list_runs(tmp_path, now=now)]
    assert names[1:] == ["newer", "older"]
    assert names[0] == "launched"  # not started yet: sorted by its folder's time, just now
    assert list_runs(tmp_path / "missing") == []


def test_tail_lines_reads_only_the_end(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail_lines(log, 3) == ["line 9997", "line 9998", "line 9999"]
    # 25 bytes from the end cut "line 9997" in the middle: the partial line is dropped
    assert tail_lines(log, 200, max_bytes=25) == ["line 9998", "line 9999"]
    assert tail_lines(tmp_path / "missing.log") == []
    log.write_bytes(b"ok\n\xff\xfe broken utf8\nlast")
    assert tail_lines(log, 10) == ["ok", "\ufffd\ufffd broken utf8", "last"]


def test_log_path_prefers_train_log(tmp_path):
    run_dir = make_run(tmp_path, "r")
    assert log_path(run_dir) is None
    (run_dir / "console.log").write_text("console\n")
    assert log_path(run_dir).name == "console.log"
    (run_dir / "train.log").write_text("train\n")
    assert log_path(run_dir).name == "train.log"


def test_summary_of_a_run_being_written_never_raises(tmp_path):
    """A writer replacing status.json while we read: every read gives a row."""
    run_dir = make_run(tmp_path, "busy", state="running", pid=os.getpid(), heartbeat=time.time())
    for step in range(200):
        if step % 2:
            (run_dir / "status.json").write_text('{"state": "runn')  # torn, non-atomic writer
        else:
            write_status(
                run_dir,
                Status(
                    state="running", step=step, n_steps=200, pid=os.getpid(), heartbeat=time.time()
                ),
            )
        row = run_summary(run_dir)
        assert row["name"] == "busy"
        assert (row["badge"] is None) == (step % 2 == 0)


# ---------------------------------------------------------------------- corrupt run files
def _run_with_files(root: Path, name: str) -> Path:
    """A finished run with a good snapshot, history store, preview and evaluation result."""
    import h5py
    import numpy as np
    import torch

    run_dir = make_run(root, name, state="finished", step=10, n_steps=10, started=NOW - 60)
    for folder in ("snapshots", "previews", "eval"):
        (run_dir / folder).mkdir()
    torch.save({"model": {"w": torch.zeros(8)}, "step": 10}, run_dir / "snapshots" / "LAST.pt")
    with HistoryTracker(run_dir / "history") as tracker:
        tracker.update_timeline([0.0, 1.0, 0.5])
        tracker.update_history([0, 0.0, 1.0, 1.1, 0.0, 50.0, 50.0, 0.01, 0.9, 0.0])
    for path in (run_dir / "previews" / "preview-00000010.h5", run_dir / "eval" / "LAST.h5"):
        with h5py.File(path, "w") as f:
            f["prob"] = np.zeros((2, 64, 64), np.float32)
    return run_dir


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _truncate(path: Path) -> None:
    _replace(path, path.read_bytes()[: path.stat().st_size // 2])


def _random(path: Path) -> None:
    _replace(path, random.Random(0).randbytes(4096))


def _bad_header(path: Path) -> None:
    data = path.read_bytes()
    _replace(path, b"\0" * 16 + data[16:])


@pytest.mark.parametrize(
    ("file", "damage", "says"),
    [
        ("snapshots/LAST.pt", _truncate, "snapshots/LAST.pt is corrupt or truncated"),
        ("snapshots/LAST.pt", _random, "snapshots/LAST.pt is corrupt or truncated"),
        ("history/timeline.vbh", _bad_header, "history/timeline.vbh does not start with"),
        ("history/history.vbh", _truncate, "history/history.vbh"),
        ("previews/preview-00000010.h5", _truncate, "previews/preview-00000010.h5 is corrupt"),
        ("eval/LAST.h5", _random, "eval/LAST.h5 is corrupt or truncated"),
        ("eval/LAST.h5", _truncate, "eval/LAST.h5 is corrupt or truncated"),
    ],
)
def test_a_corrupt_run_file_reaches_the_issue_badge(tmp_path, file, damage, says):
    good = _run_with_files(tmp_path, "good")
    bad = _run_with_files(tmp_path, "bad")
    rows = {r["name"]: r for r in list_runs(tmp_path, now=NOW)}
    assert rows["good"]["badge"] is None and rows["bad"]["badge"] is None, "good files pass"

    damage(bad / file)
    rows = {r["name"]: r for r in list_runs(tmp_path, now=NOW)}
    assert rows["good"]["badge"] is None
    assert says in (rows["bad"]["badge"] or ""), rows["bad"]
    assert rows["bad"]["state"] == "finished", "a corrupt file is an issue, not a state"
    assert good.is_dir()


def test_the_snapshots_checked_are_the_ones_a_resume_or_an_evaluation_loads(tmp_path):
    from app.readers import file_problems

    run_dir = _run_with_files(tmp_path, "run")
    snaps = run_dir / "snapshots"
    (snaps / "FINAL.pt").write_bytes(b"not a zip")  # evaluation loads FINAL first
    (snaps / "BEST.pt").write_bytes(b"not a zip")  # neither resumed nor evaluated by default
    os.utime(snaps / "FINAL.pt", ns=(1, 1))  # older than LAST: still checked
    os.utime(snaps / "BEST.pt", ns=(2 * 10**18, 2 * 10**18))  # the newest file
    (run_dir / "history" / "notes.vbh.txt").write_bytes(b"")  # not a table of the store
    problems = file_problems(run_dir)
    assert [p.split(" (")[0] for p in problems] == ["snapshots/FINAL.pt is corrupt or truncated"]


def test_a_lost_run_shows_the_first_error_of_its_last_attempt(tmp_path):
    dead_pid = 2**22 + 12345
    run_dir = make_run(tmp_path, "full", state="running", step=40, n_steps=40, pid=dead_pid,
                       heartbeat=NOW - 120, started=NOW - 200)  # fmt: skip
    log = run_dir / "train.log"
    start = "[07:48:19] [INFO] Training full on cpu (torch 2), 40 steps from step 0, run dir x\n"
    cause = "no space left on device while writing status.json; free space on its disk (...)"
    log.write_text(
        "[07:40:00] [INFO] Training full on cpu (torch 2), 40 steps from step 0, run dir x\n"
        "[07:41:00] [ERROR] Training failed at step 3:\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "RuntimeError: an earlier attempt\n"
        f"{start}"
        f"[07:48:27] [ERROR] Training stopped at step 40: {cause}\n"
        f"[07:48:27] [ERROR] The final state (failed) could not be recorded either: {cause}\n"
    )
    row = run_summary(run_dir, now=NOW)
    assert row["state"] == "lost"
    assert row["error"] == f"train.log: Training stopped at step 40: {cause}"

    log.write_text(log.read_text() + start)  # resumed since: nothing wrong in this attempt
    assert run_summary(run_dir, now=NOW)["error"] is None

    log.write_text(log.read_text() + "[07:50:00] [ERROR] Training failed at step 7:\n"
                   "Traceback (most recent call last):\nOSError: [Errno 5] bad sector\n")  # fmt: skip
    assert run_summary(run_dir, now=NOW)["error"] == (
        "train.log: Training failed at step 7: OSError: [Errno 5] bad sector"
    )
