"""Neurite skeletons and a synthetic tracing dataset of tube-like neurites in an EM-like volume.

A ``Skeleton`` is a graph of nodes (voxel coordinates ``(z, y, x)``) with a radius per node,
given in *physical* units: one physical unit is one x/y voxel, a z voxel is ``aniso_factor``
units thick. The neurite is the tube of those radii around the skeleton's edges, so the
"hull" of ELEKTRONN2's skeletons is implicit: the nearest centreline point and its radius
say how far a point is from the inner hull and whether it is still inside the neurite.
Nearest-point queries run on a KD-tree of points resampled densely along the edges.

The synthetic dataset (``make_tracing_data``) is one raw cube with smooth random neurites of
varying calibre drawn into the EM-like neuropil of ``trainer.synthetic``, plus their
skeletons, split into training and validation skeletons::

    tracing.h5['raw']                       uint8 (z, y, x); attrs aniso_factor
    tracing.h5['skeletons/<k>/nodes']       float32 (n, 3) voxel coordinates (z, y, x)
    tracing.h5['skeletons/<k>/radii']       float32 (n,) physical units
    tracing.h5['skeletons/<k>/edges']       int32 (m, 2) node index pairs
    tracing.h5['skeletons/<k>'].attrs       split = 'train' | 'valid'
    tracing.json                            manifest, written last

Example:
    >>> sk = Skeleton([(4, 10, 10), (4, 10, 30)], radii=[5, 5])
    >>> near = sk.nearest(sk.to_physical([[4, 13, 20]]))
    >>> float(near.distance[0]), float(near.radius[0])
    (3.0, 5.0)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from trainer.runs import atomic_path, atomic_write_json
from trainer.synthetic import ANISO  # z voxels are this many times thicker than x/y voxels

__all__ = [
    "TRACING_FILE",
    "TRACING_MANIFEST",
    "Nearest",
    "Skeleton",
    "TracingDataset",
    "ensure_tracing_data",
    "load_tracing_data",
    "load_tracing_file",
    "make_tracing_data",
    "random_neurites",
    "render_neurites",
    "write_tracing_file",
]

TRACING_FILE = "tracing.h5"
TRACING_MANIFEST = "tracing.json"
#: bumped whenever the generator changes its output, so old datasets are regenerated
GENERATOR_VERSION = 1
#: thickness of a rendered membrane in physical units
MEMBRANE_WIDTH = 1.6


class Nearest(NamedTuple):
    """Result of ``Skeleton.nearest`` for ``k`` query points (all physical units).

    Attributes:
        point: (k, 3) nearest centreline points.
        radius: (k,) neurite radius there.
        tangent: (k, 3) unit direction of the skeleton there (sign arbitrary).
        distance: (k,) distance from the query point to ``point``.
    """

    point: np.ndarray
    radius: np.ndarray
    tangent: np.ndarray
    distance: np.ndarray


class Skeleton:
    """A neurite skeleton: nodes, per-node radii and edges, with fast nearest-point queries.

    Args:
        nodes: (n, 3) node positions in voxel coordinates ``(z, y, x)``.
        radii: (n,) neurite radius at each node in physical units (a scalar is broadcast).
        edges: (m, 2) node index pairs; default: a chain ``0-1-2-...``.
        aniso_factor: thickness of a z voxel in x/y voxels.
        name: label used in messages.
        spacing: distance (physical units) between the resampled centreline points the
            KD-tree holds; the nearest-point error is at most half of it.

    Raises:
        ValueError: shapes do not fit, a radius is not positive or an edge names a missing node.
    """

    def __init__(
        self,
        nodes: Any,
        radii: Any,
        edges: Any = None,
        aniso_factor: float = ANISO,
        name: str = "",
        spacing: float = 0.5,
    ) -> None:
        self.name = str(name)
        self.nodes = np.asarray(nodes, dtype=np.float64).reshape(-1, 3)
        n = len(self.nodes)
        if n == 0:
            raise ValueError(f"skeleton {self.name!r} has no nodes")
        self.radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (n,)).copy()
        if not (self.radii > 0).all():
            raise ValueError(f"skeleton {self.name!r}: every radius must be > 0")
        if edges is None:
            edges = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
        self.edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        if len(self.edges) and (self.edges.min() < 0 or self.edges.max() >= n):
            raise ValueError(
                f"skeleton {self.name!r}: edges name nodes outside 0..{n - 1}; "
                "edges are pairs of node indices"
            )
        if aniso_factor <= 0:
            raise ValueError(f"aniso_factor must be > 0, got {aniso_factor!r}")
        self.aniso_factor = float(aniso_factor)
        self.scale = np.array([self.aniso_factor, 1.0, 1.0])
        self._samples, self._sample_radii, self._tangents = self._resample(float(spacing))
        self._tree = cKDTree(self._samples)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return (
            f"Skeleton({self.name!r}, {len(self)} nodes, length {self.length:.0f}, "
            f"radius {self.radii.min():.1f}-{self.radii.max():.1f})"
        )

    def to_physical(self, voxels: Any) -> np.ndarray:
        """Voxel coordinates ``(z, y, x)`` -> physical coordinates (z scaled by aniso)."""
        return np.asarray(voxels, dtype=np.float64) * self.scale

    def to_voxel(self, physical: Any) -> np.ndarray:
        """Physical coordinates -> voxel coordinates ``(z, y, x)``."""
        return np.asarray(physical, dtype=np.float64) / self.scale

    @property
    def nodes_physical(self) -> np.ndarray:
        """(n, 3) node positions in physical units."""
        return self.nodes * self.scale

    @property
    def length(self) -> float:
        """Total centreline length in physical units."""
        if not len(self.edges):
            return 0.0
        p = self.nodes_physical
        return float(np.linalg.norm(p[self.edges[:, 1]] - p[self.edges[:, 0]], axis=1).sum())

    def nearest(self, points: Any) -> Nearest:
        """Nearest centreline points of physical ``points`` (shape (3,) or (k, 3))."""
        q = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        dist, idx = self._tree.query(q)
        return Nearest(self._samples[idx], self._sample_radii[idx], self._tangents[idx], dist)

    def end_points(self) -> np.ndarray:
        """Indices of nodes with at most one edge (neurite ends and isolated nodes)."""
        degree = np.bincount(self.edges.ravel(), minlength=len(self))
        return np.flatnonzero(degree <= 1)

    def _resample(self, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points every ``spacing`` along each edge, their radii and the edge directions."""
        p, r = self.nodes_physical, self.radii
        pts, rad, tan = [p], [r], [np.zeros_like(p)]
        if len(self.edges):
            a, b = self.edges[:, 0], self.edges[:, 1]
            seg = p[b] - p[a]
            seg_len = np.linalg.norm(seg, axis=1)
            unit = seg / np.maximum(seg_len, 1e-12)[:, None]
            # a node's tangent is the mean of its edges' directions (sign-aligned)
            node_tan = np.zeros_like(p)
            for end in (a, b):
                sign = np.sign((node_tan[end] * unit).sum(1, keepdims=True) + 1e-9)
                np.add.at(node_tan, end, unit * sign)
            tan[0] = node_tan
            n_pts = np.maximum(np.ceil(seg_len / spacing).astype(int), 1)
            owner = np.repeat(np.arange(len(seg)), n_pts)
            t = (np.arange(n_pts.sum()) - np.repeat(np.cumsum(n_pts) - n_pts, n_pts)) / n_pts[owner]
            pts.append(p[a[owner]] + t[:, None] * seg[owner])
            rad.append(r[a[owner]] + t * (r[b[owner]] - r[a[owner]]))
            tan.append(unit[owner])
        tangents = np.concatenate(tan)
        norm = np.linalg.norm(tangents, axis=1, keepdims=True)
        fallback = np.array([0.0, 0.0, 1.0])  # isolated nodes have no direction
        tangents = np.where(norm > 1e-9, tangents / np.maximum(norm, 1e-12), fallback)
        return np.concatenate(pts), np.concatenate(rad), tangents


