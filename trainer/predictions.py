"""Whole-volume prediction to disk, block by block (``python run.py predict``).

The input is any volume ``trainer.volumes`` opens; it is cut with exactly the tiles of
``trainer.inference.predict_dense`` (``plan_tiles``), one tile per block, so the result
equals the in-memory prediction up to the output dtype. Each block's input is read from
disk when it is needed and its probabilities are written when they are computed: memory
holds a few tiles, never the volume.

The output is one chunked array ``(n_classes, z, y, x)`` of class probabilities, float16 or
uint8 (``round(255 * p)``), in a zarr v3 folder (blosc lz4 with bit shuffle: as small as
zarr's default zstd on probabilities, three times faster to write, so writing the last
block adds little) or an HDF5 file (``.h5``/``.hdf5``). Its
attribute ``voxelboard_prediction`` records the tiling, the blocks written so far and
``complete``; a block is marked written only after its data are, so a stopped prediction
started again skips the written blocks and redoes at most the one it was writing. An
existing output of another shape, dtype or tiling is refused, never overwritten.

Example:
    >>> predict_to_disk(model, open_volume("em.zarr", "raw"), "prob.zarr")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trainer.volumes import Volume, VolumeError, detect_format

__all__ = [
    "ATTR",
    "OUTPUT_DTYPES",
    "PredictionError",
    "check_input",
    "predict_to_disk",
    "read_prediction",
]

#: attribute of the output array that records the tiling and the written blocks
ATTR = "voxelboard_prediction"
OUTPUT_DTYPES = ("float16", "uint8")
_CHUNK = (64, 64, 64)


class PredictionError(ValueError):
    """An output that cannot be used (exists with another layout) or a bad request."""


def predict_to_disk(
    model: Any,
    volume: Volume,
    output: str | os.PathLike,
    key: str = "prob",
    dtype: str = "float16",
    tile_shape: Sequence[int] | None = None,
    device: Any = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Path:
    """Predict ``volume`` tile by tile into ``output[key]``; resume where it stopped.

    Args:
        model: a model as for ``predict_dense``.
        volume: the input, (z, y, x) or (C, z, y, x); integers are divided by 255.
        output: a zarr folder (made as zarr v3) or an ``.h5``/``.hdf5`` file.
        key: the array's key in ``output``.
        dtype: ``'float16'`` or ``'uint8'``.
        tile_shape: input tile (z, y, x), as ``predict_dense``'s ``tile_shape``.
        device: where to run; default the model's device.
        progress: called after each block with ``(blocks done, blocks in all, seconds)``.

    Returns:
        The output path.

    Raises:
        PredictionError: a bad dtype, or ``output[key]`` exists with another shape, dtype or
            tiling (the message names both).
    """
    import torch

    from trainer.inference import _eval_mode, _forward_probs, _model_on, plan_tiles

    if dtype not in OUTPUT_DTYPES:
        raise PredictionError(f"dtype {dtype!r}: use one of {', '.join(OUTPUT_DTYPES)}")
    channels = 1 if len(volume.shape) == 3 else volume.shape[0]
    if channels != model.in_channels:
        raise PredictionError(
            f"{volume.name} has {channels} channel(s) (shape {volume.shape}) but the model "
            f"expects {model.in_channels}"
        )
    spatial = volume.shape[-3:]
    plan = plan_tiles(model, spatial, tile_shape)
    shape = (int(model.n_classes), *plan.out_shape)
    record = {"tile": list(plan.tile), "input": volume.name, "done": [], "complete": False}
    out = _Output.open_or_create(Path(output), key, shape, dtype, record)
    net, run_device = _model_on(model, device)
    todo = [i for i in range(len(plan.tiles)) if i not in out.done]
    already = len(plan.tiles) - len(todo)

    def read(i: int) -> np.ndarray:
        starts = [ax[0] for ax in plan.tiles[i]]
        return _read_input(volume, plan, starts)

    started = time.monotonic()
    with (
        _eval_mode(net),
        torch.inference_mode(),
        ThreadPoolExecutor(1) as reader,
        ThreadPoolExecutor(1) as writer,
    ):
        pending = reader.submit(read, todo[0]) if todo else None
        written = None
        for n, i in enumerate(todo):
            x = pending.result()
            pending = reader.submit(read, todo[n + 1]) if n + 1 < len(todo) else None
            prob = _forward_probs(net, x[None], run_device, amp=False)[0]
            if written is not None:
                written.result()
            written = writer.submit(out.write_block, i, plan.tiles[i], prob, plan.out_shape)
            if progress is not None:
                progress(already + n + 1, len(plan.tiles), time.monotonic() - started)
        if written is not None:
            written.result()
    out.finish()
    return Path(output)


def read_prediction(path: str | os.PathLike, key: str = "prob") -> tuple[Volume, dict[str, Any]]:
    """Open a finished prediction: the volume and its ``voxelboard_prediction`` record.

    Raises:
        PredictionError: no record (not made by ``predict_to_disk``) or not complete.
    """
    from trainer.volumes import open_volume

    vol = open_volume(path, key)
    record = _Output.read_record(Path(path), key, vol.format)
    if record is None or not record.get("complete"):
        raise PredictionError(
            f"{vol.name} is no complete VoxelBoard prediction; run `python run.py predict` "
            "again with the same arguments to finish it"
        )
    return vol, record


# -- input -----------------------------------------------------------------------------------


def _read_input(volume: Volume, plan: Any, starts: Sequence[int]) -> np.ndarray:
    from trainer.inference import read_padded_tile

    def read(box: tuple[slice, ...]) -> np.ndarray:
        a = volume.read(box if len(volume.shape) == 3 else (slice(None), *box))
        return a[None] if len(volume.shape) == 3 else a

    x = read_padded_tile(read, plan.shape, starts, plan.tile)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
        return x.astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(x, dtype=np.float32)


# -- output ----------------------------------------------------------------------------------


class _Output:
    """The output array and its record; one writer (the predicting process)."""

    def __init__(self, path: Path, key: str, fmt: str, array: Any, record: dict) -> None:
        self.path, self.key, self.fmt, self.array, self.record = path, key, fmt, array, record
        self.done = set(record["done"])

    @classmethod
    def open_or_create(
        cls, path: Path, key: str, shape: tuple[int, ...], dtype: str, record: dict
    ) -> _Output:
        if path.exists():
            fmt = detect_format(path, key)
            return cls._reopen(path, key, fmt, shape, dtype, record)
        fmt = "hdf5" if path.suffix.lower() in (".h5", ".hdf5") else "zarr3"
        chunks = (1, *(min(c, n) for c, n in zip(_CHUNK, shape[1:])))
        if fmt == "hdf5":
            f = h5py.File(path, "w")
            array = f.create_dataset(key, shape=shape, dtype=dtype, chunks=chunks)
        else:
            import zarr

            array = zarr.create_array(
                str(path),
                name=key,
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                fill_value=0,
                compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
            )
        out = cls(path, key, fmt, array, record)
        out._save_record()
        return out

    @classmethod
    def _reopen(
        cls, path: Path, key: str, fmt: str, shape: tuple, dtype: str, record: dict
    ) -> _Output:
        if fmt == "hdf5":
            f = h5py.File(path, "r+")
            array = f.get(key)
            if not isinstance(array, h5py.Dataset):
                f.close()
                raise PredictionError(
                    f"{path} exists without a dataset '{key}': give a new OUTPUT or another --key"
                )
        elif fmt == "zarr3":
            import zarr

            try:
                array = zarr.open_array(str(path), path=key, mode="r+")
            except (FileNotFoundError, KeyError):
                raise PredictionError(
                    f"{path} exists without an array '{key}': give a new OUTPUT or another --key"
                ) from None
        else:
            raise PredictionError(f"{path} is {fmt}: predictions are written to zarr v3 or HDF5")
        old = cls.read_record(path, key, fmt)
        got = (tuple(array.shape), str(np.dtype(array.dtype)), (old or {}).get("tile"))
        want = (shape, dtype, record["tile"])
        if got != want:
            raise PredictionError(
                f"{path}['{key}'] exists with shape {got[0]}, dtype {got[1]}, tile {got[2]}; "
                f"this prediction needs shape {want[0]}, dtype {want[1]}, tile {want[2]}. It "
                "is not overwritten: give a new OUTPUT or delete the old one"
            )
        return cls(path, key, fmt, array, {**record, "done": old.get("done", [])})

    @staticmethod
    def read_record(path: Path, key: str, fmt: str) -> dict | None:
        if fmt == "hdf5":
            with h5py.File(path, "r") as f:
                raw = f[key].attrs.get(ATTR)
            return json.loads(raw) if raw is not None else None
        import zarr

        return zarr.open_array(str(path), path=key, mode="r").attrs.get(ATTR)

    def write_block(
        self, index: int, tile: tuple, prob: np.ndarray, out_shape: Sequence[int]
    ) -> None:
        keep = [(min(lo, n), min(hi, n)) for (_, lo, hi), n in zip(tile, out_shape)]
        if all(hi > lo for lo, hi in keep):
            src = tuple(slice(lo - ax[0], hi - ax[0]) for (lo, hi), ax in zip(keep, tile))
            values = prob[(slice(None), *src)]
            if self.array.dtype == np.uint8:
                values = np.rint(values * 255)
            self.array[(slice(None), *(slice(lo, hi) for lo, hi in keep))] = values.astype(
                self.array.dtype
            )
        self.done.add(index)
        self.record["done"] = sorted(self.done)
        self._save_record()

    def finish(self) -> None:
        self.record["complete"] = True
        self._save_record()
        if self.fmt == "hdf5":
            self.array.file.close()

    def _save_record(self) -> None:
        if self.fmt == "hdf5":
            self.array.attrs[ATTR] = json.dumps(self.record)
            self.array.file.flush()
        else:
            self.array.attrs[ATTR] = self.record


def check_input(path: str | os.PathLike, key: str | None) -> Volume:
    """Open the input volume for ``run.py predict``, as a ``PredictionError`` if it fails."""
    from trainer.volumes import open_volume

    try:
        vol = open_volume(path, key)
        vol.check_readable()
    except VolumeError as e:
        raise PredictionError(str(e)) from None
    if len(vol.shape) not in (3, 4) or not np.issubdtype(vol.dtype, np.number):
        raise PredictionError(
            f"{vol.name} has shape {vol.shape} and dtype {vol.dtype}: expected a numeric "
            "(z, y, x) or (c, z, y, x) volume"
        )
    return vol
