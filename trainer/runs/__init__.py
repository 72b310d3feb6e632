"""The run directory: the one contract between the trainer (writer) and the dashboard (reader).

A run directory ``<runs_dir>/<save_name>/`` holds (see docs/run-directory.md)::

    0-<config>.py        copy of the experiment config file
    config.json          the resolved config (JSON, written once)
    status.json          current state, replaced atomically (see ``Status``)
    train.log            human-readable log written by the trainer
    console.log          stdout/stderr of a launched process (dashboard launches only)
    launch.json          the launch request (dashboard launches only; trainer.runs.launch)
    launcher.json        the launcher's record: pid, device, Slurm job, exit code
                         (trainer.runs.launcher_record); supervisor.json the same for --nproc
    slurm-job.sh         the batch script of a Slurm launch
    history/             the append-only history store (trainer.runs.history_store)
    snapshots/           LAST.pt, FINAL.pt, step-<N>.pt
    previews/            preview-<step>.h5
    eval/                evaluation results

Every function here is cheap and never raises on a half-written or corrupt file when
reading: the reader gets ``None`` or a ``Status`` whose ``error`` says what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# other modules ask ``trainer.runs``; its submodules import their siblings directly
from trainer.runs.atomic import (  # noqa: F401 - re-exported
    RunWriteError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    os_error_in_words,
    writing,
)
from trainer.runs.confine import confined
from trainer.runs.launch import (  # noqa: F401 - re-exported
    BATCH_SCRIPT_FILE,
    LAUNCH_FILE,
    launch_backend,
    launch_path,
    read_launch,
    write_launch,
)
from trainer.runs.launcher_record import (  # noqa: F401 - re-exported
    LAUNCHER_FILE,
    SUPERVISOR_FILE,
    LauncherRecord,
    job_run_state,
    read_launcher_record,
    slurm_exit_code,
    write_launcher_record,
)
from trainer.runs.previews import (  # noqa: F401 - re-exported
    PREVIEW_DIR,
    PREVIEW_PREFIX,
    PREVIEW_SUFFIX,
    PreviewError,
    PreviewMeta,
    preview_files,
    preview_path,
    preview_step,
    read_preview_block,
    read_preview_meta,
    write_preview,
)
from trainer.runs.results import (  # noqa: F401 - re-exported
    CURVES,
    EVAL_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    RESULT_SUFFIX,
    SPLITS,
    THRESHOLD_FILE,
    ProbCacheError,
    ProbCacheWriter,
    ResultFileError,
    eval_dir,
    figure_path,
    list_results,
    prob_cache_path,
    prob_cache_suffix,
    read_neurons,
    read_prob_cache,
    read_prob_cube,
    read_prob_slice,
    read_result,
    read_result_attrs,
    read_threshold,
    report_path,
    result_path,
    stores_exact,
    threshold_path,
    write_error_hist,
    write_prob_cache,
    write_result,
    write_split,
    write_threshold,
)
from trainer.runs.snapshots import (  # noqa: F401 - re-exported
    BEST,
    FINAL,
    HISTORY_DIR,
    HISTORY_PLOT_PREFIX,
    LAST,
    SNAPSHOT_DIR,
    SNAPSHOT_SUFFIX,
    check_snapshot,
    history_dir,
    history_plot_prefix,
    keep_snapshot_as,
    latest_snapshot,
    snapshot_names,
    snapshot_path,
)
from trainer.runs.state import (  # noqa: F401 - re-exported
    HEARTBEAT_STALE_S,
    RunState,
    merge_state,
)

STATES = ("queued", "running", "finished", "failed", "stopped", "pruned", "diverged", "lost")
FINAL_STATES = frozenset({"finished", "failed", "stopped", "pruned", "diverged"})
ACTIVE_STATES = frozenset({"queued", "running"})

STATUS_FILE = "status.json"
RESOLVED_CONFIG_FILE = "config.json"
LOG_FILE = "train.log"
CONSOLE_LOG_FILE = "console.log"
#: the shell's ``debugbatch`` image (ELEKTRONN2's Batch_test_image.png)
DEBUG_BATCH_FILE = "Batch_test_image.html"


@dataclasses.dataclass
class Status:
    """Contents of ``status.json``.

    Attributes:
        state: one of ``STATES`` (``lost`` is never written, only derived by readers).
        step: last completed training step.
        n_steps: planned number of steps.
        pid: process id of the trainer (or of the launcher's child).
        heartbeat: unix time of the last sign of life.
        started: unix time the run started.
        error: message for failed/diverged runs, else ``None``.
        extra: everything else the trainer reports (device, torch version, it/s, ...).
    """

    state: str = "queued"
    step: int = 0
    n_steps: int = 0
    pid: int | None = None
    heartbeat: float = 0.0
    started: float | None = None
    error: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Status:
        """Build from a parsed status file; fields of the wrong type fall back to their
        defaults (listed in ``extra['status_problems']``), so readers can format them."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: d[k] for k in names if k in d}
        extra = {k: v for k, v in d.items() if k not in names}
        problems = [k for k, v in known.items() if not _FIELD_OK[k](v)]
        bad_state = known.get("state") if "state" in problems else None
        for k in problems:
            del known[k]
        if problems:
            extra["status_problems"] = problems
        status = cls(**known, extra=extra)
        if "state" in problems:
            # an unknown state is not a live run: show it as failed, saying why
            status.state = "failed"
            status.error = status.error or f"unknown state {bad_state!r} in the status file"
        return status


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_FIELD_OK = {
    "state": lambda v: v in STATES and v != "lost",
    "step": _is_int,
    "n_steps": _is_int,
    "pid": lambda v: v is None or _is_int(v),
    "heartbeat": _is_num,
    "started": lambda v: v is None or _is_num(v),
    "error": lambda v: v is None or isinstance(v, str),
}


def write_status(run_dir: str | os.PathLike, status: Status) -> None:
    """Replace ``status.json`` atomically."""
    atomic_write_json(Path(run_dir) / STATUS_FILE, status.to_json(), fsync=False)


#: what readers show for a run that finished before its ``n_steps`` (``is_truncated``)
TRUNCATED = "truncated"


def is_truncated(state: str, status: Status | None) -> bool:
    """Whether a run ``finished`` before its ``n_steps`` (``max_runtime`` ended it): shown and
    ranked apart from runs that trained all their steps.

    Example:
        >>> is_truncated("finished", Status(state="finished", step=40, n_steps=100))
        True
    """
    return (
        state == "finished"
        and status is not None
        and status.n_steps > 0
        and 0 <= status.step < status.n_steps
    )


def read_status(run_dir: str | os.PathLike) -> Status | None:
    """Read ``status.json``; ``None`` if absent.

    A corrupt file gives a ``Status`` with ``state='failed'`` and ``error`` naming the file,
    so a dashboard can show a badge instead of crashing.
    """
    path = Path(run_dir) / STATUS_FILE
    try:
        raw = confined(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        return Status(state="failed", error=f"cannot read {path}: {e}")
    try:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("expected a JSON object")
        return Status.from_json(d)
    except (ValueError, TypeError) as e:
        return Status(state="failed", error=f"corrupt status file {path}: {e}")


def pid_alive(pid: int | None) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0] != b"Z"
    except (OSError, IndexError):
        return True


def is_run_dir(path: str | os.PathLike) -> bool:
    """A directory is a run if it has a status file or a resolved config."""
    p = Path(path)
    return (p / STATUS_FILE).exists() or (p / RESOLVED_CONFIG_FILE).exists()


def iter_run_dirs(runs_dir: str | os.PathLike) -> Iterator[Path]:
    """Run directories directly under ``runs_dir``, sorted by name."""
    root = Path(runs_dir)
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith(".") and is_run_dir(p):
            yield p


def read_resolved_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The resolved config (``config.json``) or ``None`` if absent or unreadable."""
    try:
        d = json.loads(confined(Path(run_dir) / RESOLVED_CONFIG_FILE).read_text())
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def config_copy(run_dir: str | os.PathLike) -> Path | None:
    """The copy of the experiment config in a run directory (``0-<config>.py``), if any."""
    copies = sorted(Path(run_dir).glob("0-*.py"))
    return copies[0] if copies else None


def config_copy_path(run_dir: str | os.PathLike, exp_file: str | os.PathLike) -> Path:
    """Where ``make_dir`` copies the experiment config ``exp_file``: ``0-<its name>``."""
    return Path(run_dir) / f"0-{Path(exp_file).name}"


class StatusFile:
    """The trainer's handle on ``status.json``: field updates plus a heartbeat thread.

    The heartbeat thread rewrites the file every ``interval`` seconds, so the dashboard sees
    a live run as alive even during a long monitoring or preview step. All writes are atomic.
    A write that fails raises ``RunWriteError``: at once from ``update``, and from the next
    ``check`` when the heartbeat thread hit it (a run whose status cannot be written must
    stop, not train on unseen).

    Example:
        >>> with StatusFile(run_dir, Status(state="running", n_steps=100)) as sf:  # doctest: +SKIP
        ...     sf.update(step=10, it_per_s=3.2)
        ...     sf.check()
    """

    def __init__(self, run_dir: str | os.PathLike, status: Status, interval: float = 2.0):
        import threading

        self.run_dir = Path(run_dir)
        self.status = status
        self.interval = interval
        #: the heartbeat's write error, raised by the next ``check``
        self.failure: RunWriteError | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, write: bool = True, **fields: Any) -> None:
        """Set fields (known ones on the Status, others in ``extra``) and write the file.

        With ``write=False`` the next heartbeat writes them: the per-step call in the
        training loop stays free of file I/O.

        Raises:
            RunWriteError: ``status.json`` could not be written (``write=True`` only).
        """
        with self._lock:
            for k, v in fields.items():
                if k in Status.__dataclass_fields__ and k != "extra":
                    setattr(self.status, k, v)
                else:
                    self.status.extra[k] = v
            if write:
                self._write_locked()

    def check(self) -> None:
        """Raise the heartbeat thread's write error, if it had one (cheap: no I/O).

        Raises:
            RunWriteError: a heartbeat could not write ``status.json``.
        """
        if self.failure is not None:
            raise self.failure

    def _write_locked(self) -> None:
        self.status.heartbeat = time.time()
        with writing(self.run_dir / STATUS_FILE, self.run_dir):
            write_status(self.run_dir, self.status)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                try:
                    self._write_locked()
                except RunWriteError as e:
                    # the training loop raises it at its next check; beating on is pointless
                    self.failure = e
                    return

    def __enter__(self) -> StatusFile:
        import threading

        with self._lock:
            self._write_locked()
        self.failure = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="voxelboard-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def read_run_state(run_dir: str | os.PathLike, now: float | None = None) -> RunState:
    """``merge_state`` of a run directory's files, with the live process table."""
    return merge_state(
        read_status(run_dir),
        read_launcher_record(run_dir, LAUNCHER_FILE),
        time.time() if now is None else now,
        pid_alive,
        read_launcher_record(run_dir, SUPERVISOR_FILE),
        console=str(os.path.join(run_dir, CONSOLE_LOG_FILE)),
    )
