"""Background workers that hand numpy arrays to the training loop through shared memory.

Two tools, both with ELEKTRONN2's API:

``BackgroundProc``
    A fixed pool of reusable worker processes that all call the same ``target`` (typically a
    ``getbatch`` method). Each worker owns one set of shared-memory output arrays and computes
    the next result as soon as its previous one has been taken, so batches are prefetched
    while the model trains. ``get()`` takes results round-robin and returns copies.

``SharedQ``
    A FIFO of one-shot processes; each job writes into shared arrays handed to it and exits.

Design notes (what the code relies on; the worker plumbing both tools share, from worker
identity and seeding to the shared-memory blocks, is in ``trainer.workers``):

* **Start method: ``fork``.** Workers are forked, so a large read-only data object that
  ``target`` is bound to (``BackgroundProc(data.getbatch, ...)``) is shared copy-on-write
  instead of being pickled into every worker, and the shared-memory blocks are inherited
  already mapped. Forking a parent that has imported torch and runs threads is safe for
  what the worker does here: Python re-initialises its own locks after ``fork``, and each
  worker pins torch to one intra-op thread (as ``torch.utils.data.DataLoader`` workers do),
  because an OpenMP pool used by the parent before the fork must not be used by the child.
  A *user* thread that holds a lock the target also needs at the moment of the fork can
  still deadlock the child; keep such threads away from the data path. Platforms without
  ``fork`` are not supported.
* **Random numbers.** Forked workers start with the parent's RNG state, so each worker
  re-seeds numpy's global RNG, :mod:`random` and (if already imported) torch from
  ``(seed, worker index)``; see :func:`get_worker_info`.
* **No busy waiting.** Parent and each worker talk over one pipe; both sides block in
  ``poll`` with a timeout. A worker wakes every ``ORPHAN_CHECK_S`` seconds to check whether
  its parent is still alive; if the parent was killed it unlinks the shared memory (and
  tells Python's resource tracker, which the forked worker shares with the parent) and exits,
  so neither processes nor ``/dev/shm`` entries nor "leaked shared_memory" warnings remain.
* **Ctrl+C.** Workers ignore SIGINT: the terminal sends it to the whole process group, and
  the parent (the interactive shell of the trainer) decides what happens next. Call
  :meth:`BackgroundProc.reset` after the parent was interrupted inside ``get()``.
* **Errors.** An exception in ``target`` is sent to the parent with its formatted traceback
  and raised there by the next ``get()`` as :class:`WorkerError` (a ``RuntimeError``).

Example:
    >>> import numpy as np
    >>> def make_batch():
    ...     return np.random.rand(1, 1, 8, 8).astype(np.float32), np.zeros(1, np.int64)
    >>> with BackgroundProc(make_batch, n_proc=2) as bg:  # doctest: +SKIP
    ...     data, label = bg.get()
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
import traceback
import weakref
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from trainer.workers import (
    ORPHAN_CHECK_S,
    WorkerInfo,
    block_view,
    close_quietly,
    derive_seed,
    describe_exit,
    draw_base_seed,
    get_worker_info,
    new_block,
    normalise_specs,
    result_items,
    sigint_blocked,
    unlink_quietly,
    worker_init,
)

# WorkerInfo and get_worker_info live with the worker plumbing (trainer.workers); a target
# finds them here, beside the tools that start it
__all__ = [
    "BackgroundProc",
    "SharedQ",
    "TimeoutError",
    "WorkerError",
    "WorkerInfo",
    "get_worker_info",
]

logger = logging.getLogger("voxelboard")

#: how long shutdown() waits for workers to finish their current call before SIGTERM
_SHUTDOWN_GRACE_S = 0.5
#: per-list cap on profile timings, so a long run with profile=True stays bounded
_MAX_TIMINGS = 10_000

_GO = b"g"
_STOP = b"s"


# shadows the builtin inside this module on purpose: the reference API names it so
class TimeoutError(RuntimeError):
    """``BackgroundProc.get(timeout=...)`` waited longer than ``timeout`` seconds."""


class WorkerError(RuntimeError):
    """A worker's target raised, returned arrays of the wrong shape/dtype, or the worker died.

    The message contains the worker's formatted traceback.
    """


# --------------------------------------------------------------------------------------
# BackgroundProc


def _store_result(result: Any, views: Sequence[np.ndarray]) -> None:
    """Copy a target's result into the worker's shared arrays, refusing any mismatch."""
    items = result_items(result)
    if len(items) != len(views):
        raise ValueError(
            f"target returned {len(items)} array(s) but {len(views)} were declared "
            f"(shapes {[v.shape for v in views]}); the target must return the same number of "
            "arrays every call"
        )
    for i, (item, view) in enumerate(zip(items, views)):
        arr = np.asarray(item)
        if arr.shape != view.shape or arr.dtype != view.dtype:
            raise ValueError(
                f"target result #{i}: expected shape {view.shape} dtype {view.dtype}, "
                f"got shape {arr.shape} dtype {arr.dtype}; every call must return the "
                "declared shapes and dtypes (fix the target or pass matching dtypes=/shapes=)"
            )
        view[...] = arr


def _bg_worker_main(
    info: WorkerInfo,
    conn: Connection,
    views: list[np.ndarray],
    blocks: list[SharedMemory],
    target: Callable[..., Any],
    args: tuple,
    kwargs: dict[str, Any],
    parent_pid: int,
) -> None:
    """Loop of one BackgroundProc worker: wait for 'go', run target, write, reply."""
    worker_init(info)
    try:
        while True:
            if not conn.poll(ORPHAN_CHECK_S):
                if os.getppid() != parent_pid:
                    return
                continue
            if conn.recv_bytes() == _STOP:
                return
            t0 = time.perf_counter()
            try:
                _store_result(target(*args, **kwargs), views)
            except KeyboardInterrupt:
                # raised by the target itself (SIGINT is ignored): the parent re-arms us
                conn.send(("interrupted",))
                continue
            except BaseException:
                conn.send(("error", traceback.format_exc()))
                continue
            conn.send(("ok", time.perf_counter() - t0))
    except (EOFError, OSError):
        pass  # the parent end is gone: the parent died or shut us down hard
    finally:
        if os.getppid() != parent_pid:
            # orphaned: nobody else will free this worker's blocks
            unlink_quietly(blocks)


@dataclasses.dataclass
class _Worker:
    index: int
    process: Any
    conn: Connection
    blocks: list[SharedMemory]
    views: list[np.ndarray]
    armed: bool = False


def _release_workers(workers: list[_Worker], blocks: list[SharedMemory], owner_pid: int) -> None:
    """Stop, join and free everything a BackgroundProc created (idempotent via finalize)."""
    if os.getpid() != owner_pid:
        return  # a forked child holding a copy of the object must not free the parent's
    for w in workers:
        try:
            w.conn.send_bytes(_STOP)
        except OSError:
            pass
    deadline = time.monotonic() + _SHUTDOWN_GRACE_S
    for w in workers:
        w.process.join(timeout=max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(timeout=1.0)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.conn.close()
        w.views = []
    close_quietly(blocks)
    unlink_quietly(blocks)


class BackgroundProc:
    """Reusable background workers that prefetch results of ``target`` into shared memory.

    Every worker calls ``target(*target_args, **target_kwargs)`` again and again; each call
    must return the same number of arrays with the same shapes and dtypes. Results are
    handed out round-robin by :meth:`get`.

    Args:
        target: called in each worker; returns an array or a tuple/list of arrays (``None``
            entries are dropped). May be a bound method of a large read-only object: workers
            are forked, so the object is shared copy-on-write, not copied.
        dtypes: dtype of each returned array. If ``dtypes`` or ``shapes`` is ``None``,
            ``target`` is called once in the parent to find out.
        shapes: shape of each returned array.
        n_proc: number of worker processes.
        target_args: positional arguments for every call.
        target_kwargs: keyword arguments for every call.
        profile: record timings in :attr:`timings` and log them via the ``voxelboard`` logger.
        seed: base seed for the workers' RNGs (worker ``i`` is seeded from ``(seed, i)``);
            ``None`` draws it from numpy's global RNG, so ``np.random.seed`` in the parent
            makes the workers reproducible.

    Attributes:
        timings: with ``profile=True``: ``"wait"`` and ``"copy"`` (seconds per :meth:`get`)
            and ``"target"`` (one list per worker: seconds per target call incl. writing to
            shared memory). Each list keeps the last 10 000 values.

    Workers are daemonic, so ``target`` cannot start processes of its own.

    Example:
        >>> bg = BackgroundProc(  # doctest: +SKIP
        ...     data.getbatch, [np.float32, np.int16], [(1, 1, 16, 64, 64), (1, 16, 64, 64)],
        ...     n_proc=2, target_args=(1,), target_kwargs={"flip": True})
        >>> try:  # doctest: +SKIP
        ...     for _ in range(100):
        ...         batch, label = bg.get()
        ... finally:
        ...     bg.shutdown()
    """

    def __init__(
        self,
        target: Callable[..., Any],
        dtypes: Sequence[Any] | None = None,
        shapes: Sequence[Sequence[int]] | None = None,
        n_proc: int = 1,
        target_args: Sequence[Any] = (),
        target_kwargs: Mapping[str, Any] | None = None,
        profile: bool = False,
        *,
        seed: int | None = None,
    ) -> None:
        self._workers: list[_Worker] = []
        self._blocks: list[SharedMemory] = []
        self._finalizer = weakref.finalize(
            self, _release_workers, self._workers, self._blocks, os.getpid()
        )
        if not isinstance(n_proc, int) or isinstance(n_proc, bool) or n_proc < 1:
            raise ValueError(f"n_proc must be a positive int, got {n_proc!r}")
        if not callable(target):
            raise TypeError(f"target must be callable, got {target!r}")
        args, kwargs = tuple(target_args), dict(target_kwargs or {})
        if dtypes is None or shapes is None:
            sample = [np.asarray(x) for x in result_items(target(*args, **kwargs))]
            dtypes = [a.dtype for a in sample] if dtypes is None else dtypes
            shapes = [a.shape for a in sample] if shapes is None else shapes
        self.dtypes, self.shapes = normalise_specs(dtypes, shapes)
        self.n_proc = n_proc
        self.profile = profile
        self._target_name = getattr(target, "__qualname__", repr(target))
        self.seed = draw_base_seed(seed)
        self.timings: dict[str, Any] = {
            "wait": collections.deque(maxlen=_MAX_TIMINGS),
            "copy": collections.deque(maxlen=_MAX_TIMINGS),
            "target": [collections.deque(maxlen=_MAX_TIMINGS) for _ in range(n_proc)],
        }
        self._next = 0
        try:
            for index in range(n_proc):
                self._start_worker(index, target, args, kwargs)
        except BaseException:
            self.shutdown()
            raise

    def _start_worker(
        self, index: int, target: Callable[..., Any], args: tuple, kwargs: dict[str, Any]
    ) -> None:
        blocks = [new_block(dt, sh) for dt, sh in zip(self.dtypes, self.shapes)]
        self._blocks.extend(blocks)
        views = [block_view(b, dt, sh) for b, dt, sh in zip(blocks, self.dtypes, self.shapes)]
        parent_conn, child_conn = get_context("fork").Pipe(duplex=True)
        info = WorkerInfo(index=index, n_proc=self.n_proc, seed=derive_seed(self.seed, index))
        process = get_context("fork").Process(
            target=_bg_worker_main,
            args=(info, child_conn, views, blocks, target, args, kwargs, os.getpid()),
            name=f"voxelboard-bg-{index}",
            daemon=True,
        )
        worker = _Worker(index, process, parent_conn, blocks, views)
        try:
            with sigint_blocked():
                process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            # only the worker may hold its end, so the parent sees EOF when the worker dies
            child_conn.close()
        # listed only once started: shutdown joins every listed worker
        self._workers.append(worker)
        self._arm(worker)

    # ----------------------------------------------------------------------------------

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers."""
        return [w.process.pid for w in self._workers]

    @property
    def shm_names(self) -> list[str]:
        """Names of all shared-memory blocks this object created (as in ``/dev/shm``)."""
        return [b.name for b in self._blocks]

    @property
    def closed(self) -> bool:
        """True after :meth:`shutdown`."""
        return not self._finalizer.alive

    def _arm(self, worker: _Worker) -> None:
        if not worker.armed:
            worker.conn.send_bytes(_GO)
            worker.armed = True

    def get(self, timeout: float | None | bool = None) -> tuple[np.ndarray, ...]:
        """Return the next worker's result (copies) and start its next call at once.

        Workers are visited round-robin; this blocks until the worker whose turn it is has
        finished.

        Args:
            timeout: ``None`` or ``False`` wait as long as it takes; a number of seconds
                raises :class:`TimeoutError` when exceeded (the result stays pending and the
                next ``get()`` collects it).

        Returns:
            One array per declared dtype/shape, owned by the caller.

        Raises:
            TimeoutError: ``timeout`` seconds passed.
            WorkerError: the target raised (message has its traceback), returned a wrong
                shape/dtype, or the worker died. After a target error the pool stays usable
                (the failed worker is re-armed at once); after a worker died, shut it down.
        """
        if self.closed:
            raise RuntimeError("BackgroundProc.get() after shutdown(); create a new one")
        worker = self._workers[self._next]
        self._arm(worker)
        t0 = time.perf_counter()
        wait_for = None if timeout is None or timeout is False else float(timeout)
        deadline = None if wait_for is None else t0 + wait_for
        while True:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            if not worker.conn.poll(left):
                raise TimeoutError(
                    f"worker {worker.index} (pid {worker.process.pid}) gave no result within "
                    f"{wait_for:g} s; call get() again to keep waiting for it"
                )
            try:
                reply = worker.conn.recv()
            except (EOFError, OSError):
                raise WorkerError(
                    f"worker {worker.index} (pid {worker.process.pid}) is gone: "
                    f"{describe_exit(worker.process)}; shut this BackgroundProc down and "
                    "start a new one"
                ) from None
            if reply[0] != "interrupted":
                break
            worker.armed = False
            self._arm(worker)
        worker.armed = False
        self._next = (self._next + 1) % self.n_proc
        if reply[0] == "error":
            self._arm(worker)
            raise WorkerError(
                f"target {self._target_name} failed in worker {worker.index} "
                f"(pid {worker.process.pid}):\n{reply[1]}"
            )
        t1 = time.perf_counter()
        out = tuple(view.copy() for view in worker.views)
        self._arm(worker)
        if self.profile:
            self._record(worker.index, t1 - t0, time.perf_counter() - t1, reply[1])
        return out

    def _record(self, index: int, wait_s: float, copy_s: float, target_s: float) -> None:
        self.timings["wait"].append(wait_s)
        self.timings["copy"].append(copy_s)
        self.timings["target"][index].append(target_s)
        logger.info(
            "BackgroundProc worker %d: waiting %.3g ms, copying %.3g ms, target %.3g ms",
            index,
            wait_s * 1e3,
            copy_s * 1e3,
            target_s * 1e3,
        )

    def reset(self) -> None:
        """Re-arm every idle worker; call it after the parent was interrupted in ``get()``.

        Workers still computing (or holding an uncollected result) are left alone, so
        calling it when nothing was interrupted is harmless.
        """
        if self.closed:
            raise RuntimeError("BackgroundProc.reset() after shutdown(); create a new one")
        for worker in self._workers:
            self._arm(worker)

    def shutdown(self) -> None:
        """Stop and join the workers, then close and unlink all shared memory. Idempotent."""
        self._finalizer()

    def __enter__(self) -> BackgroundProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __del__(self) -> None:
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()


