"""The block-claim engine of distributed predict and segment (trainer.block_claims) and its
progress reader (trainer.jobs): real worker processes, a real SIGKILL, no model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.block_jobs import cap_jobs, worker_plans
from trainer.block_claims import (
    BlockWorker,
    JobError,
    check_writable,
    locked_chunks,
    shared_chunks,
    write_job,
)
from trainer.jobs import job_progress

REPO = Path(__file__).resolve().parents[2]

#: a worker doing 4 blocks of step 's': each block writes its worker's name to blocks/<i>;
#: 'hold' makes block 0 never end (a worker to kill mid-block), 'fail' makes block 2 raise,
#: 'die' kills the worker in block 3
CHILD = """
import os, signal, sys, time
from pathlib import Path
from trainer.block_claims import BlockWorker
folder, name, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def work(i):
    if mode == 'hold' and i == 0:
        time.sleep(600)
    if mode == 'fail' and i == 2:
        raise OSError('disk on fire')
    if mode == 'die' and i == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    (folder.parent.parent / 'blocks' / str(i)).write_text(name)
with BlockWorker(folder, name, int(sys.argv[4]), 2, poll=0.05, heartbeat=0.2) as w:
    w.run_step('s', int(sys.argv[5]), work)
"""


def job(tmp_path: Path, n: int = 4) -> Path:
    folder = tmp_path / "out.zarr" / ".voxelboard-job"
    write_job(folder, {"kind": "predict", "key": "prob", "command": ["x"], "backend": "local",
                       "steps": [{"name": "s", "blocks": n}]})  # fmt: skip
    (tmp_path / "blocks").mkdir()
    return folder


def worker(folder: Path, name: str, mode: str, rank: int, n: int = 4) -> subprocess.Popen:
    return subprocess.Popen(
        # named as a real worker is (``-m trainer.block_worker OUTPUT``), so Stop signals it
        [
            sys.executable,
            "-c",
            CHILD,
            str(folder),
            name,
            mode,
            str(rank),
            str(n),
            "trainer.block_worker",
            str(folder.parent.resolve()),
        ],  # fmt: skip
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )


def lease_of(path: Path) -> dict | None:
    """A lease's content once it is written whole."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_killed_mid_block_has_its_block_taken_over(tmp_path):
    folder = job(tmp_path)
    a = worker(folder, "a", "hold", 0)  # rank 0 starts at block 0 and holds it
    b = None
    try:
        wait_for(lambda: lease_of(folder / "claims" / "s-0.0"), "a's lease on block 0")
        b = worker(folder, "b", "ok", 1)
        lease = json.loads((folder / "claims" / "s-0.0").read_text())
        assert (lease["worker"], lease["pid"], lease["host"]) == ("a", a.pid, socket.gethostname())
        # b does the other three, then waits on a live holder
        wait_for(lambda: len(list((tmp_path / "blocks").iterdir())) == 3, "b's three blocks")
        time.sleep(0.3)
        assert not (tmp_path / "blocks" / "0").exists() and b.poll() is None
        a.send_signal(signal.SIGKILL)
        a.wait()
        assert b.wait(60) == 0, b.stderr.read()
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert {p.name: p.read_text() for p in (tmp_path / "blocks").iterdir()} == {
        "0": "b", "1": "b", "2": "b", "3": "b"}  # fmt: skip
    done = json.loads((folder / "done" / "s-0.json").read_text())
    assert (done["worker"], done["gen"]) == ("b", 1)
    progress = job_progress(tmp_path / "out.zarr")
    assert progress["blocks"] == {"total": 4, "done": 4, "claimed": 0, "failed": 0, "retried": 1}
    assert progress["complete"] and progress["eta_s"] == 0.0
    states = {w["worker"]: (w["state"], w["blocks"]) for w in progress["workers"]}
    assert states == {"a": ("running", 0), "b": ("finished", 4)}  # a never said goodbye
    later = job_progress(tmp_path / "out.zarr", now=time.time() + 10_000)
    assert {w["worker"]: w["state"] for w in later["workers"]} == {"a": "lost", "b": "finished"}


def test_a_failing_block_is_recorded_and_the_worker_stops(tmp_path):
    folder = job(tmp_path)
    p = worker(folder, "c", "fail", 0)
    try:
        assert p.wait(60) == 1
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "disk on fire" in p.stderr.read()
    progress = job_progress(tmp_path / "out.zarr")
    assert progress["blocks"]["failed"] == 1 and progress["blocks"]["done"] == 2
    assert progress["blocks"]["claimed"] == 1 and not progress["complete"]
    (w,) = progress["workers"]
    assert w["state"] == "failed" and "OSError: disk on fire" in w["error"]


