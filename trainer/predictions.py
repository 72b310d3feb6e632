"""Whole-volume prediction to disk, block by block (``python run.py predict``).

The input is any volume ``trainer.volumes`` opens; it is cut with exactly the tiles of
``trainer.inference.predict_dense`` (``plan_tiles``), one tile per block, so the result
equals the in-memory prediction up to the output dtype. Each block's input is read from
disk when it is needed and its probabilities are written when they are computed: memory
holds a few tiles, never the volume.

**Aligned by default.** A valid-convolution model predicts ``offsets`` voxels less than its
input on every side. By default the input is padded by the offsets (``symmetric``, the
mirror of ELEKTRONN2's ``pad_raw``; or ``reflect``, ``edge``, ``constant`` as ``numpy.pad``
names them), so the output covers the input voxel for voxel. ``padding=None`` (``--crop``)
keeps only the voxels the model sees whole; the output then starts ``offsets`` voxels into
the input, which its translation says.

**The output** is an OME-Zarr image (NGFF 0.4, zarr v2: what zarr-python, ome-zarr-py and
neuroglancer read) with axes ``c, z, y, x``, the voxel size as its scale and its position as
a translation, or an HDF5 dataset (``.h5``/``.hdf5``) with the same facts as attributes.
``trainer.prediction_store`` owns its layout, its record and its durability.

**Never mixed, never lost.** The record names the input (path, key, shape, dtype and a hash
of a few of its chunks), the run, the snapshot and a hash of the weights; a rerun with any of
them different is refused, naming what differs (``overwrite=True`` starts again). A rerun
re-predicts the last recorded blocks and compares them with what is stored before it trusts
the record; blocks that differ are written again.

Example:
    >>> predict_to_disk(model, open_volume("em.zarr", "raw"), "prob.zarr")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from trainer.omezarr import VoxelGrid, declared_voxel_size, image_metadata
from trainer.prediction_store import (
    ATTR,
    DiskFullError,
    PredictionError,
    PredictionOutput,
    disk_full,
    free_text,
    read_record,
)
from trainer.volumes import Volume, VolumeError

__all__ = [
    "ATTR",
    "DiskFullError",
    "OUTPUT_DTYPES",
    "PAD_MODES",
    "PredictionError",
    "check_input",
    "input_fingerprint",
    "predict_to_disk",
    "read_prediction",
    "voxel_grid",
    "weights_sha256",
]

OUTPUT_DTYPES = ("float16", "uint8")
#: ``numpy.pad`` modes the input may be padded with; ``symmetric`` is ELEKTRONN2's pad_raw
PAD_MODES = ("symmetric", "reflect", "edge", "constant")
#: blocks a rerun predicts again to check the stored ones
VERIFY_LAST = 2
_VERIFY_ATOL = {"float16": 0.02, "uint8": 5}
_log = logging.getLogger("voxelboard.predict")


def predict_to_disk(
    model: Any,
    volume: Volume,
    output: str | os.PathLike,
    key: str = "prob",
    dtype: str = "float16",
    tile_shape: Sequence[int] | None = None,
    device: Any = None,
    progress: Callable[[int, int, float], None] | None = None,
    *,
    padding: str | None = "symmetric",
    grid: VoxelGrid | None = None,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Predict ``volume`` tile by tile into ``output[key]``; resume where it stopped.

    Args:
        model: a model as for ``predict_dense``.
        volume: the input, (z, y, x) or (C, z, y, x); integers are divided by 255.
        output: a zarr folder (made as OME-Zarr, NGFF 0.4) or an ``.h5``/``.hdf5`` file.
        key: the array's key in ``output``.
        dtype: ``'float16'`` or ``'uint8'`` (``round(255 * p)``).
        tile_shape: input tile (z, y, x), as ``predict_dense``'s ``tile_shape``.
        device: where to run; default the model's device.
        progress: called after each block with ``(blocks done, blocks in all, seconds)``.
        padding: one of ``PAD_MODES`` (the output covers the input), or ``None`` to crop
            (the output is smaller by ``2 * offsets``).
        grid: the input's voxel grid; default ``voxel_grid(volume)``.
        provenance: recorded with the output, and compared on a resume: ``run``,
            ``snapshot``, ``step``, ``config`` (see ``run.py predict``).
        overwrite: start again over an existing VoxelBoard prediction.

    Returns:
        The output path.

    Raises:
        PredictionError: a bad dtype or padding, or ``output[key]`` exists and holds
            another prediction or none (the message names what differs).
        DiskFullError: the disk is full; the message names the file and the space needed.
            The blocks written stay recorded: the same call resumes once there is space.
    """
    from trainer.inference import _model_on

    plan, pad, record, attrs = plan_prediction(
        model, volume, key, dtype, tile_shape, padding, grid, provenance
    )
    out = PredictionOutput.open(Path(output), key, record, attrs, overwrite=overwrite)
    net, run_device = _model_on(model, device)
    try:
        _predict_blocks(net, run_device, volume, plan, pad, padding, out, progress)
    except (OSError, RuntimeError) as e:  # a record write (blocks' own are caught in place)
        if not disk_full(e):
            raise
        raise DiskFullError(
            f"no space left on device for {out.path} (its record): {free_text(out.path)} free; free "
            "space and run the same command again: it resumes after the blocks already written"
        ) from None
    finally:
        out.close()
    return Path(output)


def plan_prediction(
    model: Any,
    volume: Volume,
    key: str,
    dtype: str,
    tile_shape: Sequence[int] | None,
    padding: str | None,
    grid: VoxelGrid | None,
    provenance: dict[str, Any] | None,
) -> tuple[Any, tuple[int, int, int], dict[str, Any], dict[str, Any]]:
    """The tiles, the input padding, the record and the group attributes of a prediction
    (``predict_to_disk``'s arguments); the same for one process and for many workers.

    Raises:
        PredictionError: a bad dtype, padding or channel count.
    """
    from trainer.inference import _geometry, plan_tiles

    if dtype not in OUTPUT_DTYPES:
        raise PredictionError(f"dtype {dtype!r}: use one of {', '.join(OUTPUT_DTYPES)}")
    if padding is not None and padding not in PAD_MODES:
        raise PredictionError(f"padding {padding!r}: use one of {', '.join(PAD_MODES)} or None")
    channels = 1 if len(volume.shape) == 3 else volume.shape[0]
    if channels != model.in_channels:
        raise PredictionError(
            f"{volume.name} has {channels} channel(s) (shape {volume.shape}) but the model "
            f"expects {model.in_channels}"
        )
    offsets = _geometry(model)
    pad = offsets if padding is not None else (0, 0, 0)
    spatial = tuple(int(n) for n in volume.shape[-3:])
    plan = plan_tiles(model, [n + 2 * p for n, p in zip(spatial, pad)], tile_shape)
    grid = grid or voxel_grid(volume)
    record = _record(model, volume, plan, dtype, padding, offsets, grid, provenance or {})
    return plan, pad, record, _grid_attrs(key, record, grid)


def _predict_blocks(
    net: Any,
    device: Any,
    volume: Volume,
    plan: Any,
    pad: Sequence[int],
    mode: str | None,
    out: PredictionOutput,
    progress: Callable[[int, int, float], None] | None,
) -> None:
    import torch

    from trainer.inference import _eval_mode, _forward_probs

    n = len(plan.tiles)

    def read(i: int) -> np.ndarray:
        return _read_input(volume, plan, [ax[0] for ax in plan.tiles[i]], pad, mode)

    def predict(i: int, x: np.ndarray) -> np.ndarray:
        return _forward_probs(net, x[None], device, amp=False)[0]

    with _eval_mode(net), torch.inference_mode():
        _verify_last(out, plan, lambda i: predict(i, read(i)))
        if out.record["complete"]:
            return
        todo = [i for i in range(n) if i not in out.done]
        sizes = [_block_bytes(out, plan, i) for i in range(n)]

        def write(i: int, prob: np.ndarray) -> None:
            box, values = _block_values(out, plan, i, prob)
            try:
                out.write(box, values)
                out.mark_done(i)
            except (OSError, RuntimeError) as e:  # h5py: RuntimeError when a flush failed
                if not disk_full(e):
                    raise
                left = sum(sizes[j] for j in todo if j not in out.done)  # once, at the end
                free = shutil.disk_usage(out.path.parent).free
                raise out.disk_full_error(f"block {i + 1}/{n}", sizes[i], free, left) from None

        left = sum(sizes[j] for j in todo)
        started = time.monotonic()
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
            pending = reader.submit(read, todo[0]) if todo else None
            written = None
            for k, i in enumerate(todo):
                x = pending.result()
                pending = reader.submit(read, todo[k + 1]) if k + 1 < len(todo) else None
                prob = predict(i, x)
                if written is not None:
                    written.result()
                out.check_space(sizes[i], f"block {i + 1}/{n}", left, plan_box(out, plan, i))
                left -= sizes[i]
                written = writer.submit(write, i, prob)
                if progress is not None:
                    progress(n - len(todo) + k + 1, n, time.monotonic() - started)
            if written is not None:
                written.result()
    out.finish()


