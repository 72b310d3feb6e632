"""How much work visitors may start at once: background-job slots held as file locks, and
slots for the server's costly per-request computations.

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

``ComputeSlots`` bounds a computation a request runs in the server's own threads (the
evaluation page's segmentation of a cube at a threshold, tens of ms of CPU each): at most
``slots`` at once, one per client; a client's newer request makes its waiting older one give
way (``Superseded``); a request that finds every slot taken by others is refused at once
(``Busy``) instead of queueing behind them, so a few scripted clients cannot fill the server's
threads and slow every other visitor's pages.

Example:
    >>> slots = ComputeSlots(1, "segmentation")
    >>> with slots.hold("tab-a"):
    ...     with slots.hold("tab-b"):
    ...         pass
    Traceback (most recent call last):
    ...
    app.limits.Busy: busy: 1 segmentation is running on this dashboard, the most it runs at once; try again in a moment
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

#: background evaluations at once per dashboard (each predicts whole cubes on the CPU or GPU)
MAX_EVALUATIONS = 2
#: unfinished sweeps (of the dashboard's backend) above which its launch form makes no new one;
#: ``run.py sweep`` in a terminal is not held to it
MAX_SWEEPS = 5
#: environment variable: segmentations at once per dashboard (``ComputeSlots``); ``0`` lifts
#: the bound (for ``bench/bench_attack.py``'s baseline, not for a public screen)
SEGMENTATIONS_ENV = "VOXELBOARD_MAX_SEGMENTATIONS"
#: key of an app's segmentation slots in its Flask config (``segmentations``)
SEGMENTATIONS_KEY = "VOXELBOARD_SEGMENTATIONS"
#: longest a request waits for its own client's previous computation to end
OWN_TURN_WAIT_S = 10.0


class Busy(RuntimeError):
    """No slot is free; the message says what is running and what to do."""


class Superseded(RuntimeError):
    """A newer request of the same client came while this one waited: its answer would be
    stale, so nothing is computed for it."""


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


def segmentation_slots(environ: Mapping[str, str] | None = None) -> int:
    """Segmentations at once: ``VOXELBOARD_MAX_SEGMENTATIONS`` if set, else half the cores
    (at least 1). ``0`` means no bound.

    Raises:
        ValueError: the variable is set to something other than a whole number >= 0.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(SEGMENTATIONS_ENV, "").strip()
    if not text:
        return max(1, (os.cpu_count() or 1) // 2)
    if not text.isdigit():
        raise ValueError(
            f"{SEGMENTATIONS_ENV}={text[:40]!r}: expected a whole number >= 0 (segmentations "
            "at once; 0 lifts the bound); unset it to use half the cores"
        )
    return int(text)


class ComputeSlots:
    """At most ``slots`` computations at once in this process, one per client, newest first.

    ``hold(client)``, in order:

    * a newer request of the same client arrived: ``Superseded``;
    * the client's previous computation still runs: wait for it (at most
      ``OWN_TURN_WAIT_S``; a request of a third kind makes this one give way);
    * a slot is free: take it for the block;
    * else ``Busy`` at once: the other slots belong to other clients, and a queue behind them
      would hold one of the server's few threads per waiting request.

    A client is whatever key the caller passes (the evaluation page sends an id it keeps per
    browser tab). It gives honest tabs their newest-first order; it is no defence, a script
    can send any id: the bound of ``slots`` is what protects the other visitors.

    Args:
        slots: computations at once; ``0`` for no bound (``hold`` then never refuses).
        what: the computation's name, for the ``Busy`` message.
    """

    def __init__(self, slots: int, what: str) -> None:
        self.slots = slots
        self.what = what
        self._cond = threading.Condition()
        self._running: set[str] = set()
        self._newest: dict[str, int] = {}
        self._tickets = 0
        self._waiting = 0

    def waiting(self) -> int:
        """Requests waiting for their client's previous computation to end."""
        with self._cond:
            return self._waiting

    @contextlib.contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Run the block in a slot for ``client``.

        Raises:
            Busy: every slot is taken by other clients (or the client's previous
                computation ran past ``OWN_TURN_WAIT_S``).
            Superseded: a newer request of ``client`` arrived while this one waited.
        """
        if self.slots <= 0:
            yield
            return
        with self._cond:
            self._tickets += 1
            ticket = self._tickets
            self._newest[client] = ticket
            self._cond.notify_all()  # an older waiting request of this client gives way
            try:
                self._take(client, ticket)
            except (Busy, Superseded):
                self._forget(client, ticket)
                raise
        try:
            yield
        finally:
            with self._cond:
                self._running.discard(client)
                self._forget(client, ticket)
                self._cond.notify_all()

    def _take(self, client: str, ticket: int) -> None:
        """Take a slot for ``client`` (called with the condition held)."""
        deadline = time.monotonic() + OWN_TURN_WAIT_S
        while True:
            if self._newest.get(client) != ticket:
                raise Superseded(f"a newer {self.what} request of this client came")
            if client not in self._running:
                if len(self._running) < self.slots:
                    self._running.add(client)
                    return
                raise Busy(
                    f"busy: {self.slots} {self.what}{'s are' if self.slots > 1 else ' is'} "
                    "running on this dashboard, the most it runs at once; try again in a moment"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise Busy(
                    f"busy: the previous {self.what} of this page ran over "
                    f"{OWN_TURN_WAIT_S:g} s; try again in a moment"
                )
            self._waiting += 1
            try:
                self._cond.wait(left)
            finally:
                self._waiting -= 1

    def _forget(self, client: str, ticket: int) -> None:
        """Drop ``client``'s entry once no newer request of it waits (bounded memory)."""
        if self._newest.get(client) == ticket:
            del self._newest[client]


_MAKING = threading.Lock()


def segmentations(config: MutableMapping[str, Any]) -> ComputeSlots:
    """The segmentation slots of the app whose Flask ``config`` this is, made on first use
    with ``segmentation_slots()`` (one set per app, shared by its threads)."""
    with _MAKING:
        if SEGMENTATIONS_KEY not in config:
            config[SEGMENTATIONS_KEY] = ComputeSlots(segmentation_slots(), "segmentation")
        return config[SEGMENTATIONS_KEY]
