"""Tests for trainer.parallel with real forked processes and real POSIX shared memory."""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing import resource_tracker
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from trainer import parallel
from trainer.parallel import BackgroundProc, SharedQ, WorkerError, get_worker_info

REPO = Path(__file__).resolve().parents[2]
SHM_DIR = Path("/dev/shm")

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------------------
# targets (module level: they run in forked workers)

_calls = 0


def index_and_counter() -> tuple[np.ndarray, np.ndarray]:
    """Worker index and how often this process has called the target."""
    global _calls
    _calls += 1
    info = get_worker_info()
    return np.int64(-1 if info is None else info.index), np.int64(_calls)


def counter_filled(n: int = 4) -> np.ndarray:
    global _calls
    _calls += 1
    return np.full(n, _calls, dtype=np.float64)


def slow_counter(delay: float) -> np.ndarray:
    global _calls
    if get_worker_info() is not None:
        time.sleep(delay)
    _calls += 1
    return np.int64(_calls)


def random_draws() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.random.random(4), np.float64(random.random()), torch.rand(4).numpy()


def fail_in_worker(message: str) -> np.ndarray:
    if get_worker_info() is not None:
        raise ValueError(message)
    return np.zeros(2)


def zeros_of(shape: tuple[int, ...], dtype: str, n: int = 1) -> tuple[np.ndarray, ...]:
    return tuple(np.zeros(shape, dtype) for _ in range(n))


def torch_matmul() -> np.ndarray:
    a = torch.randn(64, 64)
    return (a @ a.T).sum().reshape(1).numpy()


class ReadOnlyVolume:
    """A data object whose bound method is the target (shared copy-on-write by fork)."""

    def __init__(self) -> None:
        self.volume = np.arange(32 * 32 * 32, dtype=np.float32).reshape(32, 32, 32)

    def getbatch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        z = np.random.randint(0, 32 - size)
        return self.volume[z : z + size].copy(), np.int64(z)


# ---------------------------------------------------------------------------------------
# leak checks


def _our_shm() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(f"vb_{os.getpid()}_")}


def _live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def leak_check():
    """Assert a test leaves no child process and no shared-memory block of this process."""
    # the tracker is started lazily by the first SharedMemory; it is meant to outlive tests
    resource_tracker.ensure_running()
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    shm_before = _our_shm()
    yield
    new_children = {p.pid for p in psutil.Process().children(recursive=True)} - children_before
    assert new_children == set(), "child processes left behind"
    assert _our_shm() - shm_before == set(), "/dev/shm entries left behind"


# ---------------------------------------------------------------------------------------
# BackgroundProc


def test_infers_dtypes_and_shapes_dropping_none(leak_check):
    def target():
        return np.ones((2, 3), np.float32), None, np.arange(4, dtype=np.int16)

    with BackgroundProc(target, n_proc=2) as bg:
        assert bg.dtypes == [np.dtype(np.float32), np.dtype(np.int16)]
        assert bg.shapes == [(2, 3), (4,)]
        data, label = bg.get(timeout=10)
    np.testing.assert_array_equal(data, np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(label, np.arange(4, dtype=np.int16))
    assert label.dtype == np.int16


def test_round_robin_order_with_three_workers(leak_check):
    with BackgroundProc(index_and_counter, [np.int64, np.int64], [(), ()], n_proc=3) as bg:
        got = [tuple(int(x) for x in bg.get(timeout=10)) for _ in range(7)]
    assert got == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2), (0, 3)]


def test_results_are_copies_owned_by_the_caller(leak_check):
    with BackgroundProc(counter_filled, [np.float64], [(4,)], n_proc=1) as bg:
        (first,) = bg.get(timeout=10)
        first[:] = -7.0
        (second,) = bg.get(timeout=10)
        (third,) = bg.get(timeout=10)
    # a view would have been overwritten by the worker's next result
    np.testing.assert_array_equal(first, [-7.0] * 4)
    np.testing.assert_array_equal(second, [2.0] * 4)
    np.testing.assert_array_equal(third, [3.0] * 4)


def test_workers_draw_different_random_numbers_reproducibly(leak_check):
    def draws(seed: int) -> list[tuple[np.ndarray, ...]]:
        with BackgroundProc(random_draws, n_proc=2, seed=seed) as bg:
            return [bg.get(timeout=10) for _ in range(4)]

    first = draws(seed=7)
    for stream in range(3):  # numpy, random, torch
        w0, w1 = first[0][stream], first[1][stream]
        assert not np.array_equal(w0, w1), f"RNG stream {stream} identical across workers"
        assert not np.array_equal(first[0][stream], first[2][stream]), "worker repeats itself"
    again = draws(seed=7)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_get_timeout_raises_and_result_stays_pending(leak_check):
    with BackgroundProc(slow_counter, [np.int64], [()], target_args=(0.6,)) as bg:
        with pytest.raises(parallel.TimeoutError, match=r"within 0\.2 s"):
            bg.get(timeout=0.2)
        bg.reset()  # the worker is still busy: must not be armed twice
        values = [int(bg.get(timeout=10)[0]) for _ in range(2)]
    assert values == [1, 2]
    assert issubclass(parallel.TimeoutError, RuntimeError)