# --------------------------------------------------------------------------------------
# SharedQ


def _job_main(
    info: WorkerInfo,
    conn: Connection,
    target: Callable[..., Any],
    bufs: list[memoryview],
    shapes: list[tuple[int, ...]],
    args: tuple,
    kwargs: dict[str, Any],
    blocks: list[SharedMemory],
    parent_pid: int,
) -> None:
    worker_init(info)
    try:
        target(bufs, shapes, *args, **kwargs)
    except BaseException:
        reply: tuple = ("error", traceback.format_exc())
    else:
        reply = ("ok",)
    try:
        conn.send(reply)
    except OSError:
        pass
    if os.getppid() != parent_pid:
        unlink_quietly(blocks)


@dataclasses.dataclass
class _Job:
    number: int
    process: Any
    conn: Connection
    blocks: list[SharedMemory]
    dtypes: list[np.dtype]
    shapes: list[tuple[int, ...]]


def _release_jobs(jobs: collections.deque, owner_pid: int) -> None:
    if os.getpid() != owner_pid:
        return
    while jobs:
        job = jobs.popleft()
        if job.process.is_alive():
            job.process.terminate()
        job.process.join(timeout=1.0)
        if job.process.is_alive():
            job.process.kill()
            job.process.join()
        job.conn.close()
        close_quietly(job.blocks)
        unlink_quietly(job.blocks)


