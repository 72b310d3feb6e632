"""Volumes on disk: one way to name an array in HDF5, zarr (v2 and v3), OME-Zarr or N5.

A volume is named by ``(path, key)`` as in ``d_files``/``l_files``; an OME-Zarr multiscale
group picks a level by its key (``'0'``) or by ``scale`` (an index into its ``datasets``).
The container type is told by its content: the HDF5 signature for a file; ``zarr.json``
(zarr v3), ``.zarray``/``.zgroup`` (zarr v2) or an N5 ``attributes.json`` for a folder.

zarr-python reads zarr v2/v3 (and, through zarr-n5, N5); h5py reads HDF5. A ``Volume``
keeps only its name and metadata; the file handle is opened on the first read in each
process, so a forked background worker opens its own and a pickled ``Volume`` carries no
handle. N5 lists dimensions fastest first (x, y, z); a ``Volume`` reverses them so every
container reads in C order, (z, y, x), as z5py does.

Example:
    >>> vol = open_volume("data/demo/raw.zarr", "raw_0")  # doctest: +SKIP
    >>> vol.format, vol.shape, vol.chunks  # doctest: +SKIP
    ('zarr3', (40, 160, 160), (8, 64, 64))
    >>> patch = vol.read((slice(0, 8), slice(0, 32), slice(0, 32)))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

__all__ = [
    "ChunkCache",
    "ChunkReadError",
    "FORMATS",
    "Volume",
    "VolumeError",
    "detect_format",
    "open_volume",
]

#: container types ``detect_format`` tells apart
FORMATS = ("hdf5", "zarr2", "zarr3", "n5")

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class VolumeError(ValueError):
    """A volume cannot be opened or does not hold what it should (named in the message)."""


class ChunkReadError(RuntimeError):
    """A chunk of an opened volume cannot be read or decoded (corrupt or missing codec)."""


def detect_format(path: str | os.PathLike, key: str = "") -> str:
    """The container type of ``path`` from its content: one of ``FORMATS``.

    A folder is told by its top-level metadata file, or by the array's own (``key``) or a
    subfolder's where the root has none (N5 writers often leave the root's
    ``attributes.json`` out).

    Raises:
        VolumeError: ``path`` does not exist or is no container VoxelBoard reads.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(8)
        # HDF5 allows a user block of 512 * 2**n bytes before the signature
        if head == _HDF5_SIGNATURE or h5py.is_hdf5(path):
            return "hdf5"
        raise VolumeError(
            f"{path} is a file but not HDF5 (no HDF5 signature): give an HDF5 file or a "
            "zarr/N5 folder"
        )
    if os.path.isdir(path):
        subfolders = sorted(e.path for e in os.scandir(path) if e.is_dir())
        for folder in dict.fromkeys((path, os.path.join(path, key), *subfolders)):
            if os.path.isfile(os.path.join(folder, "zarr.json")):
                return "zarr3"
            if any(os.path.isfile(os.path.join(folder, n)) for n in (".zgroup", ".zarray")):
                return "zarr2"
            if os.path.isfile(os.path.join(folder, "attributes.json")):
                return "n5"
        raise VolumeError(
            f"{path} is a folder but neither zarr (zarr.json, .zgroup or .zarray) nor N5 "
            f"(attributes.json) at its top or at key '{key}': name the container's root "
            "folder and the array's key"
        )
    raise VolumeError(f"{path} does not exist: check the path (d_path/l_path and the file name)")