def _verify_last(out: PredictionOutput, plan: Any, predict: Callable[[int], np.ndarray]) -> None:
    """Predict the last recorded blocks again; forget those whose stored values differ."""
    recorded = sorted(out.done)[-VERIFY_LAST:]
    bad = []
    for i in recorded:
        box, values = _block_values(out, plan, i, predict(i))
        atol = _VERIFY_ATOL[out.record["dtype"]]
        stored = out.read(box).astype(np.float32)
        if not np.allclose(stored, values.astype(np.float32), atol=atol, rtol=0):
            bad.append(i)
    if bad:
        _log.warning(
            "%s['%s']: block(s) %s were recorded as written but their stored values differ "
            "from a new prediction (a write lost by a crash or a full disk); predicting them "
            "again",
            out.path,
            out.key,
            ", ".join(str(i + 1) for i in bad),
        )
        out.done -= set(bad)
        out.record["done"] = sorted(out.done)
        out.record["complete"] = False
        out.save_record()


def _block_values(
    out: PredictionOutput, plan: Any, i: int, prob: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray]:
    box = plan_box(out, plan, i)
    src = tuple(slice(b.start - ax[0], b.stop - ax[0]) for b, ax in zip(box, plan.tiles[i]))
    values = prob[(slice(None), *src)]
    if out.record["dtype"] == "uint8":
        values = np.rint(values * 255)
    return box, values.astype(out.record["dtype"])


def plan_box(out: PredictionOutput, plan: Any, i: int) -> tuple[slice, ...]:
    """The spatial box of the output that block ``i`` writes."""
    keep = [(min(lo, n), min(hi, n)) for (_, lo, hi), n in zip(plan.tiles[i], plan.out_shape)]
    return tuple(slice(lo, hi) for lo, hi in keep)


def _block_bytes(out: PredictionOutput, plan: Any, i: int) -> int:
    keep = [
        max(min(hi, n) - min(lo, n), 0) for (_, lo, hi), n in zip(plan.tiles[i], plan.out_shape)
    ]
    return int(np.prod(keep)) * out.record["shape"][0] * np.dtype(out.record["dtype"]).itemsize


def read_prediction(path: str | os.PathLike, key: str = "prob") -> tuple[Volume, dict[str, Any]]:
    """Open a finished prediction: the volume and its ``voxelboard_prediction`` record.

    Raises:
        PredictionError: no record (not made by ``predict_to_disk``) or not complete.
    """
    from trainer.volumes import open_volume

    vol = open_volume(path, key)
    record = read_record(Path(path), vol.key)
    if record is None or not record.get("complete"):
        raise PredictionError(
            f"{vol.name} is no complete VoxelBoard prediction; run `python run.py predict` "
            "again with the same arguments to finish it"
        )
    return vol, record


def voxel_grid(
    volume: Volume,
    voxel_size: Sequence[float] | None = None,
    config_voxel_size: Sequence[float] | None = None,
) -> VoxelGrid:
    """The input's voxel grid: ``voxel_size`` if given, else what the input declares (its
    OME-Zarr scale, a ``voxel_size``/``resolution`` attribute), else ``config_voxel_size``,
    else 1 per axis. A declared translation and unit are kept in every case."""
    declared = declared_voxel_size(volume.path, volume.key, volume.format)
    translation = declared.translation if declared else (0.0, 0.0, 0.0)
    unit = declared.unit if declared and declared.unit else None
    if voxel_size is not None:
        return VoxelGrid(_zyx(voxel_size), translation, unit or "nanometer", "--voxel-size")
    if declared is not None:
        return declared
    if config_voxel_size is not None:
        return VoxelGrid(_zyx(config_voxel_size), translation, "nanometer", "config voxel_size")
    return VoxelGrid((1.0, 1.0, 1.0), translation, None, "none given: 1 per axis")


def _zyx(values: Sequence[float]) -> tuple[float, float, float]:
    vs = tuple(float(v) for v in values)
    if len(vs) != 3 or not all(v > 0 for v in vs):
        raise PredictionError(
            f"voxel size {tuple(values)}: expected three positive numbers (z, y, x)"
        )
    return vs  # type: ignore[return-value]


