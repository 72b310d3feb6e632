"""Blocks shared by many worker processes through files in the output: claims, leases, done.

The engine of ``run.py predict|segment --workers N`` and ``--backend slurm --jobs N``. No
scheduler process: every worker walks the same block grid and claims a block by creating a
file with ``O_CREAT | O_EXCL``, which the file system grants to exactly one of them, on one
machine or on many (NFS, Lustre, GPFS). All files live in the output's job folder
(``JOB_DIR``), one owner per file:

* ``job.json``: what the job is (kind, command, backend, Slurm job id, steps, the workers'
  arguments); written once by the submitting command (``write_job``).
* ``claims/<step>-<i>.<gen>``: a lease on block ``i`` of ``step``, naming host, pid, worker
  and time. Generation 0 is the first claim. A worker that finds the newest generation's
  holder dead creates generation ``gen + 1`` (again ``O_EXCL``: one taker wins), so every
  generation above 0 is one retry. A holder is dead when it ran on this host and its pid is
  gone (or is another process now), or, on another host, when its lease file's mtime is older
  than ``lease_timeout``: a holder touches its lease every ``heartbeat`` seconds while the
  block runs.
* ``done/<step>-<i>.json``: written (temp file, fsync, rename) only after the block's own
  ``work`` returned, i.e. after its data are durably on disk; it names the worker, the
  block's start and end times and the CPU seconds the worker spent on it (all its threads).
* ``failed/<step>-<i>.<worker>.json``: a block whose work raised; the worker stops, its lease
  stays, and another worker takes the block over when the holder is gone.
* ``workers/<worker>.json``: each worker's state (running, waiting, finished, stopped,
  failed), host,
  pid, blocks done and last beat; written only by that worker.
* ``write.lock``: ``fcntl`` byte-range locks, one byte per output chunk, held while a block
  writes a chunk it shares with a neighbouring block (``locked_chunks``). The kernel drops a
  dead process's locks, so they never go stale.

A block done twice (a slow holder taken for dead) is written twice with the same bytes: the
work is deterministic, so this costs time, never correctness. ``trainer.jobs.job_progress``
reads these files for a progress view.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from trainer.runs.atomic import atomic_write_json

__all__ = [
    "JOB_DIR",
    "BlockWorker",
    "JobError",
    "check_writable",
    "job_folder",
    "locked_chunks",
    "read_job",
    "write_job",
]

#: the job folder inside a zarr output (zarr ignores dot-names)
JOB_DIR = ".voxelboard-job"
JOB_FILE = "job.json"
#: seconds without a heartbeat after which a holder on another host counts as dead
LEASE_TIMEOUT_S = 120.0
#: seconds between a holder's touches of its lease (and its worker file)
HEARTBEAT_S = 10.0
#: seconds between looks at blocks other workers hold
POLL_S = 0.5


class JobError(RuntimeError):
    """A job folder that cannot be used: unwritable, or a block whose work failed."""


def job_folder(output: str | os.PathLike) -> Path:
    """The job folder of ``output``: inside a zarr folder, beside an HDF5 file
    (``prob.h5.voxelboard-job``; only a one-process job writes HDF5)."""
    path = Path(output)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return path.with_name(path.name + JOB_DIR)
    return path / JOB_DIR


def write_job(folder: Path, job: dict[str, Any]) -> None:
    """Write ``job.json`` (atomically) and make the folders the workers use."""
    for sub in ("claims", "done", "failed", "workers"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / JOB_FILE, job)


def read_job(folder: Path) -> dict[str, Any] | None:
    """``job.json``, or ``None`` where there is none (or it is unreadable)."""
    try:
        return json.loads((folder / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None


def check_writable(path: str | os.PathLike) -> None:
    """Create and remove a probe file in ``path`` (or its nearest existing parent).

    Raises:
        JobError: one line naming the folder and why it cannot be written.
    """
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    probe = folder / f".voxelboard-probe-{socket.gethostname()}-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise JobError(
            f"cannot write the output folder {folder} ({e.strerror or e}): the workers need "
            "a folder they can all write; give an OUTPUT on such a file system"
        ) from None


def block_name(step: str, i: int) -> str:
    """The file stem of block ``i`` of ``step`` (claims, done markers, failures)."""
    return f"{step}-{i}"


def _proc_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks (Linux), to tell a reused pid; ``None``
    where ``/proc`` cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _alive_here(pid: int, started: str | None) -> bool:
    """Whether ``pid`` on this host is running (not a zombie) and is the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    if state in ("Z", "X"):
        return False
    return started is None or _proc_start(pid) in (None, started)


