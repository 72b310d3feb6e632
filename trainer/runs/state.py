"""The state a reader shows: ``status.json`` (the trainer's) merged with the launcher's record.

``merge_state`` is pure: the files, the clock and the process table come in as arguments,
so every combination is a table row in the tests. ``read_run_state`` is the thin shell
that reads a run directory and asks the process table.

Who wins, in order:

1. a final state the trainer wrote in the current attempt (``finished``, ``failed``,
   ``stopped``, ``diverged``), with its error;
2. the torchrun supervisor's non-zero exit (``--nproc``): ``failed``;
3. the launcher's record: a stop asked for and the process gone -> ``stopped``; a launch it
   could not start -> ``failed`` with its error; a Slurm job's state (pending -> ``queued``,
   running -> ``running``, ended -> its final state); a process that exited without a final
   state -> ``failed`` with the exit code and its last line of output; not started yet ->
   ``queued``;
4. the trainer's ``running``, checked against the clock and the process table -> ``lost``
   when its process is gone and its heartbeat stale.

A ``status.json`` last written before the record's ``queued`` time belongs to an earlier
attempt (a resumed run) and is ignored for the state.

Example:
    >>> merge_state(None, LauncherRecord(queued=10.0), now=11.0).state
    'queued'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from trainer.runs.launcher_record import (
    LauncherRecord,
    job_run_state,
)

#: a running run whose heartbeat is older than this (seconds) and whose pid is gone is "lost"
HEARTBEAT_STALE_S = 30.0
#: a pid known to be gone gives its run this long (seconds) to write a final state
EXIT_GRACE_S = 5.0
_FINAL = frozenset({"finished", "failed", "stopped", "pruned", "diverged"})


@dataclasses.dataclass(frozen=True)
class RunState:
    """What a reader shows for a run.

    Attributes:
        state: ``queued``, ``running``, ``lost``, ``finished``, ``failed``, ``stopped`` or
            ``diverged``.
        error: why it failed, diverged or was lost (the trainer's words, else the
            launcher's), else ``None``.
        exit_code: the process's or job's exit status when the launcher saw it end.
        pid: the process to watch: the trainer's, else the launcher's child.
        device: the device it runs on.
        started: unix time this attempt started.
        ended: unix time it ended.
        job_id: the Slurm job id, if any.
        slurm_state: the job's last polled state word.
        slurm_reason: why the job waits or ended.
        current: False when ``status.json`` is from an earlier attempt (or absent).
    """

    state: str
    error: str | None = None
    exit_code: int | None = None
    pid: int | None = None
    device: str | None = None
    started: float | None = None
    ended: float | None = None
    job_id: str | None = None
    slurm_state: str | None = None
    slurm_reason: str | None = None
    current: bool = False


def _never(pid: int | None) -> bool:
    return False


def merge_state(
    status,
    record: LauncherRecord | None = None,
    now: float = 0.0,
    alive: Callable[[int | None], bool] = _never,
    supervisor: LauncherRecord | None = None,
    console: str = "console.log",
) -> RunState:
    """Merge ``status.json``, ``launcher.json`` and ``supervisor.json`` into one ``RunState``.

    Args:
        status: the trainer's ``Status``, or ``None`` when it has written none.
        record: the launcher's record, or ``None`` for a run started from a shell.
        now: the current unix time.
        alive: tells whether a pid is a live process (``trainer.runs.pid_alive``).
        supervisor: the torchrun supervisor's record (``--nproc``), if any.
        console: how messages name the console log (a path, or ``console.log``).
    """
    rec, sup = record, supervisor
    attempt = max((t for t in (rec and rec.queued, sup and sup.started) if t), default=None)
    st = status if status is not None and (attempt is None or status.heartbeat >= attempt) else None
    extra = st.extra if st is not None else {}

    def shown(state: str, error: str | None = None, ended: float | None = None) -> RunState:
        device = (rec.device if rec else None) or extra.get("device")
        ended_ = extra.get("ended") if isinstance(extra.get("ended"), int | float) else None
        return RunState(
            state=state,
            error=error,
            exit_code=rec.exit_code if rec else None,
            pid=(st.pid if st is not None else None) or (rec.pid if rec else None),
            device=str(device) if device else None,
            started=(st.started if st is not None else None) or (rec.started if rec else None),
            ended=ended if ended is not None else ended_,
            job_id=rec.job_id if rec else None,
            slurm_state=rec.slurm_state if rec else None,
            slurm_reason=rec.slurm_reason if rec else None,
            current=st is not None,
        )

    if st is not None and st.state in _FINAL:
        return shown(st.state, st.error)
    if sup is not None and sup.ended is not None and sup.exit_code:
        why = sup.error or (
            f"a training process failed (torchrun exit code {sup.exit_code}); see {console} "
            "or the terminal for the rank's error"
        )
        return shown("failed", why, sup.ended)
    if rec is not None:
        found = _from_record(rec, st, console)
        if found is not None:
            return shown(*found)
        if st is None and rec.pid is not None:  # started; the trainer has not written yet
            dead = not alive(rec.pid) and now - (rec.started or 0.0) > EXIT_GRACE_S
            return shown("lost" if dead else "running")
    if st is None:
        return shown("queued")
    return shown(_liveness(st, now, alive), st.error)


def _from_record(rec: LauncherRecord, st, console: str) -> tuple | None:
    """(state, error, ended) the launcher's record decides, or ``None`` to ask the status."""
    stopping = rec.stop_requested is not None
    job = job_run_state(rec.slurm_state)
    if rec.ended is not None:
        if stopping:
            return "stopped", None, rec.ended
        if rec.error:
            return "failed", rec.error, rec.ended
        said = f": {rec.last_output}" if rec.last_output else ""
        if rec.job_id is not None and job in _FINAL:
            if job != "failed":
                return job, None, rec.ended
            why = ", ".join(
                x for x in (rec.slurm_reason, rec.exit_code and f"exit {rec.exit_code}") if x
            )
            return (
                "failed",
                f"Slurm job {rec.job_id} ended {rec.slurm_state}{f' ({why})' if why else ''} "
                f"without the trainer writing a final state{said} (see {console})",
                rec.ended,
            )
        how = "without exit code" if rec.exit_code is None else f"with code {rec.exit_code}"
        return (
            "failed",
            f"process exited {how} without writing a final state{said} (see {console})",
            rec.ended,
        )
    if rec.job_id is not None:
        if job == "running":
            return "running", None, None  # Slurm's word beats a pid this machine cannot see
        if job == "queued" and (st is None or st.state != "running"):
            return "queued", None, None
        if st is None and job is None:
            return "queued", None, None  # submitted, not polled yet
        return None
    if rec.pid is None:
        return "queued", None, None  # not started yet
    return None


def _liveness(st, now: float, alive: Callable[[int | None], bool]) -> str:
    """``running`` or ``lost`` for a status that says running; other states unchanged."""
    if st.state != "running":
        return st.state
    if alive(st.pid):
        return "running"
    age = now - (st.heartbeat or 0.0)
    if age > HEARTBEAT_STALE_S or (st.pid is not None and age > EXIT_GRACE_S):
        return "lost"
    return "running"
