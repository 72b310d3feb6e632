"""The jobs page's Start, Stop and Resume: the thin shell over ``app.block_jobs``.

``start_command`` checks a Start form's fields (every path inside the dashboard's data
folder, numbers in range; a bad value gets a message naming its field) and builds the
``run.py predict|segment`` command; ``start`` runs it detached, as ``resume`` does.

``stop`` stops a job's workers (``block_jobs.stop_job``: ``scancel`` of its array, or
SIGTERM to its workers on this host). ``resume`` runs the command that submitted the job
again (``block_jobs.resume_argv``), in the folder it ran in, as a detached process whose
output goes to ``dashboard-resume.log`` in the job folder; it returns at once (a thread
reaps the process when it ends), so no callback waits for a job.

The command comes from the job file in the output, which anyone who can write the output
could change: only ``run.py predict`` or ``run.py segment`` of this repository is run, with
this dashboard's Python.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.block_jobs import REPO, resume_argv, stop_job
from trainer.block_claims import job_folder

#: where a resumed job's supervisor writes what it says, in the job folder
RESUME_LOG = "dashboard-resume.log"
#: the most local workers, and Slurm array tasks, a Start may ask for
MAX_LOCAL_WORKERS = 64
MAX_SLURM_JOBS = 4096
#: what an array key in a zarr or HDF5 file may look like
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,99}$")


class JobActionError(ValueError):
    """A job that cannot be resumed from the page; the message says why and what to do."""


def stop(record: Mapping[str, Any], slurm: Any = None) -> list[str]:
    """Stop the job of ``record``; returns what was stopped (workers or a Slurm job)."""
    return stop_job(record["output"], slurm)


def resume_command(record: Mapping[str, Any]) -> list[str]:
    """The command resuming the job of ``record``, checked.

    Raises:
        JobActionError: the job file names no command, or one that is not ``run.py
            predict|segment`` of the record's kind.
    """
    argv = resume_argv(record["output"])
    if not argv:
        raise JobActionError(
            f"{record['output']}: its job file names no command; run the job's command again "
            "from a shell"
        )
    kind = record.get("kind")
    if len(argv) < 3 or Path(argv[1]).name != "run.py" or argv[2] != kind:
        raise JobActionError(
            f"{record['output']}: the job file's command {' '.join(argv)[:200]!r} is not "
            f"`run.py {kind} ...`; run it from a shell if it is yours"
        )
    return [sys.executable, str(REPO / "run.py"), *argv[2:]]


def resume(record: Mapping[str, Any]) -> int:
    """Start the job of ``record`` again (it does only the blocks still missing); returns
    the supervisor's pid.

    Raises:
        JobActionError: see ``resume_command``; or the folder the job ran in is gone.
        OSError: the process could not be started.
    """
    argv = resume_command(record)
    cwd = Path(record["cwd"])
    if not cwd.is_dir():
        raise JobActionError(f"{cwd}: the folder the job ran in is gone; resume it from a shell")
    return _detached(argv, cwd, job_folder(record["output"]) / RESUME_LOG)


def _path_in(field: str, value: Any, data_dir: Path, must_exist: bool) -> str:
    """``value`` as an absolute path inside ``data_dir`` (relative paths are taken from it)."""
    if not isinstance(value, str) or not value.strip():
        raise JobActionError(f"{field}: a path inside the data folder {data_dir} is needed")
    if len(value) > 1000 or any(ch in value for ch in "\0\n\r"):
        raise JobActionError(f"{field}: {value[:60]!r}... is not a path")
    root = os.path.realpath(data_dir)
    path = os.path.realpath(os.path.join(root, value.strip()))
    if not (path == root or path.startswith(root.rstrip(os.sep) + os.sep)) or path == root:
        raise JobActionError(
            f"{field}: {value[:200]!r} is not inside the data folder {data_dir} (links "
            "followed); the dashboard reads and writes volumes there only"
        )
    if must_exist and not os.path.exists(path):
        raise JobActionError(f"{field}: {value[:200]!r}: no such file or folder in {data_dir}")
    return path


def start_command(
    run_dir: Path,
    data_dir: Path,
    kind: Any,
    source: Any,
    key: Any,
    output: Any,
    backend: Any,
    count: Any,
) -> list[str]:
    """The ``run.py predict|segment`` command a Start form asks for, every field checked.

    Args:
        run_dir: the run whose model predicts (or whose setting segments).
        data_dir: the dashboard's data folder: ``source`` and ``output`` (absolute, or
            relative to it) must resolve inside it.
        kind: ``predict`` or ``segment``.
        source: the volume to predict, or the probability map to segment.
        key: the array in ``source`` (empty: the command's default).
        output: the zarr folder to write (for segment, e.g. ``prob.zarr/labels/neurons``).
        backend: ``local`` (``--workers count``) or ``slurm`` (``--jobs count``).
        count: workers or array tasks.

    Raises:
        JobActionError: a field is missing or out of range; the message names it.
    """
    if kind not in ("predict", "segment"):
        raise JobActionError(f"kind: {str(kind)[:40]!r}: expected predict or segment")
    source = _path_in("input", source, data_dir, must_exist=True)
    output = _path_in("output", output, data_dir, must_exist=False)
    if output == source:
        raise JobActionError("output: the same path as the input; name a new zarr folder")
    if kind == "predict" and not output.endswith(".zarr"):
        raise JobActionError(f"output: {output}: several workers write a zarr folder only (.zarr)")
    if backend not in ("local", "slurm"):
        raise JobActionError(f"backend: {str(backend)[:40]!r}: expected local or slurm")
    most = MAX_LOCAL_WORKERS if backend == "local" else MAX_SLURM_JOBS
    try:
        n = int(count)
    except (TypeError, ValueError):
        n = 0
    if isinstance(count, bool) or n != count or not 1 <= n <= most:
        what = "workers" if backend == "local" else "Slurm jobs"
        raise JobActionError(f"{what}: {str(count)[:40]!r}: expected a whole number 1 to {most}")
    argv = [
        sys.executable,
        str(REPO / "run.py"),
        kind,
        str(Path(run_dir).absolute()),
        source,
        output,
    ]
    if key not in (None, ""):
        if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
            raise JobActionError(f"key: {str(key)[:40]!r}: expected an array name such as raw")
        argv += ["--key", key]
    if backend == "local":
        return [*argv, "--workers", str(n)]
    return [*argv, "--backend", "slurm", "--jobs", str(n)]


def start(argv: list[str], log: Path) -> int:
    """Run ``argv`` (from ``start_command``) detached, its output appended to ``log``; returns
    its pid. The job lists itself on the jobs page once its output is prepared.

    Raises:
        OSError: the process could not be started.
    """
    return _detached(argv, REPO, log)


def _detached(argv: list[str], cwd: Path, log: Path) -> int:
    """Start ``argv`` in its own session (a stopped dashboard leaves it running), output
    appended to ``log``; a thread reaps it when it ends."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True,
        )  # fmt: skip
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid
