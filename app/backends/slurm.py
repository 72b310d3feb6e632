"""The ``slurm`` backend: a batch script per run, submitted with ``sbatch``; Slurm queues.

A queued run is submitted at once; its job id goes into ``launcher.json``. ``poll`` asks
``squeue``/``sacct`` (at most every ``poll_s`` seconds) and records each job's state word,
reason, exit code and end; ``trainer.runs.merge_state`` turns them into the run's state
(pending -> queued, running -> running, an end without the trainer's final state -> the
job's). Stop cancels a pending job, and sends SIGTERM to a running one through ``scancel
--signal`` (the trainer saves and stops), cancelling it outright after ``grace_s``. The
low-level client (commands, parsers, resources, scripts) is ``app.slurm``. ``jobs`` answers
other readers that poll often (the jobs page's array tasks) under the same limit: one
``squeue`` per set of jobs per ``poll_s`` seconds, the answer kept in between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from app.backends import LockFn, RunEntry, Spawn, last_output
from app.security import LaunchError
from app.slurm import (
    Job,
    Slurm,
    SlurmError,
    batch_script,
    check_resource,
    config_section,
    resources_from,
)
from trainer.runs import (
    BATCH_SCRIPT_FILE,
    CONSOLE_LOG_FILE,
    LauncherRecord,
    atomic_write_bytes,
    job_run_state,
    read_launcher_record,
    slurm_exit_code,
    write_launcher_record,
)

log = logging.getLogger(__name__)

#: the launch form's resource fields (``app.slurm.RESOURCE_KEYS``): key -> label
FORM_FIELDS = {
    "partition": "Partition",
    "account": "Account",
    "nodes": "Nodes",
    "gpus": "GPUs",
    "cpus": "CPUs",
    "mem": "Memory",
    "time": "Time limit",
}
#: a submitted job that squeue and sacct both do not know for this long counts as gone
JOB_UNKNOWN_GRACE_S = 120.0


class SlurmBackend:
    """Slurm jobs for launches.

    Args:
        spawn: the command line, environment and folder of the job's trainer.
        lock: the launcher's lock; held while a poll writes records.
        slurm: the client.
        defaults: resources neither the form nor the config's ``slurm`` section set.
        poll_s: seconds between two ``squeue`` calls.
        grace_s: seconds between SIGTERM and ``scancel`` on stop.

    Raises:
        LaunchError: bad ``defaults``.
    """

    name = "slurm"

    def __init__(
        self,
        spawn: Spawn,
        lock: LockFn,
        slurm: Slurm,
        defaults: Mapping[str, Any] | None = None,
        poll_s: float = 10.0,
        grace_s: float = 10.0,
    ) -> None:
        self.spawn, self.lock, self.slurm = spawn, lock, slurm
        self.defaults = resources_from(defaults=defaults).to_json()
        self.poll_s = float(poll_s)
        self.grace_s = float(grace_s)
        self.error: str | None = None
        self._last_poll = -float("inf")
        #: ``jobs``' answers: sorted job ids -> (when asked, the answer or Slurm's error)
        self._answers: dict[tuple[str, ...], tuple[float, dict[str, Job] | SlurmError]] = {}
        self._answers_lock = threading.Lock()

    def devices(self) -> list[str]:
        return ["auto", "cpu"]  # the GPUs are the job's (``gpus`` resource)

    def prepare(
        self,
        config: Path,
        device: str | None,
        resources: Mapping[str, Any] | None,
        previous: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        problem = self.slurm.problem()
        if problem:
            raise LaunchError("backend", f"backend: {problem}")
        if previous is None:
            requested = resources_from(resources, config_section(config), self.defaults)
        else:  # a resume: the first launch's resources, else today's section and defaults
            first = (previous.get("slurm") or {}).get("resources") or {}
            requested = resources_from(first or config_section(config), defaults=self.defaults)
        return {
            "device": job_device(device, requested.gpus),
            "slurm": {"resources": requested.to_json()},
        }

    # -- the launch form ----------------------------------------------------------------

    def form_fields(self) -> dict[str, str]:
        return dict(FORM_FIELDS)

    def form_placeholder(self, key: str) -> str:
        value = self.defaults.get(key)
        return "config / cluster default" if value in (None, "", 0) else f"default {value}"

    def resources_from_form(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        return {
            key: check_resource(key, value)
            for key in FORM_FIELDS
            if not _blank(value := values.get(key))
        }

    def sweep_limit(self) -> str:
        return ""  # Slurm queues the trials' jobs

    def notes(self, gpus_found: bool) -> list[tuple[str, bool]]:
        notes = [("Launches go to Slurm as batch jobs.", False)]
        return notes + ([(f"Slurm: {self.error}", True)] if self.error else [])

    def slot(self, run: RunEntry) -> str | None:
        return None  # jobs hold the cluster's devices, not this machine's

    def busy(self, name: str) -> bool:
        return False

    # -- submit ----------------------------------------------------------------------

    def start(
        self, run: RunEntry, launch: Mapping[str, Any], busy: list[str]
    ) -> LauncherRecord | None:
        resources = resources_from((launch.get("slurm") or {}).get("resources"))
        argv = self.spawn.argv(run.dir, launch, job_device(launch.get("device"), resources.gpus))
        script = run.dir / BATCH_SCRIPT_FILE
        text = batch_script(
            argv,
            resources,
            env=dict(self.spawn.env),
            comment=f"VoxelBoard run {run.name}: written and submitted by the launcher",
        )
        atomic_write_bytes(script, text.encode())
        options = [
            f"--job-name=vb-{run.name}",
            f"--output={run.dir / CONSOLE_LOG_FILE}",
            "--open-mode=append",
            f"--chdir={self.spawn.cwd}",
        ]
        job_id = self.slurm.submit(script, options)
        record = LauncherRecord(
            backend=self.name,
            queued=float(launch.get("created") or 0.0) or None,
            job_id=job_id,
            submitted=time.time(),
        )
        write_launcher_record(run.dir, record)
        self._last_poll = -float("inf")  # ask Slurm about it at the next poll
        log.info("submitted %s: Slurm job %s", run.name, job_id)
        return record

    # -- poll ------------------------------------------------------------------------

    def poll(self, runs: list[RunEntry], force: bool = False) -> None:
        """Ask Slurm about the jobs of this backend's unfinished runs and record the answers.

        Slurm is asked outside the launcher's lock (it can be slow); records are written
        under it.
        """
        if not force and not self._due(self._last_poll):
            return
        self._last_poll = time.monotonic()
        targets = {
            run.dir: run.record.job_id
            for run in runs
            if run.record is not None
            and run.record.backend == self.name
            and run.record.job_id
            and run.record.ended is None
        }
        if not targets:
            return
        problem = self.slurm.problem()
        try:
            if problem:
                raise SlurmError(problem)
            by_id = self.slurm.jobs(targets.values())
        except SlurmError as e:
            if self.error != str(e):
                log.warning("cannot ask Slurm about jobs: %s", e)
            self.error = str(e)
            return
        self.error = None
        with self.lock():
            for run_dir, job_id in targets.items():
                _apply(run_dir, job_id, by_id.get(job_id))

    def _due(self, last: float) -> bool:
        """Whether ``poll_s`` seconds have passed since ``last`` (``time.monotonic``): the
        one limit on how often this backend asks Slurm."""
        return time.monotonic() - last >= self.poll_s

    def jobs(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """Slurm's state of each of ``job_ids`` (as ``Slurm.jobs``), asked at most once per
        ``poll_s`` seconds for the same set of ids: a page polling every 2 s gets the kept
        answer in between, and a controller that is down is asked no more often.

        Raises:
            SlurmError: squeue failed (the failure is kept, and raised, for ``poll_s``).
        """
        key = tuple(sorted({str(j) for j in job_ids}))
        with self._answers_lock:
            kept = self._answers.get(key)
        if kept is None or self._due(kept[0]):
            try:
                answer: dict[str, Job] | SlurmError = self.slurm.jobs(key)
            except SlurmError as e:
                answer = e
            with self._answers_lock:
                # answers older than the limit are of no use to anyone: drop them
                self._answers = {k: v for k, v in self._answers.items() if not self._due(v[0])}
                kept = self._answers[key] = (time.monotonic(), answer)
        if isinstance(kept[1], SlurmError):
            raise kept[1]
        return dict(kept[1])

    # -- stop ------------------------------------------------------------------------

    def stop(self, run: RunEntry) -> str:
        rec = run.record
        if run.view.state not in ("queued", "running"):
            raise LaunchError(
                "run", f"run: {run.name} is {run.view.state}; only queued or running runs stop"
            )
        now = time.time()
        pending = run.view.state == "queued"
        job_id = rec.job_id if rec else None
        try:
            if job_id is not None:
                self.slurm.cancel(job_id, signal=None if pending else "TERM")
        except SlurmError as e:
            raise LaunchError("run", f"run: {run.name}: {e}") from None
        rec = rec or LauncherRecord(backend=self.name, queued=now)
        if pending:
            state = "CANCELLED" if job_id is not None else rec.slurm_state
            write_launcher_record(
                run.dir,
                dataclasses.replace(rec, stop_requested=now, ended=now, slurm_state=state),
            )
            return "stopped"
        write_launcher_record(run.dir, dataclasses.replace(rec, stop_requested=now))
        threading.Thread(
            target=self._escalate, args=(run.dir, job_id), name=f"stop-{run.name}", daemon=True
        ).start()
        log.info("stopping %s (Slurm job %s)", run.name, job_id)
        return "stopping"

    def _escalate(self, run_dir: Path, job_id: str | None) -> None:
        """Cancel the job outright if SIGTERM did not end it within ``grace_s``."""
        deadline = time.monotonic() + self.grace_s
        while job_id is not None:
            try:
                job = self.slurm.jobs([job_id]).get(job_id)
            except SlurmError:
                job = None
            if job is not None and job.run_state not in ("queued", "running"):
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "%s: job %s did not end within %.0f s: scancel",
                    run_dir.name,
                    job_id,
                    self.grace_s,
                )
                with contextlib.suppress(SlurmError):
                    self.slurm.cancel(job_id)
                break
            time.sleep(min(1.0, self.grace_s / 10))
        self._last_poll = -float("inf")


def job_device(device: str | None, gpus: int) -> str:
    """The trainer's ``--device`` in a Slurm job: the job's GPUs when it has any."""
    if device in (None, "", "auto"):
        return "cuda" if gpus else "cpu"
    if device == "cpu":
        if gpus:
            raise LaunchError(
                "device", f"device: cpu, but the job asks for {gpus} GPU(s); set gpus to 0"
            )
        return "cpu"
    if device == "cuda" and gpus:
        return "cuda"
    raise LaunchError("device", f"device: {device!r}; with Slurm choose auto or cpu")


def _apply(run_dir: Path, job_id: str, job: Job | None) -> None:
    """Record what Slurm said about one job (under the launcher's lock)."""
    rec = read_launcher_record(run_dir)
    if rec is None or rec.job_id != job_id or rec.ended is not None:
        return  # resumed as a new job, stopped or deleted since Slurm was asked
    now = time.time()
    if job is None:
        if rec.slurm_state is not None or now - (rec.submitted or now) < JOB_UNKNOWN_GRACE_S:
            return  # known before (sacct may lack it), or just submitted: ask again later
        new = dataclasses.replace(
            rec,
            ended=now,
            error=f"Slurm job {job_id} is known to neither squeue nor sacct; it was never "
            f"started (see {run_dir / CONSOLE_LOG_FILE})",
        )
    else:
        state = job_run_state(job.state)
        new = dataclasses.replace(rec, slurm_state=job.state, slurm_reason=job.reason, polled=now)
        if state == "running" and rec.started is None:
            new = dataclasses.replace(new, started=now)
        elif state in ("finished", "stopped", "failed"):
            new = dataclasses.replace(
                new,
                ended=now,
                exit_code=slurm_exit_code(job.exit_code),
                last_output=last_output(run_dir),
            )
    if dataclasses.replace(new, polled=rec.polled) != rec:  # no rewrite per unchanged poll
        write_launcher_record(run_dir, new)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
