"""Start, queue, stop, resume and delete training runs: as child processes or as Slurm jobs.

Two backends run what the dashboard launches (``app.backends``): ``local`` (the default)
starts ``run.py train`` children on this machine and schedules them on its devices;
``slurm`` writes a batch script into the run directory and submits it with ``sbatch``, so
the run trains on a compute node while the dashboard, on a login node, reads the shared
runs directory. A run remembers its backend in ``launch.json``; each launcher starts only
the queued runs of its own backend.

The launcher keeps no state that the run directories do not hold, so a restarted
dashboard finds everything again (re-attach):

* a launch creates ``<runs_dir>/<name>/`` with ``launch.json`` (what to run) and
  ``launcher.json`` (the launcher's record, see ``trainer.runs.launcher_record``) before any
  process starts;
* a run's state is ``trainer.runs.merge_state`` of the trainer's ``status.json`` and the
  record; the queue is every launched run in state ``queued`` that no backend has started,
  oldest first;
* the backend records the pid or job id when it starts the run, and the exit code, the Slurm
  state and a stop request as they happen; the trainer alone writes ``status.json``.

``start()`` runs ``tick()`` every ``poll_s`` seconds in a daemon thread (let the backends
look at their processes and jobs, start queued runs); ``close()`` stops that thread and
leaves the runs alone. A file lock in the runs folder keeps two dashboards on the same
folder from starting a run twice.

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
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from app import paths
from app.backends import Backend, RunEntry, Spawn
from app.backends.local import LocalBackend
from app.backends.slurm import SlurmBackend
from app.readers import read_json
from app.security import (
    MAX_RUN_NAME,
    ConfigsDirs,
    LaunchError,
    QueueFullError,
    configs_dirs,
    resolve_config,
    sanitize_run_name,
    validate_overrides,
)
from app.slurm import Slurm, SlurmError
from app.sweeper import SweepStarts
from trainer.runs import (
    CONSOLE_LOG_FILE,
    LAUNCH_FILE,
    LauncherRecord,
    config_copy,
    latest_snapshot,
    launch_path,
    merge_state,
    pid_alive,
    read_launcher_record,
    read_status,
    write_launch,
    write_launcher_record,
)
from trainer.runs.sweeps import (
    TRIAL_FILE,
    read_trial,
    sweep_config_path,
    sweep_dir,
    write_trial,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ".launcher.lock"
#: backends a launcher can run launches with
BACKENDS = ("local", "slurm")
#: launches waiting in the queue at once; more are refused (a visitor cannot pile up work)
MAX_QUEUED = 20

#: states from which a run may be resumed from its newest snapshot
RESUMABLE_STATES = frozenset({"stopped", "pruned", "failed", "lost", "finished"})
#: states in which a run directory may be deleted
DELETABLE_STATES = frozenset({"finished", "stopped", "pruned", "failed", "diverged", "lost"})

# override name -> trainer command-line flag
_FLAGS = {"n_steps": "--n-steps", "batch_size": "--batch-size", "lr": "--lr"}


@dataclasses.dataclass
class Overview:
    """What the dashboard's system panel shows, from one scan of the runs folder.

    Attributes:
        active: as ``Launcher.active_runs()``: running local launched runs -> device.
        queued: as ``Launcher.queued_runs()``.
        pids: pid -> run name of every run (launched or not) whose state is running.
    """

    active: dict[str, str]
    queued: list[str]
    pids: dict[int, str]


class Launcher:
    """Launches ``run.py train`` for the dashboard: as children scheduled on this machine's
    devices (backend ``local``) or as Slurm jobs (backend ``slurm``).

    Args:
        runs_dir: where run directories live (created on first launch).
        configs_dir: the only folder configs may be launched from, or several folders
            (``configs_dirs``; ``configs_dir`` is the first).
        data_dir: data folder, passed to children as ``VOXELBOARD_DATA_DIR``.
        python: interpreter for children.
        run_py: the ``run.py`` to execute (tests pass a stand-in).
        max_cpu_runs: CPU runs allowed at once.
        grace_s: seconds between SIGTERM and SIGKILL (Slurm: ``scancel``) on stop.
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
        configs_dir: ConfigsDirs,
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
        self.runs_dir = Path(runs_dir).absolute()
        self.configs_dirs = configs_dirs(configs_dir)
        self.configs_dir = self.configs_dirs[0]
        self.data_dir = Path(data_dir).absolute()
        self.python = str(python)
        self.run_py = Path(run_py).absolute()
        self.max_queued = int(max_queued)
        self.poll_s = float(poll_s)
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_file: Any = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._sweep_errors: dict[str, str] = {}  # sweep id -> the error last logged
        #: how a launch becomes a process (the sweep starts use its environment too)
        self.spawn = spawn = Spawn(
            argv=self._argv,
            env={"PYTHONUNBUFFERED": "1", "VOXELBOARD_DATA_DIR": str(self.data_dir)},
            cwd=self.run_py.parent,
        )
        #: sweeps being made for the launch form (``app.sweeper.start_sweep``)
        self.sweep_starts = SweepStarts()
        #: every backend, by name: a run is stopped and watched by the backend that started it
        self.backends: dict[str, Backend] = {
            "local": LocalBackend(
                spawn, self._locked, _gpu_finder(gpus), max_cpu_runs=max_cpu_runs, grace_s=grace_s
            ),
            "slurm": SlurmBackend(
                spawn,
                self._locked,
                slurm or Slurm(),
                defaults=slurm_defaults,
                poll_s=slurm_poll_s,
                grace_s=grace_s,
            ),
        }

    @property
    def runner(self) -> Backend:
        """The backend new launches go to."""
        return self.backends[self.backend]

    @property
    def max_cpu_runs(self) -> int:
        """CPU runs allowed at once (the local backend's slots)."""
        return self.backends["local"].max_cpu_runs

    @max_cpu_runs.setter
    def max_cpu_runs(self, value: int) -> None:
        self.backends["local"].max_cpu_runs = int(value)

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
        return self.backends["local"].gpus()

    def devices(self) -> list[str]:
        """Device choices for the launch form: ``auto``, ``cpu``, ``cuda:N`` per GPU.

        With Slurm the GPUs are the job's (``gpus`` resource): ``auto`` or ``cpu``.
        """
        return self.runner.devices()

    def active_runs(self) -> dict[str, str]:
        """Running local launched runs (this process's or re-attached): run name -> device."""
        with self._lock:
            return self._active(self._scan())

    def queue_room(self) -> int:
        """How many more launches the queue takes now (``max_queued`` less those waiting)."""
        with self._lock:
            return max(0, self.max_queued - len(self._queued_names(self._scan())))

    def queued_runs(self) -> list[str]:
        """Names of this backend's queued runs, oldest first (Slurm: pending jobs too)."""
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
            pids = {r.view.pid: r.name for r in runs if r.view.pid and r.view.state == "running"}
            return Overview(self._active(launched), self._queued_names(launched), pids)

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Slurm runs under ``runs_dir``: run name -> ``job_id``, ``state`` and ``reason``.

        ``state`` and ``reason`` are what the last ``squeue``/``sacct`` answer recorded in
        ``launcher.json`` (``None`` before one). Reads files only; never calls Slurm.
        """
        return {
            run.name: {
                "job_id": run.record.job_id,
                "state": run.record.slurm_state,
                "reason": run.record.slurm_reason,
            }
            for run in self._scan()
            if run.record is not None and run.record.job_id
        }

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
        ``launch.json`` and ``launcher.json`` are created, then the scheduler runs.

        Args:
            config_name: a ``*.py`` file inside one of ``configs_dirs`` (name or path).
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
        config = resolve_config(self.configs_dirs, config_name)
        overrides = validate_overrides(overrides)
        fields = self.runner.prepare(config, device, resources)
        base = overrides.pop("save_name", None) or sanitize_run_name(config.stem)
        now = time.time()
        with self._locked():
            waiting = len(self._queued_names(self._scan()))
            if waiting >= self.max_queued:
                raise QueueFullError(
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
                "overrides": overrides,
                "created": now,
                **fields,
            }
            self._queue_launch(run_dir, launch)
        log.info("queued %s (%s on %s)", run_dir.name, config.name, launch["device"])
        self.tick()
        return run_dir.name

    def launch_trial(
        self,
        config: Path,
        name: str,
        trial: Mapping[str, Any],
        device: str = "auto",
        resources: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue one sweep trial as the run ``name`` (``app.sweeper`` calls this).

        The run trains the sweep's config copy ``config``; ``trial`` (sweep id, trial number,
        the values drawn) is written as the run's ``trial.json`` before the run is queued,
        and ``run.py train`` applies it, with the sweep's ``overrides`` (``n_steps``,
        ``batch_size``, ``lr``, as for ``launch``).

        Raises:
            QueueFullError: the queue is full (nothing was written; ask again later).
            LaunchError: the name is taken, or the device/resources are bad.
        """
        config = Path(config).absolute()
        overrides = validate_overrides(overrides)
        overrides.pop("save_name", None)
        fields = self.runner.prepare(config, device, resources)
        now = time.time()
        with self._locked():
            waiting = len(self._queued_names(self._scan()))
            if waiting >= self.max_queued:
                raise QueueFullError(
                    "config", f"not queued: {waiting} launches are already waiting, the most "
                    "this launcher queues"
                )  # fmt: skip
            run_dir = self.runs_dir / sanitize_run_name(name)
            try:
                run_dir.mkdir(parents=True)
            except FileExistsError:
                if not _unfinished_launch_of(run_dir, trial):
                    raise LaunchError("run", f"run: {run_dir.name} exists already") from None
            write_trial(run_dir, dict(trial))
            launch = {
                "format": 1,
                "backend": self.backend,
                "mode": "train",
                "config": config.name,
                "config_path": str(config),
                "sweep": trial["sweep"],
                "overrides": overrides,
                "created": now,
                **fields,
            }
            self._queue_launch(run_dir, launch)
        log.info("queued sweep trial %s", run_dir.name)
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
        with self._locked():
            run = self._entry(run_dir)
            return self.backends[_backend_name(run)].stop(run)

    def resume(self, name: str, device: str | None = None) -> str:
        """Queue a stopped, failed, lost or finished run to continue from its newest snapshot.

        The child is ``run.py train <run_dir>/0-<config>.py --resume <run_dir>`` with the
        original launch's ``n_steps``/``batch_size``/``lr`` overrides.

        Raises:
            LaunchError: wrong state, no snapshot, or no config copy in the run directory.
        """
        run_dir = self._existing_run(name)
        with self._locked():
            run = self._fresh_entry(run_dir)
            state = run.view.state
            if state not in RESUMABLE_STATES or self._tracked(name):
                allowed = ", ".join(sorted(RESUMABLE_STATES))
                raise LaunchError("run", f"run: {name} is {state}; only {allowed} runs resume")
            if latest_snapshot(run_dir) is None:
                raise LaunchError("run", f"run: {name} has no snapshot in snapshots/ to resume")
            copied = config_copy(run_dir)
            if copied is None:
                raise LaunchError("run", f"run: {name} has no config copy (0-<config>.py)")
            old = dict(run.launch or {})
            fields = self.runner.prepare(
                copied, device or old.get("device", "auto"), None, previous=old
            )
            launch = {
                "format": 1,
                "backend": self.backend,
                "mode": "resume",
                "config": old.get("config", copied.name[2:]),
                "config_path": str(copied),
                "overrides": {k: v for k, v in old.get("overrides", {}).items() if k in _FLAGS},
                "created": time.time(),
                **fields,
            }
            self._queue_launch(run_dir, launch)
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
            state = self._fresh_entry(run_dir).view.state
            if state not in DELETABLE_STATES or self._tracked(name):
                allowed = ", ".join(sorted(DELETABLE_STATES))
                raise LaunchError("run", f"run: {name} is {state}; only {allowed} runs delete")
            shutil.rmtree(run_dir)
        log.info("deleted %s", run_dir)

    def tick(self, sweeps: bool = True) -> list[str]:
        """Let the backends look at their runs, then start queued runs that can start.

        The local backend reaps exited children (recording their exit codes); the Slurm
        backend asks ``squeue``/``sacct`` every ``slurm_poll_s`` seconds (and after a
        submission) and records each job's state. Then queued runs of this launcher's
        backend start while their device has a free slot (Slurm: are submitted). Then, with
        ``sweeps``, the unfinished sweeps of this backend take a step (``drive_sweeps``).

        Returns:
            Names of the runs started (Slurm: submitted).
        """
        started = []
        with self._locked():
            runs = self._scan()
            for backend in self.backends.values():
                backend.poll(runs)
            runs = self._scan()  # each run's files are read once per tick, after the poll
            busy = [d for r in runs if (d := self.backends["local"].slot(r))]
            for run, launch in self._queue(runs):
                try:
                    record = self.runner.start(run, self._recheck(run.dir, launch), busy)
                except (OSError, LaunchError, SlurmError) as e:
                    self._refuse(run, f"could not start: {e}")
                    continue
                if record is not None:
                    started.append(run.name)
        if started:
            self.runner.poll(self._scan())
        if sweeps:
            self.drive_sweeps()
        return started

    def drive_sweeps(self) -> None:
        """Let every unfinished sweep of this launcher's backend follow its trials and queue
        the next ones (``app.sweeper``); a restarted dashboard resumes its sweeps here. A
        sweep that a live ``run.py sweep`` drives is left to it (the sweeps list says so)."""
        from app import sweeper

        for folder in sweeper.unfinished(self.runs_dir, self.backend):
            if sweeper.cli_driver(folder) not in (None, os.getpid()):
                continue
            try:
                sweeper.tick(self, folder)
                self._sweep_errors.pop(folder.name, None)
            except Exception as e:  # one broken sweep folder must not stop the scheduler
                said = f"{type(e).__name__}: {e}"
                if self._sweep_errors.get(folder.name) != said:  # once, not every tick
                    self._sweep_errors[folder.name] = said
                    log.exception("sweep %s: tick failed", folder.name)

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

    def _queue_launch(self, run_dir: Path, launch: dict[str, Any]) -> None:
        """Write the request and a fresh record: the run is queued from now on."""
        write_launch(run_dir, launch)
        write_launcher_record(run_dir, LauncherRecord(launch["backend"], queued=launch["created"]))

    def _refuse(self, run: RunEntry, error: str) -> None:
        """Record that a queued run could not be started: it shows as failed with ``error``."""
        now = time.time()
        queued = float((run.launch or {}).get("created") or 0.0) or now
        rec = run.record or LauncherRecord(_backend_name(run), queued=queued)
        write_launcher_record(run.dir, dataclasses.replace(rec, error=error, ended=now))

    def _tracked(self, name: str) -> bool:
        return any(b.busy(name) for b in self.backends.values())

    def _entry(self, run_dir: Path, launched: bool | None = None) -> RunEntry:
        """One run directory's files, read now, with their merged state."""
        launch, problem = read_json(launch_path(run_dir))
        status = read_status(run_dir)
        record = read_launcher_record(run_dir)
        view = merge_state(
            status, record, time.time(), pid_alive, console=str(run_dir / CONSOLE_LOG_FILE)
        )
        launched = launch is not None or problem is not None if launched is None else launched
        return RunEntry(run_dir, launched, launch, status, record, view)

    def _fresh_entry(self, run_dir: Path) -> RunEntry:
        """Like ``_entry``, after the run's backend recorded what it knows now (Slurm: asks)."""
        run = self._entry(run_dir)
        self.backends[_backend_name(run)].poll([run], force=True)
        return self._entry(run_dir)

    def _scan(self, every: bool = False) -> list[RunEntry]:
        """Every launched run directory, by name, with its files and merged state.

        The one place the scheduler reads run files: a tick scans once and passes the list
        down. ``launch.json`` goes through the stat-keyed cache (it rarely changes); the
        status and the record are read afresh. With ``every``, run directories without a
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
            launched = launch_path(run_dir).exists()
            if not launched and not (every and read_status(run_dir) is not None):
                continue
            runs.append(self._entry(run_dir, launched))
        return runs

    def _queue(self, runs: list[RunEntry]) -> list[tuple[RunEntry, dict]]:
        """Queued runs of this launcher's backend that no backend started yet, oldest first,
        each with a copy of its launch."""
        queue = []
        for run in runs:
            rec = run.record
            if run.view.state != "queued" or self._tracked(run.name):
                continue
            if rec is not None and (rec.pid is not None or rec.job_id is not None):
                continue  # started (a Slurm job waiting in Slurm's queue)
            if run.launch is None or "config_path" not in run.launch:
                self._refuse(run, f"{LAUNCH_FILE} is missing or corrupt")
                continue
            if _backend_name(run) != self.backend:
                continue  # another backend's run
            queue.append((float(run.launch.get("created", 0.0)), run.name, run))
        queue.sort(key=lambda t: t[:2])
        return [(run, copy.deepcopy(dict(run.launch or {}))) for _, _, run in queue]

    def _active(self, runs: list[RunEntry]) -> dict[str, str]:
        local = self.backends["local"]
        return {run.name: device for run in runs if (device := local.slot(run))}

    def _queued_names(self, runs: list[RunEntry]) -> list[str]:
        waiting = sorted(
            (float((run.launch or {}).get("created", 0.0) or 0.0), run.name)
            for run in runs
            if _backend_name(run) == self.backend and run.view.state == "queued"
        )
        return [name for _, name in waiting]

    def _recheck(self, run_dir: Path, launch: dict) -> dict:
        """Validate ``launch.json`` again at start: the config may have been swapped while queued."""
        launch = dict(launch, overrides=validate_overrides(launch.get("overrides")))
        if launch.get("mode") == "resume":
            path = Path(launch["config_path"]).resolve()
            if path.parent != run_dir.resolve() or not path.is_file():
                raise LaunchError("config", f"config: {path} is not a config copy in {run_dir}")
        elif launch.get("sweep") is not None:
            path = Path(launch["config_path"]).resolve()
            try:
                expected = sweep_config_path(sweep_dir(self.runs_dir, launch["sweep"])).resolve()
            except ValueError as e:
                raise LaunchError("config", f"config: {e}") from None
            if path != expected or not path.is_file():
                raise LaunchError("config", f"config: {path} is not the config of its sweep")
        else:
            launch["config_path"] = str(resolve_config(self.configs_dirs, launch["config_path"]))
        return launch

    def _argv(self, run_dir: Path, launch: Mapping[str, Any], child_device: str) -> list[str]:
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
        resources = (launch.get("slurm") or {}).get("resources") or {}
        gpus, nodes = int(resources.get("gpus") or 0), int(resources.get("nodes") or 1)
        if gpus > 1 or nodes > 1:  # one DistributedDataParallel process per GPU (per node)
            argv += ["--nproc", str(max(gpus, 1))]
        for key, flag in _FLAGS.items():
            if key in launch.get("overrides", {}):
                argv += [flag, repr(launch["overrides"][key])]
        return argv


def _backend_name(run: RunEntry) -> str:
    """The backend that owns a run; an unknown name (a newer dashboard's) counts as local."""
    return run.backend if run.backend in BACKENDS else "local"


def _gpu_finder(gpus: list[int] | None) -> Any:
    """The GPU list, or a function that asks NVML once (nothing probed at construction)."""
    if gpus is not None:
        return list(gpus)

    def find() -> list[int]:
        from app.system import gpu_indices

        return gpu_indices()

    return find


def _unfinished_launch_of(run_dir: Path, trial: Mapping[str, Any]) -> bool:
    """Whether ``run_dir`` is this very trial's launch, begun by a process that died before
    it queued the run: nothing in it but the trial's own ``trial.json`` (or the temporary
    file of one), and no launch request."""
    if not run_dir.is_dir() or launch_path(run_dir).exists():
        return False
    names = {p.name for p in run_dir.iterdir()}
    if any(n != TRIAL_FILE and not n.startswith(f".{TRIAL_FILE}.") for n in names):
        return False
    found = read_trial(run_dir) if TRIAL_FILE in names else None
    return found is None or (
        found.get("sweep") == trial["sweep"] and found.get("number") == trial["number"]
    )
