"""Writing a run directory's files: atomic replacement, and write errors in words.

Every writer in ``trainer.runs`` goes through these helpers: a reader sees the old file or
the new one, never a mix, and a full disk becomes a ``RunWriteError`` that names the file and
says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class RunWriteError(OSError):
    """A file of a run directory could not be written: a full disk, a quota, a read-only mount.

    The message says what failed in words, which file, and what to do, e.g. ``no space left
    on device while writing snapshots/LAST.pt; ...``. ``errno`` is the cause's.

    Attributes:
        path: the file that was being written.
        cause: the original ``OSError``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        cause: OSError,
        run_dir: str | os.PathLike | None = None,
        shown: str | None = None,
    ):
        self.path, self.cause = Path(path), cause
        if shown is None:
            shown = str(self.path)
            if run_dir is not None:
                with contextlib.suppress(ValueError):
                    shown = str(self.path.relative_to(run_dir))
        resume = f"python run.py train --resume {run_dir or 'RUN_DIR'}"
        if _errno_of(cause) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            fix = "free space on its disk"
        else:
            fix = "check that folder (permissions, mount, a file where a folder belongs)"
        self.message = (
            f"{os_error_in_words(cause)} while writing {shown}; {fix}, then continue the run "
            f"with `{resume}`"
        )
        super().__init__(_errno_of(cause), self.message, str(self.path))

    def __str__(self) -> str:
        return self.message


def _errno_of(e: OSError) -> int | None:
    if e.errno is not None:
        return e.errno
    # h5py and torch put the C library's errno only into the text
    m = re.search(r"errno\s*=\s*(\d+)", str(e))
    return int(m.group(1)) if m else None


def os_error_in_words(e: OSError) -> str:
    """``'no space left on device'`` for ENOSPC, ``'disk quota exceeded'`` for EDQUOT, ..."""
    code = _errno_of(e)
    if code is None:
        return str(e) or type(e).__name__
    words = os.strerror(code)
    return words[0].lower() + words[1:]


@contextlib.contextmanager
def writing(
    path: str | os.PathLike, run_dir: str | os.PathLike | None = None, shown: str | None = None
) -> Iterator[None]:
    """Turn any ``OSError`` in the block into a ``RunWriteError`` naming ``path``.

    Example:
        >>> with writing(run_dir / "snapshots/LAST.pt", run_dir):  # doctest: +SKIP
        ...     atomic_write_bytes(run_dir / "snapshots/LAST.pt", data)
    """
    try:
        yield
    except RunWriteError:
        raise
    except OSError as e:
        raise RunWriteError(path, e, run_dir, shown) from e


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a mix.

    The bytes go to a temporary file in the same folder, are flushed (and fsynced unless
    ``fsync=False``: the status heartbeat skips it, a lost beat costs nothing), then
    ``os.replace``d over the target. A crash leaves at most a stray ``.tmp`` file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in ``path``'s folder that replaces ``path`` when the block succeeds.

    For writers that need a file name (h5py, torch.save to a file): on an exception the
    temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_path("previews/preview-00000010.h5") as tmp:  # doctest: +SKIP
        ...     write_h5(tmp)
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, fsync: bool = True) -> None:
    """``atomic_write_bytes`` of ``obj`` as indented JSON (NaN and inf written as null)."""
    text = json.dumps(_json_safe(obj), indent=1, sort_keys=True, default=str)
    atomic_write_bytes(path, text.encode(), fsync=fsync)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):  # NaN/inf are not JSON
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj
