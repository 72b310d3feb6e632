"""``jobs/<job-id>.json``: the predict and segment jobs started with a run's model.

``run.py predict|segment RUN_DIR ... --workers N`` (or ``--backend slurm``) writes one small
record into the run directory it takes as its first argument when the job starts, from the
shell or from the dashboard: kind, output path, output key, the folder the command ran in,
backend, and when it was first and last submitted. The dashboard's jobs page finds jobs
through these records; what a job has done is read from its output alone
(``trainer.jobs.job_progress``), which may live outside the runs folder.

The job id is the kind and a digest of the output path, so running the same command again
(a resumption) updates its record rather than adding one.

Example:
    >>> write_job_record("runs/lg", "predict", "/data/prob.zarr", "prob", "/home/me")  # doctest: +SKIP
    'predict-3f0c2a9d41e7'
    >>> [r["output"] for r in read_job_records("runs/lg")]  # doctest: +SKIP
    ['/data/prob.zarr']
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from trainer.runs.atomic import atomic_write_json, writing
from trainer.runs.confine import confined

#: the folder of job records in a run directory
JOB_RECORDS_DIR = "jobs"
JOB_RECORD_SUFFIX = ".json"
#: kinds of job a record may name
JOB_KINDS = ("predict", "segment")
#: what a job id looks like (``predict-3f0c2a9d41e7``); anything else is refused
JOB_ID_RE = re.compile(r"^(predict|segment)-[0-9a-f]{12}$")


def job_id(kind: str, output: str | os.PathLike) -> str:
    """The id of the ``kind`` job writing ``output`` (the same for every resubmission)."""
    digest = hashlib.sha1(os.path.abspath(output).encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


def job_record_path(run_dir: str | os.PathLike, job: str) -> Path:
    """Where the record of job ``job`` lives.

    Raises:
        ValueError: ``job`` is not a job id (``predict-<12 hex digits>``).
    """
    if not isinstance(job, str) or not JOB_ID_RE.match(job):
        raise ValueError(f"job id {str(job)[:60]!r}: expected predict-<12 hex> or segment-<12 hex>")
    return Path(run_dir) / JOB_RECORDS_DIR / f"{job}{JOB_RECORD_SUFFIX}"


def write_job_record(
    run_dir: str | os.PathLike,
    kind: str,
    output: str | os.PathLike,
    key: str | None,
    cwd: str | os.PathLike,
    backend: str = "local",
    now: float | None = None,
) -> str:
    """Record (atomically) that a ``kind`` job writes ``output``; returns its job id.

    A record already there keeps its ``created`` time; ``submitted`` is this submission's.

    Raises:
        ValueError: ``kind`` is not ``predict`` or ``segment``.
        RunWriteError: the record could not be written (the message names it).
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind {kind!r}: expected one of {', '.join(JOB_KINDS)}")
    now = time.time() if now is None else now
    job = job_id(kind, output)
    path = job_record_path(run_dir, job)
    old = _read(path) or {}
    record = {
        "id": job,
        "kind": kind,
        "output": os.path.abspath(output),
        "key": key,
        "cwd": os.path.abspath(cwd),
        "backend": backend,
        "created": old.get("created", now),
        "submitted": now,
    }
    with writing(path, run_dir):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
    return job


def _read(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(confined(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("kind") not in JOB_KINDS:
        return None
    if not isinstance(d.get("output"), str) or not isinstance(d.get("cwd"), str):
        return None
    return d


def read_job_record(run_dir: str | os.PathLike, job: str) -> dict[str, Any] | None:
    """The record of job ``job``, or ``None`` if absent, unreadable or not a job record.

    Raises:
        ValueError: ``job`` is not a job id.
        OutsideRunsError: the record resolves outside the runs folder being shown.
    """
    path = job_record_path(run_dir, job)
    confined(path)
    return _read(path)


def read_job_records(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable job record of a run, newest submission first (records that resolve
    outside the runs folder being shown are left out)."""
    folder = Path(run_dir) / JOB_RECORDS_DIR
    try:
        names = os.listdir(confined(folder))
    except OSError:
        return []
    records = []
    for name in names:
        stem = name[: -len(JOB_RECORD_SUFFIX)]
        if not name.endswith(JOB_RECORD_SUFFIX) or not JOB_ID_RE.match(stem):
            continue
        record = _read(folder / name)
        if record is not None and record.get("id") == stem:
            records.append(record)
    records.sort(key=lambda r: -float(r.get("submitted") or 0))
    return records
