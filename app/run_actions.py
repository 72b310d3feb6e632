"""What a run's failure means and what can be done with a run: pure rules for the pages.

The run page shows a failed run's failure (``explain_failure``: what happened, its cause in
the trainer's words, and what to do) in place of the sentence that waits for the first
history row. The experiments page enables its Stop, Resume and Delete buttons from the
selected run (``buttons``): Resume only when the run has a snapshot to continue from and
resuming can help, i.e. not after a config or data error or a divergence that a resume
would only repeat. After Stop the page says ``<run>: stopping.`` until the run has ended
(``after_stop``).

Everything here is a pure function of a run's summary (``app.readers.run_summary``) and
whether it has a snapshot; the pages read those.

Example:
    >>> explain_failure("failed", "FileNotFoundError: /data/raw.h5", 0, False).kind
    'data'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from app.launcher import DELETABLE_STATES, RESUMABLE_STATES

#: run states the Stop button acts on
STOPPABLE_STATES = frozenset({"queued", "running"})
#: run states whose run page shows a failure instead of waiting for rows
FAILURE_STATES = frozenset({"failed", "diverged", "lost"})

#: (words in the error, kind, what to do first): causes that a resume repeats
_PERMANENT = (
    (("ConfigError", "invalid config", "SyntaxError", "NameError"), "config",
     "fix the config (the message names the key and file)"),
    (("FileNotFoundError", "No such file", "DataError", "HDF5", "h5py", "cannot open",
      "IsADirectoryError", "PermissionError", "unable to open"), "data",
     "check the data files and paths the message names (the config's data_init_kwargs)"),
)  # fmt: skip
#: (words in the error, kind, what to do first): causes outside the run, which a resume survives
_TRANSIENT = (
    (("out of memory", "OutOfMemoryError", "MemoryError", "CUBLAS_STATUS_ALLOC"), "memory",
     "free memory on the device (other runs) or lower batch_size"),
    (("Killed", "SIGKILL", "signal 9", "exit code -9", "exit code 137", "TIMEOUT",
      "NODE_FAIL", "PREEMPTED", "heartbeat"), "killed",
     "nothing: it was ended from outside (killed, a time limit, a lost node)"),
)  # fmt: skip
#: what to do first about a divergence, a lost run and a cause not known here
_DIVERGED = "lower the learning rate (lr, or its schedule)"
_LOST = "nothing: its trainer stopped without a word (the machine restarted, it was killed)"
_UNKNOWN = "read the traceback in its log (select the run on the experiments page), fix the cause"


@dataclasses.dataclass(frozen=True)
class Failure:
    """A run's failure as the run page shows it.

    Attributes:
        kind: ``config``, ``data``, ``diverged``, ``memory``, ``killed``, ``lost`` or
            ``unknown``.
        title: one line: what happened and at which step.
        cause: the error in the trainer's (or launcher's) words.
        todo: what to do about it.
        resumable: whether Resume can help (a snapshot exists and the cause is transient).
    """

    kind: str
    title: str
    cause: str
    todo: str
    resumable: bool


def _match(error: str, table: tuple) -> tuple[str, str] | None:
    low = error.lower()
    for words, kind, todo in table:
        if any(w.lower() in low for w in words):
            return kind, todo
    return None


def explain_failure(state: str, error: Any, step: Any, has_snapshot: bool) -> Failure | None:
    """What a ``failed``, ``diverged`` or ``lost`` run's page says about it; ``None`` for a
    run in any other state.

    Args:
        state: the run's shown state.
        error: its error message (``RunState.error``), or ``None``.
        step: the last step it completed.
        has_snapshot: whether it has a snapshot to resume from.
    """
    if state not in FAILURE_STATES:
        return None
    cause = error if isinstance(error, str) and error.strip() else "no error message was written"
    at = f" at step {step:,}" if isinstance(step, int) and step > 0 else " before its first step"
    if state == "diverged":
        kind, todo, transient = "diverged", _DIVERGED, False
    elif state == "lost":
        kind, todo, transient = "lost", _LOST, True
    elif found := _match(cause, _PERMANENT):
        (kind, todo), transient = found, False
    elif found := _match(cause, _TRANSIENT):
        (kind, todo), transient = found, True
    else:
        kind, todo, transient = "unknown", _UNKNOWN, True
    resumable = transient and has_snapshot and state in RESUMABLE_STATES
    if resumable:
        todo += "; then Resume: it continues from its newest snapshot"
    elif transient:
        todo += "; then launch it again: it has no snapshot to resume from"
    else:
        todo += "; then launch it again: Resume would repeat the failure"
    word = {"failed": "Failed", "diverged": "Diverged", "lost": "Lost"}[state]
    return Failure(kind, f"{word}{at}.", cause, f"What to do: {todo}.", resumable)


def buttons(row: Mapping[str, Any] | None, has_snapshot: bool) -> tuple[bool, bool, bool]:
    """Whether Stop, Resume and Delete are *disabled* for the selected run ``row`` (a
    ``run_summary``; ``None``: nothing selected, all disabled). Resume needs a resumable
    state, a snapshot, and a failure that a resume does not repeat (``explain_failure``)."""
    if row is None:
        return True, True, True
    state = row.get("state")
    failure = explain_failure(state, row.get("error"), row.get("step"), has_snapshot)
    resumable = state in RESUMABLE_STATES and has_snapshot
    if failure is not None:
        resumable = failure.resumable
    return state not in STOPPABLE_STATES, not resumable, state not in DELETABLE_STATES


def after_stop(stopping: Any, row: Mapping[str, Any] | None) -> str | None:
    """The action message once a run asked to stop (``stopping``, its name) has ended:
    ``'<run>: stopped.'`` (or its end state), replacing ``'<run>: stopping.'``; ``None``
    while it still runs, or when no stop is pending."""
    if not isinstance(stopping, str) or not stopping:
        return None
    if row is None:
        return f"{stopping}: gone."
    state = row.get("state")
    return None if state in STOPPABLE_STATES else f"{stopping}: {state}."