def input_fingerprint(volume: Volume, edge: int = 32) -> str:
    """A cheap content hash of ``volume``: its shape, dtype and up to three boxes of at most
    ``edge`` voxels per axis (at the first, middle and last stored chunk)."""
    h = hashlib.sha256(f"{volume.shape}|{volume.dtype.str}".encode())
    lead = len(volume.shape) - 3
    spatial, chunks = volume.shape[lead:], volume.chunks[lead:]
    for where in (0, 1, 2):
        box = []
        for n, c in zip(spatial, chunks):
            start = [0, (n // c // 2) * c, ((n - 1) // c) * c][where]
            box.append(slice(start, min(start + min(c, edge), n)))
        block = volume.read((*(slice(None),) * lead, *box))
        h.update(np.ascontiguousarray(block).tobytes())
    return "sha256:" + h.hexdigest()[:32]


def weights_sha256(model: Any) -> str:
    """A hash of the model's parameters and buffers, names and values."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:32]


def _record(
    model: Any,
    volume: Volume,
    plan: Any,
    dtype: str,
    padding: str | None,
    offsets: Sequence[int],
    grid: VoxelGrid,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    origin = (0, 0, 0) if padding is not None else tuple(offsets)
    translation = [t + o * v for t, o, v in zip(grid.translation, origin, grid.voxel_size)]
    return {
        "shape": [int(model.n_classes), *plan.out_shape],
        "dtype": dtype,
        "axes": ["c", "z", "y", "x"],
        "tile": list(plan.tile),
        "padding": padding or "crop",
        "offsets": list(offsets),
        "origin_voxels": list(origin),
        "voxel_size": list(grid.voxel_size),
        "translation": translation,
        "unit": grid.unit,
        "voxel_size_source": grid.source,
        "input": {
            "path": os.path.abspath(volume.path),
            "key": volume.key,
            "shape": list(volume.shape),
            "dtype": str(volume.dtype),
            "fingerprint": input_fingerprint(volume),
        },
        "model": {
            "class": type(model).__name__,
            "weights": weights_sha256(model),
            "run": provenance.get("run"),
            "snapshot": provenance.get("snapshot"),
            "step": provenance.get("step"),
        },
        "config": provenance.get("config"),
        "done": [],
        "complete": False,
    }


def _grid_attrs(key: str, record: dict[str, Any], grid: VoxelGrid) -> dict[str, Any]:
    """zarr: the image group's NGFF attributes; HDF5: the dataset's voxel-grid attributes."""
    return {
        "zarr": image_metadata(key, key, record["voxel_size"], record["translation"], grid.unit),
        "hdf5": {
            "axes": "c,z,y,x",
            "voxel_size": record["voxel_size"],
            "translation": record["translation"],
            "unit": grid.unit or "",
        },
    }


# -- input -----------------------------------------------------------------------------------


def _read_input(
    volume: Volume, plan: Any, starts: Sequence[int], pad: Sequence[int], mode: str | None
) -> np.ndarray:
    """The input tile at ``starts`` of the volume padded by ``pad`` (``mode``) on every side,
    then mirror-padded at its far end to ``plan.padded_shape`` as ``predict_dense`` does."""
    spatial = volume.shape[-3:]
    index, inside = [], []
    for a, t, n, p, m in zip(starts, plan.tile, spatial, pad, plan.shape):
        j = np.arange(a, a + t)
        j = np.where(j < m, j, 2 * m - 1 - j) - p
        i, ok = _fold(j, n, mode or "symmetric")
        index.append(i)
        inside.append(ok)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
    block = volume.read(box if len(volume.shape) == 3 else (slice(None), *box))
    block = block[None] if len(volume.shape) == 3 else block
    if not all(i[0] == b.start and (np.diff(i) == 1).all() for i, b in zip(index, box)):
        block = block[np.ix_(range(block.shape[0]), *(i - b.start for i, b in zip(index, box)))]
    if np.issubdtype(block.dtype, np.integer) or block.dtype == bool:
        x = block.astype(np.float32) / np.float32(255)
    else:
        x = np.array(block, dtype=np.float32)
    if mode == "constant" and not all(ok.all() for ok in inside):
        x[:, ~inside[0]] = 0
        x[:, :, ~inside[1]] = 0
        x[:, :, :, ~inside[2]] = 0
    return x


def _fold(j: np.ndarray, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``j`` (any integers) mapped into ``0..n-1`` as ``numpy.pad(mode)`` pads, and
    whether each lies inside the volume (``constant`` fills the others with 0)."""
    inside = (j >= 0) & (j < n)
    if mode == "symmetric":
        k = np.mod(j, 2 * n)
        return np.where(k < n, k, 2 * n - 1 - k), inside
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(j), inside
        k = np.mod(j, 2 * (n - 1))
        return np.where(k < n, k, 2 * (n - 1) - k), inside
    return np.clip(j, 0, n - 1), inside  # edge, and constant's stand-in values


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
