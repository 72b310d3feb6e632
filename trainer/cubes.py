"""The data source's cubes: raw and label volumes opened as ``(C, z, y, x)`` cubes.

``BatchCreatorImage`` (``trainer.data``) names its cubes as file entries ``(file, key)`` or
``(file, key, {"scale": level})``. This module opens them (``trainer.volumes`` reads the
formats), checks their shapes and dtypes, and gives each as a cube: loaded into RAM as
float32 raw (integers divided by 255) and integer labels, or read from disk patch by patch
(``LazyCube``). Preview cubes load the same way (``load_preview_data``).

Example:
    >>> vol = open_entry("data/demo/raw_0.h5", ("raw_0.h5", "raw"), "d_files")  # doctest: +SKIP
    >>> cube = raw_cube(vol, zxy=True, lazy=False, cache=None)  # doctest: +SKIP
    >>> cube.shape, cube.dtype  # doctest: +SKIP
    ((1, 64, 128, 128), dtype('float32'))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from trainer.volumes import ChunkCache, ChunkReadError, Volume, VolumeError, open_volume

__all__ = [
    "DataError",
    "LazyCube",
    "check_chunks_present",
    "check_label_volume",
    "chunk_cache_share",
    "label_cube",
    "load_preview_data",
    "open_entry",
    "raw_cube",
    "resolve_path",
]

logger = logging.getLogger("voxelboard")

# missing chunks named per volume in the error message
_MISSING_SHOWN = 5


class DataError(ValueError):
    """The data files do not fit together or do not fit the model."""


def load_preview_data(preview_data_path: str | os.PathLike | Sequence[str]) -> list[np.ndarray]:
    """Load preview cubes as float32 (C, z, y, x) arrays, integer data divided by 255.

    Args:
        preview_data_path: an h5 path (every dataset in the file, in name order) or a
            ``(path, key)`` pair (that dataset). ``~`` is expanded.

    Returns:
        One array per dataset; 3-D datasets get a channel axis.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: the key is missing, the file has no datasets, or a dataset is not 3-/4-D.
    """
    if isinstance(preview_data_path, str | os.PathLike):
        path = os.path.expanduser(os.fspath(preview_data_path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"preview data file not found: {path}")
        with h5py.File(path, "r") as f:
            keys: list[str] = []
            f.visititems(lambda n, o: keys.append(n) if isinstance(o, h5py.Dataset) else None)
        if not keys:
            raise DataError(f"preview data file {path} contains no datasets")
    else:
        path, key = preview_data_path
        path = os.path.expanduser(os.fspath(path))
        if not os.path.exists(path):
            raise FileNotFoundError(f"preview data file not found: {path}")
        keys = [key]
    out = []
    for key in keys:
        arr = _normalise_raw(_read_dataset(path, key), True)
        if arr.ndim != 4:
            raise DataError(
                f"preview dataset {path}['{key}'] has shape {arr.shape[1:]}: expected "
                "(z, y, x) or (c, z, y, x)"
            )
        out.append(arr)
    return out


def resolve_path(folder: str | os.PathLike | None, name: str) -> str:
    """``name`` inside ``folder`` (``~`` expanded in both); ``name`` itself without a folder."""
    name = os.path.expanduser(os.fspath(name))
    if folder is None:
        return name
    return os.path.join(os.path.expanduser(os.fspath(folder)), name)


def _read_dataset(path: str, key: str) -> np.ndarray:
    return _read_all(open_entry(path, (path, key), "preview_data_path"))


def open_entry(path: str, entry: Sequence[Any], what: str) -> Volume:
    """Open a ``(file, key)`` or ``(file, key, {"scale": n})`` entry of ``what``."""
    if not 2 <= len(entry) <= 3 or (len(entry) == 3 and not isinstance(entry[2], dict)):
        raise DataError(
            f"{what} entry {tuple(entry)!r}: expected (file, key) or (file, key, {{'scale': n}})"
        )
    options = dict(entry[2]) if len(entry) == 3 else {}
    unknown = sorted(set(options) - {"scale"})
    if unknown:
        raise DataError(f"{what} entry {tuple(entry)!r}: unknown option(s) {unknown}; known: scale")
    try:
        vol = open_volume(path, entry[1], scale=options.get("scale"))
        if not (np.issubdtype(vol.dtype, np.number) or vol.dtype == bool):
            raise VolumeError(
                f"{vol.name} has dtype {vol.dtype}: expected numbers (integer or float)"
            )
        vol.check_readable()
    except VolumeError as e:
        raise DataError(f"{what}: {e}") from None
    return vol


def _read_all(vol: Volume) -> np.ndarray:
    try:
        return vol.read()
    except ChunkReadError as e:
        raise DataError(str(e)) from None


def check_label_volume(vol: Volume) -> None:
    """Raise ``DataError`` unless ``vol`` holds integer labels of shape (z, y, x) or (c, z, y, x)."""
    if len(vol.shape) not in (3, 4):
        raise DataError(
            f"label dataset {vol.name} has shape {vol.shape}: expected (z, y, x) or (c, z, y, x)"
        )
    if not (np.issubdtype(vol.dtype, np.integer) or vol.dtype == bool):
        raise DataError(
            f"label dataset {vol.name} has dtype {vol.dtype}: expected integer class labels "
            "(negative values mark voxels to ignore); convert it, e.g. to uint8 or int16"
        )


def check_chunks_present(
    boxes: Sequence[tuple[Volume, tuple[slice, ...] | None, str]], allow_missing: bool
) -> int:
    """Refuse volumes with chunk files missing under the boxes that training reads.

    Args:
        boxes: ``(volume, box of the stored array or None for all of it, role)`` triples;
            ``role`` names the cube in messages (``'training raw, cube 0'``).
        allow_missing: accept missing chunks (a sparse volume whose empty chunks were never
            written); they read as the fill value, and a warning counts them.

    Returns:
        The number of missing chunks (0, or their count with ``allow_missing``).

    Raises:
        DataError: chunks are missing and ``allow_missing`` is False; names each array,
            its first missing chunks and their files.
    """
    found = []
    for vol, box, role in boxes:
        missing = vol.missing_chunks(box)
        if missing:
            found.append((vol, role, missing))
    total = sum(len(m) for _, _, m in found)
    if not found:
        return 0
    if allow_missing:
        logger.warning(
            "allow_missing_chunks: %d missing chunk(s) read as the fill value: %s",
            total,
            "; ".join(f"{vol.name} ({role}): {len(m)}" for vol, role, m in found),
        )
        return total
    parts = []
    for vol, role, missing in found:
        shown = ", ".join(f"{i} ({vol.chunk_file(i)})" for i in missing[:_MISSING_SHOWN])
        more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
        parts.append(f"{vol.name} ({role}): {len(missing)} chunk(s) missing: {shown}{more}")
    raise DataError(
        f"{total} chunk file(s) missing from the training data, which would train on "
        f"the fill value: {'; '.join(parts)}. Copy the volume again (a missing chunk is "
        "usually an interrupted copy); for a sparse volume whose empty chunks were never "
        "written (zarr-python skips chunks that hold only the fill value), set "
        "allow_missing_chunks = True in the config"
    )


def raw_cube(vol: Volume, zxy: bool, lazy: bool, cache: ChunkCache | None) -> np.ndarray | LazyCube:
    """A raw volume as a float32 ``(C, z, y, x)`` cube: loaded, or read lazily (``lazy``).

    Raises:
        DataError: not (z, y, x) or (c, z, y, x), or a chunk cannot be read.
    """
    if len(vol.shape) not in (3, 4):
        raise DataError(
            f"raw dataset {vol.name} has shape {vol.shape}: expected (z, y, x) or (c, z, y, x)"
        )
    if lazy:
        return LazyCube(vol, zxy, labels=False, cache=cache)
    return _normalise_raw(_read_all(vol), zxy)


def label_cube(
    vol: Volume, zxy: bool, lazy: bool, cache: ChunkCache | None
) -> np.ndarray | LazyCube:
    """A label volume (checked with ``check_label_volume``) as a ``(T, z, y, x)`` cube in its
    stored dtype: loaded, or read lazily (``lazy``)."""
    if lazy:
        return LazyCube(vol, zxy, labels=True, cache=cache)
    return _as_labels(_read_all(vol), zxy, vol.path, vol.key)


class LazyCube:
    """A cube on disk that reads like the in-memory (C, z, y, x) array of ``BatchCreatorImage``.

    Indexing with one slice per axis reads only the chunks under that box and returns what
    the same index of the loaded cube would: raw values as float32 (integers divided by
    255), labels in their stored dtype. Only slices of step 1 are supported. With a
    ``cache``, decoded chunks are kept there, so overlapping patches decode each chunk once.
    """

    def __init__(
        self, vol: Volume, zxy: bool, labels: bool, cache: ChunkCache | None = None
    ) -> None:
        self.volume = vol
        self.cache = cache
        self.labels = labels
        nd = len(vol.shape)
        # loaded cube = stored array (channel axis added for 3-D) with axes in this order
        self._perm = list(range(nd)) if zxy else [*range(nd - 3), nd - 1, nd - 3, nd - 2]
        spatial = tuple(vol.shape[p] for p in self._perm[-3:])
        channels = 1 if nd == 3 else vol.shape[self._perm[0]]
        self.shape = (channels, *spatial)
        self.ndim = 4
        self.dtype = vol.dtype if labels else np.dtype(np.float32)

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        channel, *spatial = index
        wanted = spatial if len(self.volume.shape) == 3 else [channel, *spatial]
        stored: list[slice] = [slice(None)] * len(self._perm)
        for axis, s in zip(self._perm, wanted):
            stored[axis] = s
        box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(stored, self.volume.shape))
        a = self.volume.read(box, self.cache).transpose(self._perm)
        if len(self.volume.shape) == 3:
            a = a[None][channel]
        if self.labels:
            return np.ascontiguousarray(a)
        if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            return a.astype(np.float32) / 255.0
        return np.ascontiguousarray(a, dtype=np.float32)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The whole cube, read at once: ``np.asarray(cube)`` where a cube is evaluated whole."""
        a = self[tuple(slice(None) for _ in range(self.ndim))]
        return a if dtype is None else a.astype(dtype, copy=False)