def test_a_resubmission_does_only_the_missing_blocks(tmp_path):
    folder = job(tmp_path, n=6)
    first = worker(folder, "first", "die", 0, n=6)  # blocks 0, 1, 2, then killed in 3
    try:
        assert first.wait(60) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert sorted(p.name for p in (tmp_path / "blocks").iterdir()) == ["0", "1", "2"]
    again: list[int] = []
    with BlockWorker(folder, "second") as w:
        assert w.run_step("s", 6, again.append) == 3
    assert sorted(again) == [3, 4, 5]
    assert job_progress(tmp_path / "out.zarr")["blocks"]["retried"] == 1  # block 3
    skipped: list[int] = []
    with BlockWorker(folder, "third") as w:  # blocks an older record lists count as done
        assert w.run_step("t", 3, skipped.append, already=[0, 2]) == 1
    assert skipped == [1]


def test_a_lease_from_another_host_is_taken_over_only_once_silent(tmp_path):
    folder = job(tmp_path)
    lease = folder / "claims" / "s-0.0"
    lease.write_text(json.dumps({"worker": "far", "host": "elsewhere", "pid": 1, "gen": 0}))
    w = BlockWorker(folder, "near", lease_timeout=30)
    assert w.claim("s", 0) is None  # beating (mtime now): alive
    os.utime(lease, (time.time() - 31, time.time() - 31))
    assert w.claim("s", 0) == 1
    assert w.claim("s", 0) is None  # this worker's own lease is live now
    ours = json.loads((folder / "claims" / "s-0.1").read_text())
    assert (ours["worker"], ours["pid"], ours["gen"]) == ("near", os.getpid(), 1)


def test_throughput_and_eta_come_from_the_done_markers(tmp_path):
    folder = job(tmp_path, n=10)
    for i, end in enumerate([100.0, 102.0, 104.0, 110.0]):
        (folder / "done" / f"s-{i}.json").write_text(json.dumps({"start": end - 1, "end": end}))
    p = job_progress(tmp_path / "out.zarr", now=111.0, window=3)
    assert p["throughput"] == pytest.approx(2 / (110 - 102))  # the last 3 markers
    assert p["eta_s"] == pytest.approx(6 / (2 / 8))
    assert (p["started"], p["last_done"]) == (99.0, 110.0)
    assert job_progress(tmp_path / "out.zarr", key="other") is None
    assert job_progress(tmp_path / "nothing.zarr") is None


@pytest.mark.parametrize(
    "box, chunks, shape, shared",
    [
        ((slice(0, 64),), (64,), (128,), []),  # one whole chunk
        ((slice(10, 64),), (64,), (128,), [(0,)]),  # starts inside chunk 0
        ((slice(64, 100),), (64,), (100,), []),  # the array's last (short) chunk, whole
        ((slice(60, 130),), (64,), (200,), [(0,), (2,)]),  # both ends inside
        ((slice(0, 64), slice(0, 70)), (64, 64), (64, 128), [(0, 1)]),
        ((slice(0, 32), slice(0, 64)), (64, 64), (64, 64), [(0, 0)]),
    ],
)
def test_shared_chunks_are_those_a_box_covers_only_in_part(box, chunks, shape, shared):
    assert shared_chunks(box, chunks, shape) == shared


def test_chunk_locks_exclude_another_process_and_die_with_it(tmp_path):
    lock = tmp_path / "write.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_CREAT | os.O_RDWR)\n"
         "fcntl.lockf(fd, fcntl.LOCK_EX, 1, 5)\nprint('held', flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    import fcntl

    try:
        assert holder.stdout.readline().strip() == "held"
        fd = os.open(lock, os.O_RDWR)
        with pytest.raises(OSError):
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 5)  # chunk (1, 1) of a 4x4 grid
        os.close(fd)
        with locked_chunks(lock, [(1, 0)], (4, 4)):  # byte 4: free
            pass
        holder.kill()
        holder.wait()
        with locked_chunks(lock, [(1, 1)], (4, 4)):  # the dead holder's lock is gone
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_jobs_over_the_blocks_are_capped_with_a_note():
    steps = [{"name": "faces", "blocks": 4}, {"name": "merge", "blocks": 1}]
    assert cap_jobs(3, steps) == (3, None)
    n, note = cap_jobs(9, steps)
    assert n == 4 and note == "9 workers for 4 blocks: 4 are started (one per block)"


