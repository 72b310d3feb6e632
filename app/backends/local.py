"""The ``local`` backend: ``run.py train`` children on this machine, one per device slot.

Each child runs without a shell in its own process group, with its output in
``console.log``; its pid, device and start time go into ``launcher.json`` the moment it
starts, its exit code and end time when it is reaped. One run per GPU, ``max_cpu_runs`` on
the CPU. Stop sends SIGTERM to the group and SIGKILL after ``grace_s`` (from a thread).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.backends import LockFn, RunEntry, Spawn, env_for, last_output, start_process
from app.security import LaunchError, validate_device
from trainer.runs import (
    CONSOLE_LOG_FILE,
    LauncherRecord,
    pid_alive,
    read_launcher_record,
    write_launcher_record,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Child:
    dir: Path
    proc: subprocess.Popen
    device: str


class LocalBackend:
    """Children of this process, scheduled on this machine's devices.

    Args:
        spawn: the command line, environment and folder of a child.
        lock: the launcher's lock; held while a record is written from a stop thread.
        gpus: GPU indices, or a function that finds them (asked once, when first needed).
        max_cpu_runs: CPU runs at once.
        grace_s: seconds between SIGTERM and SIGKILL.
    """

    name = "local"

    def __init__(
        self,
        spawn: Spawn,
        lock: LockFn,
        gpus: Any,
        max_cpu_runs: int = 1,
        grace_s: float = 10.0,
    ) -> None:
        self.spawn, self.lock = spawn, lock
        self._gpus = gpus
        self.max_cpu_runs = int(max_cpu_runs)
        self.grace_s = float(grace_s)
        self.error: str | None = None
        #: children this process started and has not reaped, by run name
        self.children: dict[str, Child] = {}

    def gpus(self) -> list[int]:
        if callable(self._gpus):
            self._gpus = list(self._gpus())
        return list(self._gpus)

    def devices(self) -> list[str]:
        return ["auto", "cpu", *(f"cuda:{i}" for i in self.gpus())]

    def prepare(
        self,
        config: Path,
        device: str | None,
        resources: Mapping[str, Any] | None,
        previous: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        given = sorted(k for k, v in (resources or {}).items() if v not in (None, ""))
        if given:
            raise LaunchError(
                given[0], f"{given[0]}: Slurm resources need the dashboard's --backend slurm"
            )
        return {"device": validate_device(device or "auto", self.gpus())}

    # -- the launch form ----------------------------------------------------------------

    def form_fields(self) -> dict[str, str]:
        return {}  # a child takes this machine's devices: the Device field says which

    def form_placeholder(self, key: str) -> str:
        return ""

    def resources_from_form(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        return None

    def sweep_limit(self) -> str:
        n = self.max_cpu_runs
        return (
            f"and it runs at most {n} CPU run{'' if n == 1 else 's'} at once "
            "(more trials wait in the queue)"
        )

    def notes(self, gpus_found: bool) -> list[tuple[str, bool]]:
        return [] if gpus_found else [("No NVIDIA GPU found: runs use the CPU.", False)]

    # -- start -----------------------------------------------------------------------

    def start(
        self, run: RunEntry, launch: Mapping[str, Any], busy: list[str]
    ) -> LauncherRecord | None:
        device = self._free_device(str(launch.get("device", "auto")), busy)
        if device is None:
            return None
        env = env_for(self.spawn.env)
        if device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
            child_device = "cuda:0"  # the one GPU the child can see
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""  # keep CPU runs off the GPUs
            child_device = "cpu"
        argv = self.spawn.argv(run.dir, launch, child_device)
        with open(run.dir / CONSOLE_LOG_FILE, "ab") as console:
            console.write(f"$ {shlex.join(argv)}\n".encode())
            console.flush()
            proc = start_process(argv, env, self.spawn.cwd, console, subprocess.STDOUT)
        self.children[run.name] = Child(run.dir, proc, device)
        record = LauncherRecord(
            backend=self.name,
            queued=float(launch.get("created") or 0.0) or None,
            pid=proc.pid,
            device=device,
            started=time.time(),
        )
        write_launcher_record(run.dir, record)
        busy.append(device)
        log.info("started %s on %s: pid %d", run.name, device, proc.pid)
        return record

    def _free_device(self, request: str, busy: list[str]) -> str | None:
        """A device for ``request`` with a free slot given the ``busy`` devices, or ``None``."""
        gpus = self.gpus()
        if request == "cpu" or (request == "auto" and not gpus):
            return "cpu" if busy.count("cpu") < self.max_cpu_runs else None
        if request == "auto":
            return next((f"cuda:{i}" for i in gpus if f"cuda:{i}" not in busy), None)
        return request if request not in busy else None

    # -- slots -----------------------------------------------------------------------

    def slot(self, run: RunEntry) -> str | None:
        child = self.children.get(run.name)
        if child is not None:
            return child.device if child.proc.poll() is None else None
        rec = run.record
        if rec is None or rec.backend != self.name or rec.ended is not None:
            return None
        if run.view.state == "running" and pid_alive(rec.pid):
            return rec.device or "cpu"
        return None

    def busy(self, name: str) -> bool:
        return name in self.children

    # -- stop and reap -----------------------------------------------------------------

    def stop(self, run: RunEntry) -> str:
        rec = run.record
        now = time.time()
        if run.view.state == "queued" and run.name not in self.children:
            rec = rec or LauncherRecord(backend=self.name, queued=now)
            write_launcher_record(run.dir, dataclasses.replace(rec, stop_requested=now, ended=now))
            return "stopped"
        if run.view.state != "running":
            raise LaunchError(
                "run", f"run: {run.name} is {run.view.state}; only queued or running runs stop"
            )
        child = self.children.get(run.name)
        pid = child.proc.pid if child else (rec.pid if rec and rec.pid else run.view.pid)
        since = (rec.started if rec else None) or (run.status.heartbeat if run.status else now)
        if child is None and not _same_process(pid, since):
            raise LaunchError("run", f"run: {run.name}: process {pid} is not the run's trainer")
        if rec is None:  # a run started from a shell: the stop is recorded all the same
            rec = LauncherRecord(backend=self.name, pid=pid, started=run.view.started)
        write_launcher_record(run.dir, dataclasses.replace(rec, stop_requested=now))
        leads_group = _signal_group(pid, signal.SIGTERM)
        threading.Thread(
            target=self._escalate,
            args=(run.dir, pid, leads_group),
            name=f"stop-{run.name}",
            daemon=True,
        ).start()
        log.info("stopping %s (pid %s)", run.name, pid)
        return "stopping"

    def poll(self, runs: list[RunEntry], force: bool = False) -> None:
        """Reap children that exited: their exit code and end time go into the record."""
        for name, child in list(self.children.items()):
            code = child.proc.poll()
            if code is not None:
                del self.children[name]
                self._ended(child.dir, child.proc.pid, code)

    def _ended(self, run_dir: Path, pid: int | None, code: int | None) -> None:
        rec = read_launcher_record(run_dir)
        if rec is None or rec.pid not in (pid, None) or rec.ended is not None:
            return
        ended = dataclasses.replace(
            rec, exit_code=code, ended=time.time(), last_output=last_output(run_dir)
        )
        with contextlib.suppress(FileNotFoundError):  # the run was deleted meanwhile
            write_launcher_record(run_dir, ended)

    def _escalate(self, run_dir: Path, pid: int, leads_group: bool) -> None:
        child = self.children.get(run_dir.name)
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and _running(child, pid):
            time.sleep(0.05)
        if _running(child, pid):
            log.warning("%s did not stop within %.0f s: SIGKILL", run_dir.name, self.grace_s)
            _signal_group(pid, signal.SIGKILL)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=10)
        if leads_group:
            # helpers of the trainer (data-loader workers) that outlived it go too; the group
            # id cannot be reused while any member is left, so this only reaches them
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with self.lock():
            if child is not None:
                self.poll([])
            else:
                self._ended(run_dir, pid, None)


def _running(child: Child | None, pid: int) -> bool:
    return child.proc.poll() is None if child is not None else pid_alive(pid)


def _same_process(pid: int | None, since: float) -> bool:
    """Guard against a recycled pid: the process must be older than the run's start."""
    if not pid or pid == os.getpid() or not pid_alive(pid):
        return False
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return False
    return created <= since + 1.0


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
