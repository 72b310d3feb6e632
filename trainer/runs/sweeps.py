"""A sweep's folder and the trial record in each of its run directories.

A sweep lives in ``<runs_dir>/.sweeps/<sweep id>/`` (the leading dot keeps it out of the
run listing; its runs are ordinary run directories beside the others):

* ``sweep.json``: what was asked (the parsed ``sweep`` section, the backend, the parallel
  cap, the config); written once, when the sweep is made;
* ``config.py``: a copy of the config every trial trains (so editing the original later
  does not change a running sweep);
* ``study.journal``: Optuna's journal storage (its own format, appended by Optuna under its
  own file lock; trials report to it from compute nodes too);
* ``lock``: the sweep's ``flock`` file (``sweep_lock``; the runs folder's
  ``.sweeps.lock`` is the lock of all its sweeps, ``sweeps_lock``);
* ``trials.json``: the driver's record (which run each trial is, what the study was told,
  stop and failure state); written only under ``lock`` by whichever process drives the
  sweep (``run.py sweep`` or a dashboard), always whole and atomically;
* ``driver.json``: the ``run.py sweep`` process driving the sweep from a terminal (pid,
  host, last seen), written by that process alone while it drives (``write_driver``), so
  a dashboard shows who drives and leaves the sweep to it (``live_driver``).

Each trial's run directory holds ``trial.json`` (the sweep id, the trial number and the
values it got), written by the driver before the run is queued; ``run.py train`` applies
those values to the config when it finds the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.runs.atomic import atomic_write_bytes, atomic_write_json
from trainer.runs.confine import REFUSAL, confined, is_inside

SWEEPS_DIR = ".sweeps"
SWEEP_FILE = "sweep.json"
SWEEP_CONFIG_FILE = "config.py"
STUDY_FILE = "study.journal"
TRIALS_FILE = "trials.json"
SWEEP_LOCK_FILE = "lock"
DRIVER_FILE = "driver.json"
#: seconds after its last sign of life that a ``run.py sweep`` driver counts as gone
DRIVER_STALE_S = 30.0
#: beside ``SWEEPS_DIR`` in the runs folder: ``sweeps_lock``
SWEEPS_LOCK_FILE = ".sweeps.lock"
TRIAL_FILE = "trial.json"

#: sweep states: ``running`` (trials to run or running), then one of the final ones
SWEEP_STATES = ("running", "finished", "stopped", "failed")
SWEEP_FINAL_STATES = frozenset({"finished", "stopped", "failed"})

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def check_sweep_id(sweep_id: Any) -> str:
    """The id if it can name a sweep folder (letters, digits, ``_.-``; no path), else raise.

    Raises:
        ValueError: naming the value.
    """
    if not isinstance(sweep_id, str) or not _ID_RE.match(sweep_id) or ".." in sweep_id:
        raise ValueError(
            f"sweep id {sweep_id!r}: expected 1-80 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit"
        )
    return sweep_id


def sweeps_root(runs_dir: str | os.PathLike) -> Path:
    """The folder holding every sweep of a runs folder."""
    return Path(runs_dir) / SWEEPS_DIR


def sweep_dir(runs_dir: str | os.PathLike, sweep_id: str) -> Path:
    """The folder of one sweep (the id is checked: it cannot leave ``sweeps_root``).

    Raises:
        ValueError: a malformed id, or (while reads are confined to the runs folder, see
            ``trainer.runs.confine``) a sweep folder that is a link out of the runs folder.
    """
    folder = sweeps_root(runs_dir) / check_sweep_id(sweep_id)
    if not is_inside(folder):
        raise ValueError(
            f"sweep {sweep_id!r}: its folder is a link out of the runs folder; {REFUSAL}"
        )
    return folder


def sweep_config_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / SWEEP_CONFIG_FILE


def study_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / STUDY_FILE


def iter_sweep_dirs(runs_dir: str | os.PathLike) -> Iterator[Path]:
    """Sweep folders with a ``sweep.json``, sorted by id."""
    root = sweeps_root(runs_dir)
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if p.is_dir() and _ID_RE.match(p.name) and (p / SWEEP_FILE).is_file():
            yield p


def write_sweep(folder: str | os.PathLike, record: dict[str, Any]) -> None:
    atomic_write_json(Path(folder) / SWEEP_FILE, record)


def read_sweep(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``sweep.json`` as a dict, or ``None`` if absent or unreadable."""
    return _read_json(Path(folder) / SWEEP_FILE)


def write_sweep_config(folder: str | os.PathLike, text: bytes) -> Path:
    path = sweep_config_path(folder)
    atomic_write_bytes(path, text)
    return path