# ---------------------------------------------------------------------------------------------
# synthetic neurites


def random_neurites(
    shape: Sequence[int],
    rng: np.random.Generator,
    n_neurites: int = 16,
    aniso_factor: float = ANISO,
    radius_range: tuple[float, float] = (3.0, 6.5),
    length_range: tuple[float, float] = (60.0, 240.0),
    step: float = 2.0,
    min_length: float = 40.0,
    clearance: float = 2.0,
) -> list[Skeleton]:
    """Smooth random neurites inside a volume, kept apart from each other (pure).

    Each neurite grows both ways from a random point as a persistent random walk (its
    direction drifts a little every ``step``), with a radius that swells and thins along
    it. Growth stops at the volume border, at the drawn length, or where the tube would
    touch an earlier neurite, so some neurites end inside the volume.

    Args:
        shape: volume shape (z, y, x) in voxels.
        rng: random generator (consumed).
        n_neurites: number of neurites wanted (fewer if the volume is too crowded).
        aniso_factor: thickness of a z voxel in x/y voxels.
        radius_range: range of the mean radius per neurite (physical units).
        length_range: range of the drawn length per neurite (physical units).
        step: node spacing (physical units).
        min_length: shorter neurites (after clipping) are dropped.
        clearance: minimum gap between two tubes (physical units).

    Returns:
        The skeletons (node coordinates in voxels).
    """
    scale = np.array([aniso_factor, 1.0, 1.0])
    box = (np.asarray(shape, float) - 1.0) * scale
    margin = min(8.0, float(box.min()) / 4)
    taken = _Occupied(box, clearance)
    out: list[Skeleton] = []
    for _ in range(30 * n_neurites):
        if len(out) >= n_neurites:
            break
        profile = (rng.uniform(*radius_range), rng.uniform(30.0, 90.0), rng.uniform(0, 2 * np.pi))
        start = rng.uniform(margin, box - margin)
        direction = rng.normal(size=3) * np.array([0.5, 1.0, 1.0])  # mostly in-plane
        direction /= np.linalg.norm(direction)
        n_steps = int(rng.uniform(*length_range) / 2 / step)
        if not taken.fits(start, _radius(profile, 0.0)):
            continue
        fp, fr = _grow(start, direction, n_steps, step, profile, taken, rng)
        bp, br = _grow(start, -direction, n_steps, -step, profile, taken, rng)
        pts = np.array([*bp[::-1], start, *fp])
        rads = np.array([*br[::-1], _radius(profile, 0.0), *fr])
        if (len(pts) - 1) * step < min_length:
            continue
        sk = Skeleton(pts / scale, rads, aniso_factor=aniso_factor, name=f"neurite{len(out)}")
        out.append(sk)
        taken.add(sk)
    return out


