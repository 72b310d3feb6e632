"""Reads of a runs folder that stay inside it: the one check every run-file reader makes.

A runs folder may hold symbolic links (``train.log -> /home/me/.ssh/id_rsa``, a run folder
linked to another disk). The trainer writes its own run directory and follows whatever is
there; a dashboard that shows the folder to visitors must not. While ``confined_to(root)``
is active in the current context (the dashboard enters it for every request), ``confined``
refuses any path whose resolved location (``os.path.realpath``: every link followed) lies
outside ``root``; outside it, ``confined`` passes every path through, so the trainer and
the command line are unaffected.

Every reader in ``trainer.runs`` and ``app`` calls ``confined`` on the path it is about to
open, stat or list, so a refusal happens before any byte of the outside file is read.

Example:
    >>> with confined_to("runs"):  # doctest: +SKIP
    ...     open(confined("runs/lg/train.log"))  # train.log -> /tmp/secret.txt
    Traceback (most recent call last):
    ...
    trainer.runs.confine.OutsideRunsError: lg/train.log resolves outside the runs folder: ...
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import TypeVar

#: why a file was refused, as a page shows it
REFUSAL = "links outside the runs folder are not followed; start with --follow-links to allow"

_ROOT: contextvars.ContextVar[str | None] = contextvars.ContextVar("runs_root", default=None)

P = TypeVar("P", str, os.PathLike)


class OutsideRunsError(PermissionError):
    """A file under the runs folder resolves outside it (through a link), and links out of the
    runs folder are not followed. ``strerror`` is the reason; ``str()`` names the file."""

    def __init__(self, path: str | os.PathLike, shown: str):
        # no errno: readers that put an error in words then use ``str()``, which says why
        super().__init__(None, REFUSAL, os.fspath(path))
        self.shown = shown

    def __str__(self) -> str:
        return f"{self.shown} resolves outside the runs folder: {REFUSAL}"


@contextlib.contextmanager
def confined_to(root: str | os.PathLike) -> Iterator[None]:
    """Refuse, in this context, every run file that resolves outside ``root``."""
    token = _ROOT.set(os.path.realpath(root))
    try:
        yield
    finally:
        _ROOT.reset(token)


def confining_root() -> str | None:
    """The resolved root reads are confined to in this context, or ``None``."""
    return _ROOT.get()


def is_inside(path: str | os.PathLike) -> bool:
    """Whether ``path`` (every link followed) is inside the confining root; ``True`` when
    nothing is confined. A path that does not exist yet is judged by what exists of it."""
    root = _ROOT.get()
    if root is None:
        return True
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def confined(path: P) -> P:
    """``path`` itself, if it may be read in this context.

    Raises:
        OutsideRunsError: reads are confined to a runs folder and ``path`` resolves outside
            it; the message names the file relative to the runs folder.
    """
    if is_inside(path):
        return path
    root = _ROOT.get() or ""
    shown = os.fspath(path)
    parts = os.path.normpath(os.path.abspath(shown)).split(os.sep)
    # name the file as the visitor knows it: relative to the runs folder, not the server's disk
    for i in range(len(parts) - 1, 0, -1):
        if os.path.realpath(os.sep.join(parts[:i]) or os.sep) == root:
            shown = "/".join(parts[i:])
            break
    else:
        shown = os.path.basename(shown)
    raise OutsideRunsError(path, shown)