@dataclass
class Volume:
    """One array in a container, read box by box; the handle is opened per process.

    Attributes:
        path: the container (file or folder).
        key: the array's key in it (for OME-Zarr, the chosen level's path).
        format: one of ``FORMATS``.
        shape: array shape in C order.
        dtype: numpy dtype of the stored values.
        chunks: chunk shape in C order (the whole shape for a contiguous HDF5 dataset).
    """

    path: str
    key: str
    format: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]
    _handle: Any = field(default=None, repr=False, compare=False)
    _pid: int = field(default=-1, repr=False, compare=False)

    @property
    def name(self) -> str:
        """``path['key']`` for messages."""
        return f"{self.path}['{self.key}']"

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array in its stored dtype."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __getstate__(self) -> dict[str, Any]:
        # a handle belongs to the process that opened it
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def read(
        self, box: tuple[slice, ...] | None = None, cache: ChunkCache | None = None
    ) -> np.ndarray:
        """The values inside ``box`` (one slice per axis, step 1; ``None``: everything).

        Args:
            box: the voxels to read, clipped to the array.
            cache: keep the decoded chunks under ``box`` there and take the ones it holds
                from it (a new array is returned either way); ``None``: read ``box`` alone.

        Raises:
            ChunkReadError: a chunk inside ``box`` cannot be read; the message names it.
        """
        box = tuple(slice(0, n) for n in self.shape) if box is None else tuple(box)
        try:
            if cache is not None and cache.holds(self):
                return self._read_cached(box, cache)
            return self._read(box)
        except Exception as e:  # noqa: BLE001 - any reader error becomes a named chunk error
            raise self._chunk_error(box, e) from e

    def check_readable(self) -> None:
        """Read the first chunk, so a missing codec or a broken chunk shows before training.

        Raises:
            VolumeError: that chunk cannot be read.
        """
        box = tuple(slice(0, min(c, n)) for c, n in zip(self.chunks, self.shape))
        try:
            self.read(box)
        except ChunkReadError as e:
            raise VolumeError(str(e)) from None

    def missing_chunks(self, box: tuple[slice, ...] | None = None) -> list[tuple[int, ...]]:
        """The stored chunks under ``box`` whose files are absent, in grid order.

        zarr and N5 read an absent chunk as the fill value, so a half-copied volume reads as
        zeros without an error. Only file names are looked up; no chunk is read. A chunk is a
        storage unit: a whole shard of a sharded zarr v3 array. HDF5 allocates its chunks
        inside the file, so an HDF5 volume has none missing here.

        Args:
            box: the voxels that will be read (one slice per axis; ``None``: everything).
        """
        if self.format == "hdf5":
            return []
        box = tuple(slice(0, n) for n in self.shape) if box is None else tuple(box)
        grid = self.storage_chunks()
        return [
            index
            for index in _chunk_indices(box, grid, self.shape)
            if not os.path.exists(self.chunk_file(index))
        ]

    def storage_chunks(self) -> tuple[int, ...]:
        """The shape of one stored chunk file in C order (a shard for sharded zarr v3)."""
        if self.format in ("zarr2", "zarr3"):
            shards = getattr(self._array(), "shards", None)
            if shards:
                return tuple(int(c) for c in shards)
        return self.chunks

    def chunk_file(self, index: tuple[int, ...]) -> str:
        """The file of stored chunk ``index`` (C order, in ``storage_chunks`` units)."""
        if self.format == "n5":  # N5 names a block by its grid position, x first
            return os.path.join(self.path, self.key, *(str(i) for i in index[::-1]))
        if self.format == "hdf5":
            return self.path
        key = self._array().metadata.encode_chunk_key(tuple(index))
        return os.path.join(self.path, self.key, *key.split("/"))

    # -- reading -------------------------------------------------------------------------

    def _array(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            self._handle = _open_array(self.path, self.key, self.format)
            self._pid = os.getpid()
        return self._handle

    def _read(self, box: tuple[slice, ...]) -> np.ndarray:
        arr = self._array()
        if self.format == "n5":
            return np.asarray(arr[box[::-1]]).transpose()
        return np.asarray(arr[box])

    def _read_cached(self, box: tuple[slice, ...], cache: ChunkCache) -> np.ndarray:
        """``box`` put together from whole chunks, each decoded once while the cache holds it."""
        box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, self.shape))
        out = np.empty([max(s.stop - s.start, 0) for s in box], self.dtype)
        if out.size == 0:
            return out
        for index in _chunk_indices(box, self.chunks, self.shape):
            lo = [i * c for i, c in zip(index, self.chunks)]
            chunk = cache.get((self.path, self.key, index))
            if chunk is None:
                cbox = tuple(
                    slice(a, min(a + c, n)) for a, c, n in zip(lo, self.chunks, self.shape)
                )
                chunk = np.ascontiguousarray(self._read(cbox))
                cache.put((self.path, self.key, index), chunk)
            part = [(max(s.start, a), min(s.stop, a + c)) for s, a, c in zip(box, lo, self.chunks)]
            out[tuple(slice(p - s.start, q - s.start) for (p, q), s in zip(part, box))] = chunk[
                tuple(slice(p - a, q - a) for (p, q), a in zip(part, lo))
            ]
        return out

    def _chunk_error(self, box: tuple[slice, ...], error: Exception) -> ChunkReadError:
        """Find the first chunk in ``box`` that fails alone and name it."""
        for index in _chunk_indices(box, self.chunks, self.shape):
            cbox = tuple(
                slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, self.chunks, self.shape)
            )
            try:
                self._read(cbox)
            except Exception as e:  # noqa: BLE001
                return ChunkReadError(
                    f"cannot read chunk {index} (voxels {_box_str(cbox)}{self._chunk_key(index)}) "
                    f"of {self.name} ({self.format}): {type(e).__name__}: {e}. The file is "
                    "corrupt or needs a codec that is not installed: rewrite that chunk or "
                    "the volume, or install the codec's package (hdf5plugin for HDF5 filters)"
                )
        return ChunkReadError(
            f"cannot read voxels {_box_str(box)} of {self.name} ({self.format}): "
            f"{type(error).__name__}: {error}"
        )

    def _chunk_key(self, index: tuple[int, ...]) -> str:
        if self.format == "hdf5":
            return ""
        try:
            meta = self._array().metadata
            key = meta.encode_chunk_key(index[::-1] if self.format == "n5" else index)
        except Exception:  # noqa: BLE001 - the key only adds detail to the message
            return ""
        return f", file {os.path.join(self.path, self.key, key)}"


class ChunkCache:
    """Decoded chunks of lazily read volumes, least recently used dropped first.

    One per reading process: the decoded chunks are this process's own, so a forked
    process starts with an empty cache and its own limit. ``max_bytes`` is an int or a
    function called once in each process that uses the cache (a process's share of a
    budget, say). A volume whose chunks are larger than an eighth of the limit is read
    box by box, not through the cache, so one chunk never takes the whole budget.

    Example:
        >>> cache = ChunkCache(64 * 2**20)
        >>> patch = vol.read((slice(0, 8), slice(0, 32), slice(0, 32)), cache)  # doctest: +SKIP
    """

    def __init__(self, max_bytes: int | Callable[[], int]) -> None:
        self._max_bytes = max_bytes
        self._pid = -1
        self._limit = 0
        self._chunks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._nbytes = 0

    def __getstate__(self) -> dict[str, Any]:
        # decoded chunks belong to the process that read them
        return {**self.__dict__, "_pid": -1, "_chunks": OrderedDict(), "_nbytes": 0}

    def __len__(self) -> int:
        self._own()
        return len(self._chunks)

    @property
    def nbytes(self) -> int:
        """Bytes of the chunks this process holds now."""
        self._own()
        return self._nbytes

    @property
    def limit(self) -> int:
        """This process's limit in bytes."""
        self._own()
        return self._limit

    def holds(self, volume: Volume) -> bool:
        """Whether ``volume`` is read through this cache (its chunks fit an eighth of it)."""
        return 8 * int(np.prod(volume.chunks)) * volume.dtype.itemsize <= self.limit

    def get(self, key: tuple) -> np.ndarray | None:
        """The chunk stored under ``key`` (now the most recently used), or ``None``."""
        self._own()
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
        return chunk

    def put(self, key: tuple, chunk: np.ndarray) -> None:
        """Keep ``chunk``, dropping the least recently used ones beyond the limit."""
        self._own()
        old = self._chunks.pop(key, None)
        self._nbytes -= 0 if old is None else old.nbytes
        self._chunks[key] = chunk
        self._nbytes += chunk.nbytes
        while self._nbytes > self._limit and self._chunks:
            self._nbytes -= self._chunks.popitem(last=False)[1].nbytes

    def _own(self) -> None:
        if self._pid != os.getpid():
            self._chunks = OrderedDict()  # the parent's chunks stay the parent's
            self._nbytes = 0
            limit = self._max_bytes() if callable(self._max_bytes) else self._max_bytes
            self._limit = max(int(limit), 0)
            self._pid = os.getpid()


def open_volume(
    path: str | os.PathLike, key: str | None = None, *, scale: int | None = None
) -> Volume:
    """Open ``path['key']`` in whatever container ``path`` is; read its metadata only.

    Args:
        path: an HDF5 file or a zarr/N5 folder (``~`` expanded).
        key: the array's key; ``''``/``None`` for an array at the root. For an OME-Zarr
            multiscale group: the group's key, then ``scale`` picks the level.
        scale: index into an OME-Zarr group's ``multiscales[0].datasets`` (default 0).

    Raises:
        VolumeError: missing path or key (the present arrays are listed), a key naming a
            group that is no multiscale group, a scale out of range, or an unknown codec.
    """
    path = os.path.expanduser(os.fspath(path))
    key = (key or "").strip("/")
    fmt = detect_format(path, key)
    if fmt != "hdf5":
        key = _resolve_multiscale(path, key, fmt, scale)
    elif scale is not None:
        raise VolumeError(f"scale={scale} given for {path}['{key}']: only OME-Zarr has levels")
    try:
        arr = _open_array(path, key, fmt)
    except VolumeError:
        raise
    except Exception as e:  # noqa: BLE001 - unknown codecs, broken metadata
        raise VolumeError(
            f"cannot open {path}['{key}'] ({fmt}): {type(e).__name__}: {e}. Check the key and "
            "that the codec is supported (zarr: numcodecs; N5: raw, gzip, blosc, zstd)"
        ) from None
    shape = tuple(int(n) for n in arr.shape)
    chunks = tuple(int(c) for c in (arr.chunks or shape))
    if fmt == "n5":
        shape, chunks = shape[::-1], chunks[::-1]
    return Volume(path, key, fmt, shape, np.dtype(arr.dtype), chunks, arr, os.getpid())


# -- opening ---------------------------------------------------------------------------------


def _open_array(path: str, key: str, fmt: str) -> Any:
    if fmt == "hdf5":
        f = h5py.File(path, "r")
        obj = f.get(key) if key else None
        if not isinstance(obj, h5py.Dataset):
            present: list[str] = []
            f.visititems(lambda n, o: present.append(n) if isinstance(o, h5py.Dataset) else None)
            f.close()
            raise VolumeError(
                f"dataset '{key}' not found in {path}; datasets present: {present or 'none'}"
            )
        return obj
    import zarr

    store = _zarr_store(path, fmt)
    try:
        node = zarr.open(store, path=key, mode="r", zarr_format=2 if fmt == "zarr2" else 3)
    except (FileNotFoundError, KeyError) as e:
        present = _list_arrays(path, fmt)
        raise VolumeError(
            f"array '{key}' not found in {path} ({fmt}); arrays present: {present or 'none'}"
        ) from e
    if not isinstance(node, zarr.Array):
        present = _list_arrays(path, fmt)
        raise VolumeError(
            f"'{key}' in {path} is a group, not an array; arrays present: {present or 'none'}"
        )
    return node


def _zarr_store(path: str, fmt: str) -> Any:
    from zarr.storage import LocalStore

    store = LocalStore(path, read_only=True)
    if fmt == "n5":
        from zarr_n5 import N5WrapperStore

        return N5WrapperStore(store)
    return store


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _group_attrs(path: str, key: str, fmt: str) -> dict[str, Any]:
    folder = os.path.join(path, key)
    if fmt == "zarr3":
        meta = _read_json(os.path.join(folder, "zarr.json"))
        return meta.get("attributes", {}) if meta.get("node_type") == "group" else {}
    if fmt == "zarr2":
        return _read_json(os.path.join(folder, ".zattrs"))
    return {}


def _resolve_multiscale(path: str, key: str, fmt: str, scale: int | None) -> str:
    """The level's key if ``path['key']`` is an OME-Zarr multiscale group, else ``key``."""
    attrs = _group_attrs(path, key, fmt)
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        if scale is not None:
            raise VolumeError(
                f"scale={scale} given but {path}['{key}'] is no OME-Zarr multiscale group; "
                "drop scale or name the group holding 'multiscales'"
            )
        return key
    datasets = [d["path"] for d in multiscales[0].get("datasets", [])]
    level = 0 if scale is None else int(scale)
    if not 0 <= level < len(datasets):
        raise VolumeError(
            f"scale={scale} out of range for OME-Zarr group {path}['{key}'], which has "
            f"{len(datasets)} level(s): {datasets}; use 0..{len(datasets) - 1}"
        )
    return "/".join(p for p in (key, datasets[level]) if p)


def _list_arrays(path: str, fmt: str, limit: int = 20) -> list[str]:
    """Keys of the arrays in a zarr/N5 folder (first ``limit``), for messages."""
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        rel = os.path.relpath(root, path).replace(os.sep, "/")
        rel = "" if rel == "." else rel
        is_array = (
            (fmt == "zarr2" and ".zarray" in files)
            or (
                fmt == "zarr3"
                and _read_json(os.path.join(root, "zarr.json")).get("node_type") == "array"
            )
            or (fmt == "n5" and "dimensions" in _read_json(os.path.join(root, "attributes.json")))
        )
        if is_array:
            found.append(rel)
            dirs[:] = []  # chunk folders below an array
        if len(found) >= limit:
            break
    return found


def _chunk_indices(
    box: tuple[slice, ...], chunks: tuple[int, ...], shape: tuple[int, ...]
) -> Iterator[tuple[int, ...]]:
    ranges = [
        range(max(s.start or 0, 0) // c, (min(s.stop if s.stop is not None else n, n) - 1) // c + 1)
        for s, c, n in zip(box, chunks, shape)
    ]
    return itertools.product(*ranges)


def _box_str(box: tuple[slice, ...]) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in box) + "]"
