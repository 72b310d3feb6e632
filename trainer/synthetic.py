"""Synthetic EM-like demo data: neuropil-like cells with dark membranes, as h5 cubes.

The demo dataset lets a newcomer train a real 3D network without downloading anything.
Its layout (all in one folder) mirrors ELEKTRONN2's ``neuro_data_zxy`` example data::

    raw_0.h5['raw'] ... raw_{n-1}.h5['raw']     uint8 (z, y, x) grey values
    labels_0.h5['lab'] ... labels_{n-1}.h5['lab'] int16 (z, y, x): 1 = membrane, 0 = inside
    neurons_0.h5['ids'] ... neurons_{n-1}.h5['ids'] int32 (z, y, x): one id (1, 2, ...) per cell,
                                                0 = membrane (the ground-truth neurons)
    preview.h5['raw']                           uint8, a separate cube with its own seed
    demo.json                                   manifest, written last

Unlike ELEKTRONN2's smaller, centred label cubes, the labels here have the same shape as
the raw cubes (``BatchCreatorImage`` accepts both). The z axis is anisotropic: a z voxel
is ``ANISO`` times as thick as an x/y voxel, so cells look flatter in z.

Example:
    >>> from trainer.synthetic import ensure_demo_data
    >>> demo = ensure_demo_data("data/demo")  # doctest: +SKIP
    >>> demo.data_init_kwargs()["valid_cubes"]  # doctest: +SKIP
    [2]
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trainer.runs import atomic_path, atomic_write_json

MANIFEST_FILE = "demo.json"
RAW_KEY = "raw"
LABEL_KEY = "lab"
INSTANCE_KEY = "ids"
ZARR_FOLDER = "demo.zarr"
PREVIEW_FILE = "preview.h5"
#: z voxels are this many times thicker than x/y voxels
ANISO = 2.0
#: bumped whenever the generator changes its output, so old datasets are regenerated
GENERATOR_VERSION = 2

# Mean distance (in x/y voxels) between the skeleton points of neighbouring cells; sets the
# cell calibre and with it the membrane fraction (about 30 % with 2-px membranes).
_CELL_SPACING = 13.0


@dataclasses.dataclass(frozen=True)
class DemoData:
    """Paths and parameters of a generated demo dataset.

    Attributes:
        out_dir: the dataset folder.
        raw_files: ``raw_<i>.h5`` paths (dataset ``'raw'``).
        label_files: ``labels_<i>.h5`` paths (dataset ``'lab'``).
        instance_files: ``neurons_<i>.h5`` paths (dataset ``'ids'``): the cell ids.
        preview_file: ``preview.h5`` path (dataset ``'raw'``).
        manifest: ``demo.json`` path.
        seed: generator seed.
        shape: (z, y, x) of each training/validation cube.
        preview_shape: (z, y, x) of the preview cube.
        valid_cubes: cube indices meant for validation.
    """

    out_dir: Path
    raw_files: list[Path]
    label_files: list[Path]
    preview_file: Path
    manifest: Path
    seed: int
    shape: tuple[int, int, int]
    preview_shape: tuple[int, int, int]
    valid_cubes: list[int]
    instance_files: list[Path] = dataclasses.field(default_factory=list)

    def data_init_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``BatchCreatorImage`` (a config's ``data_init_kwargs``)."""
        return {
            "d_path": str(self.out_dir),
            "l_path": str(self.out_dir),
            "d_files": [(p.name, RAW_KEY) for p in self.raw_files],
            "l_files": [(p.name, LABEL_KEY) for p in self.label_files],
            "valid_cubes": list(self.valid_cubes),
            "aniso_factor": ANISO,
        }

    def instance_files_kwarg(self) -> list[tuple[str, str]]:
        """A config's ``instance_files``: the neurons as ``(name, key)`` pairs, one per cube."""
        return [(p.name, INSTANCE_KEY) for p in self.instance_files]

    @property
    def zarr_path(self) -> Path:
        """The zarr v3 copy of the cubes (``ensure_demo_zarr`` writes it)."""
        return self.out_dir / ZARR_FOLDER

    def zarr_instance_files_kwarg(self) -> list[tuple[str, str]]:
        """``instance_files`` reading the neurons of the zarr copy (``ids_<i>``)."""
        path = str(self.zarr_path)
        return [(path, f"{INSTANCE_KEY}_{i}") for i in range(len(self.instance_files))]

    def zarr_data_init_kwargs(self) -> dict[str, Any]:
        """``data_init_kwargs`` reading the zarr copy (lazily, patch by patch)."""
        n = len(self.raw_files)
        path = str(self.zarr_path)
        return {
            **self.data_init_kwargs(),
            "d_path": None,
            "l_path": None,
            "d_files": [(path, f"{RAW_KEY}_{i}") for i in range(n)],
            "l_files": [(path, f"{LABEL_KEY}_{i}") for i in range(n)],
        }

    @property
    def preview_data_path(self) -> tuple[str, str]:
        """``(file, key)`` of the preview cube, for a config's ``preview_data_path``."""
        return (str(self.preview_file), RAW_KEY)