def _radius(profile: tuple[float, float, float], s: float) -> float:
    """Radius at arc length ``s`` of a neurite with profile (mean, period, phase)."""
    base, period, phase = profile
    return base * (1.0 + 0.25 * np.sin(2 * np.pi * s / period + phase))


class _Occupied:
    """The tubes placed so far, for the "does a new node fit" test of ``random_neurites``."""

    def __init__(self, box: np.ndarray, clearance: float) -> None:
        self.box, self.clearance = box, clearance
        self.points, self.radii = np.empty((0, 3)), np.empty(0)
        self.tree: cKDTree | None = None

    def fits(self, p: np.ndarray, r: float) -> bool:
        if (p < 0).any() or (p > self.box).any():
            return False
        if self.tree is None:
            return True
        d, i = self.tree.query(p)
        return bool(d >= r + self.radii[i] + self.clearance)

    def add(self, sk: Skeleton) -> None:
        self.points = np.concatenate([self.points, sk._samples])
        self.radii = np.concatenate([self.radii, sk._sample_radii])
        self.tree = cKDTree(self.points)


def _grow(start: np.ndarray, direction: np.ndarray, n_steps: int, step: float,
          profile: tuple[float, float, float], taken: _Occupied,
          rng: np.random.Generator) -> tuple[list[np.ndarray], list[float]]:  # fmt: skip
    """Nodes of a persistent random walk from ``start`` until it hits something."""
    p, d, pts, rads = start.copy(), direction.copy(), [], []
    for k in range(1, n_steps + 1):
        d = d + rng.normal(scale=0.12, size=3) * np.array([0.5, 1.0, 1.0])
        d /= np.linalg.norm(d)
        p = p + abs(step) * d
        r = _radius(profile, k * step)
        if not taken.fits(p, r):
            break
        pts.append(p)
        rads.append(r)
    return pts, rads


