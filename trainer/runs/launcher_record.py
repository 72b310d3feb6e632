"""``launcher.json``: the launcher's record of one launch (pid, device, Slurm job, exit code).

Only the process that started the run writes this file: the dashboard's launcher (both
backends) writes ``launcher.json``; the ``--nproc`` torchrun supervisor of ``run.py train``
writes the same record as ``supervisor.json``. The trainer writes ``status.json`` and never
reads these; ``trainer.runs.state.merge_state`` combines them for readers.

A new launch (or resume) replaces the record, so it always describes the current attempt;
``queued`` is that attempt's request time, and a ``status.json`` last written before it is an
earlier attempt's.

Example:
    >>> rec = LauncherRecord(backend="local", queued=time.time())  # doctest: +SKIP
    >>> write_launcher_record(run_dir, rec)  # doctest: +SKIP
    >>> read_launcher_record(run_dir).backend  # doctest: +SKIP
    'local'
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.runs.atomic import atomic_write_json
from trainer.runs.confine import confined

LAUNCHER_FILE = "launcher.json"
SUPERVISOR_FILE = "supervisor.json"

#: Slurm job states (first word of squeue's %T or sacct's State) -> VoxelBoard run state
JOB_STATES: dict[str, str] = {
    **dict.fromkeys(
        ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"),
        "queued",
    ),
    **dict.fromkeys(
        ("RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"),
        "running",
    ),
    "COMPLETED": "finished",
    "CANCELLED": "stopped",
    **dict.fromkeys(
        (
            "FAILED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "BOOT_FAIL",
            "DEADLINE",
            "PREEMPTED",
            "REVOKED",
            "SPECIAL_EXIT",
        ),
        "failed",
    ),
}


def job_run_state(slurm_state: str | None) -> str | None:
    """``queued``, ``running``, ``finished``, ``stopped`` or ``failed`` for a Slurm state.

    ``None`` for a state this module does not know (the caller keeps the run's own state).
    Extra words (sacct's ``CANCELLED by 1000``) and a trailing ``+`` are ignored.
    """
    word = slurm_state.strip().split(" ", 1)[0].rstrip("+").upper() if slurm_state else ""
    return JOB_STATES.get(word)


def slurm_exit_code(text: str | None) -> int | None:
    """sacct's ``code:signal`` as one number: the code, or minus the signal (``0:15`` -> -15)."""
    try:
        code, _, sig = str(text).partition(":")
        code_i, sig_i = int(code), int(sig or 0)
    except ValueError:
        return None
    return code_i if code_i or not sig_i else -sig_i


@dataclasses.dataclass
class LauncherRecord:
    """Contents of ``launcher.json`` (and of the torchrun supervisor's ``supervisor.json``).

    Attributes:
        backend: ``local``, ``slurm`` or ``torchrun`` (the supervisor).
        queued: unix time this attempt was requested (``launch.json``'s ``created``).
        pid: the child the launcher started (it leads its own process group), or the
            supervisor itself.
        device: the device a local child was given (``cpu``, ``cuda:N``).
        started: unix time the child started (Slurm: the job was first seen running).
        job_id: the Slurm job id.
        submitted: unix time the job was submitted.
        slurm_state: the job's state word at the last poll (``PENDING``, ``RUNNING``...).
        slurm_reason: why the job waits or ended (``Resources``, ``NonZeroExitCode``...).
        polled: unix time of the last answer from ``squeue``/``sacct``.
        exit_code: the process's exit status (minus the signal that killed it), or the job's.
        ended: unix time the launcher saw the process or job end (or gave up starting it).
        last_output: the last line of ``console.log`` when it ended.
        error: why the launcher could not start it or lost track of it.
        stop_requested: unix time a stop was asked for.
    """

    backend: str = "local"
    queued: float | None = None
    pid: int | None = None
    device: str | None = None
    started: float | None = None
    job_id: str | None = None
    submitted: float | None = None
    slurm_state: str | None = None
    slurm_reason: str | None = None
    polled: float | None = None
    exit_code: int | None = None
    ended: float | None = None
    last_output: str | None = None
    error: str | None = None
    stop_requested: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LauncherRecord:
        """Build from a parsed file; unknown keys are ignored, values of the wrong type
        fall back to their defaults (a reader shows what it can)."""
        fields = {}
        for f in dataclasses.fields(cls):
            v = d.get(f.name)
            if f.name in _KINDS and v is not None and _KINDS[f.name](v):
                fields[f.name] = v
        return cls(**fields)


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(v: Any) -> bool:
    return isinstance(v, str)


_KINDS = {
    "backend": _str,
    "queued": _num,
    "pid": _int,
    "device": _str,
    "started": _num,
    "job_id": _str,
    "submitted": _num,
    "slurm_state": _str,
    "slurm_reason": _str,
    "polled": _num,
    "exit_code": _int,
    "ended": _num,
    "last_output": _str,
    "error": _str,
    "stop_requested": _num,
}


def write_launcher_record(
    run_dir: str | os.PathLike, record: LauncherRecord, name: str = LAUNCHER_FILE
) -> None:
    """Replace ``launcher.json`` (or ``name``) atomically."""
    atomic_write_json(Path(run_dir) / name, record.to_json(), fsync=False)


def read_launcher_record(
    run_dir: str | os.PathLike, name: str = LAUNCHER_FILE
) -> LauncherRecord | None:
    """``launcher.json`` (or ``name``), or ``None`` if absent or unreadable.

    A run directory written before ``launcher.json`` existed kept the pid, device and job
    id in ``launch.json``; for ``launcher.json`` those become the record.
    """
    try:
        d = json.loads(confined(Path(run_dir) / name).read_text())
    except FileNotFoundError:
        if name != LAUNCHER_FILE:
            return None
        from trainer.runs.launch import read_launch

        return legacy_record(read_launch(run_dir))
    except (OSError, ValueError):
        return None
    return LauncherRecord.from_json(d) if isinstance(d, dict) else None


def legacy_record(launch: Mapping[str, Any] | None) -> LauncherRecord | None:
    """The record an older ``launch.json`` implies (it held ``pid``, ``assigned_device``,
    ``slurm.job_id``), or ``None`` when it names no process or job."""
    if not launch:
        return None
    slurm = launch.get("slurm") if isinstance(launch.get("slurm"), dict) else {}
    job_id = slurm.get("job_id")
    if not launch.get("pid") and not job_id:
        return None
    return LauncherRecord.from_json(
        {
            "backend": launch.get("backend") or "local",
            "queued": launch.get("created"),
            "pid": launch.get("pid"),
            "device": launch.get("assigned_device"),
            "started": launch.get("started"),
            "job_id": str(job_id) if job_id else None,
            "submitted": slurm.get("submitted"),
        }
    )
