"""Preview files: ``previews/preview-<step>.h5``, written by the trainer, read by the dashboard.

Format (docs/run-directory.md, "Preview files"): file attributes ``step``, ``hours``,
``n_classes`` and ``save_name``; one group ``block<i>`` per preview cube (``i`` = 0, 1, ...)
holding ``raw`` (z, y, x) and ``prob`` (n_classes, z, y, x, float16), the same (z, y, x)
region, with attributes ``z0`` (the cube's first plane in its source) and ``source``.

Readers never return half a file: a missing, truncated or foreign file raises
``PreviewError`` naming it. Decoded files are cached by (file, mtime), so a viewer moving
through planes rereads nothing.

Example:
    >>> path = write_preview(run_dir, 100, [(0, raw, prob)], hours=0.5)  # doctest: +SKIP
    >>> read_preview_meta(path).blocks  # doctest: +SKIP
    {'block0': (5, 40, 40)}
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from trainer.runs.atomic import atomic_path, writing
from trainer.runs.confine import OutsideRunsError, confined

PREVIEW_DIR = "previews"
#: a preview file is ``<PREVIEW_PREFIX><step:08d><PREVIEW_SUFFIX>``
PREVIEW_PREFIX, PREVIEW_SUFFIX = "preview-", ".h5"
_PREFIX, _SUFFIX = PREVIEW_PREFIX, PREVIEW_SUFFIX
_STEP_IN_NAME = re.compile(rf"{_PREFIX}(\d+){re.escape(_SUFFIX)}$")
_BLOCK = re.compile(r"^block(\d+)$")


class PreviewError(ValueError):
    """A preview file cannot be read or does not follow the documented format."""


@dataclasses.dataclass(frozen=True)
class PreviewMeta:
    """What a preview file holds.

    Attributes:
        step: training step of the preview.
        hours: training time in hours.
        n_classes: number of classes in ``prob``.
        blocks: block name -> ``(z, y, x)`` shape, in block order.
        z0: block name -> z index of the cube's first plane in its source.
    """

    step: int
    hours: float
    n_classes: int
    blocks: dict[str, tuple[int, int, int]]
    z0: dict[str, int]


def preview_path(run_dir: str | os.PathLike, step: int) -> Path:
    """``<run_dir>/previews/preview-<step, 8 digits>.h5``."""
    return Path(run_dir) / PREVIEW_DIR / f"{_PREFIX}{int(step):08d}{_SUFFIX}"


def preview_files(run_dir: str | os.PathLike) -> list[Path]:
    """Preview h5 files, oldest step first."""
    d = Path(run_dir) / PREVIEW_DIR
    return sorted(confined(d).glob(f"{_PREFIX}*{_SUFFIX}")) if d.is_dir() else []


def preview_step(path: str | os.PathLike) -> int | None:
    """The step in a preview file's name (``preview-00000100.h5`` -> 100), else ``None``."""
    m = _STEP_IN_NAME.search(Path(path).name)
    return int(m.group(1)) if m else None


def write_preview(
    run_dir: str | os.PathLike,
    step: int,
    blocks: Iterable[tuple[Any, np.ndarray, np.ndarray]],
    *,
    hours: float,
    n_classes: int | None = None,
    save_name: str = "",
    z0: int = 0,
    source: str = "",
) -> Path:
    """Write ``previews/preview-<step>.h5`` atomically and return its path.

    Args:
        run_dir: the run directory.
        step: the step the preview belongs to (file name and ``step`` attribute).
        blocks: ``(name, raw, prob)`` per cube, stored as group ``block<name>``; ``raw`` is
            (z, y, x), ``prob`` (n_classes, z, y, x) over the same region.
        hours: training time in hours.
        n_classes: the model's number of classes (default: the classes in ``prob``).
        save_name: the run's name, recorded in the file.
        z0: z index of each cube's first plane in its source.
        source: where the cubes come from (the preview data file).

    Raises:
        ValueError: ``raw`` and ``prob`` of a block do not cover the same region.
        RunWriteError: the file could not be written (a full disk), naming it.
    """
    path = preview_path(run_dir, step)
    blocks = list(blocks)
    for name, raw, prob in blocks:
        if raw.ndim != 3 or prob.ndim != 4 or prob.shape[1:] != raw.shape:
            raise ValueError(
                f"preview block {name}: raw {raw.shape} and prob {prob.shape} must be "
                "(z, y, x) and (n_classes, z, y, x) of one region"
            )
    if n_classes is None:
        n_classes = int(blocks[0][2].shape[0]) if blocks else 0
    with writing(path, run_dir):
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(path, blocks, step, hours, int(n_classes), save_name, z0, source)
    return path