def render_neurites(
    shape: Sequence[int],
    skeletons: Sequence[Skeleton],
    rng: np.random.Generator,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``skeletons`` as bright tubes with dark membranes into EM-like neuropil (pure).

    Args:
        shape: volume shape (z, y, x).
        skeletons: the neurites; their ``aniso_factor`` must agree.
        rng: random generator (consumed).
        background: uint8 neuropil to draw into; default ``trainer.synthetic.generate_cube``.

    Returns:
        uint8 (z, y, x) grey values.
    """
    shape = tuple(int(s) for s in shape)
    if background is None:
        from trainer.synthetic import generate_cube

        background = generate_cube(shape, rng)[0]
    if not skeletons:
        return background.copy()
    scale = skeletons[0].scale
    pts = np.concatenate([s._samples for s in skeletons])
    rad = np.concatenate([s._sample_radii for s in skeletons])
    owner = np.concatenate([np.full(len(s._samples), k) for k, s in enumerate(skeletons)])
    coords = np.indices(shape, dtype=np.float32).reshape(3, -1).T * scale.astype(np.float32)
    reach = float(rad.max()) + 2.5
    dist, idx = cKDTree(pts).query(coords, distance_upper_bound=reach, workers=-1)
    near = np.flatnonzero(np.isfinite(dist))
    rho, r, who = dist[near], rad[idx[near]], owner[idx[near]]

    flat_bg = background.reshape(-1).astype(np.float32) / 255.0
    comp = flat_bg.copy()
    grey = rng.uniform(0.62, 0.82, len(skeletons)).astype(np.float32)
    dark = rng.uniform(0.12, 0.25, len(skeletons)).astype(np.float32)
    texture = ndimage.gaussian_filter(
        rng.normal(size=shape).astype(np.float32), sigma=(0.75, 1.5, 1.5)
    ).reshape(-1)
    texture /= max(float(texture.std()), 1e-6)
    inside = rho < r - MEMBRANE_WIDTH
    membrane = ~inside & (rho < r + 0.4)
    comp[near[inside]] = grey[who[inside]] + 0.05 * texture[near[inside]]
    comp[near[membrane]] = dark[who[membrane]]
    img = ndimage.gaussian_filter(comp.reshape(shape), sigma=(0.4, 0.8, 0.8)).reshape(-1)
    # the background already carries its noise: add noise only where the neurites changed it
    region = near[rho < r + 2.0]
    vals = np.clip(img[region], 0.0, 1.0)
    vals = rng.poisson(vals * 60.0).astype(np.float32) / 60.0
    vals += rng.normal(scale=0.02, size=len(vals)).astype(np.float32)
    out = background.reshape(-1).copy()
    out[region] = np.clip(np.rint(vals * 255.0), 0, 255).astype(np.uint8)
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------
# files


@dataclasses.dataclass(frozen=True)
class TracingDataset:
    """Paths and parameters of a generated tracing dataset.

    Attributes:
        out_dir: the dataset folder.
        path: the ``tracing.h5`` file.
        manifest: the ``tracing.json`` file.
        seed: generator seed.
        shape: (z, y, x) of the raw cube.
        train: indices of the training skeletons.
        valid: indices of the validation skeletons.
    """

    out_dir: Path
    path: Path
    manifest: Path
    seed: int
    shape: tuple[int, int, int]
    train: list[int]
    valid: list[int]

    def data_init_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``trainer.tracing_data.AgentData`` (``data_init_kwargs``)."""
        return {"path": str(self.path)}


def write_tracing_file(
    path: str | os.PathLike,
    raw: np.ndarray,
    skeletons: Sequence[Skeleton],
    valid: Sequence[int] = (),
) -> Path:
    """Write a raw cube and its skeletons to an h5 file (temporary name, then renamed).

    Args:
        path: target file.
        raw: uint8 (z, y, x) volume.
        skeletons: skeletons in the volume's voxel coordinates.
        valid: indices of the skeletons meant for validation; the rest train.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    aniso = skeletons[0].aniso_factor if skeletons else ANISO
    valid_set = {int(v) for v in valid}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("raw", data=np.asarray(raw, dtype=np.uint8), compression="gzip",
                         compression_opts=1)  # fmt: skip
        f["raw"].attrs["aniso_factor"] = aniso
        g = f.create_group("skeletons")
        for k, sk in enumerate(skeletons):
            s = g.create_group(f"{k:04d}")
            s.create_dataset("nodes", data=sk.nodes.astype(np.float32))
            s.create_dataset("radii", data=sk.radii.astype(np.float32))
            s.create_dataset("edges", data=sk.edges.astype(np.int32))
            s.attrs["split"] = "valid" if k in valid_set else "train"
            s.attrs["name"] = sk.name
    return path


def load_tracing_file(path: str | os.PathLike) -> tuple[np.ndarray, list[Skeleton], list[int]]:
    """Read a file written by ``write_tracing_file``.

    Returns:
        ``(raw, skeletons, valid)``: the uint8 volume, all skeletons and the indices of the
        validation skeletons.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file lacks ``raw`` or ``skeletons``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"tracing data file {path} does not exist; generate it with "
            "trainer.skeletons.ensure_tracing_data(<folder>)"
        )
    with h5py.File(path, "r") as f:
        if "raw" not in f or "skeletons" not in f:
            raise ValueError(
                f"{path} is not a tracing data file: it needs datasets 'raw' and a group "
                f"'skeletons', it has {sorted(f)}"
            )
        raw = f["raw"][()]
        aniso = float(f["raw"].attrs.get("aniso_factor", ANISO))
        skeletons, valid = [], []
        for k, key in enumerate(sorted(f["skeletons"])):
            s = f["skeletons"][key]
            name = s.attrs.get("name", key)
            skeletons.append(Skeleton(s["nodes"][()], s["radii"][()], s["edges"][()],
                                      aniso_factor=aniso, name=str(name)))  # fmt: skip
            if s.attrs.get("split", "train") == "valid":
                valid.append(k)
    return raw, skeletons, valid


