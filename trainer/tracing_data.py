"""Tracing data: patches cut along a tracing direction, and the data source that samples them.

Frames and units:

* **data frame**: voxel coordinates ``(z, y, x)`` of the raw cube; *physical* coordinates
  multiply z by ``aniso_factor`` (one physical unit = one x/y voxel).
* **patch frame**: a patch is sampled on the same anisotropic grid as the data, rotated so
  that the tracing direction is the patch's **x axis** (its last axis) and its z axis stays as
  close to the data's z axis as the direction allows (plus an optional roll ``gamma`` about
  the direction). A model's prediction is a physical vector in this frame: the step to the
  next position, mostly along +x.

A ``Transform`` holds the rotation (patch frame -> data frame, physical units), the position
(data voxels) and the anisotropy; with an identity rotation the patch is the plain array
slice around the position. Patches are cut with trilinear interpolation (``grid_sample``);
a patch that would reach outside the cube raises ``WarpingOOBError``.

Example:
    >>> t = Transform.from_direction([10, 20, 30], [0, 0, 1])
    >>> np.allclose(t.rotation, np.eye(3))
    True
    >>> Transform.from_array(t.to_array()) == t
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from trainer.skeletons import Skeleton, load_tracing_file

__all__ = [
    "TRANSFORM_SIZE",
    "AgentData",
    "TracingBatch",
    "Transform",
    "WarpingOOBError",
    "cut_patches",
    "patch_offsets",
    "sample_direction",
]

#: length of ``Transform.to_array()``: 4x4 matrix, position (3), aniso_factor (1)
TRANSFORM_SIZE = 20
_START_TRIES = 100


class WarpingOOBError(ValueError):
    """A patch would reach outside the raw cube (the tracing left the volume)."""


class Transform:
    """Rigid map from a patch's frame to the data: rotation, position and anisotropy.

    Args:
        rotation: (3, 3) rotation matrix; column ``i`` is patch axis ``i`` (z, y, x) as a
            physical direction in the data frame.
        position: (3,) patch centre in data voxel coordinates ``(z, y, x)``.
        aniso_factor: thickness of a z voxel in x/y voxels.

    Raises:
        ValueError: ``rotation`` is not a proper rotation or ``aniso_factor <= 0``.
    """

    __slots__ = ("rotation", "position", "aniso_factor")

    def __init__(self, rotation: Any, position: Any, aniso_factor: float = 2.0) -> None:
        rot = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-5) or np.linalg.det(rot) < 0:
            raise ValueError(f"Transform rotation must be a proper rotation matrix, got\n{rot}")
        if not aniso_factor > 0:
            raise ValueError(f"Transform aniso_factor must be > 0, got {aniso_factor!r}")
        self.rotation = rot
        self.position = np.asarray(position, dtype=np.float64).reshape(3)
        self.aniso_factor = float(aniso_factor)

    @classmethod
    def from_direction(
        cls, position: Any, direction: Any, gamma: float = 0.0, aniso_factor: float = 2.0
    ) -> Transform:
        """The transform whose patch x axis points along ``direction``.

        Args:
            position: patch centre (data voxels).
            direction: physical tracing direction in the data frame (need not be unit length).
            gamma: roll about the direction in radians.
            aniso_factor: thickness of a z voxel in x/y voxels.

        Raises:
            ValueError: ``direction`` is (almost) zero.
        """
        d = np.asarray(direction, dtype=np.float64).reshape(3)
        n = np.linalg.norm(d)
        if not n > 1e-9:
            raise ValueError(f"tracing direction must be non-zero, got {d}")
        ex = d / n
        ez = np.array([1.0, 0.0, 0.0]) - ex[0] * ex
        if np.linalg.norm(ez) < 1e-6:  # direction along z: keep the data's y as patch z
            ez = np.array([0.0, 1.0, 0.0]) - ex[1] * ex
        ez /= np.linalg.norm(ez)
        ey = np.cross(ex, ez)
        c, s = math.cos(gamma), math.sin(gamma)
        ez, ey = c * ez + s * ey, -s * ez + c * ey
        return cls(np.stack([ez, ey, ex], axis=1), position, aniso_factor)

    @property
    def scale(self) -> np.ndarray:
        """Physical size of a voxel along (z, y, x)."""
        return np.array([self.aniso_factor, 1.0, 1.0])

    @property
    def direction(self) -> np.ndarray:
        """The tracing direction: the patch x axis as a physical unit vector in the data."""
        return self.rotation[:, 2].copy()

    @property
    def matrix(self) -> np.ndarray:
        """4x4 affine map from homogeneous physical patch offsets to data voxel coordinates."""
        m = np.eye(4)
        m[:3, :3] = self.rotation / self.scale[:, None]
        m[:3, 3] = self.position
        return m

    def patch_to_data(self, offsets: Any) -> np.ndarray:
        """Physical patch-frame offsets (..., 3) -> data voxel coordinates (..., 3)."""
        u = np.asarray(offsets, dtype=np.float64)
        return self.position + (u @ self.rotation.T) / self.scale

    def data_to_patch(self, voxels: Any) -> np.ndarray:
        """Data voxel coordinates (..., 3) -> physical patch-frame offsets (..., 3)."""
        v = np.asarray(voxels, dtype=np.float64)
        return ((v - self.position) * self.scale) @ self.rotation

    def cnn_pred2lab_position(self, prediction: Any) -> tuple[np.ndarray, np.ndarray]:
        """A predicted step (patch frame, physical) -> new position and tracing direction.

        Returns:
            ``(position, direction)``: data voxel coordinates, and the step as a physical unit
            vector in the data frame (the current direction if the step is ~zero).
        """
        p = np.asarray(prediction, dtype=np.float64).reshape(3)
        step = self.rotation @ p
        n = np.linalg.norm(step)
        direction = step / n if n > 1e-6 else self.direction
        return self.position + step / self.scale, direction

    def to_array(self) -> np.ndarray:
        """Flat float64 array: ``matrix`` (16, row-major), position (3), aniso_factor (1)."""
        return np.concatenate([self.matrix.ravel(), self.position, [self.aniso_factor]])

    @classmethod
    def from_array(cls, arr: Any) -> Transform:
        """Inverse of ``to_array``.

        Raises:
            ValueError: ``arr`` does not have ``TRANSFORM_SIZE`` values or holds no rotation.
        """
        a = np.asarray(arr, dtype=np.float64).ravel()
        if a.size != TRANSFORM_SIZE:
            raise ValueError(
                f"a Transform array has {TRANSFORM_SIZE} values (4x4 matrix, position, "
                f"aniso_factor), got {a.size}"
            )
        aniso = float(a[19])
        scale = np.array([aniso, 1.0, 1.0])
        rotation = a[:16].reshape(4, 4)[:3, :3] * scale[:, None]
        return cls(rotation, a[16:19], aniso)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return (
            np.allclose(self.rotation, other.rotation, atol=1e-9)
            and np.allclose(self.position, other.position, atol=1e-9)
            and self.aniso_factor == other.aniso_factor
        )

    def __repr__(self) -> str:
        pos = ", ".join(f"{v:.2f}" for v in self.position)
        d = ", ".join(f"{v:+.2f}" for v in self.direction)
        return f"Transform(position=({pos}), direction=({d}), aniso={self.aniso_factor:g})"


def patch_offsets(
    patch_shape: Sequence[int], aniso_factor: float, shift: float = 0.0
) -> np.ndarray:
    """Physical patch-frame offsets of every patch voxel from the patch centre (pz, py, px, 3).

    ``shift`` moves the patch ``shift`` x/y voxels ahead along the tracing direction.
    """
    axes = [
        (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * s
        for n, s in zip(patch_shape, (aniso_factor, 1.0, 1.0))
    ]
    axes[2] = axes[2] + float(shift)
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def cut_patches(
    volume: torch.Tensor,
    transforms: Sequence[Transform],
    patch_shape: Sequence[int],
    shift: float = 0.0,
) -> np.ndarray:
    """Trilinear patches of ``volume`` along each transform (one ``grid_sample`` call).

    Args:
        volume: (z, y, x) float tensor.
        transforms: one per patch.
        patch_shape: (pz, py, px).
        shift: look-ahead along the tracing direction (x/y voxels).

    Returns:
        float32 (n, 1, pz, py, px).

    Raises:
        WarpingOOBError: a patch reaches outside the volume; the message names the position.
    """
    pz, py, px = (int(s) for s in patch_shape)
    if not transforms:
        return np.zeros((0, 1, pz, py, px), np.float32)
    dims = np.array(volume.shape, dtype=np.float64)
    offsets = patch_offsets((pz, py, px), transforms[0].aniso_factor, shift).reshape(-1, 3)
    coords = np.stack([t.patch_to_data(offsets) for t in transforms])
    lo, hi = coords.min(axis=1), coords.max(axis=1)
    bad = ((lo < -1e-6) | (hi > dims - 1 + 1e-6)).any(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        pos = ", ".join(f"{v:.1f}" for v in transforms[k].position)
        raise WarpingOOBError(
            f"patch {k} at ({pos}) spans voxels {np.round(lo[k], 1).tolist()} to "
            f"{np.round(hi[k], 1).tolist()}, outside the volume of shape "
            f"{tuple(int(d) for d in dims)}"
        )
    # grid_sample wants (x, y, z) in [-1, 1]; align_corners=True maps -1/1 to the end voxels
    norm = 2.0 * coords / np.maximum(dims - 1, 1) - 1.0
    grid = torch.from_numpy(norm[..., ::-1].astype(np.float32).copy())
    grid = grid.reshape(1, len(transforms) * pz, py, px, 3)
    out = F.grid_sample(volume[None, None], grid.to(volume.device), mode="bilinear",
                        padding_mode="border", align_corners=True)  # fmt: skip
    return out.reshape(len(transforms), 1, pz, py, px).cpu().numpy()


def sample_direction(
    tangent: np.ndarray, rng: Any, prior_c: float = 0.5, max_angle: float = 90.0
) -> np.ndarray:
    """A random tracing direction near the skeleton direction ``tangent`` (physical).

    The sign is random; the angle to the tangent is ``a * max_angle`` degrees with ``a`` in
    [0, 1] drawn from ``p(a) ~ 1 - prior_c * a`` (small deviations are more likely), towards
    a random direction orthogonal to the tangent.
    """
    t = np.asarray(tangent, dtype=np.float64)
    t = t / np.linalg.norm(t) * (1.0 if rng.random() < 0.5 else -1.0)
    u = rng.random()
    c = float(prior_c)
    a = u if c < 1e-6 else (1.0 - math.sqrt(1.0 - (2 * c - c * c) * u)) / c
    theta = math.radians(float(max_angle)) * a
    ortho = _random_orthogonal(t, rng)
    return math.cos(theta) * t + math.sin(theta) * ortho


def _random_orthogonal(t: np.ndarray, rng: Any) -> np.ndarray:
    for _ in range(10):
        v = rng.normal(size=3)
        v -= (v @ t) * t
        n = np.linalg.norm(v)
        if n > 1e-6:
            return v / n
    return np.cross(t, [1.0, 0.0, 0.0]) / max(np.linalg.norm(np.cross(t, [1.0, 0.0, 0.0])), 1e-9)


class TracingBatch(NamedTuple):
    """One tracing batch (a tuple, so it pickles and indexes like ELEKTRONN2's).

    Attributes:
        img: float32 (bs, 1, pz, py, px) patches, grey values in [0, 1].
        skel_index: int64 (bs,) index of each example's skeleton in its split.
        transforms: float64 (bs, TRANSFORM_SIZE) ``Transform.to_array()`` rows.
        source: ``'train'`` or ``'valid'``.
    """

    img: np.ndarray
    skel_index: np.ndarray
    transforms: np.ndarray
    source: str


class AgentData:
    """Tracing data source: one raw cube and its skeletons, split into train and valid.

    Constructed like every VoxelBoard data class as ``AgentData(model, None, **data_init_kwargs)``;
    the patch shape is the model's ``patch_size`` unless ``patch_size`` is given.

    Args:
        input_node: the model (anything with ``patch_size``) or ``None``.
        target_node: unused (ELEKTRONN2 passed its target node).
        path: tracing h5 file (``trainer.skeletons.write_tracing_file`` layout).
        patch_size: (pz, py, px) of the patches; default the model's.
        aniso_factor: override the file's anisotropy.
        device: where the raw cube lives for ``grid_sample`` (default CPU).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no patch size, no training skeleton, or a bad file.

    Example:
        >>> data = AgentData(None, path="data/tracing.h5", patch_size=(9, 27, 27))  # doctest: +SKIP
        >>> batch = data.getbatch(4)  # doctest: +SKIP
        >>> batch.img.shape  # doctest: +SKIP
        (4, 1, 9, 27, 27)
    """

    def __init__(
        self,
        input_node: Any = None,
        target_node: Any = None,
        *,
        path: str,
        patch_size: Sequence[int] | None = None,
        aniso_factor: float | None = None,
        device: str = "cpu",
    ) -> None:
        del target_node
        if patch_size is None:
            patch_size = getattr(input_node, "patch_size", None)
        if patch_size is None or len(tuple(patch_size)) != 3:
            raise ValueError(
                f"AgentData needs a patch size (pz, py, px): give the model (with patch_size) "
                f"or patch_size=..., got {patch_size!r}"
            )
        self.path = str(path)
        self.patch_size = tuple(int(s) for s in patch_size)
        raw, skeletons, valid = load_tracing_file(path)
        if aniso_factor is not None:
            skeletons = [Skeleton(s.nodes, s.radii, s.edges, aniso_factor, s.name)
                         for s in skeletons]  # fmt: skip
        self.aniso_factor = skeletons[0].aniso_factor if skeletons else float(aniso_factor or 2)
        self.raw_shape = raw.shape
        self.volume = torch.from_numpy(raw.astype(np.float32) / 255.0).to(device)
        self.train_s = [s for k, s in enumerate(skeletons) if k not in valid]
        self.valid_s = [s for k, s in enumerate(skeletons) if k in valid]
        if not self.train_s:
            raise ValueError(f"{path}: no training skeletons (every skeleton is split 'valid')")

    def __repr__(self) -> str:
        return (
            f"AgentData({self.path!r}, raw {self.raw_shape}, {len(self.train_s)} train / "
            f"{len(self.valid_s)} valid skeletons, patch {self.patch_size})"
        )

    def skeletons(self, source: str) -> list[Skeleton]:
        """The skeletons of ``source`` (``'train'`` or ``'valid'``).

        Raises:
            NoValidationData: ``source='valid'`` and there is no validation skeleton.
            ValueError: an unknown source.
        """
        from trainer.data import NoValidationData

        if source == "train":
            return self.train_s
        if source == "valid":
            if not self.valid_s:
                raise NoValidationData(f"{self.path} has no validation skeletons")
            return self.valid_s
        raise ValueError(f"source must be 'train' or 'valid', got {source!r}")

    def getskel(self, source: str = "train", rng: Any = None) -> tuple[int, Skeleton]:
        """A random skeleton of ``source``, chosen with probability ~ its number of nodes."""
        rng = np.random if rng is None else rng
        skels = self.skeletons(source)
        sizes = np.array([len(s) for s in skels], dtype=np.float64)
        k = int(rng.choice(len(skels), p=sizes / sizes.sum()))
        return k, skels[k]

    def getbatch(
        self,
        batch_size: int = 1,
        source: str = "train",
        gamma: float | str = 0.0,
        r_max_scale: float = 0.9,
        tracing_dir_prior_c: float = 0.5,
        max_angle: float = 90.0,
        shift: float = 0.0,
        rng: Any = None,
        **unused: Any,
    ) -> TracingBatch:
        """Random start points inside neurites, each with a patch along a tracing direction.

        A start is a random node of a random skeleton, moved orthogonally to the skeleton by
        up to ``r_max_scale`` times its radius; the direction is drawn near the skeleton's
        (``sample_direction``). Starts whose patch would leave the cube are redrawn.

        Args:
            batch_size: number of examples.
            source: ``'train'`` or ``'valid'``.
            gamma: roll about the tracing direction (radians), or ``'rand'``.
            r_max_scale: how far from the centreline a start may lie (fraction of the radius).
            tracing_dir_prior_c: ``prior_c`` of ``sample_direction``.
            max_angle: largest angle (degrees) between tracing and skeleton direction.
            shift: look-ahead of the patch along the direction (x/y voxels).
            rng: a ``numpy.random.Generator``; default the global numpy random state.
            **unused: other ``data_batch_args`` (ignored, so one dict serves all calls).

        Raises:
            NoValidationData: ``source='valid'`` without validation skeletons.
            ValueError: no start with a patch inside the cube was found.
        """
        rng = np.random if rng is None else rng
        idx, transforms = [], []
        for _ in range(int(batch_size)):
            k, t = self._sample_start(source, gamma, r_max_scale, tracing_dir_prior_c,
                                      max_angle, shift, rng)  # fmt: skip
            idx.append(k)
            transforms.append(t)
        img = cut_patches(self.volume, transforms, self.patch_size, shift)
        return TracingBatch(img, np.array(idx, dtype=np.int64),
                            np.stack([t.to_array() for t in transforms]), source)  # fmt: skip

    def get_newslice(
        self,
        position: Any,
        direction: Any,
        gamma: float | str = 0.0,
        shift: float = 0.0,
        rng: Any = None,
        **unused: Any,
    ) -> tuple[np.ndarray, Transform]:
        """The patch at ``position`` (data voxels) along ``direction`` (physical).

        Returns:
            ``(img, transform)``: float32 (1, pz, py, px) and its ``Transform``.

        Raises:
            WarpingOOBError: the patch would reach outside the cube.
        """
        t = Transform.from_direction(position, direction, self._gamma(gamma, rng),
                                     self.aniso_factor)  # fmt: skip
        return cut_patches(self.volume, [t], self.patch_size, shift)[0], t

    def _gamma(self, gamma: float | str, rng: Any) -> float:
        if gamma == "rand":
            return float((np.random if rng is None else rng).uniform(0.0, 2 * math.pi))
        return float(gamma)

    def _sample_start(self, source: str, gamma: float | str, r_max_scale: float,
                      prior_c: float, max_angle: float, shift: float,
                      rng: Any) -> tuple[int, Transform]:  # fmt: skip
        for _ in range(_START_TRIES):
            k, sk = self.getskel(source, rng)
            node = int(rng.choice(len(sk)))
            centre = sk.nodes_physical[node]
            near = sk.nearest(centre)
            tangent, radius = near.tangent[0], float(sk.radii[node])
            offset = _random_orthogonal(tangent, rng) * rng.uniform(0.0, r_max_scale * radius)
            direction = sample_direction(tangent, rng, prior_c, max_angle)
            t = Transform.from_direction(sk.to_voxel(centre + offset), direction,
                                         self._gamma(gamma, rng), self.aniso_factor)  # fmt: skip
            if self._inside(t, shift):
                return k, t
        raise ValueError(
            f"{self.path}: no start point with a {self.patch_size} patch inside the cube "
            f"{self.raw_shape} after {_START_TRIES} tries; use a smaller patch_size"
        )

    def _inside(self, t: Transform, shift: float) -> bool:
        """Whether the patch of ``t`` lies inside the cube (its 8 corners suffice)."""
        half = (np.array(self.patch_size, dtype=np.float64) - 1) / 2 * t.scale
        signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 3, indexing="ij")).reshape(3, -1).T
        corners = signs * half + np.array([0.0, 0.0, shift])
        v = t.patch_to_data(corners)
        dims = np.array(self.raw_shape, dtype=np.float64)
        return bool((v.min(0) >= -1e-6).all() and (v.max(0) <= dims - 1 + 1e-6).all())