class SharedQ:
    """FIFO of one-shot background jobs that write numpy arrays into shared memory.

    Each job runs ``target(shared_arrays, shapes, *target_args, **target_kwargs)`` in its own
    process. ``shared_arrays`` is a list of writable buffers; the target turns them into
    arrays with :meth:`shm2ndarray` and fills them. :meth:`get` waits for the oldest job and
    returns its arrays.

    Unlike ELEKTRONN2, :meth:`get` returns **copies**, not views, so each job's shared
    memory is freed as soon as its result is collected.

    Args:
        n_proc: if > 0, :meth:`get` logs a warning when fewer than ``n_proc`` jobs remain
            queued after taking one (start the next job before calling ``get()``).
        profile: log wait and copy time of each :meth:`get`.
        seed: base seed for the jobs' RNGs (job ``k`` is seeded from ``(seed, k)``);
            ``None`` draws it from numpy's global RNG.

    Example:
        >>> def fill(arrays, shapes, value):  # doctest: +SKIP
        ...     SharedQ.shm2ndarray(arrays[0], shapes[0], np.float32)[...] = value
        >>> with SharedQ(n_proc=1) as q:  # doctest: +SKIP
        ...     q.startproc([np.float32], [(4, 4)], fill, target_args=(1.0,))
        ...     q.startproc([np.float32], [(4, 4)], fill, target_args=(2.0,))
        ...     (first,) = q.get()
    """

    def __init__(self, n_proc: int = 0, profile: bool = False, *, seed: int | None = None):
        self._jobs: collections.deque[_Job] = collections.deque()
        self._finalizer = weakref.finalize(self, _release_jobs, self._jobs, os.getpid())
        self.n_proc = int(n_proc)
        self.profile = profile
        self.seed = draw_base_seed(seed)
        self._count = 0

    @staticmethod
    def shm2ndarray(buf: Any, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A numpy view (no copy) of ``shape``/``dtype`` on a shared buffer.

        Args:
            buf: one of the ``shared_arrays`` a target receives (or a ``SharedMemory``).
            shape: the array's shape.
            dtype: the array's dtype.
        """
        if isinstance(buf, SharedMemory):
            buf = buf.buf
        return np.ndarray(tuple(shape), dtype=np.dtype(dtype), buffer=buf)

    def __len__(self) -> int:
        return len(self._jobs)

    def startproc(
        self,
        dtypes: Sequence[Any],
        shapes: Sequence[Sequence[int]],
        target: Callable[..., Any],
        target_args: Sequence[Any] = (),
        target_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Allocate shared arrays and start a job ``target(arrays, shapes, *args, **kwargs)``.

        Args:
            dtypes: dtype of each array.
            shapes: shape of each array.
            target: writes its results into the arrays (see :meth:`shm2ndarray`).
            target_args: extra positional arguments.
            target_kwargs: keyword arguments.
        """
        if not self._finalizer.alive:
            raise RuntimeError("SharedQ.startproc() after shutdown(); create a new SharedQ")
        dts, shs = normalise_specs(dtypes, shapes)
        blocks = [new_block(dt, sh) for dt, sh in zip(dts, shs)]
        ctx = get_context("fork")
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        number = self._count
        self._count += 1
        info = WorkerInfo(index=number, n_proc=1, seed=derive_seed(self.seed, number))
        process = ctx.Process(
            target=_job_main,
            args=(
                info,
                child_conn,
                target,
                [b.buf for b in blocks],
                shs,
                tuple(target_args),
                dict(target_kwargs or {}),
                blocks,
                os.getpid(),
            ),
            name=f"voxelboard-q-{number}",
            daemon=True,
        )
        job = _Job(number, process, parent_conn, blocks, dts, shs)
        try:
            with sigint_blocked():
                process.start()
        except BaseException:
            parent_conn.close()
            close_quietly(blocks)
            unlink_quietly(blocks)
            raise
        finally:
            child_conn.close()
        self._jobs.append(job)

    def get(self) -> tuple[np.ndarray, ...]:
        """Wait for the oldest job, join it and return its arrays (copies).

        Raises:
            IndexError: no job queued.
            WorkerError: the job's target raised (message has its traceback) or it died.
        """
        if not self._jobs:
            raise IndexError("SharedQ.get() on an empty queue; call startproc() first")
        job = self._jobs.popleft()
        if self.n_proc > 0 and len(self._jobs) < self.n_proc:
            logger.warning(
                "SharedQ: %d job(s) left queued, fewer than n_proc=%d; start new jobs with "
                "startproc() before get() to keep the background busy",
                len(self._jobs),
                self.n_proc,
            )
        t0 = time.perf_counter()
        try:
            try:
                reply = job.conn.recv()
            except (EOFError, OSError):
                raise WorkerError(
                    f"SharedQ job {job.number} (pid {job.process.pid}) gave no result: "
                    f"{describe_exit(job.process)}"
                ) from None
            job.process.join()
            if reply[0] == "error":
                raise WorkerError(
                    f"SharedQ job {job.number} (pid {job.process.pid}) failed:\n{reply[1]}"
                )
            t1 = time.perf_counter()
            out = tuple(
                self.shm2ndarray(b, sh, dt).copy()
                for b, sh, dt in zip(job.blocks, job.shapes, job.dtypes)
            )
        finally:
            _release_jobs(collections.deque([job]), os.getpid())
        if self.profile:
            logger.info(
                "SharedQ job %d: waiting %.3g ms, copying %.3g ms",
                job.number,
                (t1 - t0) * 1e3,
                (time.perf_counter() - t1) * 1e3,
            )
        return out

    def shutdown(self) -> None:
        """Terminate queued jobs and free their shared memory. Idempotent."""
        self._finalizer()

    def __enter__(self) -> SharedQ:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __del__(self) -> None:
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
