"""How much work visitors may start at once: background-job slots held as file locks.

A background job (an evaluation) holds two locks while it works: the one of its run (so a run
is evaluated by one job at a time) and one of ``slots`` numbered slot locks (so the whole
dashboard runs at most ``slots`` such jobs). The locks are ``flock`` locks on files in the
app's job folder, so they hold across the processes Dash forks for its jobs and are released
by the kernel when a job ends, however it ends: nothing to clean up after a crash.

Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with job_slot(folder, "run-a", slots=2, what="evaluation"):
    ...     with job_slot(folder, "run-a", slots=2, what="evaluation"):
    ...         pass
    Traceback (most recent call last):
    ...
    app.limits.Busy: an evaluation of run-a is already running; wait for it to end
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

#: background evaluations at once per dashboard (each predicts whole cubes on the CPU or GPU)
MAX_EVALUATIONS = 2
#: unfinished sweeps (of the dashboard's backend) above which its launch form makes no new one;
#: ``run.py sweep`` in a terminal is not held to it
MAX_SWEEPS = 5


class Busy(RuntimeError):
    """No slot is free; the message says what is running and what to do."""


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def job_slot(folder: str | os.PathLike, key: str, slots: int, what: str) -> Iterator[None]:
    """Hold the lock of ``key`` and one of ``slots`` slots while the block runs.

    Args:
        folder: the app's job folder (``AppContext.jobs_dir``).
        key: what may not run twice at once (a run name).
        slots: most jobs of this kind at once.
        what: the kind of job, for the message (``"evaluation"``).

    Raises:
        Busy: ``key`` is already held, or all slots are taken.
    """
    folder = Path(folder)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    held = []
    try:
        fd = _try_lock(folder / f"{what}-{digest}.lock")
        if fd is None:
            raise Busy(f"an {what} of {key} is already running; wait for it to end")
        held.append(fd)
        for i in range(slots):
            fd = _try_lock(folder / f"{what}-slot-{i}.lock")
            if fd is not None:
                held.append(fd)
                break
        else:
            raise Busy(
                f"{slots} {what}s are running already, the most this dashboard runs at once; "
                "try again when one has ended"
            )
        yield
    finally:
        for fd in held:
            os.close(fd)
