"""DDP for real: two CPU processes with gloo, started through torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer import runs
from trainer.history import loadhistorytracker

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo_cnn3d.py"
CALLBACKS_DEMO = REPO / "examples" / "demo_callbacks.py"

pytestmark = pytest.mark.slow


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "VOXELBOARD_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}


def _run(
    tmp: Path, data_dir: Path, args: list[str], timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tmp, env=_env(data_dir),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def ddp_train(tmp_path_factory, demo_data_dir) -> subprocess.CompletedProcess:
    """The demo with a config-defined callback (``examples/demo_callbacks.py``, the demo CNN)
    trained by two ranks for 8 steps, started with ``torchrun`` by hand (no run directory
    named: rank 0 makes one and both ranks must agree on it); its run directory is
    ``ddp_run``. ``run.py train --nproc`` starts the resumed and the killed runs below."""
    tmp = tmp_path_factory.mktemp("ddp")
    proc = _run(tmp, demo_data_dir,
                ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 str(REPO / "run.py"), "train", str(CALLBACKS_DEMO), "--device", "cpu",
                 "--save-path", str(tmp / "runs"), "--n-steps", "8", "--batch-size", "1"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def ddp_run(ddp_train) -> Path:
    runs_dir = Path(ddp_train.args[ddp_train.args.index("--save-path") + 1])
    (run_dir,) = runs_dir.iterdir()  # both ranks agreed on rank 0's directory
    return run_dir


def test_two_ranks_write_one_history_and_stay_in_sync(ddp_run: Path):
    """Also: ``torchrun`` started by hand trains one run (``ddp_train``)."""
    assert ddp_run.parent.name == "runs" and ddp_run.name.startswith("demo_callbacks")
    status = runs.read_status(ddp_run)
    assert status.state == "finished" and status.step == 8
    assert status.extra["world_size"] == 2 and status.extra["backend"] == "gloo"
    assert len(set(status.extra["rank_pids"])) == 2
    # DDP keeps the parameters of both ranks identical after every step
    assert status.extra["rank_param_max_diff"] == 0.0
    tracker = loadhistorytracker(ddp_run)
    assert list(tracker.timeline.index) == list(range(8)), "only rank 0 appends"
    assert list(tracker.history["steps"]) == [0, 7]
    assert sorted(p.name for p in (ddp_run / "history").iterdir()) == [
        "history.vbh",
        "timeline.vbh",
    ]


def test_a_config_callback_runs_on_rank_0_only(ddp_run: Path, ddp_train):
    tracked = [json.loads(line) for line in (ddp_run / "tracking.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in tracked] == [0, 7], "one line per row: rank 1 wrote none"
    assert ddp_train.stdout.count("ended: finished") == 1


def test_resume_of_a_ddp_run_continues_the_curves(ddp_run: Path, demo_data_dir: Path):
    proc = _run(ddp_run.parent.parent, demo_data_dir,
                [str(REPO / "run.py"), "train", "--resume", str(ddp_run), "--nproc", "2",
                 "--device", "cpu", "--n-steps", "12"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    status = runs.read_status(ddp_run)
    assert status.state == "finished" and status.step == 12
    assert list(loadhistorytracker(ddp_run).timeline.index) == list(range(12))


def test_a_killed_rank_fails_the_run_in_bounded_time(tmp_path: Path, demo_data_dir: Path):
    cmd = [sys.executable, str(REPO / "run.py"), "train", str(DEMO), "--nproc", "2", "--device",
           "cpu", "--save-path", str(tmp_path / "runs"), "--save-name", "kill", "--n-steps",
           "100000", "--batch-size", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(demo_data_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    run_dir = tmp_path / "runs" / "kill"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = runs.read_status(run_dir)
            if status is not None and status.state == "running" and status.step >= 2:
                break
            assert proc.poll() is None, proc.stderr.read()[-4000:]
            time.sleep(0.2)
        else:
            pytest.fail("the DDP run did not reach step 2")
        os.kill(status.extra["rank_pids"][1], signal.SIGKILL)
        t_kill = time.monotonic()
        rc = proc.wait(timeout=120)
        elapsed = time.monotonic() - t_kill
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc != 0
    shown = runs.read_run_state(run_dir)  # status.json merged with the supervisor's record
    assert shown.state == "failed", shown
    assert shown.error
    supervisor = runs.read_launcher_record(run_dir, runs.SUPERVISOR_FILE)
    assert supervisor.exit_code != 0 and supervisor.ended is not None
    print(f"run failed {elapsed:.1f} s after a rank was killed")