def test_reset_after_keyboard_interrupt_in_get(leak_check):
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with BackgroundProc(slow_counter, [np.int64], [()], n_proc=2, target_args=(0.5,)) as bg:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(KeyboardInterrupt):
                bg.get()
            bg.reset()
            values = [int(bg.get(timeout=10)[0]) for _ in range(4)]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert values == [1, 1, 2, 2]


def test_exception_in_target_is_reraised_with_worker_traceback(leak_check):
    bg = BackgroundProc(fail_in_worker, [np.float64], [(2,)], n_proc=2, target_args=("boom-42",))
    try:
        with pytest.raises(WorkerError, match="boom-42") as excinfo:
            bg.get(timeout=10)
        message = str(excinfo.value)
        assert "Traceback (most recent call last)" in message
        assert "in fail_in_worker" in message
        assert "ValueError: boom-42" in message
        assert isinstance(excinfo.value, RuntimeError)
        # the pool stays usable: the next worker reports its own failure
        with pytest.raises(WorkerError, match="worker 1"):
            bg.get(timeout=10)
    finally:
        bg.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"shape": (3, 3), "dtype": "float32"},
            r"expected shape \(2, 2\) dtype float32, got shape \(3, 3\) dtype float32",
        ),
        (
            {"shape": (2, 2), "dtype": "float64"},
            r"expected shape \(2, 2\) dtype float32, got shape \(2, 2\) dtype float64",
        ),
        (
            {"shape": (2, 2), "dtype": "float32", "n": 2},
            r"returned 2 array\(s\) but 1 were declared",
        ),
    ],
)
def test_wrong_result_names_expected_and_got(leak_check, kwargs, match):
    with BackgroundProc(zeros_of, [np.float32], [(2, 2)], target_kwargs=kwargs) as bg:
        with pytest.raises(WorkerError, match=match):
            bg.get(timeout=10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_proc": 0}, ValueError, "n_proc must be a positive int, got 0"),
        ({"dtypes": [np.float32], "shapes": [(1,), (2,)]}, ValueError, "1 dtypes .* but 2 shapes"),
        ({"dtypes": [object], "shapes": [(1,)]}, ValueError, "cannot live in shared memory"),
        ({"target": 3}, TypeError, "target must be callable"),
    ],
)
def test_constructor_rejects_bad_arguments(leak_check, kwargs, error, match):
    kwargs = {"target": counter_filled, **kwargs}
    with pytest.raises(error, match=match):
        BackgroundProc(**kwargs)


def test_dead_worker_is_reported(leak_check):
    with BackgroundProc(counter_filled, [np.float64], [(4,)], n_proc=2) as bg:
        bg.get(timeout=10)  # worker 0 done; worker 1 is next
        os.kill(bg.worker_pids[1], signal.SIGKILL)
        # worker 1 may have handed in its item before the signal landed: that item is good,
        # and the get after it that waits on worker 1 reports the death
        with pytest.raises(WorkerError, match=r"worker 1 .* killed by SIGKILL"):
            for _ in range(3):
                bg.get(timeout=10)


def test_sigint_does_not_kill_workers(leak_check):
    with BackgroundProc(slow_counter, [np.int64], [()], n_proc=2, target_args=(0.2,)) as bg:
        for pid in bg.worker_pids:
            os.kill(pid, signal.SIGINT)  # lands while the workers sleep in the target
        values = [int(bg.get(timeout=10)[0]) for _ in range(4)]
        assert all(_live(pid) for pid in bg.worker_pids)
    assert values == [1, 1, 2, 2]


def test_fork_is_safe_with_torch_threads_running(leak_check):
    torch.set_num_threads(2)
    a = torch.randn(256, 256)
    (a @ a).sum()  # the intra-op pool has been used before the fork
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            (a @ a).sum()

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        with BackgroundProc(torch_matmul, n_proc=2) as bg:
            results = [bg.get(timeout=20)[0] for _ in range(4)]
    finally:
        stop.set()
        thread.join()
    assert all(np.isfinite(r).all() and r.shape == (1,) for r in results)


def test_bound_method_of_data_object(leak_check):
    data = ReadOnlyVolume()
    with BackgroundProc(data.getbatch, n_proc=2, target_args=(4,)) as bg:
        for _ in range(4):
            batch, z = bg.get(timeout=10)
            np.testing.assert_array_equal(batch, data.volume[int(z) : int(z) + 4])


