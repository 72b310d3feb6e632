"""The order in which a prediction store's data reach the disk and its record names them.

``SyncOrder`` watches real writes in this process: every ``os.fsync`` (the file it synced,
read back from ``/proc/self/fd``), every write of array data (``zarr.Array.__setitem__`` and
``h5py.Dataset.__setitem__``, and any other writer a test names) with the files it changed,
and every ``PredictionOutput.save_record`` with the blocks its record names. ``check`` then
holds issue 26's rule: a record that names a new block is saved only after every data file
written before it was fsynced since its last write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import pytest
import zarr

from trainer.prediction_store import PredictionOutput


class SyncOrder:
    """Events ``('write', files)``, ``('fsync', file)``, ``('save', path, done)`` in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root = root.resolve()  # zarr writes are traced to the files changed under it
        self.events: list[tuple] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            real_fsync(fd)
            self.events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).resolve()))

        monkeypatch.setattr(os, "fsync", fsync)
        real_zarr, real_h5 = zarr.Array.__setitem__, h5py.Dataset.__setitem__

        def zarr_set(array: Any, key: Any, value: Any) -> None:
            before = self._files()
            real_zarr(array, key, value)
            after = self._files()
            self.events.append(("write", {f for f, s in after.items() if before.get(f) != s}))

        def h5_set(dataset: Any, key: Any, value: Any) -> None:
            real_h5(dataset, key, value)
            self.events.append(("write", {Path(dataset.file.filename).resolve()}))

        monkeypatch.setattr(zarr.Array, "__setitem__", zarr_set)
        monkeypatch.setattr(h5py.Dataset, "__setitem__", h5_set)
        real_save = PredictionOutput.save_record

        def save_record(out: PredictionOutput) -> None:
            self.events.append(("save", out.path.resolve(), frozenset(out.record["done"])))
            real_save(out)

        monkeypatch.setattr(PredictionOutput, "save_record", save_record)

    def watch(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
        """Count ``module.name(path, ..., fsync=False)`` as a write of ``path`` whose fsync is
        left to the caller (a work file, say); with its own fsync it is durable on return."""
        real: Callable = getattr(module, name)

        def write(path: Any, *args: Any, **kwargs: Any) -> Any:
            result = real(path, *args, **kwargs)
            if kwargs.get("fsync", True) is False:
                self.events.append(("write", {Path(path).resolve()}))
            return result

        monkeypatch.setattr(module, name, write)

    def _files(self) -> dict[Path, tuple[int, int, int]]:
        found = {}
        for p in self.root.rglob("*"):
            if p.is_file():
                s = p.stat()
                found[p] = (s.st_ino, s.st_mtime_ns, s.st_size)
        return found

    def check(self, output: Path) -> tuple[int, int]:
        """Assert the rule for the record of ``output``; (blocks named, data files synced
        before a record named them), so a test sees it observed something."""
        dirty: dict[Path, int] = {}  # file -> event index of its last unsynced write
        named: frozenset = frozenset()
        synced_before_naming = 0
        for k, event in enumerate(self.events):
            if event[0] == "write":
                dirty.update(dict.fromkeys(event[1], k))
            elif event[0] == "fsync":
                synced_before_naming += dirty.pop(event[1], None) is not None
            elif event[1] == output.resolve() and event[2] - named:
                assert not dirty, (
                    f"the record of {output} names blocks {sorted(event[2] - named)} while "
                    f"{sorted(map(str, dirty))} were written but not yet fsynced"
                )
                named = event[2]
        return len(named), synced_before_naming
