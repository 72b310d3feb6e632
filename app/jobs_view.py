"""What the jobs page shows: one row per predict or segment job of the runs folder.

A job is found through its record in a run directory (``trainer.runs.job_records``, written
when ``run.py predict|segment --workers N`` or ``--backend slurm`` starts it, from the shell
or from the dashboard); what it has done comes from its output alone
(``trainer.jobs.job_progress``), its array tasks' states from Slurm
(``app.block_jobs.task_states``). ``job_row`` and ``job_state`` are pure functions of those
three; ``read_jobs`` reads them.

Example:
    >>> rows = read_jobs(runs_dir)  # doctest: +SKIP
    >>> rows[0].state, rows[0].done, rows[0].total  # doctest: +SKIP
    ('running', 7, 18)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.runs import iter_run_dirs
from trainer.runs.job_records import read_job_record, read_job_records

#: job states after which nothing more happens without a Resume
ENDED = frozenset({"finished", "stopped", "failed", "missing"})
#: states a Stop acts on, and states a Resume may start from
STOPPABLE = frozenset({"running", "queued"})
RESUMABLE = frozenset({"stopped", "failed"})
#: Slurm states of a task that is waiting for, or holding, a node
_SLURM_ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED"})
#: worker states (``trainer.jobs``) of a worker that is still at work
_WORKER_ACTIVE = frozenset({"running", "waiting"})


@dataclasses.dataclass(frozen=True)
class WorkerRow:
    """One worker (a local process or an array task's worker) as its own file says."""

    name: str
    host: str
    state: str
    blocks: int
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class JobRow:
    """One job: its record, its progress over all steps, its workers and Slurm tasks."""

    run: str
    job: str
    kind: str
    output: str
    backend: str
    state: str
    done: int = 0
    total: int = 0
    failed: int = 0
    retried: int = 0
    throughput: float | None = None
    eta_s: float | None = None
    step: str = ""
    workers: tuple[WorkerRow, ...] = ()
    #: Slurm's state of each array task, ``(task id, state)``
    tasks: tuple[tuple[str, str], ...] = ()
    #: why part of the row could not be read (Slurm unreachable, no job folder)
    note: str = ""

    @property
    def percent(self) -> float:
        """Blocks done, in percent of all blocks (0 before the job has blocks)."""
        return 100.0 * self.done / self.total if self.total else 0.0


def job_state(progress: Mapping[str, Any] | None, tasks: Mapping[str, str]) -> str:
    """``finished``, ``running``, ``queued`` (Slurm tasks pending, no worker yet),
    ``failed`` (a block raised and nobody works on), ``stopped`` (nobody works on, blocks
    left), or ``missing`` (the output has no job folder)."""
    if progress is None:
        return "missing"
    if progress.get("complete"):
        return "finished"
    working = any(w.get("state") in _WORKER_ACTIVE for w in progress.get("workers", []))
    slurm = {s for s in tasks.values() if s in _SLURM_ACTIVE}
    if working or slurm - {"PENDING"}:
        return "running"
    if slurm:
        return "queued"
    return "failed" if progress.get("blocks", {}).get("failed") else "stopped"


def job_row(
    run: str,
    record: Mapping[str, Any],
    progress: Mapping[str, Any] | None,
    tasks: Mapping[str, str],
    note: str = "",
) -> JobRow:
    """The page's row of one job from its record, ``job_progress`` and ``task_states``."""
    base = {
        "run": run,
        "job": str(record.get("id")),
        "kind": str(record.get("kind")),
        "output": str(record.get("output")),
        "backend": str(record.get("backend") or "local"),
        "state": job_state(progress, tasks),
        "tasks": tuple(sorted(tasks.items(), key=lambda kv: _task_order(kv[0]))),
    }
    if progress is None:
        return JobRow(**base, note=note or f"{base['output']} has no job folder")
    blocks = progress["blocks"]
    steps = progress.get("steps") or []
    step = next((s for s in steps if s["done"] < s["total"]), steps[-1] if steps else None)
    workers = tuple(
        WorkerRow(
            str(w.get("worker")),
            str(w.get("host") or "?"),
            str(w.get("state") or "?"),
            int(w.get("blocks") or 0),
            w.get("error"),
        )
        for w in progress.get("workers", [])
    )
    return JobRow(
        **{**base, "backend": str(progress.get("backend") or base["backend"])},
        done=int(blocks["done"]),
        total=int(blocks["total"]),
        failed=int(blocks["failed"]),
        retried=int(blocks["retried"]),
        throughput=progress.get("throughput"),
        eta_s=progress.get("eta_s"),
        step=f"{step['name']} {step['done']}/{step['total']}" if step else "",
        workers=workers,
        note=note,
    )


def _task_order(task: str) -> tuple[str, int]:
    head, _, index = task.rpartition("_")
    return (head, int(index)) if index.isdigit() else (task, -1)


def _counts(states: Sequence[str]) -> str:
    seen: dict[str, int] = {}
    for state in states:
        seen[state] = seen.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in seen.items())


def worker_summary(row: JobRow) -> str:
    """``'2 workers: 1 running, 1 finished; 4 Slurm tasks: 3 RUNNING, 1 PENDING'``."""
    parts = []
    if row.workers:
        parts.append(f"{len(row.workers)} workers: {_counts([w.state for w in row.workers])}")
    if row.tasks:
        parts.append(f"{len(row.tasks)} Slurm tasks: {_counts([s for _, s in row.tasks])}")
    return "; ".join(parts) or "no worker has started yet"


def unfinished(rows: Sequence[JobRow]) -> bool:
    """Whether any job may still change (the page keeps polling)."""
    return any(r.state not in ENDED for r in rows)


def _read_row(run: str, record: Mapping[str, Any], slurm: Any) -> JobRow:
    from app.block_jobs import task_states
    from app.slurm import SlurmError
    from trainer.jobs import job_progress

    output = record["output"]
    note = ""
    try:
        tasks = task_states(output, slurm)
    except (SlurmError, OSError) as e:
        tasks, note = {}, f"Slurm's task states unknown: {e}"[:300]
    return job_row(run, record, job_progress(output), tasks, note)


def read_jobs(
    runs_dir: str | os.PathLike, run: str | None = None, slurm: Any = None
) -> list[JobRow]:
    """Every job of every run under ``runs_dir`` (or of run ``run`` only), newest first.

    ``slurm`` answers ``jobs(ids)`` as ``app.slurm.Slurm.jobs`` does; a page passes the
    launcher's ``SlurmBackend``, which asks ``squeue`` at most once per ``poll_s`` seconds
    (default: a plain ``Slurm`` client, asked on every call).
    """
    rows = []
    for run_dir in iter_run_dirs(runs_dir):
        if run is not None and run_dir.name != run:
            continue
        rows += [_read_row(run_dir.name, r, slurm) for r in read_job_records(run_dir)]
    return rows


def has_jobs(run_dir: str | os.PathLike) -> bool:
    """Whether a run has started any predict or segment job (its page links to them)."""
    return bool(read_job_records(run_dir))


def find_record(run_dir: Path, job: Any) -> dict[str, Any] | None:
    """The record of job ``job`` of the run in ``run_dir`` (``None`` for a bad id or none)."""
    try:
        return read_job_record(run_dir, job)
    except (ValueError, OSError):
        return None