def test_shutdown_is_idempotent_and_final(leak_check):
    bg = BackgroundProc(counter_filled, [np.float64], [(4,)], n_proc=2)
    names, pids = bg.shm_names, bg.worker_pids
    assert len(names) == 2 and all((SHM_DIR / n).exists() for n in names)
    bg.shutdown()
    bg.shutdown()
    assert bg.closed
    assert not any((SHM_DIR / n).exists() for n in names)
    assert not any(_live(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="after shutdown"):
        bg.get()


def test_garbage_collection_shuts_down(leak_check):
    bg = BackgroundProc(counter_filled, [np.float64], [(4,)], n_proc=2)
    bg.get(timeout=10)
    names = bg.shm_names
    del bg
    gc.collect()
    assert not any((SHM_DIR / n).exists() for n in names)


def test_profile_records_and_logs_timings(leak_check, caplog):
    caplog.set_level(logging.INFO, logger="voxelboard")
    with BackgroundProc(counter_filled, [np.float64], [(4,)], n_proc=2, profile=True) as bg:
        for _ in range(3):
            bg.get(timeout=10)
        timings = bg.timings
    assert len(timings["wait"]) == len(timings["copy"]) == 3
    assert [len(t) for t in timings["target"]] == [2, 1]
    assert all(t >= 0 for t in [*timings["wait"], *timings["copy"]])
    logged = [r.getMessage() for r in caplog.records if "BackgroundProc worker" in r.getMessage()]
    assert len(logged) == 3 and "target" in logged[0]


PARENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from trainer.parallel import BackgroundProc

    def make():
        return np.zeros((8, 8), np.float32), np.int64(1)

    bg = BackgroundProc(make, n_proc=2)
    bg.get(timeout=10)
    print(json.dumps({"pids": bg.worker_pids, "shm": bg.shm_names}), flush=True)
    time.sleep(60)
    """
)


def test_sigkilled_parent_leaves_no_workers_and_no_shared_memory():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(parent.stdout.readline())
        assert len(info["pids"]) == 2 and len(info["shm"]) == 4
        assert all(_live(pid) for pid in info["pids"])
        assert all((SHM_DIR / name).exists() for name in info["shm"])
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not any(_live(p) for p in info["pids"]) and not any(
                (SHM_DIR / n).exists() for n in info["shm"]
            ):
                break
            time.sleep(0.05)
        assert not any(_live(p) for p in info["pids"]), "workers outlived their parent"
        assert not any((SHM_DIR / n).exists() for n in info["shm"]), "shared memory left"
        # the resource tracker exits once the workers are gone; it must not have had to
        # clean up (which it would announce as "leaked shared_memory objects")
        _, stderr = parent.communicate(timeout=10)
        assert "leaked" not in stderr, stderr
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


# ---------------------------------------------------------------------------------------
# SharedQ


def fill_after(arrays, shapes, value: float, delay: float) -> None:
    time.sleep(delay)
    SharedQ.shm2ndarray(arrays[0], shapes[0], np.float32)[...] = value
    SharedQ.shm2ndarray(arrays[1], shapes[1], np.int16)[...] = int(value)


def fail_job(arrays, shapes) -> None:
    raise KeyError("missing-cube-17")


def test_sharedq_is_fifo_and_returns_copies(leak_check):
    spec = ([np.float32, np.int16], [(2, 3), (5,)])
    with SharedQ() as q:
        # later jobs finish first; get() must still return them in submission order
        for value, delay in [(1.0, 0.3), (2.0, 0.15), (3.0, 0.0)]:
            q.startproc(*spec, fill_after, target_args=(value, delay))
        assert len(q) == 3
        results = [q.get() for _ in range(3)]
        assert len(q) == 0
    for value, (data, label) in zip([1.0, 2.0, 3.0], results):
        np.testing.assert_array_equal(data, np.full((2, 3), value, np.float32))
        np.testing.assert_array_equal(label, np.full(5, int(value), np.int16))
        assert data.flags.owndata and label.flags.owndata


def test_sharedq_error_is_reraised_with_traceback(leak_check):
    with SharedQ() as q:
        q.startproc([np.float32], [(2,)], fail_job)
        with pytest.raises(WorkerError, match="missing-cube-17") as excinfo:
            q.get()
    assert "in fail_job" in str(excinfo.value)


def test_sharedq_warns_when_too_few_jobs_queued(leak_check, caplog):
    caplog.set_level(logging.WARNING, logger="voxelboard")
    with SharedQ(n_proc=2) as q:
        for value in (1.0, 2.0, 3.0):
            q.startproc([np.float32, np.int16], [(1,), (1,)], fill_after, (value, 0.0))
        q.get()  # two left: no warning
        assert not caplog.records
        q.get()
    assert "1 job(s) left queued, fewer than n_proc=2" in caplog.text


def test_sharedq_shutdown_stops_queued_jobs(leak_check):
    q = SharedQ()
    q.startproc([np.float32, np.int16], [(1,), (1,)], fill_after, (1.0, 30.0))
    q.shutdown()
    q.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        q.startproc([np.float32], [(1,)], fill_after, (1.0, 0.0))
    with pytest.raises(IndexError, match="empty queue"):
        q.get()
