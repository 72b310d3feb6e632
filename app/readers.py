"""Read run directories for the experiments table and the log panel; never raise.

Every reader here survives a missing, corrupt or half-written file: the run still gets a
row, with a short ``badge`` saying what is wrong. Parsed files are cached by
(path, mtime, size, inode), so a table refresh re-reads only what changed; anything derived from
the clock (``lost``, ETA, duration) is recomputed on every call.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainer import runs
from trainer.runs import (
    CONSOLE_LOG_FILE,
    LAUNCH_FILE,
    LAUNCHER_FILE,
    LOG_FILE,
    STATUS_FILE,
    SUPERVISOR_FILE,
    LauncherRecord,
    Status,
    check_snapshot,
    config_copy,
    is_truncated,
    iter_run_dirs,
    latest_snapshot,
    merge_state,
    pid_alive,
)
from trainer.runs.confine import REFUSAL, OutsideRunsError, confined, is_inside
from trainer.runs.history_store import HistoryFormatError, history_files, read_table, table_info
from trainer.runs.launcher_record import legacy_record

#: metrics the table shows, as named in status.json and in the history table
METRICS = ("train_loss", "valid_loss", "train_err", "valid_err")
#: most bytes read from the end of a log file for the log panel
TAIL_BYTES = 256 * 1024
#: most bytes of train.log searched for the error of a run that died without a final state
LOG_ERROR_BYTES = 64 * 1024


def _stat_key(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    # an atomic replace makes a new inode, so this catches rewrites within one mtime tick
    return str(path), st.st_mtime_ns, st.st_size, st.st_ino


@functools.lru_cache(maxsize=4096)
def _parse_json(path: str, mtime_ns: int, size: int, ino: int) -> tuple[dict | None, str | None]:
    """(object, None) or (None, problem) for one JSON file version."""
    name = os.path.basename(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return None, f"cannot read {name}: {e.strerror}"
    if not raw.strip():
        return None, f"{name} is empty (half-written?)"
    try:
        obj = json.loads(raw)
    except ValueError:
        return None, f"{name} is corrupt (not valid JSON)"
    if not isinstance(obj, dict):
        return None, f"{name} is corrupt (not a JSON object)"
    return obj, None


def read_json(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """A JSON object file: ``(obj, None)``, ``(None, None)`` if absent, ``(None, problem)``.

    A file that resolves outside the runs folder (``trainer.runs.confine``) is a problem
    naming it and why, and is not opened.
    """
    try:
        confined(path)
    except OutsideRunsError as e:
        return None, str(e)
    key = _stat_key(Path(path))
    return (None, None) if key is None else _parse_json(*key)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _status_from(d: dict) -> tuple[Status, str | None]:
    """A ``Status`` whose always-present keys have usable types, and a badge naming bad ones."""
    status = Status.from_json(d)  # falls back to defaults for fields of the wrong type
    problems = status.extra.get("status_problems") or []
    named = [f"state {d.get('state')!r}" if k == "state" else k for k in problems]
    badge = f"status.json: bad {', '.join(named)}" if named else None
    return status, badge


@functools.lru_cache(maxsize=1024)
def _last_history_row(store_dir: str, mtime_ns: int) -> dict[str, float]:
    """Last row of the history table (cached per store version); ``{}`` if unavailable."""
    try:
        info = table_info(store_dir, "history")
        if info is None or info.n_rows == 0:
            return {}
        df = read_table(store_dir, "history", start=info.n_rows - 1)
        if len(df) == 0:
            return {}
        row = df.iloc[-1]
        out = {k: _num(float(row[k])) for k in ("steps", *METRICS) if k in row.index}
        return {k: v for k, v in out.items() if v is not None}
    except Exception:  # a torn or foreign store must not break the table
        return {}


def _history_fallback(run_dir: Path) -> dict[str, float]:
    store = runs.history_dir(run_dir)
    key = _stat_key(store)
    if key is None or not all(map(is_inside, [store, *history_files(run_dir)])):
        return {}
    # appends change the newest file, not the folder: key on the newest mtime inside
    try:
        newest = max((e.stat().st_mtime_ns for e in os.scandir(store)), default=key[1])
    except OSError:
        return {}
    return _last_history_row(str(store), newest)


def _config_name(run_dir: Path, status: Status | None, launch: dict | None) -> str:
    if status is not None and isinstance(status.extra.get("config_file"), str):
        return os.path.basename(status.extra["config_file"])
    if launch and isinstance(launch.get("config"), str):
        return launch["config"]
    copy = config_copy(run_dir)
    return copy.name[2:] if copy else ""


def has_snapshot(run_dir: str | os.PathLike) -> bool:
    """Whether a run has a snapshot to resume from (``trainer.runs.latest_snapshot``)."""
    try:
        return latest_snapshot(run_dir) is not None
    except (OSError, OutsideRunsError):
        return False


def run_summary(run_dir: str | os.PathLike, now: float | None = None) -> dict[str, Any]:
    """One row of the experiments table; never raises.

    Keys: ``name``, ``config``, ``state`` (``trainer.runs.merge_state`` of the trainer's
    status and the launcher's record), ``step``, ``n_steps``, ``progress`` (0..100),
    ``eta_s``, ``it_per_s``, ``train_loss``, ``valid_loss``, ``train_err``, ``valid_err``,
    ``device``, ``started`` (unix time), ``duration_s``, ``pid``, ``exit_code``, ``job_id``,
    ``slurm_state``, ``slurm_reason``, ``error`` (the run's own error message),
    ``truncated`` (finished before its ``n_steps``: ``trainer.runs.is_truncated``) and
    ``badge`` (what is wrong with the run's files, or ``None``). Missing values are ``None``.
    """
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    row: dict[str, Any] = dict.fromkeys(
        (
            "config",
            "eta_s",
            "it_per_s",
            *METRICS,
            "device",
            "started",
            "duration_s",
            "pid",
            "exit_code",
            "job_id",
            "slurm_state",
            "slurm_reason",
        ),
        None,
    )
    row.update(name=run_dir.name, step=0, n_steps=0, progress=0.0, error=None, badge=None,
               truncated=False)  # fmt: skip
    if not is_inside(run_dir):  # a run folder linked to elsewhere: listed, never read
        row["state"] = "unknown"
        row["badge"] = f"the run folder is a link out of the runs folder: {REFUSAL}"
        return row
    try:
        _fill(row, run_dir, now)
    except Exception as e:  # last resort: a row with a badge beats a broken page
        row["badge"] = f"unreadable run: {type(e).__name__}: {e}"
        row["state"] = row.get("state") or "failed"
    return row


def _record(run_dir: Path, name: str, launch: dict | None) -> LauncherRecord | None:
    d, _ = read_json(run_dir / name)
    if d is not None:
        return LauncherRecord.from_json(d)
    # a run launched before launcher.json existed: its launch.json named pid and job
    return legacy_record(launch) if name == LAUNCHER_FILE else None


def _fill(row: dict[str, Any], run_dir: Path, now: float) -> None:
    d, problem = read_json(run_dir / STATUS_FILE)
    launch, launch_problem = read_json(run_dir / LAUNCH_FILE)
    record = _record(run_dir, LAUNCHER_FILE, launch)
    status = None
    if d is not None:
        status, problem = _status_from(d)
    elif problem is None and record is None:
        problem = "no status.json"
    problems = [problem or launch_problem, *file_problems(run_dir)]
    row["badge"] = "; ".join(p for p in problems if p) or None
    row["config"] = _config_name(run_dir, status, launch)
    if status is None and record is None:
        row["state"] = "unknown"
        return

    shown = merge_state(status, record, now, pid_alive, _record(run_dir, SUPERVISOR_FILE, None),
                        console=str(run_dir / CONSOLE_LOG_FILE))  # fmt: skip
    state = shown.state
    extra = status.extra if status is not None else {}
    planned = ((launch or {}).get("overrides") or {}).get("n_steps")
    row.update(state=state, pid=shown.pid, exit_code=shown.exit_code, job_id=shown.job_id,
               slurm_state=shown.slurm_state, slurm_reason=shown.slurm_reason)  # fmt: skip
    row["step"] = status.step if status is not None else 0
    row["n_steps"] = status.n_steps if status is not None else planned
    if not isinstance(row["n_steps"], int) or isinstance(row["n_steps"], bool):
        row["n_steps"] = 0
    row["truncated"] = is_truncated(state, status)
    row["error"] = shown.error if isinstance(shown.error, str) else None
    if state == "lost" or (state == "failed" and not row["error"]):
        # the trainer could not write its final state (a full disk): its log may say why
        row["error"] = _log_error(run_dir)
    row["started"] = shown.started
    row["device"] = shown.device
    for k in METRICS:
        row[k] = _num(extra.get(k))
    if any(row[k] is None for k in METRICS) and state != "queued":
        last = _history_fallback(run_dir)
        for k in METRICS:
            row[k] = row[k] if row[k] is not None else last.get(k)
    if row["n_steps"] > 0:
        row["progress"] = round(min(100.0, 100.0 * row["step"] / row["n_steps"]), 1)
    row["it_per_s"] = _num(extra.get("it_per_s"))
    if state == "running":
        eta = _num(extra.get("eta_s"))
        if eta is None and row["it_per_s"] and row["n_steps"]:
            eta = max(0.0, row["n_steps"] - row["step"]) / row["it_per_s"]
        row["eta_s"] = eta
    if shown.started:
        end = _num(shown.ended)
        if end is None:
            end = now if state == "running" else (status.heartbeat if status else None) or None
        row["duration_s"] = max(0.0, end - shown.started) if end else None


def file_problems(run_dir: str | os.PathLike) -> list[str]:
    """What is wrong with a run's snapshot, history store, newest preview and evaluation files.

    Cheap enough for every table refresh: one directory scan per folder, and each file
    version (path, mtime, size, inode) is checked once, by its header or zip directory only
    (no full loads). Checked: the newest snapshot (and FINAL), every history table, the newest
    preview and every ``eval/*.h5``. Returns short messages naming the file relative to the
    run directory, e.g. ``snapshots/LAST.pt is corrupt or truncated (...)``; ``[]`` when all
    is well or nothing is there yet.
    """
    run_dir = os.fspath(run_dir)
    # the snapshot a resume or an evaluation would load, and FINAL (evaluation's first pick)
    snapshots = [runs.latest_snapshot(run_dir), runs.snapshot_path(run_dir, runs.FINAL)]
    # the same pick as trainer.runs.preview_files, without pathlib
    previews = _entries(
        os.path.join(run_dir, runs.PREVIEW_DIR), runs.PREVIEW_PREFIX, runs.PREVIEW_SUFFIX
    )
    checks = [("snapshot", e) for e in _stat_each(dict.fromkeys(p for p in snapshots if p))]
    checks += [("history", e) for e in _stat_each(history_files(run_dir))]
    checks += [("h5", max(previews))] if previews else []
    checks += [
        ("h5", e) for e in _entries(os.path.join(run_dir, runs.EVAL_DIR), "", runs.RESULT_SUFFIX)
    ]
    out = []
    for kind, (path, st) in checks:
        if not is_inside(path):  # before the cache: never opened, whoever asked before
            out.append(str(OutsideRunsError(path, "/".join(Path(path).parts[-2:]))))
        elif found := _file_problem(kind, path, st.st_mtime_ns, st.st_size, st.st_ino):
            out.append(found)
    return out


def _stat_each(paths: Iterable[os.PathLike]) -> list[tuple[str, os.stat_result]]:
    """(path, stat) of those of ``paths`` that exist."""
    out = []
    for p in paths:
        with contextlib.suppress(OSError):
            out.append((os.fspath(p), os.stat(p)))
    return out


def _entries(folder: str, prefix: str, suffix: str) -> list[tuple[str, os.stat_result]]:
    """(path, stat) of the files ``<prefix>*<suffix>`` in ``folder``, temporary files left out."""
    out = []
    try:
        with os.scandir(confined(folder)) as it:
            for e in it:
                name = e.name
                if name.startswith(prefix) and name.endswith(suffix) and name[0] != ".":
                    with contextlib.suppress(OSError):  # removed since the scan: skip it
                        out.append((e.path, e.stat()))
    except OSError:
        return []
    return out


@functools.lru_cache(maxsize=4096)
def _file_problem(kind: str, path: str, mtime_ns: int, size: int, ino: int) -> str | None:
    """One check of one file version: ``None`` or a message naming ``<folder>/<file>``."""
    shown = "/".join(Path(path).parts[-2:])
    if size == 0:
        return f"{shown} is empty (a write that never finished?)"
    if kind == "snapshot":
        return check_snapshot(path, shown)
    if kind == "history":
        return _history_problem(Path(path), shown)
    return _h5_problem(path, shown)


def _history_problem(path: Path, shown: str) -> str | None:
    try:
        table_info(path.parent, path.stem)
    except HistoryFormatError as e:
        # its messages name the file and say what to do
        return str(e).replace(f"history file {path}", shown).replace(str(path), shown)
    except OSError as e:
        return f"cannot read {shown}: {e.strerror or e}"
    return None


def _h5_problem(path: str, shown: str) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r"):
            pass
    except OSError as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "unable to lock file" in detail.lower():
            return None  # another process holds it open: busy, not corrupt
        # "Unable to synchronously open file (file signature not found)": keep the reason
        detail = re.sub(r"^Unable to (?:synchronously )?open file \((.*)\)$", r"\1", detail)
        return f"{shown} is corrupt or truncated (not a readable HDF5 file: {detail[:120]})"
    return None


def _log_error(run_dir: Path) -> str | None:
    """The last error the trainer logged in its current attempt, as ``train.log: ...``."""
    path = run_dir / LOG_FILE
    key = _stat_key(path) if is_inside(path) else None
    return None if key is None else _last_log_error(*key)


@functools.lru_cache(maxsize=1024)
def _last_log_error(path: str, mtime_ns: int, size: int, ino: int) -> str | None:
    """The first error after the log's latest start line: the cause, not its aftermath."""
    lines = tail_lines(path, n=10_000, max_bytes=LOG_ERROR_BYTES)
    start = max((i for i, t in enumerate(lines) if "] [INFO] Training " in t), default=-1)
    for i in range(start + 1, len(lines)):
        if "] [ERROR] " not in lines[i]:
            continue
        text = lines[i].split("] [ERROR] ", 1)[1].strip()
        if text.endswith(":"):
            # "Training failed at step N:" and a traceback: its last line says what failed
            block = itertools.takewhile(lambda t: not t.startswith("["), lines[i + 1 :])
            tail = [t.strip() for t in block if t.strip()]
            text = f"{text} {tail[-1]}" if tail else text
        return f"{LOG_FILE}: {text}"[:300]
    return None


def list_runs(runs_dir: str | os.PathLike, now: float | None = None) -> list[dict[str, Any]]:
    """``run_summary`` of every run directory under ``runs_dir``, newest first.

    A run directory is a folder with ``status.json``, ``config.json`` or ``launch.json``.
    """
    root = Path(runs_dir)
    try:
        dirs = set(iter_run_dirs(root))
        dirs |= {
            p.parent for p in root.glob(f"*/{LAUNCH_FILE}") if not p.parent.name.startswith(".")
        }
    except OSError:  # the folder vanished or is unreadable: show no runs rather than fail
        return []
    now = time.time() if now is None else now
    rows = [run_summary(p, now) for p in dirs]
    rows.sort(key=lambda r: (r["started"] or _ctime(root / r["name"]), r["name"]), reverse=True)
    return rows


def _ctime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def log_path(run_dir: str | os.PathLike) -> Path | None:
    """The log to show for a run: ``train.log``, else ``console.log``, else ``None``."""
    for name in (LOG_FILE, CONSOLE_LOG_FILE):
        p = Path(run_dir) / name
        if p.is_file():
            return p
    return None


def tail_lines(path: str | os.PathLike, n: int = 200, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last ``n`` lines of a text file, reading at most ``max_bytes`` from its end.

    Returns ``[]`` for a missing file. A partial first line (cut by ``max_bytes``) is dropped.
    """
    try:
        with open(confined(path), "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read(size - start)
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and lines:
        lines = lines[1:]
    return lines[-n:] if n > 0 else []