def make_demo_data(
    out_dir: str | os.PathLike,
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 128, 128),
    n_cubes: int = 3,
    preview_shape: tuple[int, int, int] = (32, 128, 128),
    overwrite: bool = False,
) -> DemoData:
    """Generate the demo dataset in ``out_dir`` (created if needed).

    The manifest ``demo.json`` is removed first and written last (atomically), so a
    folder with h5 files but no manifest is a half-made dataset. Each h5 file is written
    under a temporary name and then renamed.

    Args:
        out_dir: target folder.
        seed: generator seed; the same seed gives the same arrays, byte for byte.
        shape: (z, y, x) of each raw/label cube.
        n_cubes: number of raw/label pairs; the last one is marked for validation.
        preview_shape: (z, y, x) of the separate preview cube.
        overwrite: replace a complete dataset already in ``out_dir``.

    Returns:
        The paths and parameters of the new dataset.

    Raises:
        FileExistsError: ``out_dir`` already holds a complete dataset and ``overwrite`` is False.
        ValueError: a shape is not 3 positive ints or ``n_cubes < 1``.
    """
    shape = _check_shape(shape, "shape")
    preview_shape = _check_shape(preview_shape, "preview_shape")
    if int(n_cubes) < 1:
        raise ValueError(f"n_cubes must be >= 1, got {n_cubes!r}")
    n_cubes = int(n_cubes)
    out = Path(out_dir).expanduser()
    manifest = out / MANIFEST_FILE
    if manifest.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already holds a demo dataset ({manifest}); pass overwrite=True to replace "
            "it, or use ensure_demo_data() to reuse it"
        )
    out.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)

    # independent streams per cube, so a cube does not change when n_cubes does
    streams = np.random.SeedSequence(int(seed)).spawn(n_cubes + 1)
    raw_files, label_files, instance_files = [], [], []
    for i in range(n_cubes):
        raw, lab, ids = generate_cube_neurons(shape, np.random.default_rng(streams[i + 1]))
        raw_files.append(_write_h5(out / f"raw_{i}.h5", RAW_KEY, raw))
        label_files.append(_write_h5(out / f"labels_{i}.h5", LABEL_KEY, lab))
        instance_files.append(_write_h5(out / f"neurons_{i}.h5", INSTANCE_KEY, ids))
    preview_raw, _ = generate_cube(preview_shape, np.random.default_rng(streams[0]))
    preview_file = _write_h5(out / PREVIEW_FILE, RAW_KEY, preview_raw)

    demo = DemoData(
        out_dir=out,
        raw_files=raw_files,
        label_files=label_files,
        preview_file=preview_file,
        manifest=manifest,
        seed=int(seed),
        shape=shape,
        preview_shape=preview_shape,
        valid_cubes=[n_cubes - 1],
        instance_files=instance_files,
    )
    atomic_write_json(manifest, _manifest_dict(demo))
    return demo


def ensure_demo_data(
    out_dir: str | os.PathLike,
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 128, 128),
    n_cubes: int = 3,
    preview_shape: tuple[int, int, int] = (32, 128, 128),
) -> DemoData:
    """Return the demo dataset in ``out_dir``, generating it unless a matching one exists.

    A dataset matches when its manifest records the same seed, shapes, cube count and
    generator version and all its files exist. Anything else (no manifest, a half-made or
    different dataset) is regenerated in place.
    """
    shape = _check_shape(shape, "shape")
    preview_shape = _check_shape(preview_shape, "preview_shape")
    existing = load_demo_data(out_dir)
    if (
        existing is not None
        and existing.seed == int(seed)
        and existing.shape == shape
        and existing.preview_shape == preview_shape
        and len(existing.raw_files) == int(n_cubes)
    ):
        return existing
    return make_demo_data(out_dir, seed, shape, n_cubes, preview_shape, overwrite=True)


