"""Paths under the runs folder built from values a browser sent: one resolver for every page.

A browser names things by plain names: a run, a result, a snapshot, a cube. Each such value
goes through ``check_name`` before it becomes part of a path, and the path it yields must
still lie inside the folder it was meant for once symlinks are followed. Absolute paths,
``..``, separators, NUL bytes, hidden names and names longer than a file name may be
(255 bytes) are refused with a message saying what was expected.

Names are half of it: a run directory may hold links (``train.log -> /etc/passwd``, a run
folder linked to another disk). Unless the dashboard was started with ``--follow-links``,
every request runs inside ``trainer.runs.confine.confined_to(runs_dir)``, and every reader
of run files refuses a path that resolves outside the runs folder (``confined``, re-exported
here); ``run_dir`` refuses a run folder that is itself such a link.

Example:
    >>> check_name("result", "FINAL")
    'FINAL'
    >>> check_name("result", "../../x")
    Traceback (most recent call last):
    ...
    app.paths.ClientPathError: result name '../../x' is refused: it contains a path separator; pick one from the list
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainer.runs.confine import (  # noqa: F401 - re-exported for the pages
    REFUSAL,
    OutsideRunsError,
    confined,
    confined_to,
    is_inside,
)

#: longest file name most file systems accept, in bytes
MAX_NAME_BYTES = 255


class ClientPathError(ValueError):
    """A name sent by a client cannot name a file inside the runs folder."""


def _problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected text, got {type(value).__name__}"
    if not value:
        return "it is empty"
    if "\x00" in value:
        return "it contains a NUL character"
    if "/" in value or "\\" in value or (os.altsep and os.altsep in value):
        return "it contains a path separator"
    if value.startswith("."):
        return "it starts with a dot"
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    if len(encoded) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_name(kind: str, value: Any) -> str:
    """``value`` itself if it can be one file name: no separators, no ``..``, no NUL, not hidden.

    Args:
        kind: what the value names (``run``, ``result``, ``snapshot``, ``cube``), for the message.
        value: the value the client sent.

    Raises:
        ClientPathError: naming the kind, the value and what is wrong with it.
    """
    problem = _problem(value)
    if problem is not None:
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:80])
        raise ClientPathError(f"{kind} name {shown} is refused: {problem}; pick one from the list")
    return value


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop or an unreadable folder
        return False


def run_dir(runs_dir: str | os.PathLike, run: Any, *, follow_links: bool = False) -> Path:
    """The existing run directory ``runs_dir/run``.

    Args:
        runs_dir: the runs folder.
        run: the name the client sent.
        follow_links: accept a run folder that is a link to a folder elsewhere (a dashboard
            started with ``--follow-links``).

    Raises:
        ClientPathError: a refused name, no such directory, or (unless ``follow_links``) a
            symlink leading out of ``runs_dir``.
    """
    root = Path(runs_dir)
    path = root / check_name("run", run)
    try:
        is_dir = path.is_dir()
    except OSError:
        is_dir = False
    if not is_dir:
        raise ClientPathError(f"run {run!r} is not a run directory in {root}")
    if not follow_links and path.resolve().parent != root.resolve():
        raise ClientPathError(
            f"run {run!r} is not a run directory in {root}: it is a link out of the runs "
            f"folder; {REFUSAL}"
        )
    return path


def run_file(run_dir: str | os.PathLike, folder: str, kind: str, name: Any, suffix: str) -> Path:
    """``run_dir/folder/<name><suffix>`` for a client-sent ``name``, inside ``run_dir/folder``.

    The file need not exist (``exists()`` is the caller's question); the name is checked, the
    whole file name must fit in 255 bytes, a symlink must not lead out of the folder, and
    (while reads are confined, see ``trainer.runs.confine``) not out of the runs folder.

    Raises:
        ClientPathError: naming the kind and the value.
    """
    check_name(kind, name)
    check_name(kind, f"{name}{suffix}")
    base = Path(run_dir) / folder
    path = base / f"{name}{suffix}"
    if not _inside(path, base):
        raise ClientPathError(f"{kind} {name!r} leads out of {base}; pick one from the list")
    try:
        confined(path)  # the folder itself may be the link
    except OutsideRunsError as e:
        raise ClientPathError(f"{kind} {name!r}: {e}") from None
    return path
