"""Progress of a distributed predict or segment job, read from its output alone.

``job_progress`` only reads the job folder that ``trainer.block_claims`` keeps in the output
(job file, leases, done markers, failures, worker files); it starts nothing, locks nothing
and writes nothing, so a dashboard may call it as often as it likes, on any machine that
sees the output. A done marker is written whole (temp file, fsync, rename) and never changes,
so the times read from it are kept in memory, per job folder and submission: a repeated call
lists the folder and parses only the markers new since the last call (a page polling a job
of thousands of blocks every 2 s reads a handful of files per poll, not thousands).

Example:
    >>> p = job_progress("prob.zarr")  # doctest: +SKIP
    >>> p["blocks"]["done"], p["blocks"]["total"], p["eta_s"]  # doctest: +SKIP
    (412, 4096, 1830.5)
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from trainer.block_claims import LEASE_TIMEOUT_S, job_folder, read_job

__all__ = ["job_progress"]

#: job folders whose done markers' times are kept (least recently read dropped first)
MARKER_CACHE_FOLDERS = 64
#: (job folder, job's ``created``) -> {done marker name: (end, start, cpu_s)}
_markers: OrderedDict[tuple[str, Any], dict[str, tuple[float | None, ...]]] = OrderedDict()
_markers_lock = threading.Lock()


def _json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _split(name: str) -> tuple[str, int, str] | None:
    """``'predict-12.3'`` -> ``('predict', 12, '3')``; ``'faces-4.json'`` -> (.., 'json')."""
    stem, _, tail = name.partition(".")
    step, _, index = stem.rpartition("-")
    return (step, int(index), tail) if index.isdigit() and step else None


def job_progress(
    output_path: str | os.PathLike,
    key: str | None = None,
    now: float | None = None,
    window: int = 50,
) -> dict[str, Any] | None:
    """The state of the job writing ``output_path``, or ``None`` where there is no job.

    Args:
        output_path: the job's output folder (``run.py predict|segment`` OUTPUT).
        key: the output array's key; only checked against the job's (``None``: any).
        now: the time to measure ages and the ETA against (default ``time.time()``).
        window: how many of the latest done blocks set the throughput.

    Returns:
        A dict:

        * ``kind``: ``'predict'`` or ``'segment'``; ``output``, ``key``.
        * ``command``: the submitting command line (list of str), run in ``cwd``;
          ``backend``: ``'local'`` or ``'slurm'``; ``slurm_job_id``: the array's job id or
          ``None``; ``workers_asked``: the worker or task count (after the cap);
          ``created``: submission time (epoch s).
        * ``steps``: per step, in order, ``{'name', 'total', 'done', 'claimed'}``.
        * ``blocks``: over all steps, ``{'total', 'done', 'claimed', 'failed',
          'retried'}``: ``claimed`` is claimed and not done (being worked on, or held by a
          dead worker not yet replaced); ``failed`` counts blocks whose work raised;
          ``retried`` counts take-overs (a lease generation above 0).
        * ``complete``: every block of every step done.
        * ``throughput``: blocks per second over the last ``window`` done blocks (``None``
          before two are done); ``eta_s``: seconds left at that rate (0 when complete,
          ``None`` when unknown); ``started``/``last_done``: first block's start and last
          block's end (epoch s, ``None`` before any); ``cpu_s_per_block``: the workers'
          CPU seconds per done block, on average (``None`` before any).
        * ``workers``: per worker, sorted by name, ``{'worker', 'host', 'pid', 'state',
          'blocks', 'block', 'beat', 'silent_s', 'error'}``; ``state`` is the worker's own
          (``running``, ``waiting``, ``finished``, ``stopped``, ``failed``), or ``'lost'`` when a
          running or waiting worker has not beaten for ``LEASE_TIMEOUT_S`` seconds.
        * ``single``: a one-process command's job (``trainer.process_job``): its one step
          and its times come from its worker file (``claimed`` 1 while it runs; ``failed``
          and ``retried`` 0; ``started`` the command's start).
    """
    folder = job_folder(output_path)
    job = read_job(folder)
    if job is None or (key is not None and job.get("key") != key):
        return None
    now = time.time() if now is None else now
    if job.get("single"):
        return _single(job, folder, now, window)
    steps = [(s["name"], int(s["blocks"])) for s in job.get("steps", [])]
    done_at: dict[str, set[int]] = {name: set() for name, _ in steps}
    ends, starts, cpus = [], [], []
    for name, (end, start, cpu) in _done_markers(folder, job).items():
        parts = _split(name)
        if parts is None or parts[0] not in done_at:
            continue
        done_at[parts[0]].add(parts[1])
        if end is not None:
            ends.append(end)
        if start is not None:
            starts.append(start)
        if cpu is not None:
            cpus.append(cpu)
    claimed: dict[str, set[int]] = {name: set() for name, _ in steps}
    retried = 0
    for name in _names(folder / "claims"):
        parts = _split(name)
        if parts is None or parts[0] not in claimed or not parts[2].isdigit():
            continue
        claimed[parts[0]].add(parts[1])
        retried += int(parts[2]) > 0
    failed = {(p[0], p[1]) for n in _names(folder / "failed") if (p := _split(n))}
    step_rows = [
        {"name": name, "total": total, "done": len(done_at[name]),
         "claimed": len(claimed[name] - done_at[name])}
        for name, total in steps
    ]  # fmt: skip
    total = sum(r["total"] for r in step_rows)
    done = sum(r["done"] for r in step_rows)
    ends.sort()
    blocks = {
        "total": total,
        "done": done,
        "claimed": sum(r["claimed"] for r in step_rows),
        "failed": len(failed),
        "retried": retried,
    }
    cpu = sum(cpus) / len(cpus) if cpus else None
    return _result(job, folder, now, step_rows, blocks, ends[-window:], cpu,
                   min(starts) if starts else None)  # fmt: skip


def _result(job: dict[str, Any], folder: Path, now: float, step_rows: list[dict[str, Any]],
            blocks: dict[str, int], recent: list[float], cpu_s_per_block: float | None,
            started: float | None) -> dict[str, Any]:  # fmt: skip
    """``job_progress``'s answer from the counts (``recent``: the latest block ends, in order)."""
    complete = blocks["total"] > 0 and blocks["done"] >= blocks["total"]
    throughput = None
    if len(recent) >= 2 and recent[-1] > recent[0]:
        throughput = (len(recent) - 1) / (recent[-1] - recent[0])
    left = blocks["total"] - blocks["done"]
    eta = 0.0 if complete else left / throughput if throughput else None
    return {
        "kind": job.get("kind"),
        "output": job.get("output"),
        "key": job.get("key"),
        "command": job.get("command"),
        "cwd": job.get("cwd"),
        "backend": job.get("backend"),
        "slurm_job_id": job.get("slurm_job_id"),
        "workers_asked": job.get("workers"),
        "created": job.get("created"),
        "single": bool(job.get("single")),
        "steps": step_rows,
        "blocks": blocks,
        "complete": complete,
        "throughput": throughput,
        "eta_s": eta,
        "cpu_s_per_block": cpu_s_per_block,
        "started": started,
        "last_done": recent[-1] if recent else None,
        "workers": _workers(folder, now),
    }


def _single(job: dict[str, Any], folder: Path, now: float, window: int) -> dict[str, Any]:
    """``job_progress`` of a one-process job, from its worker file's ``progress``."""
    worker = _json(folder / "workers" / f"{job.get('worker')}.json") or {}
    p = worker.get("progress") if isinstance(worker.get("progress"), dict) else {}
    steps = job.get("steps") or [{"name": job.get("kind"), "blocks": 0}]
    total = int(p.get("total") or steps[0]["blocks"])
    done = min(int(p.get("done") or 0), total)
    running = worker.get("state") in ("running", "waiting") and done < total
    rows = [{"name": steps[0]["name"], "total": total, "done": done, "claimed": int(running)}]
    blocks = {"total": total, "done": done, "claimed": int(running), "failed": 0, "retried": 0}
    ends = sorted(float(e) for e in p.get("ends") or [] if isinstance(e, (int, float)))
    here = p.get("blocks_here")
    cpu_s = p.get("cpu_s")
    ok = isinstance(here, int) and here > 0 and isinstance(cpu_s, (int, float))
    cpu = cpu_s / here if ok else None
    started = p.get("started") if isinstance(p.get("started"), (int, float)) else None
    return _result(job, folder, now, rows, blocks, ends[-window:], cpu, started)


def _number(marker: dict[str, Any], key: str) -> float | None:
    value = marker.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _done_markers(folder: Path, job: dict[str, Any]) -> dict[str, tuple[float | None, ...]]:
    """``(end, start, cpu_s)`` of every done marker in ``folder``, by file name; parses only
    the names not seen by an earlier call for the same job (a resubmission over a new output
    has another ``created`` and starts afresh). A marker that cannot be read counts as done
    without times and is read again next call."""
    cache_key = (str(folder.absolute()), job.get("created"))
    with _markers_lock:
        known = _markers.get(cache_key, {})
    current: dict[str, tuple[float | None, ...]] = {}
    fresh: dict[str, tuple[float | None, ...]] = {}
    for name in _names(folder / "done"):
        if name.startswith("."):  # a marker being written (its temp file)
            continue
        times = known.get(name)
        if times is None:
            marker = _json(folder / "done" / name)
            times = (_number(marker or {}, "end"), _number(marker or {}, "start"),
                     _number(marker or {}, "cpu_s"))  # fmt: skip
            if marker is not None:
                fresh[name] = times
        current[name] = times
    with _markers_lock:
        # names gone from the folder are dropped; unreadable markers are not kept
        _markers[cache_key] = {n: t for n, t in current.items() if n in known or n in fresh}
        _markers.move_to_end(cache_key)
        while len(_markers) > MARKER_CACHE_FOLDERS:
            _markers.popitem(last=False)
    return current


def _workers(folder: Path, now: float) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(_names(folder / "workers")):
        w = _json(folder / "workers" / name)
        if w is None or not name.endswith(".json"):
            continue
        beat = w.get("beat") if isinstance(w.get("beat"), (int, float)) else None
        silent = now - beat if beat is not None else None
        state = w.get("state")
        if state in ("running", "waiting") and silent is not None and silent > LEASE_TIMEOUT_S:
            state = "lost"
        rows.append({"worker": w.get("worker", name[:-5]), "host": w.get("host"),
                     "pid": w.get("pid"), "state": state, "blocks": w.get("blocks", 0),
                     "block": w.get("block"), "beat": beat, "silent_s": silent,
                     "error": w.get("error")})  # fmt: skip
    return rows
