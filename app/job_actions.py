"""The jobs page's Stop and Resume: the thin shell over ``app.block_jobs``.

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
    with open(job_folder(record["output"]) / RESUME_LOG, "ab") as log:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,  # a stopped dashboard leaves the job running
        )  # fmt: skip
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid
