"""The output of ``run.py predict``: an OME-Zarr image or an HDF5 dataset, and its record.

One writer (the predicting process) owns the output. The array is ``(n_classes, z, y, x)``;
its attribute ``voxelboard_prediction`` (``ATTR``) is the record: what was predicted from
what (input, run, snapshot, weights hash, tiling, padding, voxel grid) and which blocks are
written. A block enters the record only after its data are durably on disk (zarr: its chunk
files and their folders fsynced; HDF5: ``flush()`` and ``os.fsync``), and the record itself
is replaced atomically, so a kill or a power cut loses at most the block being written.

A full disk ends the prediction with ``DiskFullError`` naming the file and the space needed.
zarr writes each chunk to a temporary file and renames it, so a failed write leaves no torn
chunk. HDF5 (libhdf5) does not survive ``ENOSPC`` safely (the library can crash while it
closes a file whose metadata it could not write), so before each HDF5 block the free space is
checked against the block's size plus a margin; another process filling the disk between
that check and the write can still hurt an HDF5 output, never a zarr one.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trainer.volumes import detect_format

__all__ = [
    "ATTR",
    "DiskFullError",
    "PredictionError",
    "PredictionOutput",
    "IDENTITY_KEYS",
    "differences",
    "disk_full",
    "fsync_files",
    "free_text",
    "read_record",
    "size_text",
]

#: attribute of the output array holding the record
ATTR = "voxelboard_prediction"
#: record entries a resume must match exactly (the rest is progress)
IDENTITY_KEYS = ("shape", "dtype", "tile", "padding", "offsets", "input", "model")
#: spare bytes an HDF5 block needs beyond its data and two copies of the record (chunk
#: index nodes, the metadata libhdf5 flushes with it)
HDF5_MARGIN = 256 << 10
_CHUNK = (64, 64, 64)


class PredictionError(ValueError):
    """An output that cannot be used (exists with another layout) or a bad request."""


class DiskFullError(PredictionError):
    """No space left for the output; the message names the file and the space needed."""


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records' identities, as ``'name: recorded X, now Y'``.

    Nested entries (``input``, ``model``) are compared field by field.
    """
    found = []
    for key in IDENTITY_KEYS:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    found.append(f"{key} {sub}: recorded {a.get(sub)!r}, now {b.get(sub)!r}")
        elif a != b:
            found.append(f"{key}: recorded {a!r}, now {b!r}")
    return found


class PredictionOutput:
    """The output array and its record, opened for writing by the one predicting process."""

    def __init__(self, path: Path, key: str, fmt: str, array: Any, record: dict) -> None:
        self.path, self.key, self.fmt, self.array, self.record = path, key, fmt, array, record
        self.done = set(record["done"])

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path, key: str, record: dict, group_attrs: dict, overwrite: bool = False
    ) -> PredictionOutput:
        """Create ``path[key]``, or reopen it when its record has the same identity.

        Args:
            path: a zarr folder (written as OME-Zarr, NGFF 0.4 in zarr v2) or an
                ``.h5``/``.hdf5`` file.
            key: the array's key.
            record: the new record (``done`` empty, ``complete`` false).
            group_attrs: ``{'zarr': the image group's NGFF attributes, 'hdf5': the
                dataset's voxel-grid attributes}``.
            overwrite: start again over an existing VoxelBoard prediction.

        Raises:
            PredictionError: the output exists and is no VoxelBoard prediction, or its
                record differs (the message lists what differs).
            DiskFullError: no space to create it.
        """
        if path.exists():
            old = cls._existing_record(path, key)
            if overwrite:
                _remove(path)
            elif not isinstance(old.get("input"), dict):
                raise PredictionError(
                    f"{path}['{key}'] holds a prediction by an older VoxelBoard, which recorded "
                    "too little to resume it safely: --overwrite starts it again"
                )
            else:
                diff = differences(old, record)
                if diff:
                    state = "a complete" if old.get("complete") else "an unfinished"
                    raise PredictionError(
                        f"{path}['{key}'] holds {state} prediction of something else: "
                        f"{'; '.join(diff)}. It is not overwritten: give a new OUTPUT, or "
                        "--overwrite to start it again"
                    )
                return cls._reopen(path, key, {**record, "done": old.get("done", [])})
        try:
            return cls._create(path, key, record, group_attrs)
        except OSError as e:
            if disk_full(e):
                # a part without its record would be refused by the rerun the message asks
                # for; it did not exist before, so it is ours to remove
                with contextlib.suppress(OSError):
                    _remove(path)
                raise DiskFullError(
                    f"no space left on device while creating {path}: "
                    f"{free_text(path)} free; free "
                    "space and run the same command again"
                ) from None
            raise

    @staticmethod
    def _existing_record(path: Path, key: str) -> dict:
        try:
            record = read_record(path, key)
        except Exception:  # noqa: BLE001 - any unreadable output is "not ours"
            record = None
        if not isinstance(record, dict) or "done" not in record:
            raise PredictionError(
                f"{path} exists but holds no VoxelBoard prediction at key '{key}'. Nothing "
                "was changed: give a new OUTPUT, or delete it yourself"
            )
        return record

    @classmethod
    def _create(cls, path: Path, key: str, record: dict, group_attrs: dict) -> PredictionOutput:
        shape, dtype = tuple(record["shape"]), record["dtype"]
        chunks = (1, *(min(c, n) for c, n in zip(_CHUNK, shape[1:])))
        if _is_hdf5_name(path):
            f = h5py.File(path, "w")
            array = f.create_dataset(key, shape=shape, dtype=dtype, chunks=chunks)
            for name, value in group_attrs["hdf5"].items():
                array.attrs[name] = value
            out = cls(path, key, "hdf5", array, record)
        else:
            import zarr
            from numcodecs import Blosc

            group = zarr.open_group(str(path), mode="w", zarr_format=2)
            group.attrs.update(group_attrs["zarr"])
            array = group.create_array(
                key,
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                fill_value=0,
                chunk_key_encoding={"name": "v2", "separator": "/"},
                compressors=Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE),
            )
            out = cls(path, key, "zarr2", array, record)
            _fsync_tree(path)
        out.save_record()
        return out

    @classmethod
    def _reopen(cls, path: Path, key: str, record: dict) -> PredictionOutput:
        fmt = detect_format(path, key)
        if fmt == "hdf5":
            array = h5py.File(path, "r+")[key]
        else:
            import zarr

            array = zarr.open_array(str(path), path=key, mode="r+")
        return cls(path, key, fmt, array, record)

    # -- writing ---------------------------------------------------------------------------

    def check_space(
        self, nbytes: int, what: str, remaining: int, box: tuple[slice, ...] | None = None
    ) -> None:
        """Refuse an HDF5 block that might not fit (see the module's note); zarr: no-op.

        libhdf5 stores whole chunks: a block at spatial ``box`` costs every chunk it touches
        that is not in the file yet, which can be more than its ``nbytes``."""
        if self.fmt != "hdf5":
            return
        free = shutil.disk_usage(self.path.parent).free
        new_chunks = self._unallocated_bytes(box) if box is not None else 0
        needed = max(nbytes, new_chunks) + HDF5_MARGIN + 2 * len(json.dumps(self.record))
        if free < needed:
            raise self.disk_full_error(what, needed, free, remaining)

    def _unallocated_bytes(self, box: tuple[slice, ...]) -> int:
        """Bytes of the HDF5 chunks under spatial ``box`` (all classes) not allocated yet."""
        chunks = self.array.chunks
        chunk_bytes = int(np.prod(chunks)) * self.array.dtype.itemsize
        starts = [range(0, self.array.shape[0], chunks[0])] + [
            range(s.start // c * c, s.stop, c) for s, c in zip(box, chunks[1:])
        ]
        missing = 0
        for corner in itertools.product(*starts):
            if self.array.id.get_chunk_info_by_coord(corner).byte_offset is None:
                missing += chunk_bytes
        return missing

    def disk_full_error(self, what: str, needed: int, free: int, remaining: int) -> DiskFullError:
        """The one-line message for a full disk while writing ``what``."""
        return DiskFullError(
            f"no space left on device for {self.path} ({what}): it needs about "
            f"{size_text(needed)}, {size_text(free)} free (the blocks still to write need "
            f"at most {size_text(remaining)}); free space and run the same command again: "
            "it resumes after the blocks already written"
        )

    def write(self, box: tuple[slice, ...], values: np.ndarray, sync: bool = True) -> list[Path]:
        """Write ``values`` (output dtype) at spatial ``box`` for all classes, durably.

        With ``sync=False`` nothing is fsynced yet: pass the returned files (zarr: the chunk
        files written) to ``sync`` before ``mark_done``, so many blocks share one flush.
        """
        self.array[(slice(None), *box)] = values
        files = [] if self.fmt == "hdf5" else list(self._chunk_files(box))
        if sync:
            self.sync(files)
        return files

    def sync(self, files: Sequence[Path] = ()) -> None:
        """Make what ``write(..., sync=False)`` wrote durable: HDF5 flushed and fsynced, zarr
        ``files`` (and any others, such as a caller's work files) fsynced with their folders."""
        if self.fmt == "hdf5":
            self._fsync_hdf5()
        fsync_files(files)

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        """The stored values at spatial ``box`` (all classes)."""
        return np.asarray(self.array[(slice(None), *box)])

    def mark_done(self, *index: int) -> None:
        """Record blocks ``index`` as written (call only after their data are durable:
        ``write`` returned, or ``sync`` after ``write(..., sync=False)``); one record save."""
        self.done.update(index)
        self.record["done"] = sorted(self.done)
        self.save_record()

    def finish(self) -> None:
        """Mark the output complete and close it."""
        self.record["complete"] = True
        self.save_record()
        self.close()

    def close(self) -> None:
        """Close the HDF5 file (zarr holds no handle). After a full disk libhdf5 cannot
        write the metadata it flushes on closing: that failure is left unsaid (the record
        on disk names only the blocks that were durable)."""
        if self.fmt == "hdf5" and self.array.id.valid:
            try:
                self.array.file.close()
            except (OSError, RuntimeError) as e:
                if not disk_full(e):
                    raise

    def save_record(self) -> None:
        """Replace the record attribute durably."""
        if self.fmt == "hdf5":
            self.array.attrs[ATTR] = json.dumps(self.record)
            self._fsync_hdf5()
        else:
            self.array.attrs[ATTR] = self.record
            fsync_files([self.path / self.key / ".zattrs"])

    def _fsync_hdf5(self) -> None:
        f = self.array.file
        f.flush()
        os.fsync(f.id.get_vfd_handle())

    def _chunk_files(self, box: tuple[slice, ...]) -> Iterator[Path]:
        chunks = self.array.chunks
        ranges = [range(self.array.shape[0])] + [
            range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(box, chunks[1:])
        ]
        encode = self.array.metadata.encode_chunk_key
        for c in ranges[0]:
            for z in ranges[1]:
                for y in ranges[2]:
                    for x in ranges[3]:
                        yield self.path / self.key / encode((c, z, y, x))


def read_record(path: str | os.PathLike, key: str) -> dict | None:
    """The record of ``path[key]``, or ``None`` if it has none."""
    path = Path(path)
    fmt = detect_format(path, key)
    if fmt == "hdf5":
        with h5py.File(path, "r") as f:
            raw = f[key].attrs.get(ATTR) if key in f else None
        return json.loads(raw) if raw is not None else None
    import zarr

    return zarr.open_array(str(path), path=key, mode="r").attrs.get(ATTR)


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or one it wraps) is ``ENOSPC`` / ``EDQUOT``."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        # h5py drops the errno (OSError), or reports libhdf5's failed flush (RuntimeError)
        if isinstance(e, OSError | RuntimeError) and _names_enospc(str(e)):
            return True
        todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return False


def free_text(path: Path) -> str:
    """The free space where ``path`` is (or would be) written, for a message: ``'340 kB'``."""
    return size_text(shutil.disk_usage(_existing_parent(Path(path))).free)


def size_text(nbytes: float) -> str:
    """A byte count for a message, e.g. ``'340 kB'``, ``'1.5 MB'``, ``'2.0 GB'``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes / 1e3:.0f} kB"


def _names_enospc(text: str) -> bool:
    return "No space left" in text or f"errno = {errno.ENOSPC}," in text


def _is_hdf5_name(path: Path) -> bool:
    return path.suffix.lower() in (".h5", ".hdf5")


def _existing_parent(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def fsync_files(files: Sequence[Path] | Iterator[Path]) -> None:
    """fsync each existing file and, once each, the folders holding them (for the renames).

    The files are fsynced on a few threads at once (``os.fsync`` releases the GIL): the disk
    and its journal take the flushes together instead of one after another, about twice as
    fast for a block's chunk files on a shared disk (bench/bench_segment.py). A file named
    twice is fsynced once.
    """
    files = list(dict.fromkeys(files))
    if len(files) > 1:
        with ThreadPoolExecutor(min(8, len(files))) as pool:
            folders = {f for f in pool.map(_fsync_file, files) if f is not None}
    else:
        folders = {f for f in map(_fsync_file, files) if f is not None}
    for folder in folders:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(file: Path) -> Path | None:
    """fsync ``file``; its folder, or ``None`` when it does not exist."""
    try:
        fd = os.open(file, os.O_RDONLY)
    except FileNotFoundError:
        return None  # an all-zero chunk is not stored (zarr's write_empty_chunks=False)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return file.parent


def _fsync_tree(path: Path) -> None:
    fsync_files([p for p in path.rglob("*") if p.is_file()])
    fsync_files([path / ".zgroup"])
