"""Start, queue, stop, resume and delete training runs: as child processes or as Slurm jobs.

Two backends run what the dashboard launches. ``local`` (the default) starts ``run.py
train`` children on this machine and schedules them on its devices; ``slurm`` writes a batch
script into the run directory and submits it with ``sbatch``, so the run trains on a compute
node while the dashboard, on a login node, reads the shared runs directory. A run remembers
its backend in ``launch.json``; each launcher starts only the queued runs of its own backend.

The launcher keeps no state that the run directories do not hold, so a restarted
dashboard finds everything again (re-attach):

* a launch creates ``<runs_dir>/<name>/`` with ``launch.json`` (what to run) and a
  ``status.json`` in state ``queued`` before any process starts;
* the queue is every run directory with a ``launch.json`` whose status is ``queued``, oldest
  first; a run starts when its device has a free slot (one run per GPU, ``max_cpu_runs``
  on the CPU);
* a slot is busy while a launched run's status says ``running`` and its pid is alive;
* the child is ``run.py train`` without a shell, in its own process group, with its output
  in ``console.log``; the trainer then keeps ``status.json`` up to date itself.

``start()`` runs ``tick()`` every ``poll_s`` seconds in a daemon thread (start queued runs,
reap exited children); ``close()`` stops that thread and leaves the runs alone. A file lock
in the runs folder keeps two dashboards on the same folder from starting a run twice.

With the ``slurm`` backend (see docs/cluster.md) Slurm does the queueing: a queued run is
submitted at once and stays ``queued`` while its job is pending (the Slurm reason goes into
``status.json``'s ``slurm`` entry); ``tick()`` asks ``squeue``/``sacct`` every
``slurm_poll_s`` seconds and marks the run ``running`` when the job starts, and writes the
job's final state when it ended without the trainer writing one. Stop sends SIGTERM to the
job through ``scancel`` (the trainer saves and stops) and cancels it outright after
``grace_s``.

Example:
    >>> with Launcher("runs", "examples", "data") as launcher:  # doctest: +SKIP
    ...     name = launcher.launch("demo_cnn3d.py", device="cpu", overrides={"n_steps": 500})
    ...     launcher.stop(name)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from app import paths
from app.readers import read_json, tail_lines
from app.security import (
    MAX_RUN_NAME,
    LaunchError,
    resolve_config,
    sanitize_run_name,
    validate_device,
    validate_overrides,
)
from app.slurm import Job, Slurm, SlurmError, batch_script, config_section, resources_from
from trainer.runs import (
    ACTIVE_STATES,
    CONSOLE_LOG_FILE,
    STATUS_FILE,
    Status,
    atomic_write_bytes,
    atomic_write_json,
    effective_state,
    latest_snapshot,
    pid_alive,
    read_status,
    write_status,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = "launch.json"
LOCK_FILE = ".launcher.lock"
#: the batch script a Slurm launch writes into the run directory
BATCH_SCRIPT_FILE = "slurm-job.sh"
#: backends a launcher can run launches with
BACKENDS = ("local", "slurm")
#: launches waiting in the queue at once; more are refused (a visitor cannot pile up work)
MAX_QUEUED = 20
#: a submitted job that squeue and sacct both do not know for this long counts as gone
JOB_UNKNOWN_GRACE_S = 120.0

#: states from which a run may be resumed from its newest snapshot
RESUMABLE_STATES = frozenset({"stopped", "failed", "lost", "finished"})
#: states in which a run directory may be deleted
DELETABLE_STATES = frozenset({"finished", "stopped", "failed", "diverged", "lost"})

# override name -> trainer command-line flag
_FLAGS = {"n_steps": "--n-steps", "batch_size": "--batch-size", "lr": "--lr"}


@dataclasses.dataclass
class _Child:
    name: str
    proc: subprocess.Popen
    device: str


@dataclasses.dataclass
class _Run:
    """One run directory as one scan of ``runs_dir`` read it.

    ``launch`` is shared with ``app.readers.read_json``'s cache: read it, never change it
    (``_queue`` hands out copies). ``launched`` is True when a ``launch.json`` exists, even
    a corrupt one (then ``launch`` is ``None``).
    """

    dir: Path
    launched: bool
    launch: Mapping[str, Any] | None
    status: Status | None

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def backend(self) -> str:
        return _backend_of(self.launch)


@dataclasses.dataclass
class Overview:
    """What the dashboard's system panel shows, from one scan of the runs folder.

    Attributes:
        active: as ``Launcher.active_runs()``: running local launched runs -> device.
        queued: as ``Launcher.queued_runs()``.
        pids: pid -> run name of every run (launched or not) whose status says running
            and whose process is alive or only just gone.
    """

    active: dict[str, str]
    queued: list[str]
    pids: dict[int, str]


def read_launch(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``launch.json`` of a run, or ``None`` if absent or unreadable."""
    try:
        d = json.loads((Path(run_dir) / LAUNCH_FILE).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


class Launcher:
    """Launches ``run.py train`` for the dashboard: as children scheduled on this machine's
    devices (backend ``local``) or as Slurm jobs (backend ``slurm``).

    Args:
        runs_dir: where run directories live (created on first launch).
        configs_dir: the only folder configs may be launched from.
        data_dir: data folder, passed to children as ``VOXELBOARD_DATA_DIR``.
        python: interpreter for children.
        run_py: the ``run.py`` to execute (tests pass a stand-in).
        max_cpu_runs: CPU runs allowed at once.
        grace_s: seconds between SIGTERM and SIGKILL on stop.
        gpus: GPU indices to schedule on; ``None`` asks NVML (none found: CPU only).
        poll_s: scheduler period of the background thread.
        backend: ``local`` or ``slurm``.
        slurm_defaults: resources for Slurm launches that neither the form nor the config's
            ``slurm`` section set (keys of ``app.slurm.RESOURCE_KEYS``).
        slurm_poll_s: seconds between two ``squeue`` calls of the scheduler thread (keep it
            well above a second on a shared cluster).
        slurm: the Slurm client (tests pass one with another timeout or environment).
        max_queued: queued launches allowed at once; ``launch`` refuses more.

    Raises:
        ValueError: an unknown backend; ``LaunchError`` for bad ``slurm_defaults``.
    """

    def __init__(
        self,
        runs_dir: str | os.PathLike,
        configs_dir: str | os.PathLike,
        data_dir: str | os.PathLike,
        python: str = sys.executable,
        run_py: str | os.PathLike = REPO_ROOT / "run.py",
        max_cpu_runs: int = 1,
        grace_s: float = 10.0,
        gpus: list[int] | None = None,
        poll_s: float = 0.5,
        backend: str = "local",
        slurm_defaults: Mapping[str, Any] | None = None,
        slurm_poll_s: float = 10.0,
        slurm: Slurm | None = None,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.slurm_defaults = resources_from(defaults=slurm_defaults).to_json()
        self.slurm_poll_s = float(slurm_poll_s)
        self.slurm = slurm or Slurm()
        self._jobs: dict[str, Job] = {}
        self._jobs_error: str | None = None
        self._last_sync = -float("inf")
        self.runs_dir = Path(runs_dir).absolute()
        self.configs_dir = Path(configs_dir).absolute()
        self.data_dir = Path(data_dir).absolute()
        self.python = str(python)
        self.run_py = Path(run_py).absolute()
        self.max_cpu_runs = int(max_cpu_runs)
        self.max_queued = int(max_queued)
        self.grace_s = float(grace_s)
        self.poll_s = float(poll_s)
        self._gpus = None if gpus is None else list(gpus)
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_file: Any = None
        self._children: dict[str, _Child] = {}
        self._stopping: set[str] = set()
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> Launcher:
        """Start the scheduler thread (idempotent); queued runs on disk start when they can."""
        if self._thread is None or not self._thread.is_alive():
            self._halt.clear()
            self._thread = threading.Thread(
                target=self._loop, name="voxelboard-launcher", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the scheduler thread. Running children keep running (re-attach later)."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Launcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while not self._halt.wait(self.poll_s):
            try:
                self.tick()
            except Exception:  # the scheduler must outlive one bad run directory
                log.exception("launcher tick failed")

    # -- queries ---------------------------------------------------------------------

    def gpus(self) -> list[int]:
        """GPU indices runs may be scheduled on."""
        if self._gpus is None:
            from app.system import gpu_indices

            self._gpus = gpu_indices()
        return list(self._gpus)

    def devices(self) -> list[str]:
        """Device choices for the launch form: ``auto``, ``cpu``, ``cuda:N`` per GPU.

        With Slurm the GPUs are the job's (``gpus`` resource): ``auto`` or ``cpu``.
        """
        if self.backend == "slurm":
            return ["auto", "cpu"]
        return ["auto", "cpu", *(f"cuda:{i}" for i in self.gpus())]

    def active_runs(self) -> dict[str, str]:
        """Running local launched runs (this process's or re-attached): run name -> device."""
        with self._lock:
            return self._active(self._scan())

    def queued_runs(self) -> list[str]:
        """Names of queued runs in the order they will be considered.

        With Slurm: the runs waiting for their job to start, oldest first.
        """
        with self._lock:
            return self._queued_names(self._scan())

    def overview(self) -> Overview:
        """``active_runs()``, ``queued_runs()`` and the pids of running runs in one scan.

        For a panel refreshed every few seconds: each run's files are read once, not once
        per question.
        """
        with self._lock:
            runs = self._scan(every=True)
            launched = [r for r in runs if r.launched]
            pids = {
                r.status.pid: r.name
                for r in runs
                if r.status is not None and r.status.pid and effective_state(r.status) == "running"
            }
            return Overview(self._active(launched), self._queued_names(launched), pids)

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Slurm runs under ``runs_dir``: run name -> ``job_id``, ``state`` and ``reason``.

        ``state`` and ``reason`` are what the last ``squeue``/``sacct`` call said (``None``
        before one, or for a run this launcher did not ask about because it had ended).
        Reads only ``launch.json`` files and memory; never calls Slurm.
        """
        out = {}
        for run in self._scan():
            job_id = _job_id(run.launch) if run.backend == "slurm" else None
            if job_id is None:
                continue
            job = self._jobs.get(run.name)
            same = job is not None and job.job_id == job_id
            out[run.name] = {
                "job_id": job_id,
                "state": job.state if same else None,
                "reason": job.reason if same else None,
            }
        return out

    @property
    def jobs_error(self) -> str | None:
        """Why the last ``squeue`` call failed, or ``None``."""
        return self._jobs_error

    # -- actions ---------------------------------------------------------------------

    def launch(
        self,
        config_name: str,
        device: str = "auto",
        overrides: Mapping[str, Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue a training run and start it if its device is free (Slurm: submit it).

        Everything is validated before anything is written; then the run directory,
        ``launch.json`` and a ``queued`` ``status.json`` are created, then the scheduler runs.

        Args:
            config_name: a ``*.py`` file inside ``configs_dir`` (name or path).
            device: ``auto`` (a free GPU, else CPU when there are no GPUs), ``cpu`` or ``cuda:N``.
                With Slurm: ``auto`` (GPUs if the ``gpus`` resource asks for any) or ``cpu``.
            overrides: optional ``n_steps``, ``batch_size``, ``lr``, ``save_name``.
            resources: Slurm only: ``partition``, ``account``, ``gpus``, ``cpus``, ``mem``,
                ``time``; empty values fall back to the config's ``slurm`` section, then to
                ``slurm_defaults``.

        Returns:
            The run name (``save_name`` sanitised, or the config's stem; ``-2``, ``-3``...
            appended if taken).

        Raises:
            LaunchError: naming the offending field.
        """
        config = resolve_config(self.configs_dir, config_name)
        overrides = validate_overrides(overrides)
        if self.backend == "slurm":
            problem = self.slurm.problem()
            if problem:
                raise LaunchError("backend", f"backend: {problem}")
            requested = resources_from(resources, config_section(config), self.slurm_defaults)
            device = self._slurm_device(device, requested.gpus)
        else:
            device = validate_device(device, self.gpus())
            given = sorted(k for k, v in (resources or {}).items() if v not in (None, ""))
            if given:
                raise LaunchError(
                    given[0], f"{given[0]}: Slurm resources need the dashboard's --backend slurm"
                )
        base = overrides.pop("save_name", None) or sanitize_run_name(config.stem)
        now = time.time()
        with self._locked():
            waiting = len(self._queued_names(self._scan()))
            if waiting >= self.max_queued:
                raise LaunchError(
                    "config",
                    f"not queued: {waiting} launches are already waiting, the most this "
                    "dashboard queues; stop or delete one, or wait until one starts",
                )
            run_dir = self._claim_dir(base)
            launch = {
                "format": 1,
                "backend": self.backend,
                "mode": "train",
                "config": config.name,
                "config_path": str(config),
                "device": device,
                "overrides": overrides,
                "created": now,
            }
            if self.backend == "slurm":
                launch["slurm"] = {"resources": requested.to_json()}
            atomic_write_json(run_dir / LAUNCH_FILE, launch)
            write_status(run_dir, self._queued_status(run_dir.name, config.name, launch))
        log.info("queued %s (%s on %s)", run_dir.name, config.name, device)
        self.tick()
        return run_dir.name

    def stop(self, name: str) -> str:
        """Stop a run: a queued one is marked ``stopped``; a running one gets SIGTERM.

        SIGTERM goes to the run's process group; if it is still alive after ``grace_s``
        it gets SIGKILL (from a background thread, so this returns at once). A Slurm run's
        pending job is cancelled; a running job gets SIGTERM through ``scancel --signal``
        and is cancelled outright after ``grace_s``.

        Returns:
            ``'stopped'`` for a queued run, ``'stopping'`` for a running one.

        Raises:
            LaunchError: unknown run, or not queued/running, or scancel failed.
        """
        run_dir = self._existing_run(name)
        if (read_launch(run_dir) or {}).get("backend") == "slurm":
            return self._stop_job(name, run_dir)
        with self._locked():
            status = read_status(run_dir)
            state = effective_state(status)
            if status is not None and status.state == "queued" and name not in self._children:
                status.state = "stopped"
                status.extra["ended"] = time.time()
                write_status(run_dir, status)
                return "stopped"
            if status is None or state != "running":
                raise LaunchError(
                    "run", f"run: {name} is {state}; only queued or running runs stop"
                )
            child = self._children.get(name)
            pid = child.proc.pid if child else status.pid
            if child is None and not _same_process(pid, status):
                raise LaunchError("run", f"run: {name}: process {pid} is not the run's trainer")
            self._stopping.add(name)
            leads_group = _signal_group(pid, signal.SIGTERM)
        threading.Thread(
            target=self._escalate, args=(name, pid, leads_group), name=f"stop-{name}", daemon=True
        ).start()
        log.info("stopping %s (pid %s)", name, pid)
        return "stopping"

    def resume(self, name: str, device: str | None = None) -> str:
        """Queue a stopped, failed, lost or finished run to continue from its newest snapshot.

        The child is ``run.py train <run_dir>/0-<config>.py --resume <run_dir>`` with the
        original launch's ``n_steps``/``batch_size``/``lr`` overrides.

        Raises:
            LaunchError: wrong state, no snapshot, or no config copy in the run directory.
        """
        run_dir = self._existing_run(name)
        with self._locked():
            status = read_status(run_dir)
            state = self._job_state(run_dir, status)
            if state not in RESUMABLE_STATES or name in self._children:
                allowed = ", ".join(sorted(RESUMABLE_STATES))
                raise LaunchError("run", f"run: {name} is {state}; only {allowed} runs resume")
            if latest_snapshot(run_dir) is None:
                raise LaunchError("run", f"run: {name} has no snapshot in snapshots/ to resume")
            copies = sorted(run_dir.glob("0-*.py"))
            if not copies:
                raise LaunchError("run", f"run: {name} has no config copy (0-<config>.py)")
            old = read_launch(run_dir) or {}
            launch = {
                "format": 1,
                "backend": self.backend,
                "mode": "resume",
                "config": old.get("config", copies[0].name[2:]),
                "config_path": str(copies[0]),
                "device": device or old.get("device", "auto"),
                "overrides": {k: v for k, v in old.get("overrides", {}).items() if k in _FLAGS},
                "created": time.time(),
            }
            if self.backend == "slurm":
                problem = self.slurm.problem()
                if problem:
                    raise LaunchError("backend", f"backend: {problem}")
                # the resources of the first launch, else today's section and defaults
                first = (old.get("slurm") or {}).get("resources") or {}
                section = first or config_section(copies[0])
                requested = resources_from(section, defaults=self.slurm_defaults)
                launch["slurm"] = {"resources": requested.to_json()}
                launch["device"] = self._slurm_device(launch["device"], requested.gpus)
            else:
                launch["device"] = validate_device(launch["device"], self.gpus())
            atomic_write_json(run_dir / LAUNCH_FILE, launch)
            queued = self._queued_status(name, launch["config"], launch)
            queued.step = status.step if status else 0
            queued.n_steps = launch["overrides"].get("n_steps", status.n_steps if status else 0)
            write_status(run_dir, queued)
        self.tick()
        return name

    def delete(self, name: str) -> None:
        """Remove a finished, stopped, failed, diverged or lost run directory.

        Raises:
            LaunchError: the run is active, or the directory is not a plain folder in
                ``runs_dir``.
        """
        run_dir = self._existing_run(name)
        with self._locked():
            state = self._job_state(run_dir, read_status(run_dir))
            if state not in DELETABLE_STATES or name in self._children:
                allowed = ", ".join(sorted(DELETABLE_STATES))
                raise LaunchError("run", f"run: {name} is {state}; only {allowed} runs delete")
            shutil.rmtree(run_dir)
        log.info("deleted %s", run_dir)

    def tick(self) -> list[str]:
        """Reap exited children, then start queued runs whose device has a free slot.

        With Slurm: submit queued runs that have no job yet, then (every ``slurm_poll_s``
        seconds, or after a submission) bring the runs' states up to date with Slurm's.

        Returns:
            Names of the runs started (Slurm: submitted).
        """
        started = []
        with self._locked():
            self._reap()
            runs = self._scan()  # each run's files are read once per tick, here
            busy = self._busy_devices(runs)
            for run, launch in self._queue(runs):
                run_dir, name = run.dir, run.name
                try:
                    if self.backend == "slurm":
                        self._submit(run_dir, self._recheck(run_dir, launch))
                    else:
                        device = self._free_device(str(launch.get("device", "auto")), busy)
                        if device is None:
                            continue
                        self._spawn(run_dir, self._recheck(run_dir, launch), device, run.status)
                        busy.append(device)
                except (OSError, LaunchError, SlurmError) as e:
                    status = read_status(run_dir) or Status()
                    status.state, status.error = "failed", f"could not start: {e}"
                    status.extra["ended"] = time.time()
                    write_status(run_dir, status)
                    continue
                started.append(name)
        if started or time.monotonic() - self._last_sync >= self.slurm_poll_s:
            self.refresh_jobs()
        return started

    def refresh_jobs(self) -> dict[str, Job]:
        """Ask Slurm about the jobs of active Slurm runs and update their status files.

        A pending job keeps its run ``queued`` with the Slurm state and reason in the
        status's ``slurm`` entry; a started job marks a still-queued run ``running`` (the
        trainer then writes its own status); a job that ended while the run's status is
        still ``queued`` or ``running`` (the trainer could not write a final state) gives the
        run the job's final state: COMPLETED -> finished, CANCELLED -> stopped, FAILED,
        TIMEOUT, NODE_FAIL, OUT_OF_MEMORY... -> failed, with the Slurm state, reason and
        exit code in ``error``. Slurm is asked outside the lock (it can be slow); the files
        are updated under it.

        Returns:
            The jobs Slurm reported, by run name.
        """
        self._last_sync = time.monotonic()
        targets = {}
        for run in self._scan():
            job_id = _job_id(run.launch) if run.backend == "slurm" else None
            if job_id and run.status is not None and run.status.state in ACTIVE_STATES:
                targets[run.name] = job_id
        if not targets:
            return {}
        problem = self.slurm.problem()
        try:
            if problem:
                raise SlurmError(problem)
            by_id = self.slurm.jobs(targets.values())
        except SlurmError as e:
            if self._jobs_error != str(e):
                log.warning("cannot ask Slurm about jobs: %s", e)
            self._jobs_error = str(e)
            return {}
        self._jobs_error = None
        found = {}
        with self._locked():
            for name, job_id in targets.items():
                job = by_id.get(job_id)
                if job is not None:
                    found[name] = self._jobs[name] = job
                self._apply_job(self.runs_dir / name, job_id, job)
        return found

    # -- internals -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This launcher's lock plus an flock shared with other dashboards on ``runs_dir``."""
        with self._lock:
            if self._lock_depth == 0:
                self.runs_dir.mkdir(parents=True, exist_ok=True)
                self._lock_file = open(self.runs_dir / LOCK_FILE, "a")
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    self._lock_file.close()  # closing releases the flock
                    self._lock_file = None

    def _existing_run(self, name: str) -> Path:
        try:
            return paths.run_dir(self.runs_dir, name)
        except paths.ClientPathError as e:
            raise LaunchError("run", f"run: {e}") from None

    def _claim_dir(self, base: str) -> Path:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, 100_000):
            suffix = "" if i == 1 else f"-{i}"
            name = base[: MAX_RUN_NAME - len(suffix)] + suffix
            try:
                (self.runs_dir / name).mkdir()
            except FileExistsError:
                continue
            return self.runs_dir / name
        raise LaunchError("save_name", f"save_name: no free name left for {base!r}")

    def _queued_status(self, name: str, config: str, launch: dict) -> Status:
        return Status(
            state="queued",
            n_steps=int(launch["overrides"].get("n_steps", 0)),
            heartbeat=time.time(),
            extra={
                "save_name": name,
                "config_file": config,
                "launcher": {"device_request": launch["device"], "overrides": launch["overrides"]},
            },
        )

    def _scan(self, every: bool = False) -> list[_Run]:
        """Every launched run directory, by name, with its ``launch.json`` and ``status.json``.

        The one place the scheduler reads run files: a tick scans once and passes the list
        down. ``launch.json`` goes through the stat-keyed cache (it rarely changes);
        ``status.json`` is read afresh. With ``every``, run directories without a
        ``launch.json`` but with a ``status.json`` (runs started from the command line)
        are included too.
        """
        try:
            entries = sorted(os.scandir(self.runs_dir), key=lambda e: e.name)
        except OSError:  # not created yet (or removed)
            return []
        runs = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            run_dir = Path(entry.path)
            launch, problem = read_json(run_dir / LAUNCH_FILE)
            launched = launch is not None or problem is not None
            if not launched and not (every and (run_dir / STATUS_FILE).is_file()):
                continue
            runs.append(_Run(run_dir, launched, launch, read_status(run_dir)))
        return runs

    def _queue(self, runs: list[_Run]) -> list[tuple[_Run, dict]]:
        """Queued runs of this launcher's backend, oldest first, each with a copy of its launch."""
        queue = []
        for run in runs:
            status = run.status
            if status is None or status.state != "queued" or run.name in self._children:
                continue
            if run.launch is None or "config_path" not in run.launch:
                status.state, status.error = "failed", f"{LAUNCH_FILE} is missing or corrupt"
                write_status(run.dir, status)
                continue
            # another backend's run, or a Slurm run already waiting in Slurm's queue
            if run.backend != self.backend or _job_id(run.launch) is not None:
                continue
            queue.append((float(run.launch.get("created", 0.0)), run.name, run))
        queue.sort(key=lambda t: t[:2])
        return [(run, copy.deepcopy(dict(run.launch or {}))) for _, _, run in queue]

    def _active(self, runs: list[_Run]) -> dict[str, str]:
        return {
            run.name: str(run.launch.get("assigned_device", "cpu"))
            for run in runs
            if run.backend == "local"
            and run.status is not None
            and run.launch is not None
            and self._holds_slot(run.name, run.status)
        }

    def _queued_names(self, runs: list[_Run]) -> list[str]:
        if self.backend == "local":
            return [run.name for run, _ in self._queue(runs)]
        waiting = sorted(
            (float((run.launch or {}).get("created", 0.0) or 0.0), run.name)
            for run in runs
            if run.backend == "slurm" and run.status is not None and run.status.state == "queued"
        )
        return [name for _, name in waiting]

    def _holds_slot(self, name: str, status: Status) -> bool:
        child = self._children.get(name)
        if child is not None:
            return child.proc.poll() is None
        return status.state == "running" and pid_alive(status.pid)

    def _busy_devices(self, runs: list[_Run]) -> list[str]:
        """Devices held by a run: this launcher's live children, then re-attached runs."""
        busy = [c.device for c in self._children.values() if c.proc.poll() is None]
        for run in runs:
            if run.backend != "local" or run.name in self._children:
                continue
            if run.status is not None and self._holds_slot(run.name, run.status):
                busy.append(str((run.launch or {}).get("assigned_device", "cpu")))
        return busy

    def _free_device(self, request: str, busy: list[str]) -> str | None:
        """A device for ``request`` with a free slot given the ``busy`` devices, or ``None``."""
        gpus = self.gpus()
        if request == "cpu" or (request == "auto" and not gpus):
            return "cpu" if busy.count("cpu") < self.max_cpu_runs else None
        if request == "auto":
            return next((f"cuda:{i}" for i in gpus if f"cuda:{i}" not in busy), None)
        return request if request not in busy else None

    def _recheck(self, run_dir: Path, launch: dict) -> dict:
        """Validate ``launch.json`` again at start: the config may have been swapped while queued."""
        launch = dict(launch, overrides=validate_overrides(launch.get("overrides")))
        if launch.get("mode") == "resume":
            path = Path(launch["config_path"]).resolve()
            if path.parent != run_dir.resolve() or not path.is_file():
                raise LaunchError("config", f"config: {path} is not a config copy in {run_dir}")
        else:
            launch["config_path"] = str(resolve_config(self.configs_dir, launch["config_path"]))
        return launch

    def _argv(self, run_dir: Path, launch: dict, child_device: str) -> list[str]:
        # names and paths go as --option=value: a value starting with '-' stays a value
        config = launch["config_path"]
        if launch.get("mode") == "resume":
            argv = [self.python, str(self.run_py), "train", config, f"--resume={run_dir}"]
        else:
            argv = [
                self.python,
                str(self.run_py),
                "train",
                config,
                f"--save-path={self.runs_dir}",
                f"--save-name={run_dir.name}",
                "--use-existing-dir",
            ]
        argv += ["--device", child_device]
        gpus = int(((launch.get("slurm") or {}).get("resources") or {}).get("gpus") or 0)
        if gpus > 1:  # one DistributedDataParallel process per GPU of the job
            argv += ["--nproc", str(gpus)]
        for key, flag in _FLAGS.items():
            if key in launch.get("overrides", {}):
                argv += [flag, repr(launch["overrides"][key])]
        return argv

    def _spawn(self, run_dir: Path, launch: dict, device: str, queued: Status | None) -> None:
        """Start the child; ``queued`` is the run's status as this tick read it.

        The child owns ``status.json`` from its first write on (an early config error
        writes ``failed`` at once), so the launcher marks the run ``running`` before the
        child exists and afterwards only fills in the pid, and only while the file still
        holds the launcher's own write (``_replace_unless_changed``).
        """
        env = dict(os.environ, PYTHONUNBUFFERED="1", VOXELBOARD_DATA_DIR=str(self.data_dir))
        if device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
            child_device = "cuda:0"  # the one GPU the child can see
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""  # keep CPU runs off the GPUs
            child_device = "cpu"
        argv = self._argv(run_dir, launch, child_device)
        now = time.time()
        status = queued or Status()
        status.state, status.pid, status.heartbeat = "running", None, now
        status.started = status.started or now
        status.error = None
        status.extra.pop("ended", None)
        status.extra["device"] = device
        write_status(run_dir, status)
        written = (run_dir / STATUS_FILE).read_bytes()
        with open(run_dir / CONSOLE_LOG_FILE, "ab") as console:
            console.write(f"$ {shlex.join(argv)}\n".encode())
            console.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.run_py.parent,
                env=env,
                start_new_session=True,
            )
        self._children[run_dir.name] = _Child(run_dir.name, proc, device)
        status.pid = proc.pid  # so readers see a live run before the trainer's first write
        try:
            _replace_unless_changed(run_dir / STATUS_FILE, written, status.to_json())
        except OSError as e:  # the child runs: a missing pid only delays what readers see
            log.warning("%s: could not record pid %d in %s: %s", run_dir.name, proc.pid,
                        STATUS_FILE, e)  # fmt: skip
        atomic_write_json(
            run_dir / LAUNCH_FILE,
            {**launch, "assigned_device": device, "pid": proc.pid, "started": now, "argv": argv},
        )
        log.info("started %s on %s: pid %d", run_dir.name, device, proc.pid)

    # -- Slurm -----------------------------------------------------------------------

    @staticmethod
    def _slurm_device(device: str | None, gpus: int) -> str:
        """The trainer's ``--device`` in a Slurm job: the job's GPUs when it has any."""
        if device in (None, "", "auto"):
            return "cuda" if gpus else "cpu"
        if device == "cpu":
            if gpus:
                raise LaunchError(
                    "device", f"device: cpu, but the job asks for {gpus} GPU(s); set gpus to 0"
                )
            return "cpu"
        raise LaunchError("device", f"device: {device!r}; with Slurm choose auto or cpu")

    def _submit(self, run_dir: Path, launch: dict) -> None:
        """Write the batch script into the run directory and submit it with sbatch."""
        resources = resources_from((launch.get("slurm") or {}).get("resources"))
        argv = self._argv(run_dir, launch, self._slurm_device(launch.get("device"), resources.gpus))
        script = run_dir / BATCH_SCRIPT_FILE
        text = batch_script(
            argv,
            resources,
            env={"PYTHONUNBUFFERED": "1", "VOXELBOARD_DATA_DIR": str(self.data_dir)},
            comment=f"VoxelBoard run {run_dir.name}: written and submitted by the launcher",
        )
        atomic_write_bytes(script, text.encode())
        options = [
            f"--job-name=vb-{run_dir.name}",
            f"--output={run_dir / CONSOLE_LOG_FILE}",
            "--open-mode=append",
            f"--chdir={self.run_py.parent}",
        ]
        job_id = self.slurm.submit(script, options)
        now = time.time()
        slurm = {
            **launch["slurm"],
            "job_id": job_id,
            "submitted": now,
            "script": str(script),
            "sbatch_options": options,
        }
        atomic_write_json(run_dir / LAUNCH_FILE, {**launch, "slurm": slurm, "argv": argv})
        status = read_status(run_dir)
        if status is not None and status.state == "queued":
            status.extra["slurm"] = {"job_id": job_id, "state": "PENDING", "reason": None}
            status.error = None
            status.extra.pop("ended", None)
            write_status(run_dir, status)
        log.info("submitted %s: Slurm job %s", run_dir.name, job_id)

    def _apply_job(self, run_dir: Path, job_id: str, job: Job | None) -> None:
        """Bring one Slurm run's status in line with its job (see ``refresh_jobs``)."""
        status = read_status(run_dir)
        if status is None or status.state not in ACTIVE_STATES:
            return  # the trainer (or a stop) wrote a final state: that is the truth
        if _job_id(read_launch(run_dir)) != job_id:
            return  # resumed as a new job since Slurm was asked
        now = time.time()
        seen = {"job_id": job_id, "state": None, "reason": None}
        if job is not None:
            seen.update(state=job.state, reason=job.reason)
        target = job.run_state if job is not None else None
        if target is None:
            submitted = float(((read_launch(run_dir) or {}).get("slurm") or {}).get("submitted", 0))
            if job is not None or status.state != "queued" or now - submitted < JOB_UNKNOWN_GRACE_S:
                return  # unknown state word, or a running run: its heartbeat decides (lost)
            status.state = "failed"
            status.error = (
                f"Slurm job {job_id} is known to neither squeue nor sacct; it was never "
                f"started (see {run_dir / CONSOLE_LOG_FILE})"
            )
            status.extra["ended"] = now
        elif target == "queued":
            if status.state != "queued" or status.extra.get("slurm") == seen:
                return  # a requeued running job: the trainer's status stays in charge
        elif target == "running":
            if status.state == "queued":
                status.state, status.started, status.error = "running", now, None
            elif status.pid is not None:
                return  # the trainer writes this file now
            status.heartbeat = now  # the job runs; the trainer has not written yet
        else:
            stopping = run_dir.name in self._stopping
            self._stopping.discard(run_dir.name)
            status.state = "stopped" if stopping else target
            status.error = None
            if status.state == "failed":
                last = [x for x in tail_lines(run_dir / CONSOLE_LOG_FILE, 20) if x.strip()]
                said = f": {last[-1].strip()[:300]}" if last else ""
                why = ", ".join(
                    x for x in (job.reason, job.exit_code and f"exit {job.exit_code}") if x
                )
                status.error = (
                    f"Slurm job {job_id} ended {job.state}{f' ({why})' if why else ''} "
                    f"without the trainer writing a final state{said} "
                    f"(see {run_dir / CONSOLE_LOG_FILE})"
                )
            status.extra["ended"] = now
        status.extra["slurm"] = seen
        write_status(run_dir, status)

    def _job_state(self, run_dir: Path, status: Status | None) -> str:
        """``effective_state``, except that a Slurm run whose job is pending or running is
        ``queued``/``running`` even if its trainer's pid is not one this machine can see."""
        state = effective_state(status)
        job_id = _job_id(read_launch(run_dir))
        if state != "lost" or job_id is None:
            return state
        try:
            job = self.slurm.jobs([job_id]).get(job_id)
        except SlurmError as e:
            raise LaunchError("run", f"run: {run_dir.name}: cannot ask Slurm: {e}") from None
        if job is not None and job.run_state in ACTIVE_STATES:
            return job.run_state
        return state

    def _stop_job(self, name: str, run_dir: Path) -> str:
        with self._locked():
            status = read_status(run_dir)
            state = effective_state(status)
            job_id = _job_id(read_launch(run_dir))
            if status is None or status.state not in ACTIVE_STATES:
                raise LaunchError(
                    "run", f"run: {name} is {state}; only queued or running runs stop"
                )
            job = self._jobs.get(name)
            pending = status.state == "queued" and (job is None or job.run_state != "running")
            try:
                if job_id is not None:
                    self.slurm.cancel(job_id, signal=None if pending else "TERM")
            except SlurmError as e:
                raise LaunchError("run", f"run: {name}: {e}") from None
            if pending:
                status.state, status.error = "stopped", None
                status.extra["ended"] = time.time()
                if job_id is not None:
                    status.extra["slurm"] = {"job_id": job_id, "state": "CANCELLED", "reason": None}
                write_status(run_dir, status)
                return "stopped"
            self._stopping.add(name)
        threading.Thread(
            target=self._escalate_job, args=(name, job_id), name=f"stop-{name}", daemon=True
        ).start()
        log.info("stopping %s (Slurm job %s)", name, job_id)
        return "stopping"

    def _escalate_job(self, name: str, job_id: str | None) -> None:
        """Cancel the job outright if SIGTERM did not end it within ``grace_s``."""
        deadline = time.monotonic() + self.grace_s
        while job_id is not None:
            try:
                job = self.slurm.jobs([job_id]).get(job_id)
            except SlurmError:
                job = None
            ended = job is not None and job.run_state not in ("queued", "running")
            if ended:
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "%s: job %s did not end within %.0f s: scancel", name, job_id, self.grace_s
                )
                with contextlib.suppress(SlurmError):
                    self.slurm.cancel(job_id)
                break
            time.sleep(min(1.0, self.grace_s / 10))
        self.refresh_jobs()

    # -- local children ----------------------------------------------------------------

    def _reap(self) -> None:
        for name, child in list(self._children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            del self._children[name]
            self._finalize(name, child.proc.pid, code)

    def _finalize(self, name: str, pid: int | None, code: int | None) -> None:
        """Write a final state for a run whose process ended without writing one."""
        run_dir = self.runs_dir / name
        stopping = name in self._stopping
        self._stopping.discard(name)
        status = read_status(run_dir)
        if status is None or status.state not in ACTIVE_STATES or status.pid not in (pid, None):
            return
        if stopping:
            status.state, status.error = "stopped", None
        else:
            how = "without exit code" if code is None else f"with code {code}"
            last = [line for line in tail_lines(run_dir / CONSOLE_LOG_FILE, 20) if line.strip()]
            said = f": {last[-1].strip()[:300]}" if last and not last[-1].startswith("$ ") else ""
            status.state = "failed"
            status.error = (
                f"process exited {how} without writing a final state{said} "
                f"(see {run_dir / CONSOLE_LOG_FILE})"
            )
        status.extra["ended"] = time.time()
        write_status(run_dir, status)

    def _escalate(self, name: str, pid: int, leads_group: bool) -> None:
        child = self._children.get(name)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and _running(child, pid):
            time.sleep(0.05)
        if _running(child, pid):
            log.warning("%s did not stop within %.0f s: SIGKILL", name, self.grace_s)
            _signal_group(pid, signal.SIGKILL)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=10)
        if leads_group:
            # helpers of the trainer (data-loader workers) that outlived it go too; the group
            # id cannot be reused while any member is left, so this only reaches them
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with self._locked():
            if child is not None:
                self._reap()
            else:
                self._finalize(name, pid, None)


