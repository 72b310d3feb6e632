"""Background-job slots (app/limits.py) across real processes, and the launch queue cap."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

from app import limits
from app.launcher import Launcher
from app.security import LaunchError

FORK = multiprocessing.get_context("fork")


def _hold(folder: str, key: str, slots: int, ready, release) -> None:
    with limits.job_slot(folder, key, slots, "evaluation"):
        ready.set()
        release.wait(30)


@pytest.fixture
def holders():
    started = []

    def start(folder, key, slots):
        ready, release = FORK.Event(), FORK.Event()
        p = FORK.Process(target=_hold, args=(str(folder), key, slots, ready, release))
        p.start()
        assert ready.wait(20), "the holder did not get its slot"
        started.append((p, release))
        return p, release

    yield start
    for p, release in started:
        if p.is_alive():  # a killed holder never acknowledges a wake-up: set() would block
            release.set()
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()


def test_one_job_per_key_across_processes(tmp_path, holders):
    holders(tmp_path, "run-a", 2)
    with pytest.raises(limits.Busy, match="evaluation of run-a is already running"):
        with limits.job_slot(tmp_path, "run-a", 2, "evaluation"):
            pass
    with limits.job_slot(tmp_path, "run-b", 2, "evaluation"):  # another run has a slot
        pass


def test_global_cap_and_release_when_a_holder_dies(tmp_path, holders):
    first, _ = holders(tmp_path, "run-a", 2)
    holders(tmp_path, "run-b", 2)
    with pytest.raises(limits.Busy, match="2 evaluations are running already"):
        with limits.job_slot(tmp_path, "run-c", 2, "evaluation"):
            pass
    os.kill(first.pid, signal.SIGKILL)  # a crashed job frees its slot without clean-up
    first.join(10)
    with limits.job_slot(tmp_path, "run-c", 2, "evaluation"):
        pass
    with limits.job_slot(tmp_path, "run-a", 2, "evaluation"):
        pass


def test_slots_are_released_after_an_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with limits.job_slot(tmp_path, "run-a", 1, "evaluation"):
            raise RuntimeError("job failed")
    with limits.job_slot(tmp_path, "run-a", 1, "evaluation"):
        pass


def test_launch_queue_is_capped(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "wait.py").write_text("n_steps = 5\n")
    # no CPU slot: every launch waits in the queue
    launcher = Launcher(tmp_path / "runs", configs, tmp_path / "data", gpus=[], max_cpu_runs=0,
                        max_queued=3)  # fmt: skip
    names = [launcher.launch("wait.py", device="cpu") for _ in range(3)]
    assert launcher.queued_runs() == names
    with pytest.raises(LaunchError, match="3 launches are already waiting"):
        launcher.launch("wait.py", device="cpu")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()) == sorted(names)