def ensure_demo_zarr(demo: DemoData, chunks: tuple[int, int, int] = (32, 64, 64)) -> Path:
    """Write the demo cubes as one zarr v3 group (``raw_<i>``, ``lab_<i>``, ``ids_<i>``: raw,
    membrane labels, neurons) unless present.

    The group is written to a temporary folder beside it and renamed into place, so a
    stopped write never leaves a half-made ``demo.zarr``.
    """
    import zarr

    target = demo.zarr_path
    # the keys in the stamp: a copy made before the neurons were copied too is made again
    keys = [RAW_KEY, LABEL_KEY, INSTANCE_KEY]
    stamp = {
        "seed": demo.seed,
        "shape": list(demo.shape),
        "n_cubes": len(demo.raw_files),
        "keys": keys,
    }
    if (target / "zarr.json").is_file():
        if json.loads((target / "zarr.json").read_text()).get("attributes", {}) == stamp:
            return target
        shutil.rmtree(target)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-zarr-", dir=demo.out_dir))
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3, attributes=stamp)
        cubes = zip(demo.raw_files, demo.label_files, demo.instance_files)
        for i, files in enumerate(cubes):
            for path, key in zip(files, keys):
                with h5py.File(path, "r") as f:
                    a = f[key][()]
                group.create_array(f"{key}_{i}", data=a, chunks=chunks[-a.ndim :])
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_demo_data(out_dir: str | os.PathLike) -> DemoData | None:
    """Read the manifest of a complete demo dataset; ``None`` if absent, stale or incomplete."""
    out = Path(out_dir).expanduser()
    manifest = out / MANIFEST_FILE
    try:
        m = json.loads(manifest.read_text())
        if m.get("generator_version") != GENERATOR_VERSION:
            return None
        demo = DemoData(
            out_dir=out,
            raw_files=[out / f for f, _ in m["d_files"]],
            label_files=[out / f for f, _ in m["l_files"]],
            preview_file=out / m["preview_file"],
            manifest=manifest,
            seed=int(m["seed"]),
            shape=tuple(int(s) for s in m["shape"]),
            preview_shape=tuple(int(s) for s in m["preview_shape"]),
            valid_cubes=[int(k) for k in m["valid_cubes"]],
            instance_files=[out / f for f, _ in m["i_files"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    files = [*demo.raw_files, *demo.label_files, *demo.instance_files, demo.preview_file]
    if not all(f.is_file() for f in files):
        return None
    return demo


def generate_cube(
    shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic EM cube and its membrane labels (pure: depends only on ``shape`` and ``rng``).

    Args:
        shape: (z, y, x) in voxels; z voxels are ``ANISO`` times thicker.
        rng: random generator (consumed).

    Returns:
        ``(raw, labels)``: uint8 grey values (dark membranes on bright cytoplasm) and int16
        labels (1 = membrane, 0 = inside), both of ``shape``.
    """
    raw, lab, _ = generate_cube_neurons(shape, rng)
    return raw, lab


def generate_cube_neurons(
    shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``generate_cube`` plus the ground-truth neurons it was drawn from (same ``rng`` use).

    Returns:
        ``(raw, labels, ids)``: as ``generate_cube``, and int32 cell ids of ``shape``: one id
        per cell (1, 2, ... in order of first appearance), 0 on the membrane voxels.
    """
    cells, n_cells = _cell_volume(shape, rng)
    membrane = _membrane(cells)
    raw = _render(cells, n_cells, membrane, rng)
    return raw, membrane.astype(np.int16), _cell_ids(cells, membrane)


def _cell_ids(cells: np.ndarray, membrane: np.ndarray) -> np.ndarray:
    """Consecutive ids 1..n for the cells present inside the membranes, 0 on the membranes."""
    inside = cells[~membrane]
    _, first, inverse = np.unique(inside, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(1, len(first) + 1, dtype=np.int32)
    ids = np.zeros(cells.shape, np.int32)
    ids[~membrane] = rank[inverse.ravel()]
    return ids


def _cell_volume(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Label volume of neuropil-like cells: nearest skeleton point of a set of random neurites.

    Each cell is a short random polyline (a neurite) or a single point (a bouton); every voxel
    belongs to the cell with the nearest skeleton point, measured in physical units on a
    smoothly warped grid so boundaries are curved rather than flat Voronoi facets.
    """
    phys = np.array(shape, float) * (ANISO, 1.0, 1.0)
    margin = 2 * _CELL_SPACING
    lo, hi = -margin, phys + margin
    volume = np.prod(hi - lo)
    # a neurite of length L has about L/_CELL_SPACING cells' worth of volume around it
    mean_len = 3.0 * _CELL_SPACING
    n_cells = max(2, int(volume / _CELL_SPACING**3 / (1 + mean_len / _CELL_SPACING) * 0.9))

    lengths = np.where(rng.random(n_cells) < 0.2, 0.0, rng.exponential(mean_len, n_cells))
    lengths = np.minimum(lengths, 6 * mean_len)
    starts = rng.uniform(lo, hi, (n_cells, 3))
    dirs = rng.normal(size=(n_cells, 3))
    dirs[:, 0] *= 0.5  # neurites run more often in-plane, as in a typical EM cut
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    bend = rng.normal(scale=0.3, size=(n_cells, 3))
    n_pts = np.maximum(1, np.ceil(lengths / 2.0).astype(int))
    owner = np.repeat(np.arange(n_cells), n_pts)
    t = np.concatenate([np.linspace(0.0, 1.0, n) for n in n_pts])
    seg_len = lengths[owner][:, None]
    pts = starts[owner] + seg_len * (t[:, None] * dirs[owner] + t[:, None] ** 2 * bend[owner])

    coords = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    coords *= np.array([ANISO, 1.0, 1.0], np.float32)
    coords += _smooth_displacement(shape, rng, amplitude=0.35 * _CELL_SPACING).reshape(3, -1).T
    from scipy.spatial import cKDTree  # here: a trainer reading existing data never needs it

    _, nearest = cKDTree(pts).query(coords, k=1, workers=-1)
    return owner[nearest].reshape(shape).astype(np.int32), n_cells


def _smooth_displacement(
    shape: tuple[int, int, int], rng: np.random.Generator, amplitude: float
) -> np.ndarray:
    """Random smooth 3-vector field of shape (3, *shape), computed coarse and upsampled."""
    from scipy import ndimage

    factor = 4
    coarse = tuple(max(2, -(-s // factor) + 1) for s in shape)
    field = rng.normal(size=(3, *coarse)).astype(np.float32)
    for c in range(3):
        field[c] = ndimage.gaussian_filter(field[c], sigma=1.0, mode="wrap")
    field *= amplitude / max(float(field.std()), 1e-6)
    zoom = [s / c for s, c in zip(shape, coarse)]
    return np.stack([ndimage.zoom(f, zoom, order=1)[tuple(slice(s) for s in shape)] for f in field])


def _membrane(cells: np.ndarray) -> np.ndarray:
    """Voxels next to another cell: both sides of a boundary in y/x (~2 px), one side in z."""
    mem = np.zeros(cells.shape, bool)
    for ax in (1, 2):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        diff = cells[tuple(a)] != cells[tuple(b)]
        mem[tuple(a)] |= diff
        mem[tuple(b)] |= diff
    mem[1:] |= cells[1:] != cells[:-1]
    return mem


def _render(
    cells: np.ndarray, n_cells: int, membrane: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Grey values: textured bright cytoplasm, dark organelles and membranes, blur, shot noise."""
    from scipy import ndimage

    shape = cells.shape
    img = rng.uniform(0.62, 0.82, n_cells).astype(np.float32)[cells]
    img += 0.05 * _smooth_noise(shape, rng, sigma=(0.75, 1.5, 1.5))

    # mitochondria: elongated dark blobs kept away from the membranes
    mito_field = _smooth_noise(shape, rng, sigma=(1.0, 3.0, 3.0))
    away = ~ndimage.binary_dilation(membrane, iterations=1)
    mito = (mito_field > 2.0) & away
    img[mito] *= 0.6
    # vesicles: small dark dots
    dots = (rng.random(shape, dtype=np.float32) < 0.003).astype(np.float32)
    img -= 1.2 * ndimage.gaussian_filter(dots, sigma=(0.5, 1.0, 1.0)) * away

    img[membrane] = rng.uniform(0.12, 0.25, n_cells).astype(np.float32)[cells[membrane]]
    img = ndimage.gaussian_filter(img, sigma=(0.4, 0.8, 0.8))
    np.clip(img, 0.0, 1.0, out=img)
    # shot noise of ~60 electrons at full brightness, plus a little read noise
    img = rng.poisson(img * 60.0).astype(np.float32) / 60.0
    img += rng.normal(scale=0.02, size=shape).astype(np.float32)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _smooth_noise(
    shape: tuple[int, ...], rng: np.random.Generator, sigma: tuple[float, ...]
) -> np.ndarray:
    """Gaussian-filtered white noise normalised to unit standard deviation."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma=sigma)
    return noise / max(float(noise.std()), 1e-6)


def _write_h5(path: Path, key: str, array: np.ndarray) -> Path:
    """Write ``array`` as ``path[key]`` under a temporary name, then rename."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(key, data=array)
    return path


def _manifest_dict(demo: DemoData) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": demo.seed,
        "shape": list(demo.shape),
        "preview_shape": list(demo.preview_shape),
        "aniso_factor": ANISO,
        "d_files": [[p.name, RAW_KEY] for p in demo.raw_files],
        "l_files": [[p.name, LABEL_KEY] for p in demo.label_files],
        "i_files": [[p.name, INSTANCE_KEY] for p in demo.instance_files],
        "preview_file": demo.preview_file.name,
        "valid_cubes": list(demo.valid_cubes),
        "labels": {"0": "inside", "1": "membrane"},
        "instance_labels": {"0": "membrane (no neuron)", "1...": "one id per cell"},
    }


def _check_shape(shape: Any, name: str) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"{name} must be 3 positive ints (z, y, x), got {shape!r}")
    return out
