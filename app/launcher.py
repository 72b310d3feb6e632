"""Start, queue, stop, resume and delete training runs as child processes.

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

Example:
    >>> with Launcher("runs", "examples", "data") as launcher:  # doctest: +SKIP
    ...     name = launcher.launch("demo_cnn3d.py", device="cpu", overrides={"n_steps": 500})
    ...     launcher.stop(name)
"""

from __future__ import annotations

import contextlib
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

from app.readers import tail_lines
from app.security import (
    MAX_RUN_NAME,
    LaunchError,
    check_run_name,
    resolve_config,
    sanitize_run_name,
    validate_device,
    validate_overrides,
)
from trainer.runs import (
    ACTIVE_STATES,
    CONSOLE_LOG_FILE,
    Status,
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


def read_launch(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``launch.json`` of a run, or ``None`` if absent or unreadable."""
    try:
        d = json.loads((Path(run_dir) / LAUNCH_FILE).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


class Launcher:
    """Launches ``run.py train`` children for the dashboard and schedules them on devices.

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
    ) -> None:
        self.runs_dir = Path(runs_dir).absolute()
        self.configs_dir = Path(configs_dir).absolute()
        self.data_dir = Path(data_dir).absolute()
        self.python = str(python)
        self.run_py = Path(run_py).absolute()
        self.max_cpu_runs = int(max_cpu_runs)
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
        """Device choices for the launch form: ``auto``, ``cpu``, ``cuda:N`` per GPU."""
        return ["auto", "cpu", *(f"cuda:{i}" for i in self.gpus())]

    def active_runs(self) -> dict[str, str]:
        """Running launched runs (this process's or re-attached): run name -> device."""
        out = {}
        with self._lock:
            for run_dir in self._launched_dirs():
                status = read_status(run_dir)
                launch = read_launch(run_dir)
                if status and launch and self._holds_slot(run_dir.name, status):
                    out[run_dir.name] = str(launch.get("assigned_device", "cpu"))
        return out

    def queued_runs(self) -> list[str]:
        """Names of queued runs in the order they will be considered."""
        with self._lock:
            return [name for name, _ in self._queue()]

    # -- actions ---------------------------------------------------------------------

    def launch(
        self,
        config_name: str,
        device: str = "auto",
        overrides: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue a training run and start it if its device is free.

        Everything is validated before anything is written; then the run directory,
        ``launch.json`` and a ``queued`` ``status.json`` are created, then the scheduler runs.

        Args:
            config_name: a ``*.py`` file inside ``configs_dir`` (name or path).
            device: ``auto`` (a free GPU, else CPU when there are no GPUs), ``cpu`` or ``cuda:N``.
            overrides: optional ``n_steps``, ``batch_size``, ``lr``, ``save_name``.

        Returns:
            The run name (``save_name`` sanitised, or the config's stem; ``-2``, ``-3``...
            appended if taken).

        Raises:
            LaunchError: naming the offending field.
        """
        config = resolve_config(self.configs_dir, config_name)
        device = validate_device(device, self.gpus())
        overrides = validate_overrides(overrides)
        base = overrides.pop("save_name", None) or sanitize_run_name(config.stem)
        now = time.time()
        with self._locked():
            run_dir = self._claim_dir(base)
            launch = {
                "format": 1,
                "mode": "train",
                "config": config.name,
                "config_path": str(config),
                "device": device,
                "overrides": overrides,
                "created": now,
            }
            atomic_write_json(run_dir / LAUNCH_FILE, launch)
            write_status(run_dir, self._queued_status(run_dir.name, config.name, launch))
        log.info("queued %s (%s on %s)", run_dir.name, config.name, device)
        self.tick()
        return run_dir.name

    def stop(self, name: str) -> str:
        """Stop a run: a queued one is marked ``stopped``; a running one gets SIGTERM.

        SIGTERM goes to the run's process group; if it is still alive after ``grace_s``
        it gets SIGKILL (from a background thread, so this returns at once).

        Returns:
            ``'stopped'`` for a queued run, ``'stopping'`` for a running one.

        Raises:
            LaunchError: unknown run, or not queued/running.
        """
        run_dir = self._existing_run(name)
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
            state = effective_state(status)
            if state not in RESUMABLE_STATES or name in self._children:
                allowed = ", ".join(sorted(RESUMABLE_STATES))
                raise LaunchError("run", f"run: {name} is {state}; only {allowed} runs resume")
            if latest_snapshot(run_dir) is None:
                raise LaunchError("run", f"run: {name} has no snapshot in snapshots/ to resume")
            copies = sorted(run_dir.glob("0-*.py"))
            if not copies:
                raise LaunchError("run", f"run: {name} has no config copy (0-<config>.py)")
            old = read_launch(run_dir) or {}
            device = validate_device(device or old.get("device", "auto"), self.gpus())
            launch = {
                "format": 1,
                "mode": "resume",
                "config": old.get("config", copies[0].name[2:]),
                "config_path": str(copies[0]),
                "device": device,
                "overrides": {k: v for k, v in old.get("overrides", {}).items() if k in _FLAGS},
                "created": time.time(),
            }
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
            state = effective_state(read_status(run_dir))
            if state not in DELETABLE_STATES or name in self._children:
                allowed = ", ".join(sorted(DELETABLE_STATES))
                raise LaunchError("run", f"run: {name} is {state}; only {allowed} runs delete")
            shutil.rmtree(run_dir)
        log.info("deleted %s", run_dir)

    def tick(self) -> list[str]:
        """Reap exited children, then start queued runs whose device has a free slot.

        Returns:
            Names of the runs started.
        """
        started = []
        with self._locked():
            self._reap()
            queue = self._queue()
            if not queue:
                return []
            busy = self._busy_devices()
            for name, launch in queue:
                device = self._free_device(str(launch.get("device", "auto")), busy)
                if device is None:
                    continue
                run_dir = self.runs_dir / name
                try:
                    self._spawn(run_dir, self._recheck(run_dir, launch), device)
                except (OSError, LaunchError) as e:
                    status = read_status(run_dir) or Status()
                    status.state, status.error = "failed", f"could not start: {e}"
                    status.extra["ended"] = time.time()
                    write_status(run_dir, status)
                    continue
                busy.append(device)
                started.append(name)
        return started

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
        name = check_run_name(name)
        run_dir = self.runs_dir / name
        if run_dir.is_symlink() or not run_dir.is_dir():
            raise LaunchError("run", f"run: no run directory {name!r} in {self.runs_dir}")
        if run_dir.resolve().parent != self.runs_dir.resolve():
            raise LaunchError("run", f"run: {name!r} is not inside {self.runs_dir}")
        return run_dir

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

    def _launched_dirs(self) -> Iterator[Path]:
        try:
            entries = sorted(self.runs_dir.iterdir())
        except OSError:  # not created yet (or removed)
            return
        for p in entries:
            if not p.name.startswith(".") and (p / LAUNCH_FILE).is_file():
                yield p

    def _queue(self) -> list[tuple[str, dict]]:
        queue = []
        for run_dir in self._launched_dirs():
            status = read_status(run_dir)
            if status is None or status.state != "queued" or run_dir.name in self._children:
                continue
            launch = read_launch(run_dir)
            if launch is None or "config_path" not in launch:
                status.state, status.error = "failed", f"{LAUNCH_FILE} is missing or corrupt"
                write_status(run_dir, status)
                continue
            queue.append((float(launch.get("created", 0.0)), run_dir.name, launch))
        return [(name, launch) for _, name, launch in sorted(queue, key=lambda t: t[:2])]

    def _holds_slot(self, name: str, status: Status) -> bool:
        child = self._children.get(name)
        if child is not None:
            return child.proc.poll() is None
        return status.state == "running" and pid_alive(status.pid)

    def _busy_devices(self) -> list[str]:
        busy = [c.device for c in self._children.values() if c.proc.poll() is None]
        for run_dir in self._launched_dirs():
            if run_dir.name in self._children:
                continue
            status = read_status(run_dir)
            if status is not None and self._holds_slot(run_dir.name, status):
                busy.append(str((read_launch(run_dir) or {}).get("assigned_device", "cpu")))
        return busy

    def _free_device(self, request: str, busy: list[str]) -> str | None:
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
        config = launch["config_path"]
        if launch.get("mode") == "resume":
            argv = [self.python, str(self.run_py), "train", config, "--resume", str(run_dir)]
        else:
            argv = [
                self.python,
                str(self.run_py),
                "train",
                config,
                "--save-path",
                str(self.runs_dir),
                "--save-name",
                run_dir.name,
                "--use-existing-dir",
            ]
        argv += ["--device", child_device]
        for key, flag in _FLAGS.items():
            if key in launch.get("overrides", {}):
                argv += [flag, repr(launch["overrides"][key])]
        return argv

    def _spawn(self, run_dir: Path, launch: dict, device: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", VOXELBOARD_DATA_DIR=str(self.data_dir))
        if device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
            child_device = "cuda:0"  # the one GPU the child can see
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""  # keep CPU runs off the GPUs
            child_device = "cpu"
        argv = self._argv(run_dir, launch, child_device)
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
        now = time.time()
        self._children[run_dir.name] = _Child(run_dir.name, proc, device)
        atomic_write_json(
            run_dir / LAUNCH_FILE,
            {**launch, "assigned_device": device, "pid": proc.pid, "started": now, "argv": argv},
        )
        status = read_status(run_dir)
        if status is not None and status.state == "queued":  # else the child was quicker
            status.state, status.pid, status.heartbeat = "running", proc.pid, now
            status.started = status.started or now
            status.error = None
            status.extra.pop("ended", None)
            status.extra["device"] = device
            write_status(run_dir, status)
        log.info("started %s on %s: pid %d", run_dir.name, device, proc.pid)

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