def _write_file(path: Path, blocks: list, step: int, hours: float, n_classes: int,
                save_name: str, z0: int, source: str) -> None:  # fmt: skip
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(step=int(step), hours=float(hours), n_classes=n_classes,
                       save_name=str(save_name))  # fmt: skip
        for name, raw, prob in blocks:
            g = f.create_group(f"block{name}")
            g.create_dataset("raw", data=raw)
            g.create_dataset(
                "prob", data=prob.astype(np.float16), compression="gzip", compression_opts=1
            )
            g.attrs["z0"] = int(z0)
            g.attrs["source"] = str(source)


def _mtime(path: Path) -> int:
    try:
        return confined(path).stat().st_mtime_ns
    except OutsideRunsError as e:
        raise PreviewError(f"preview file {e}") from None
    except OSError as e:
        raise PreviewError(f"preview file {path} is gone: {e.strerror}") from None


def _block_order(name: str) -> int:
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else 1 << 30


@functools.lru_cache(maxsize=256)
def _meta_cached(path: str, mtime_ns: int) -> PreviewMeta:
    import h5py

    try:
        with h5py.File(confined(path), "r") as f:
            blocks, z0 = {}, {}
            for name in sorted((k for k in f if _BLOCK.match(k)), key=_block_order):
                g = f[name]
                if "raw" not in g or "prob" not in g:
                    raise PreviewError(f"preview file {path}: group {name!r} lacks 'raw' or 'prob'")
                raw, prob = g["raw"].shape, g["prob"].shape
                if len(raw) != 3 or len(prob) != 4 or tuple(prob[1:]) != tuple(raw):
                    raise PreviewError(
                        f"preview file {path}: {name}/raw {raw} and {name}/prob {prob} do not match "
                        "the format (z, y, x) and (n_classes, z, y, x)"
                    )
                blocks[name] = tuple(int(s) for s in raw)
                z0[name] = int(g.attrs.get("z0", 0))
            if not blocks:
                raise PreviewError(f"preview file {path} holds no block0, block1, ... groups")
            n_classes = int(f.attrs.get("n_classes", f[next(iter(blocks))]["prob"].shape[0]))
            step = f.attrs.get("step")
            if step is None:
                step = preview_step(path) or 0
            return PreviewMeta(int(step), float(f.attrs.get("hours", 0.0)), n_classes, blocks, z0)
    except PreviewError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise PreviewError(f"cannot read preview file {path}: {e}") from None


def read_preview_meta(path: str | os.PathLike) -> PreviewMeta:
    """Step, hours, classes and block shapes of a preview file (cached by file and mtime).

    Raises:
        PreviewError: the file is gone, unreadable or not in the preview format; the message
            names it.
    """
    path = Path(path)
    return _meta_cached(str(path), _mtime(path))


@functools.lru_cache(maxsize=8)
def _block_cached(path: str, mtime_ns: int, block: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(confined(path), "r") as f:
            raw = np.asarray(f[block]["raw"][()], dtype=np.float32)
            prob = np.asarray(f[block]["prob"][()], dtype=np.float32)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise PreviewError(f"cannot read {block} of preview file {path}: {e}") from None
    raw.setflags(write=False)
    prob.setflags(write=False)
    return raw, prob


def read_preview_block(path: str | os.PathLike, block: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded ``(raw, prob)`` of one cube, float32 and read-only, from a small LRU keyed by
    (file, mtime).

    Raises:
        PreviewError: the file or the block cannot be read; the message names both.
    """
    path = Path(path)
    return _block_cached(str(path), _mtime(path), block)
