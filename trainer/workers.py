"""Forked worker processes of ``trainer.parallel``: who a worker is, how it starts, and the
shared-memory blocks it writes into.

``BackgroundProc`` and ``SharedQ`` (``trainer.parallel``) both fork their workers and hand
arrays back through POSIX shared memory; this module is what they share:

* **Identity.** ``WorkerInfo`` and ``get_worker_info`` tell a target inside a worker its
  index, the pool's size and its seed (``None`` in the parent process).
* **Start.** ``worker_init`` runs first in every forked worker: it ignores SIGINT (the
  parent decides what a Ctrl+C means), re-seeds numpy's global RNG, :mod:`random` and torch
  (if already imported) from ``(seed, worker index)``, and pins torch to one thread (an
  OpenMP pool the parent used before the fork is unusable in the child). ``sigint_blocked``
  keeps a Ctrl+C from reaching a child between fork and ``worker_init``.
* **Shared memory.** ``new_block`` names a block after the creating pid (so an operator can
  tell whose a stray ``/dev/shm`` entry was); ``unlink_quietly`` and ``close_quietly`` free
  blocks where several processes may race to do so.

Example:
    >>> get_worker_info() is None  # in the main process
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import secrets
import signal
import sys
from collections.abc import Iterator, Sequence
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

__all__ = [
    "ORPHAN_CHECK_S",
    "WorkerInfo",
    "block_view",
    "close_quietly",
    "derive_seed",
    "describe_exit",
    "draw_base_seed",
    "get_worker_info",
    "new_block",
    "normalise_specs",
    "result_items",
    "sigint_blocked",
    "unlink_quietly",
    "worker_init",
]

#: how often (seconds) an idle worker checks whether its parent still exists
ORPHAN_CHECK_S = 0.25


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """What a target running inside a worker may want to know about it.

    Attributes:
        index: the worker's position (``0 .. n_proc-1`` for BackgroundProc; the job number
            for SharedQ).
        n_proc: number of workers in the pool (1 for a SharedQ job).
        seed: the seed this worker's RNGs were seeded with.
    """

    index: int
    n_proc: int
    seed: int


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """Return the current worker's :class:`WorkerInfo`, or ``None`` in the parent process.

    Example:
        >>> get_worker_info() is None  # in the main process
        True
    """
    return _worker_info


def normalise_specs(
    dtypes: Sequence[Any], shapes: Sequence[Sequence[int]]
) -> tuple[list[np.dtype], list[tuple[int, ...]]]:
    """Turn user dtypes/shapes into numpy dtypes and int tuples; check they pair up."""
    dts = [np.dtype(d) for d in dtypes]
    shs = [tuple(int(n) for n in s) for s in shapes]
    if len(dts) != len(shs):
        raise ValueError(
            f"got {len(dts)} dtypes {[str(d) for d in dts]} but {len(shs)} shapes {shs}; "
            "pass one dtype and one shape per array the target returns"
        )
    for dt, sh in zip(dts, shs):
        if dt.hasobject:
            raise ValueError(
                f"dtype {dt} cannot live in shared memory; return numeric arrays from the target"
            )
        if any(n < 0 for n in sh):
            raise ValueError(f"shape {sh} has a negative dimension")
    return dts, shs


def result_items(result: Any) -> list[Any]:
    """A target's result as a list of array-likes: a single array is wrapped, Nones dropped."""
    items = list(result) if isinstance(result, tuple | list) else [result]
    return [item for item in items if item is not None]


def new_block(dtype: np.dtype, shape: tuple[int, ...]) -> SharedMemory:
    """A new shared-memory block for one array of ``dtype`` and ``shape``."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    # the pid in the name tells an operator whose block a stray /dev/shm entry was
    name = f"vb_{os.getpid()}_{secrets.token_hex(6)}"
    # a zero-byte block is not allowed; one spare byte keeps empty arrays working
    return SharedMemory(name=name, create=True, size=max(nbytes, 1))


def block_view(block: SharedMemory, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The array a block holds (a view, no copy)."""
    return np.ndarray(shape, dtype=dtype, buffer=block.buf)


def unlink_quietly(blocks: Sequence[SharedMemory]) -> None:
    """Unlink blocks; a block already unlinked by someone else is fine.

    ``SharedMemory.unlink`` only tells the resource tracker after a successful
    ``shm_unlink``, so of several processes racing here exactly one unregisters each name.
    """
    for block in blocks:
        try:
            block.unlink()
        except FileNotFoundError:
            pass


def close_quietly(blocks: Sequence[SharedMemory]) -> None:
    """Unmap blocks in this process; one still viewed stays mapped until the process ends."""
    for block in blocks:
        try:
            block.close()
        except BufferError:
            # someone still holds a view; the mapping goes away with the process
            pass


def derive_seed(base_seed: int, index: int) -> int:
    """A 63-bit seed for worker ``index``, well mixed even for neighbouring indices."""
    state = np.random.SeedSequence([base_seed, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1)


def _seed_rngs(seed: int) -> None:
    """Seed numpy's global RNG, ``random`` and torch (if already imported)."""
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def draw_base_seed(seed: int | None) -> int:
    """``seed``, or a base seed drawn from numpy's global RNG when it is ``None``."""
    # drawn from numpy's global RNG so that np.random.seed() in the parent makes the workers
    # reproducible, as torch's DataLoader does with torch's generator
    return int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT while forking, so a Ctrl+C cannot hit a child before it ignores SIGINT.

    The child inherits the mask and unblocks it in :func:`worker_init`; a SIGINT meant for
    the parent is only deferred until the fork is done.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def worker_init(info: WorkerInfo) -> None:
    """First thing a forked worker does: signals, identity, RNGs, torch threads."""
    global _worker_info
    # Ctrl+C reaches the whole process group; the parent decides what to do about it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _worker_info = info
    _seed_rngs(info.seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        # an OpenMP pool the parent used before the fork is unusable in the child; one
        # thread per worker is also what DataLoader workers use: the workers are the
        # parallelism
        torch.set_num_threads(1)


def describe_exit(process: Any) -> str:
    """How a worker process ended, in words for an error message (waits up to 1 s for it)."""
    process.join(timeout=1.0)
    code = process.exitcode
    if code is None:
        return "it closed its pipe but is still running"
    if code < 0:
        try:
            return f"it was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"it was killed by signal {-code}"
    return f"it exited with code {code}"