def chunk_cache_share(budget_bytes: int) -> int:
    """This process's share of the chunk cache: half the budget goes to the background
    workers (split evenly), half to the process that made the data (validation batches,
    scripts), so all caches together stay within ``data_memory_budget_mb``."""
    from trainer.workers import get_worker_info

    info = get_worker_info()
    return budget_bytes // 2 if info is None else budget_bytes // (2 * info.n_proc)


def _spatial_first(a: np.ndarray, zxy: bool) -> np.ndarray:
    """Move the last spatial axis first for data stored as (x, y, z)."""
    return a if zxy else np.moveaxis(a, -1, -3)


def _normalise_raw(a: np.ndarray, zxy: bool) -> np.ndarray:
    if a.ndim == 3:
        a = a[None]
    if a.ndim == 4:
        a = _spatial_first(a, zxy)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return a.astype(np.float32) / 255.0
    return np.ascontiguousarray(a, dtype=np.float32)


def _as_labels(a: np.ndarray, zxy: bool, path: str, key: str) -> np.ndarray:
    if a.ndim not in (3, 4):
        raise DataError(
            f"label dataset {path}['{key}'] has shape {a.shape}: expected (z, y, x) or (c, z, y, x)"
        )
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise DataError(
            f"label dataset {path}['{key}'] has dtype {a.dtype}: expected integer class labels "
            "(negative values mark voxels to ignore)"
        )
    if a.ndim == 3:
        a = a[None]
    return np.ascontiguousarray(_spatial_first(a, zxy))