@dataclasses.dataclass
class TrialEntry:
    """One trial in ``trials.json``.

    Attributes:
        number: Optuna's trial number (0, 1, ...).
        run: the run directory's name.
        params: the values the trial got, by parameter name.
        told: what the study was told when the run ended (``complete``, ``pruned``,
            ``fail``), or ``None`` while it runs.
        state: the run's last seen state.
        value: the metric value told (best over the run's history), if any.
    """

    number: int
    run: str
    params: dict[str, Any]
    told: str | None = None
    state: str = "queued"
    value: float | None = None


@dataclasses.dataclass
class TrialsRecord:
    """``trials.json``: the driver's record of a sweep.

    Attributes:
        state: one of ``SWEEP_STATES``.
        reason: why a sweep ended other than finished (``stopped by ...``, ``3 trials failed``).
        trials: every trial launched, in order.
        stop_requested: unix time a stop of the whole sweep was asked for.
    """

    state: str = "running"
    reason: str | None = None
    trials: list[TrialEntry] = dataclasses.field(default_factory=list)
    stop_requested: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrialsRecord:
        fields = {f.name for f in dataclasses.fields(TrialEntry)}
        trials = [
            TrialEntry(**{k: v for k, v in t.items() if k in fields})
            for t in d.get("trials", [])
            if isinstance(t, dict) and "number" in t and "run" in t
        ]
        state = d.get("state") if d.get("state") in SWEEP_STATES else "running"
        return cls(state, d.get("reason"), trials, d.get("stop_requested"))


def read_trials(folder: str | os.PathLike) -> TrialsRecord:
    """``trials.json``, or an empty record (a new sweep) if absent or unreadable."""
    d = _read_json(Path(folder) / TRIALS_FILE)
    return TrialsRecord.from_json(d) if d else TrialsRecord()


def write_trials(folder: str | os.PathLike, record: TrialsRecord) -> None:
    atomic_write_json(Path(folder) / TRIALS_FILE, record.to_json())


@contextlib.contextmanager
def sweep_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the sweep's lock: one driver at a time reads and writes ``trials.json`` and asks
    the study for trials. The lock dies with its holder (``flock``), so a driver that finds
    a trial RUNNING in the study and absent from ``trials.json`` knows whoever asked for it
    is gone."""
    with _flock(Path(folder) / SWEEP_LOCK_FILE):
        yield


@contextlib.contextmanager
def sweeps_lock(runs_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of a runs folder's sweeps (``<runs_dir>/.sweeps.lock``): whoever counts
    the unfinished sweeps to keep a cap, and whoever makes a sweep, holds it, so a count and
    the sweep made after it are never interleaved with another process's (two dashboards, a
    dashboard and ``run.py sweep``). The file sits beside ``.sweeps``, not in it: a folder
    of sweeps holds sweeps only, and a refused sweep leaves no ``.sweeps`` behind."""
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    with _flock(Path(runs_dir) / SWEEPS_LOCK_FILE):
        yield


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_driver(folder: str | os.PathLike, pid: int, host: str, now: float) -> None:
    """Say that process ``pid`` on ``host`` (``run.py sweep``) drives the sweep, as of
    ``now``; the driver rewrites it every few seconds while it drives."""
    atomic_write_json(Path(folder) / DRIVER_FILE, {"pid": pid, "host": host, "seen": now})


def clear_driver(folder: str | os.PathLike, pid: int) -> None:
    """Remove ``driver.json`` if process ``pid`` wrote it (a driver that is done)."""
    path = Path(folder) / DRIVER_FILE
    if (_read_json(path) or {}).get("pid") == pid:
        with contextlib.suppress(OSError):
            path.unlink()


def live_driver(
    record: Any, now: float, host: str, alive: Any, stale_s: float = DRIVER_STALE_S
) -> int | None:
    """The pid of the ``run.py sweep`` process a ``driver.json`` record names, if it still
    drives: seen within ``stale_s`` and, on this ``host``, ``alive(pid)``; else ``None``.
    Pure: the record, the clock, the host name and the process check are given."""
    if not isinstance(record, dict):
        return None
    pid, seen = record.get("pid"), record.get("seen")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(seen, int | float):
        return None
    if now - seen > stale_s or (record.get("host") == host and not alive(pid)):
        return None
    return pid


def read_driver(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``driver.json`` of a sweep, or ``None``."""
    return _read_json(Path(folder) / DRIVER_FILE)


def write_trial(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write a run directory's ``trial.json`` (sweep id, folder, number, params)."""
    atomic_write_json(Path(run_dir) / TRIAL_FILE, record)


def read_trial(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run's ``trial.json``, or ``None`` when the run is no sweep trial."""
    return _read_json(Path(run_dir) / TRIAL_FILE)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(confined(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