@pytest.mark.parametrize(
    ("n", "device", "gpus", "visible", "devices"),
    [
        (2, None, 2, ["0", "1"], ["cuda", "cuda"]),  # one GPU each
        (5, "auto", 2, ["0", "1", "0", "1", "0"], ["cuda"] * 5),  # more workers: round robin
        (3, "cuda", 4, ["0", "1", "2"], ["cuda"] * 3),
        (2, "cuda:1", 1, ["0", "0"], ["cuda", "cuda"]),
        (2, None, 0, [None, None], ["cpu", "cpu"]),  # no GPU: the CPU
        (2, "auto", 0, [None, None], ["cpu", "cpu"]),
        (2, "cpu", 4, [None, None], ["cpu", "cpu"]),  # asked for the CPU: GPUs left alone
    ],
)
def test_local_workers_get_one_gpu_each_round_robin_or_the_cpu(n, device, gpus, visible, devices):
    plans = worker_plans("out.zarr", n, device, gpus, tag=77)
    assert [env.get("CUDA_VISIBLE_DEVICES") for _, _, env in plans] == visible
    assert all(set(env) <= {"CUDA_VISIBLE_DEVICES"} for _, _, env in plans)
    for k, (name, argv, _) in enumerate(plans):
        assert name == f"local-{k}-77"
        assert argv[:4] == [sys.executable, "-m", "trainer.block_worker",
                            str(Path("out.zarr").resolve())]  # fmt: skip
        options = dict(zip(argv[4::2], argv[5::2]))
        assert options == {"--device": devices[k], "--worker": name, "--rank": str(k),
                           "--size": str(n)}  # fmt: skip


def test_an_unwritable_output_folder_is_named(tmp_path):
    check_writable(tmp_path / "new" / "out.zarr")  # the nearest existing parent is writable
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JobError, match=f"cannot write the output folder {blocker}"):
        check_writable(blocker / "out.zarr")


def test_stop_ends_the_local_workers_and_resume_is_the_submitting_command(tmp_path):
    from app.block_jobs import resume_argv, stop_job

    folder = job(tmp_path)
    a = worker(folder, "a", "hold", 0)
    try:
        wait_for(lambda: lease_of(folder / "claims" / "s-0.0"), "a's lease on block 0")
        assert stop_job(tmp_path / "out.zarr") == ["a"]
        assert a.wait(30) == -signal.SIGTERM
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert resume_argv(tmp_path / "out.zarr") == ["x"]


def _markers(folder: Path, step: str, blocks: range, t0: float) -> None:
    for i in blocks:  # block i: started at t0 + i, 0.5 s long, 0.25 + i/1000 CPU seconds
        (folder / "done" / f"{step}-{i}.json").write_text(json.dumps(
            {"worker": "w", "start": t0 + i, "end": t0 + i + 0.5, "cpu_s": 0.25 + i / 1000}))  # fmt: skip


def test_repeated_progress_reads_equal_a_fresh_read_after_new_markers(tmp_path):
    import shutil

    folder = tmp_path / "out.zarr" / ".voxelboard-job"
    write_job(folder, {"kind": "predict", "key": "prob", "command": ["x"], "backend": "local",
                       "created": 1.0, "steps": [{"name": "s", "blocks": 200}]})  # fmt: skip
    t0 = 1_000_000.0
    _markers(folder, "s", range(0, 120), t0)
    (folder / "done" / "s-120.json").write_text('{"end": ')  # being written: no times yet
    first = job_progress(tmp_path / "out.zarr", now=t0, window=50)
    assert first["blocks"]["done"] == 121 and first["started"] == t0
    files = sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    _markers(folder, "s", range(120, 150), t0)  # new markers, the torn one whole now
    again = job_progress(tmp_path / "out.zarr", now=t0, window=50)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*")) != files
    shutil.copytree(tmp_path / "out.zarr", tmp_path / "copy.zarr")  # never read before
    fresh = job_progress(tmp_path / "copy.zarr", now=t0, window=50)
    assert again == fresh
    # against the formulas: throughput over the newest 50 ends, mean CPU s, first start
    ends = [t0 + i + 0.5 for i in range(150)]
    assert again["throughput"] == pytest.approx(49 / (ends[-1] - ends[-50]))
    assert again["cpu_s_per_block"] == pytest.approx(sum(0.25 + i / 1000 for i in range(150)) / 150)
    assert (again["started"], again["last_done"]) == (t0, ends[-1])
    assert again["eta_s"] == pytest.approx(50 / again["throughput"])
    assert again["blocks"]["done"] == 150 and again["steps"][0]["done"] == 150
    # a resubmission over a new output (another job 'created') forgets the old times
    shutil.rmtree(folder / "done")
    write_job(folder, {**json.loads((folder / "job.json").read_text()), "created": 2.0})
    _markers(folder, "s", range(0, 3), t0 + 500)
    redo = job_progress(tmp_path / "out.zarr", now=t0, window=50)
    assert (redo["blocks"]["done"], redo["started"]) == (3, t0 + 500)


def test_progress_writes_nothing_in_the_job_folder(tmp_path):
    folder = job(tmp_path)
    _markers(folder, "s", range(4), 5.0)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert job_progress(tmp_path / "out.zarr")["complete"]
    assert job_progress(tmp_path / "out.zarr")["complete"]
    assert sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
