"""``launch.json``: what the dashboard's launcher was asked to run, and its Slurm batch script.

The launcher writes ``launch.json`` when a run is queued (and again when it is resumed); the
file is the request only: config, device asked for, overrides, backend, Slurm resources,
creation time. What happened to the request (pid, job id, exit code) is the launcher's
record, ``launcher.json`` (see ``trainer.runs.launcher_record``).

Example:
    >>> write_launch(run_dir, {"backend": "local", "config": "demo.py", ...})  # doctest: +SKIP
    >>> read_launch(run_dir)["config"]  # doctest: +SKIP
    'demo.py'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.runs.atomic import atomic_write_json
from trainer.runs.confine import confined

LAUNCH_FILE = "launch.json"
#: the batch script a Slurm launch writes into the run directory
BATCH_SCRIPT_FILE = "slurm-job.sh"


def launch_path(run_dir: str | os.PathLike) -> Path:
    """Where a run's ``launch.json`` lives."""
    return Path(run_dir) / LAUNCH_FILE


def read_launch(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``launch.json`` of a run, or ``None`` if absent or unreadable."""
    try:
        d = json.loads(confined(launch_path(run_dir)).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def write_launch(run_dir: str | os.PathLike, launch: Mapping[str, Any]) -> None:
    """Replace ``launch.json`` atomically."""
    atomic_write_json(launch_path(run_dir), dict(launch))


def launch_backend(launch: Mapping[str, Any] | None) -> str:
    """A launch's backend; launches written before backends existed are ``local``."""
    return str((launch or {}).get("backend") or "local")