class BlockWorker:
    """One worker's side of the job: claim blocks, do them, mark them done.

    Args:
        folder: the job folder (``job_folder(output)``).
        worker: this worker's name, unique in the job (``local-0``, ``slurm-123_4``).
        rank: this worker's place among ``size`` (where it starts in the grid, so that
            workers start far apart and meet only at the end).
        size: the number of workers expected.
        lease_timeout: seconds after which a silent holder on another host is dead.
        heartbeat: seconds between lease touches and worker-file beats; ``None``: none, the
            worker's own ``save_state`` calls are its beats (a one-process job, whose writes
            stay between its blocks).
        poll: seconds between looks at blocks held by others.
    """

    def __init__(self, folder: Path, worker: str, rank: int = 0, size: int = 1, *,
                 lease_timeout: float = LEASE_TIMEOUT_S, heartbeat: float | None = HEARTBEAT_S,
                 poll: float = POLL_S) -> None:  # fmt: skip
        self.folder, self.worker = Path(folder), worker
        self.rank, self.size = max(rank, 0), max(size, 1)
        self.lease_timeout, self.heartbeat, self.poll = lease_timeout, heartbeat, poll
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started = _proc_start(self.pid)
        self.state: dict[str, Any] = {
            "worker": worker, "host": self.host, "pid": self.pid, "state": "running",
            "since": time.time(), "beat": time.time(), "blocks": 0, "step": None,
            "block": None,
        }  # fmt: skip
        self._current: Path | None = None
        self._did = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- the worker's life -----------------------------------------------------------------

    def __enter__(self) -> BlockWorker:
        for sub in ("claims", "done", "failed", "workers"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.save_state()
        if self.heartbeat is not None:
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        stopped = kind is not None and issubclass(kind, (SystemExit, KeyboardInterrupt))
        self.state["state"] = "finished" if kind is None else "stopped" if stopped else "failed"
        if kind is not None and not stopped:
            self.state["error"] = f"{kind.__name__}: {value}"[:500]
        self.state["block"] = None
        self.save_state()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            current = self._current
            if current is not None:
                with contextlib.suppress(OSError):
                    os.utime(current)
            self.state["beat"] = time.time()
            with contextlib.suppress(OSError):
                self.save_state()

    def save_state(self) -> None:
        """Write this worker's file (``workers/<worker>.json``) from ``state`` now."""
        atomic_write_json(self.folder / "workers" / f"{self.worker}.json", self.state,
                          fsync=False)  # fmt: skip

    # -- blocks ----------------------------------------------------------------------------

    def is_done(self, step: str, i: int) -> bool:
        """Whether block ``i`` of ``step`` has its done marker."""
        return (self.folder / "done" / f"{block_name(step, i)}.json").exists()

    def run_step(self, step: str, n: int, work: Callable[[int], None],
                 already: Iterable[int] = ()) -> int:  # fmt: skip
        """Do blocks of ``step`` until all ``n`` are done by someone; returns how many this
        worker did. ``work(i)`` must leave block ``i``'s data durably on disk when it returns;
        ``already`` lists blocks known done from elsewhere (an older record).

        The worker walks the grid from its own place (``rank * n // size``). Before its next
        new block it looks again, every ``poll`` seconds, at the blocks others held when it
        passed them, and (every ``poll * size / 12.5`` seconds, at least ``poll``: one small
        read per worker) at the blocks the other workers' files say they are on, so a dead
        holder's block is taken over about one block after its death can be seen.

        Raises:
            Exception: whatever ``work`` raised (the block is recorded as failed first).
        """
        skip = set(already)
        start = self.rank * n // self.size
        todo = deque(i for i in ((start + k) % n for k in range(n)) if i not in skip)
        held: list[int] = []
        looked = scanned = time.monotonic()
        did = 0
        self.state["step"] = step
        while todo or held:
            if time.monotonic() - scanned >= self.poll * max(1.0, self.size / 12.5):
                # the blocks others are on: a dead one's block first (one read per worker)
                for i in self._others_blocks(step, n):
                    if i not in skip and self._try(step, i, work):
                        did += self._did
                scanned = time.monotonic()
            if held and (not todo or time.monotonic() - looked >= self.poll):
                still = []
                for i in held:
                    if not self._try(step, i, work):
                        still.append(i)
                    did += self._did
                held, looked = still, time.monotonic()
            if todo:
                i = todo.popleft()
                if not self._try(step, i, work):
                    held.append(i)
                did += self._did
            elif held:
                self._set("waiting")
                time.sleep(self.poll)
        self._set("running")
        return did

    def _others_blocks(self, step: str, n: int) -> list[int]:
        """The blocks of ``step`` other workers' files say they are on."""
        found = []
        for path in (self.folder / "workers").glob("*.json"):
            if path.stem == self.worker:
                continue
            try:
                block = json.loads(path.read_text()).get("block") or ""
            except (OSError, ValueError, AttributeError):
                continue
            name, _, index = str(block).rpartition("-")
            if name == step and index.isdigit() and int(index) < n:
                found.append(int(index))
        return found

    def _try(self, step: str, i: int, work: Callable[[int], None]) -> bool:
        """Do block ``i`` if it is not done and this worker gets its lease; whether it is
        off this worker's hands (done by anyone). Sets ``_did`` to the blocks done here."""
        self._did = 0
        if self.is_done(step, i):
            return True
        gen = self.claim(step, i)
        if gen is None:
            return False
        if not self.is_done(step, i):  # not finished meanwhile by a holder taken for dead
            self._do(step, i, gen, work)
            self._did = 1
        return True

    def _set(self, state: str) -> None:
        if self.state["state"] != state:
            self.state["state"] = state
            self.save_state()

    def _lease(self, step: str, i: int, gen: int) -> Path:
        return self.folder / "claims" / f"{block_name(step, i)}.{gen}"

    def claim(self, step: str, i: int) -> int | None:
        """Take a lease on block ``i`` of ``step``: its generation (0 first, above 0 a take-
        over from a dead holder), or ``None`` while a live worker holds it (or another worker
        won the race to replace a dead one)."""
        gen = 0
        while self._lease(step, i, gen).exists():
            gen += 1
        if gen > 0 and self._holder_alive(self._lease(step, i, gen - 1)):
            return None
        lease = self._lease(step, i, gen)
        body = {"worker": self.worker, "host": self.host, "pid": self.pid,
                "pid_start": self.started, "time": time.time(), "gen": gen}  # fmt: skip
        try:
            fd = os.open(lease, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        return gen

    def _holder_alive(self, lease: Path) -> bool:
        try:
            held = json.loads(lease.read_text())
            age = time.time() - lease.stat().st_mtime
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return True  # being written this instant
        if held.get("host") == self.host and held.get("pid") == self.pid:
            # this process: a worker before this one (they run one at a time) left it
            return held.get("worker") == self.worker
        if held.get("host") == self.host and isinstance(held.get("pid"), int):
            return _alive_here(held["pid"], held.get("pid_start"))
        return age <= self.lease_timeout

    def _do(self, step: str, i: int, gen: int, work: Callable[[int], None]) -> None:
        self._current = self._lease(step, i, gen)
        self.state.update(block=f"{step}-{i}", state="running")
        self.save_state()
        began, cpu = time.time(), time.process_time()
        try:
            work(i)
        except Exception as e:  # a stop (SystemExit, KeyboardInterrupt) is no failure
            atomic_write_json(
                self.folder / "failed" / f"{block_name(step, i)}.{self.worker}.json",
                {"worker": self.worker, "host": self.host, "pid": self.pid, "gen": gen,
                 "time": time.time(), "error": f"{type(e).__name__}: {e}"[:1000]},
            )  # fmt: skip
            raise
        finally:
            self._current = None
        atomic_write_json(
            self.folder / "done" / f"{block_name(step, i)}.json",
            {"worker": self.worker, "host": self.host, "pid": self.pid, "gen": gen,
             "start": began, "end": time.time(), "cpu_s": time.process_time() - cpu},
        )  # fmt: skip
        self.state["blocks"] += 1
        self.state["beat"] = time.time()
        self.save_state()


# -- writes that share a chunk ------------------------------------------------------------


def shared_chunks(
    box: Sequence[slice], chunks: Sequence[int], shape: Sequence[int]
) -> list[tuple[int, ...]]:
    """The chunk positions ``box`` touches without covering them whole (a neighbouring
    block writes the rest of them)."""
    ranges, partial = [], []
    for s, c, n in zip(box, chunks, shape):
        first, last = s.start // c, (s.stop - 1) // c
        ranges.append(range(first, last + 1))
        partial.append(
            {k for k in (first, last) if k * c < s.start or min((k + 1) * c, n) > s.stop}
        )
    out = []
    for pos in itertools.product(*ranges):
        if any(k in p for k, p in zip(pos, partial)):
            out.append(pos)
    return out


@contextlib.contextmanager
def locked_chunks(lock_file: Path, positions: Sequence[tuple[int, ...]],
                  grid: Sequence[int]) -> Iterator[None]:  # fmt: skip
    """Hold an exclusive ``fcntl`` lock on one byte per chunk position (C order in ``grid``)
    of ``lock_file``, taken in increasing order so two writers never wait on each other.

    Raises:
        JobError: the file system offers no locks (``ENOLCK``, ``ENOSYS``; Lustre needs the
            ``flock`` mount option).
    """
    if not positions:
        yield
        return
    index = sorted({_linear(p, grid) for p in positions})
    fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for k in index:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, k)
            except OSError as e:
                if e.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise JobError(
                        f"{lock_file}: the file system offers no file locks ({e.strerror}); "
                        "workers sharing chunks need them (Lustre: mount with -o flock), or "
                        "give a block shape that is a multiple of the output's chunks"
                    ) from None
                raise
        yield
    finally:
        os.close(fd)  # drops every lock this process holds on the file


def _linear(pos: Sequence[int], grid: Sequence[int]) -> int:
    k = 0
    for p, g in zip(pos, grid):
        k = k * g + p
    return k
