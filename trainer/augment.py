"""Patch augmentations of ``BatchCreatorImage`` (``trainer.data``): random affine warps,
flips and the y/x swap, ELEKTRONN2's grey-value transform.

Pure functions of their inputs and a ``numpy.random.Generator``: the data source draws in
a fixed order, so a seed gives the same batches.

Example:
    >>> rng = np.random.default_rng(0)
    >>> m = random_affine(rng, {}, aniso=2.0)
    >>> m.shape
    (3, 3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["flip_pair", "grey_augment", "random_affine", "source_box", "warp_sample"]


def flip_pair(
    rng: np.random.Generator,
    d: np.ndarray,
    t: np.ndarray,
    no_x_flip: bool,
    can_swap: bool,
) -> tuple[np.ndarray, np.ndarray, tuple[bool, bool, bool], bool]:
    """Random flip of each spatial axis and a random y/x swap, applied to data and labels alike.

    Args:
        rng: the generator drawn from (three flips, then the swap).
        d: data ``(C, z, y, x)``.
        t: labels ``(T, z, y, x)``.
        no_x_flip: no x flip and no swap.
        can_swap: the swap keeps the shapes (square patches and outputs in y/x).

    Returns:
        The flipped data and labels (contiguous), the flips per axis and whether y/x swapped.
    """
    flips = tuple(bool(f) for f in rng.random(3) < 0.5)
    if no_x_flip:
        flips = (flips[0], flips[1], False)
    axes = tuple(ax + 1 for ax, f in enumerate(flips) if f)
    if axes:
        d, t = np.flip(d, axes), np.flip(t, axes)
    swap = bool(rng.random() < 0.5) and not no_x_flip and can_swap
    if swap:
        d, t = d.swapaxes(2, 3), t.swapaxes(2, 3)
    return np.ascontiguousarray(d), np.ascontiguousarray(t), flips, swap


def grey_augment(rng: np.random.Generator, d: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """ELEKTRONN2's grey-value transform ``clip(a*d + c, 0, 1) ** g``, in place: one draw per
    channel (a in [0.85, 1.15], c in [-0.15, 0.15], g in [0.5, 2]) for the whole volume."""
    for c in channels:
        alpha = 1 + 0.3 * (rng.random() - 0.5)
        shift = 0.3 * (rng.random() - 0.5)
        gamma = 2.0 ** (2 * rng.random() - 1)
        d[c] = np.clip(alpha * d[c] + shift, 0.0, 1.0) ** gamma
    return d


def random_affine(rng: np.random.Generator, warp_args: dict, aniso: float) -> np.ndarray:
    """Matrix mapping an output voxel offset from the patch centre to a source voxel offset."""
    amount = float(warp_args.get("warp_amount", 1.0))
    angle = rng.uniform(0.0, 2 * np.pi) * amount
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.array([[1.0, 0, 0], [0, cos, -sin], [0, sin, cos]])
    shear = np.eye(3) + rng.uniform(-0.1 * amount, 0.1 * amount, (3, 3))
    if warp_args.get("lock_z", True):
        shear[0, :] = shear[:, 0] = 0.0
        shear[0, 0] = 1.0
    a = rot @ shear
    if warp_args.get("sample_aniso", True):
        # the transform is drawn in physical units, where a z voxel is aniso times thicker
        scale = np.diag([aniso, 1.0, 1.0])
        a = np.linalg.inv(scale) @ a @ scale
    return a


def source_box(centre: np.ndarray, reach: np.ndarray, shape: np.ndarray) -> tuple[slice, ...]:
    lo = np.maximum(np.floor(centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def warp_sample(
    cut: np.ndarray,
    box: tuple[slice, ...],
    m: np.ndarray,
    centre: np.ndarray,
    out_shape: np.ndarray,
    order: int,
) -> np.ndarray:
    """Sample ``cut`` (the part ``box`` of a volume) at ``centre + m @ (o - out_centre)``
    for every output voxel ``o``."""
    origin = np.array([s.start for s in box])
    out_centre = (np.asarray(out_shape) - 1) / 2.0
    offset = centre - origin - m @ out_centre
    src = cut if order == 0 else cut.astype(np.float32, copy=False)
    return ndimage.affine_transform(
        src,
        m,
        offset=offset,
        output_shape=tuple(int(s) for s in out_shape),
        order=order,
        mode="nearest",
    )