def _backend_of(launch: Mapping[str, Any] | None) -> str:
    """A run's backend; runs launched before backends existed are local."""
    return str((launch or {}).get("backend") or "local")


def _job_id(launch: Mapping[str, Any] | None) -> str | None:
    """The Slurm job id in a ``launch.json``, or ``None``."""
    job_id = ((launch or {}).get("slurm") or {}).get("job_id")
    return str(job_id) if job_id else None


def _replace_unless_changed(path: Path, expected: bytes, obj: Any) -> bool:
    """Replace the JSON file ``path`` with ``obj`` only while it still holds ``expected``.

    Another process (the child) replaces ``path`` at any moment and takes no lock, so
    read-compare-write could overwrite it in between. Instead the current file is renamed
    aside (atomic), compared, and the new or the old one is hard-linked back; a link never
    replaces a file the other process wrote meanwhile. For an instant ``path`` is absent,
    which readers of status files tolerate.

    Returns:
        True if ``obj`` was written.
    """
    tag = f"{os.getpid()}.{threading.get_ident()}"
    aside = path.with_name(f".{path.name}.{tag}.aside")
    new = path.with_name(f".{path.name}.{tag}.new")
    atomic_write_json(new, obj, fsync=False)
    try:
        try:
            os.rename(path, aside)
        except OSError:
            return False  # gone (run deleted) or not ours to move: leave it as it is
        try:
            ours = aside.read_bytes() == expected
        except OSError:
            ours = False
        source = new if ours else aside
        try:
            os.link(source, path)
        except FileExistsError:
            return False  # the other process wrote a newer file: it wins
        except OSError:  # a filesystem without hard links: replace, unless written meanwhile
            if path.exists():
                return False
            os.replace(source, path)
        return ours
    finally:
        if not path.exists():  # never leave the run without a status file
            with contextlib.suppress(OSError):
                os.replace(aside, path)
        for p in (new, aside):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def _running(child: _Child | None, pid: int) -> bool:
    return child.proc.poll() is None if child is not None else pid_alive(pid)


def _same_process(pid: int | None, status: Status) -> bool:
    """Guard against a recycled pid: the process must be older than the run's last heartbeat."""
    if not pid or pid == os.getpid() or not pid_alive(pid):
        return False
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    return created <= (status.heartbeat or time.time()) + 1.0


def _signal_group(pid: int | None, sig: int) -> bool:
    """Signal the process group led by ``pid``, or just ``pid`` if it leads none.

    Returns:
        True if a whole group (led by ``pid``) was signalled.
    """
    if not pid or pid == os.getpid():
        return False
    try:
        pgid = os.getpgid(pid)
        if pgid == pid and pgid != os.getpgrp():
            os.killpg(pgid, sig)
            return True
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    return False
