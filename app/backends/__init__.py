"""What runs a launch: the interface the launcher talks to, and what it hands a backend.

A backend turns a queued launch into a running process (``local``: a child on this machine;
``slurm``: a batch job), stops it, and keeps the run's ``launcher.json`` up to date as the
process or job lives and ends. It writes only ``launcher.json`` (and, for Slurm, the batch
script and ``console.log``); the trainer writes ``status.json``. The launcher keeps
validation, run directories, the queue and the tick, and calls a backend only through
``Backend``; everything a backend needs (the command line, the environment, a lock) is
passed in.

Example:
    >>> backend = LocalBackend(Spawn(...), lock, gpus=[], max_cpu_runs=1)  # doctest: +SKIP
    >>> record = backend.start(run, launch, busy=[])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from app.readers import tail_lines
from trainer.runs import CONSOLE_LOG_FILE, LauncherRecord, RunState, Status, launch_backend

#: a launch's command line for a device: ``argv(run_dir, launch, device)``
ArgvFn = Callable[[Path, Mapping[str, Any], str], list[str]]
#: the launcher's lock (its own plus the runs folder's flock), as a context manager factory
LockFn = Callable[[], contextlib.AbstractContextManager]


@dataclasses.dataclass(frozen=True)
class Spawn:
    """How a launch becomes a process: its command line, environment and working folder.

    Attributes:
        argv: builds the ``run.py train`` command line for a run, launch and device.
        env: extra environment variables for the trainer (``VOXELBOARD_DATA_DIR``...).
        cwd: the folder it starts in.
    """

    argv: ArgvFn
    env: Mapping[str, str]
    cwd: Path


@dataclasses.dataclass
class RunEntry:
    """One run directory as one scan of the runs folder read it.

    ``launch`` is shared with ``app.readers.read_json``'s cache: read it, never change it.
    ``launched`` is True when a ``launch.json`` exists, even a corrupt one (then ``launch``
    is ``None``). ``view`` is ``trainer.runs.merge_state`` of the files.
    """

    dir: Path
    launched: bool
    launch: Mapping[str, Any] | None
    status: Status | None
    record: LauncherRecord | None
    view: RunState

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def backend(self) -> str:
        if self.launch is None and self.record is not None:
            return self.record.backend
        return launch_backend(self.launch)


class Backend(Protocol):
    """What the launcher needs from a backend.

    Attributes:
        name: ``local`` or ``slurm``, as written into ``launch.json``.
        error: why the backend's last look at its jobs failed, or ``None``.
    """

    name: str
    error: str | None

    def devices(self) -> list[str]:
        """Device choices for the launch form."""
        ...

    def prepare(
        self,
        config: Path,
        device: str | None,
        resources: Mapping[str, Any] | None,
        previous: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Validate a launch's device and resources before anything is written.

        ``previous`` is the run's earlier ``launch.json`` when it is resumed. Returns the
        ``launch.json`` fields this backend adds (``device``, ``slurm``).

        Raises:
            LaunchError: naming the field.
        """
        ...

    def start(
        self, run: RunEntry, launch: Mapping[str, Any], busy: list[str]
    ) -> LauncherRecord | None:
        """Start (or submit) a queued run and write its ``launcher.json``.

        ``busy`` lists the devices taken on this machine (a started run adds its own).
        Returns the record, or ``None`` when no slot is free yet.
        """
        ...

    def stop(self, run: RunEntry) -> str:
        """Stop a queued or running run: ``'stopped'`` at once or ``'stopping'``."""
        ...

    def poll(self, runs: list[RunEntry], force: bool = False) -> None:
        """Bring the records of this backend's runs up to date (reap children, ask Slurm)."""
        ...

    def slot(self, run: RunEntry) -> str | None:
        """The device of this machine the run holds, or ``None``."""
        ...

    def busy(self, name: str) -> bool:
        """True while this backend still tracks the run's process (it cannot be resumed)."""
        ...

    # -- the launch form and the system panel ------------------------------------------

    def form_fields(self) -> dict[str, str]:
        """The launch form's fields for this backend's resources: key -> label."""
        ...

    def form_placeholder(self, key: str) -> str:
        """What an empty field of ``form_fields`` stands for (its default)."""
        ...

    def resources_from_form(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """A launch's resources from the form's fields by key, blank ones left out, each
        checked; ``None`` for a backend that takes none.

        Raises:
            LaunchError: naming the field, the value and what it accepts.
        """
        ...

    def sweep_limit(self) -> str:
        """The launch form's clause on how many trials of a sweep this backend runs at once
        (``''``: as many as the sweep asks for)."""
        ...

    def notes(self, gpus_found: bool) -> list[tuple[str, bool]]:
        """Lines for the system panel: ``(text, is_error)``; ``gpus_found`` says whether this
        machine has a GPU."""
        ...


def last_output(run_dir: Path) -> str | None:
    """The last line a process printed into ``console.log`` (not the launcher's ``$`` line)."""
    lines = [x for x in tail_lines(run_dir / CONSOLE_LOG_FILE, 20) if x.strip()]
    if not lines or lines[-1].startswith("$ "):
        return None
    return lines[-1].strip()[:300]


def env_for(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with ``extra`` on top."""
    return {**os.environ, **extra}


def start_process(
    argv: list[str], env: Mapping[str, str], cwd: Path, stdout: Any, stderr: Any
) -> subprocess.Popen:
    """Start ``argv`` without a shell, stdin closed, in a new session: the child leads its
    own process group, so a stop reaches its helpers too and a Ctrl+C of the dashboard
    does not. Returns at once.

    Raises:
        OSError: the program cannot be started.
    """
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