def make_tracing_data(
    out_dir: str | os.PathLike,
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 128, 128),
    n_neurites: int = 16,
    overwrite: bool = False,
) -> TracingDataset:
    """Generate the synthetic tracing dataset in ``out_dir`` (a few seconds).

    Every fourth neurite (indices 3, 7, ...) is a validation skeleton. The manifest
    ``tracing.json`` is removed first and written last, so a folder without it holds no
    complete dataset.

    Args:
        out_dir: target folder (created if needed); may also hold the demo data.
        seed: generator seed; the same seed gives the same file contents.
        shape: (z, y, x) of the raw cube; z voxels are ``ANISO`` times thicker.
        n_neurites: number of neurites wanted.
        overwrite: replace a complete dataset already there.

    Raises:
        FileExistsError: a dataset exists and ``overwrite`` is False.
        ValueError: ``shape`` is not 3 ints >= 16.
    """
    shape = _check_shape(shape)
    out = Path(out_dir).expanduser()
    manifest = out / TRACING_MANIFEST
    if manifest.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already holds a tracing dataset ({manifest}); pass overwrite=True to "
            "replace it, or use ensure_tracing_data() to reuse it"
        )
    out.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    rng_skel, rng_render = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    skeletons = random_neurites(shape, rng_skel, n_neurites=n_neurites)
    if len(skeletons) < 2:
        raise ValueError(f"shape {shape} is too small for a tracing dataset; use at least 32^3")
    raw = render_neurites(shape, skeletons, rng_render)
    valid = [k for k in range(len(skeletons)) if k % 4 == 3]
    path = write_tracing_file(out / TRACING_FILE, raw, skeletons, valid)
    train = [k for k in range(len(skeletons)) if k not in valid]
    data = TracingDataset(out, path, manifest, int(seed), shape, train, valid)
    atomic_write_json(manifest, {
        "generator_version": GENERATOR_VERSION, "seed": int(seed), "shape": list(shape),
        "n_neurites": int(n_neurites), "aniso_factor": ANISO, "file": TRACING_FILE,
        "train": train, "valid": valid,
    })  # fmt: skip
    return data


def load_tracing_data(out_dir: str | os.PathLike) -> TracingDataset | None:
    """The complete tracing dataset in ``out_dir``; ``None`` if absent, stale or incomplete."""
    out = Path(out_dir).expanduser()
    manifest = out / TRACING_MANIFEST
    try:
        m = json.loads(manifest.read_text())
        if m.get("generator_version") != GENERATOR_VERSION:
            return None
        data = TracingDataset(out, out / m["file"], manifest, int(m["seed"]),
                              tuple(int(s) for s in m["shape"]), [int(k) for k in m["train"]],
                              [int(k) for k in m["valid"]])  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if data.path.is_file() else None


def ensure_tracing_data(
    out_dir: str | os.PathLike,
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 128, 128),
    n_neurites: int = 16,
) -> TracingDataset:
    """The tracing dataset in ``out_dir``, generated unless a matching one is there.

    Example:
        >>> data = ensure_tracing_data("data")  # doctest: +SKIP
        >>> data.data_init_kwargs()  # doctest: +SKIP
        {'path': '.../data/tracing.h5'}
    """
    shape = _check_shape(shape)
    existing = load_tracing_data(out_dir)
    if existing is not None and existing.seed == int(seed) and existing.shape == shape:
        m = json.loads(existing.manifest.read_text())
        if int(m.get("n_neurites", -1)) == int(n_neurites):
            return existing
    return make_tracing_data(out_dir, seed, shape, n_neurites, overwrite=True)


def _check_shape(shape: Any) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or min(out) < 16:
        raise ValueError(f"shape must be 3 ints >= 16 (z, y, x), got {shape!r}")
    return out
