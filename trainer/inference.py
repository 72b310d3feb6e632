"""Dense prediction of whole volumes by tiles, for previews and evaluation.

The volume is cut into input tiles the network accepts; each tile's output covers a block of
the dense output, and the blocks are stitched so that every output voxel comes from exactly
one tile:

* Valid-convolution models (``offsets > 0``, e.g. ``CNN3D``): input tiles overlap by
  ``2 * offsets``, so the output tiles abut exactly and the result equals one forward of the
  whole volume. The last tile of each axis is shifted inward to end at the volume's edge.
* 'Same'-padding models (``offsets == 0``, e.g. ``UNet3D``): a voxel near a tile border sees
  the tile's zero padding instead of its real neighbours. Tiles therefore overlap by
  ``2 * margin`` (``model.default_margin(tile_shape)`` unless given) and each keeps only the
  voxels up to the middle of its overlap with a neighbour, i.e. at least ``margin`` voxels
  from an inner tile border; at the volume's edge a tile keeps everything (the whole-volume
  forward sees padding there too). Tile starts stay on multiples of the pooling product, and
  a volume whose shape the model does not accept is mirror-padded at its far end up to
  ``model.valid_input_shape`` and the result cropped back.

Only models with output stride ``(1, 1, 1)`` are supported (both shipped models).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

Shape3 = tuple[int, int, int]

#: default upper bound on input-tile voxels; keeps activations of the shipped models at a
#: few hundred MB (CNN3D holds 24 float32 channels per input voxel in its widest layer)
DEFAULT_TILE_VOXELS = 2**21


def predict_dense(
    model: nn.Module,
    raw: np.ndarray,
    device: torch.device | str | None = None,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    amp: bool = False,
    margin: Sequence[int] | None = None,
) -> np.ndarray:
    """Softmax probabilities for a whole volume, predicted tile by tile.

    Args:
        model: a network with the geometry attributes of ``trainer.models`` (``in_channels``,
            ``n_classes``, ``patch_size``, ``offsets``, ``strides``, ``valid_input_shape``).
        raw: ``(C, z, y, x)`` or ``(z, y, x)`` volume; float values are used as they are,
            integer values are divided by 255 (as the data source does).
        device: where to run; default the model's device. If the model lives elsewhere, a copy
            of it is moved there (the caller's model is left untouched).
        tile_shape: input tile ``(z, y, x)``; default the whole volume, halved along its
            longest axis (relative to ``patch_size``) until it has at most
            ``DEFAULT_TILE_VOXELS`` voxels, and never smaller than ``patch_size``. Rounded up
            to a shape the model accepts and clipped to the volume.
        batch_size: tiles per forward pass.
        amp: float16 autocast; only has an effect on CUDA (ignored on CPU).
        margin: per-side tile margin kept away from inner tile borders, in output voxels;
            default ``model.default_margin(tile_shape)`` (0 for valid-convolution models).

    Returns:
        float32 array ``(n_classes, z - 2*oz, y - 2*oy, x - 2*ox)``.

    Raises:
        ValueError: wrong ``raw`` rank or channel count, a volume smaller than the model's
            minimum input, a tile with no room left inside its margins, or output strides
            other than 1.
    """
    net, run_device = _model_on(model, device)
    volume = _as_input(raw, model.in_channels)
    shape = volume.shape[1:]
    plan = plan_tiles(model, shape, tile_shape, margin)
    padded_shape, tile, out_shape = plan.padded_shape, plan.tile, plan.out_shape
    pad = [(0, 0)] + [(0, p - s) for p, s in zip(padded_shape, shape)]
    if any(after for _, after in pad):
        # symmetric needs pad <= size, which holds: the pad is below the pooling product
        volume = np.pad(volume, pad, mode="symmetric")

    result = np.empty((model.n_classes, *out_shape), dtype=np.float32)
    tiles = plan.tiles
    with _eval_mode(net), torch.inference_mode():
        for first in range(0, len(tiles), max(1, int(batch_size))):
            chunk = tiles[first : first + max(1, int(batch_size))]
            batch = np.stack(
                [
                    volume[
                        :,
                        z[0] : z[0] + tile[0],
                        y[0] : y[0] + tile[1],
                        x[0] : x[0] + tile[2],
                    ]
                    for z, y, x in chunk
                ]
            )
            probs = _forward_probs(net, batch, run_device, amp)
            for prob, (z, y, x) in zip(probs, chunk):
                keep = [_clip(ax, n) for ax, n in zip((z, y, x), out_shape)]
                if any(hi <= lo for lo, hi in keep):
                    continue
                src = tuple(slice(lo - ax[0], hi - ax[0]) for (lo, hi), ax in zip(keep, (z, y, x)))
                dst = tuple(slice(lo, hi) for lo, hi in keep)
                result[(slice(None), *dst)] = prob[(slice(None), *src)]
    return result


@dataclass(frozen=True)
class TilePlan:
    """How ``predict_dense`` cuts a volume: the same for in-memory and on-disk prediction.

    Attributes:
        shape: the volume's spatial shape.
        padded_shape: ``shape`` mirror-padded at its far end to a shape the model accepts.
        tile: input tile ``(z, y, x)``.
        out_shape: spatial shape of the result (``shape - 2 * offsets``).
        tiles: per tile, per axis ``(start, keep_lo, keep_hi)`` in output coordinates: the
            tile reads padded input ``start : start + tile`` and keeps output
            ``keep_lo : keep_hi`` (clipped to ``out_shape``).
    """

    shape: Shape3
    padded_shape: Shape3
    tile: Shape3
    out_shape: Shape3
    tiles: list[tuple[tuple[int, int, int], ...]]


def plan_tiles(
    model: nn.Module,
    shape: Sequence[int],
    tile_shape: Sequence[int] | None = None,
    margin: Sequence[int] | None = None,
) -> TilePlan:
    """The tiles ``predict_dense`` uses for a volume of spatial ``shape`` (see there)."""
    offsets = _geometry(model)
    shape = tuple(int(n) for n in shape)
    _check_min_shape(model, shape, offsets)
    padded_shape = tuple(model.valid_input_shape(shape))
    tile = _tile_shape(model, padded_shape, tile_shape)
    out_tile = tuple(t - 2 * o for t, o in zip(tile, offsets))
    margin = tuple(model.default_margin(tile) if margin is None else margin)
    out_full = tuple(p - 2 * o for p, o in zip(padded_shape, offsets))
    axes = [
        _axis_tiles(n, t, m, axis) for axis, (n, t, m) in enumerate(zip(out_full, out_tile, margin))
    ]
    out_shape = tuple(s - 2 * o for s, o in zip(shape, offsets))
    tiles = [(z, y, x) for z in axes[0] for y in axes[1] for x in axes[2]]
    return TilePlan(shape, padded_shape, tile, out_shape, tiles)  # type: ignore[arg-type]


def read_padded_tile(
    read: Callable[[tuple[slice, ...]], np.ndarray],
    shape: Sequence[int],
    starts: Sequence[int],
    tile: Sequence[int],
) -> np.ndarray:
    """Input ``starts : starts + tile`` of the volume mirror-padded at its far end.

    ``read(box)`` returns the volume's ``(C, z, y, x)`` values inside a spatial ``box``;
    only the voxels under the tile are read. Equals slicing ``np.pad(volume, ...,
    mode='symmetric')`` as ``predict_dense`` does.
    """
    index = []
    for a, t, n in zip(starts, tile, shape):
        j = np.arange(a, a + t)
        index.append(np.where(j < n, j, 2 * n - 1 - j))
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
    block = read(box)
    if all(i[0] == b.start and (np.diff(i) == 1).all() for i, b in zip(index, box)):
        return block
    return block[np.ix_(range(block.shape[0]), *(i - b.start for i, b in zip(index, box)))]


def centre_crop(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The centred block of ``a`` with the given (trailing) ``shape``; leading axes are kept."""
    shape = tuple(shape)
    lead = a.ndim - len(shape)
    lo = [(n - m) // 2 for n, m in zip(a.shape[lead:], shape)]
    return a[(Ellipsis, *(slice(i, i + m) for i, m in zip(lo, shape)))]


def predict_labelled(
    model: nn.Module,
    raw: np.ndarray,
    label: np.ndarray,
    channel: int = 1,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predict a labelled cube: ``(raw, label, prob)`` centre-cropped to one ``(z, y, x)`` shape.

    A valid-convolution model predicts less than its input, and labels may be larger or smaller
    than the prediction: all three are cropped to the shape they share, centred.

    Args:
        model: as for ``predict_dense``.
        raw: ``(C, z, y, x)`` or ``(z, y, x)``; float values as they are, integers / 255.
        label: ``(z, y, x)``.
        channel: the class whose probability is returned.
        device: as for ``predict_dense``.

    Returns:
        ``raw`` (its first channel, float32 in the scale the model saw), ``label`` (as given)
        and the class-``channel`` probability (float32).
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"labels must have shape (z, y, x), got {label.shape}")
    raw = np.asarray(raw)
    prob = predict_dense(model, raw, device=device)[channel]
    shape = tuple(min(a, b) for a, b in zip(prob.shape, label.shape))
    raw3 = raw[0] if raw.ndim == 4 else raw
    raw3 = raw3.astype(np.float32) / (255.0 if raw3.dtype.kind in "iu" else 1.0)
    return centre_crop(raw3, shape), centre_crop(label, shape), centre_crop(prob, shape)


def _model_on(
    model: nn.Module, device: torch.device | str | None
) -> tuple[nn.Module, torch.device]:
    current = next(model.parameters()).device
    if device is None:
        return model, current
    device = torch.device(device)
    if device.type == current.type and (device.index is None or device.index == current.index):
        return model, current
    # a copy keeps the caller's model (e.g. a training model on the GPU) where it is
    return copy.deepcopy(model).to(device), device


def _geometry(model: nn.Module) -> Shape3:
    strides = tuple(getattr(model, "strides", (1, 1, 1)))
    if strides != (1, 1, 1):
        raise ValueError(
            f"{type(model).__name__} has output strides {strides}; dense prediction supports "
            "only models with strides (1, 1, 1)"
        )
    return tuple(int(o) for o in model.offsets)  # type: ignore[return-value]


def _as_input(raw: np.ndarray, in_channels: int) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim == 3:
        raw = raw[None]
    if raw.ndim != 4:
        raise ValueError(
            f"raw must be (z, y, x) or (channels, z, y, x), got an array of shape {raw.shape}"
        )
    if raw.shape[0] != in_channels:
        raise ValueError(
            f"raw has {raw.shape[0]} channel(s) (shape {raw.shape}) but the model expects "
            f"{in_channels}; pass (channels, z, y, x) with channels first"
        )
    if np.issubdtype(raw.dtype, np.integer) or raw.dtype == bool:
        return raw.astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(raw, dtype=np.float32)


def _check_min_shape(model: nn.Module, shape: Sequence[int], offsets: Shape3) -> None:
    smallest = tuple(2 * o + 1 for o in offsets)
    if any(s < m for s, m in zip(shape, smallest)):
        raise ValueError(
            f"raw volume of spatial shape {tuple(shape)} is too small for "
            f"{type(model).__name__}: every axis needs at least {smallest} voxels "
            f"(2 * offsets {offsets} + 1)"
        )


def _tile_shape(
    model: nn.Module, volume_shape: Sequence[int], requested: Sequence[int] | None
) -> Shape3:
    patch = tuple(model.patch_size)
    if requested is None:
        tile = list(volume_shape)
        while math.prod(tile) > DEFAULT_TILE_VOXELS:
            shrinkable = [a for a in range(3) if tile[a] > patch[a]]
            if not shrinkable:
                break
            a = max(shrinkable, key=lambda i: tile[i] / patch[i])
            tile[a] = max(patch[a], -(-tile[a] // 2))
            tile = list(model.valid_input_shape(tile))
    else:
        if len(requested) != 3:
            raise ValueError(f"tile_shape must be (z, y, x), got {tuple(requested)}")
        tile = list(model.valid_input_shape(requested))
    # the padded volume is itself valid, so clipping to it keeps the tile valid
    return tuple(min(t, v) for t, v in zip(tile, volume_shape))  # type: ignore[return-value]


def _axis_tiles(n_out: int, tile_out: int, margin: int, axis: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis as ``(start, keep_lo, keep_hi)`` in output coordinates."""
    if tile_out >= n_out:
        return [(0, 0, n_out)]
    step = tile_out - 2 * margin
    if step <= 0:
        raise ValueError(
            f"tile of {tile_out} output voxels along axis {'zyx'[axis]} leaves no room inside "
            f"a margin of {margin} per side; use a larger tile_shape or a smaller margin"
        )
    starts = list(range(0, n_out - tile_out, step)) + [n_out - tile_out]
    # each neighbouring pair splits its overlap in the middle, away from both tile borders
    bounds = [0] + [(b + a + tile_out) // 2 for a, b in zip(starts, starts[1:])] + [n_out]
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def _clip(axis_tile: tuple[int, int, int], n: int) -> tuple[int, int]:
    _, lo, hi = axis_tile
    return min(lo, n), min(hi, n)


def _forward_probs(
    net: nn.Module, batch: np.ndarray, device: torch.device, amp: bool
) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True)
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
    with autocast:
        logits = net(x)
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
