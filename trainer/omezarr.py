"""OME-Zarr (NGFF 0.4) image metadata, and the voxel size a volume on disk declares.

NGFF 0.4 is the version zarr-python, ome-zarr-py and neuroglancer all read; it lives in zarr
v2 containers (NGFF 0.5 needs zarr v3). An image is a zarr group whose ``multiscales``
attribute names its arrays (one per resolution level) with their axes and their
coordinate transformations: a ``scale`` (the voxel size) and an optional ``translation``
(where voxel 0 sits, in physical units). The builders here are pure; ``declared_voxel_size``
reads a volume's metadata only.

Example:
    >>> meta = image_metadata("prob", "0", (40.0, 8.0, 8.0), (80.0, 56.0, 56.0), "nanometer")
    >>> meta["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    [1.0, 40.0, 8.0, 8.0]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py

__all__ = ["NGFF_VERSION", "VoxelGrid", "declared_voxel_size", "image_metadata"]

NGFF_VERSION = "0.4"
#: attribute names holding a (z, y, x) voxel size on a plain HDF5 dataset or zarr array
VOXEL_SIZE_ATTRS = ("voxel_size", "resolution")


@dataclass(frozen=True)
class VoxelGrid:
    """Where a volume's voxels lie: size, origin and unit, each (z, y, x).

    Attributes:
        voxel_size: physical size of one voxel.
        translation: physical position of voxel (0, 0, 0).
        unit: the unit of both (an NGFF/UDUNITS name such as ``'nanometer'``), or ``None``.
        source: where the voxel size came from, for the record and messages.
    """

    voxel_size: tuple[float, float, float]
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    unit: str | None = None
    source: str = "default"


def image_metadata(
    name: str,
    path: str,
    voxel_size: Sequence[float],
    translation: Sequence[float] = (0.0, 0.0, 0.0),
    unit: str | None = None,
) -> dict[str, Any]:
    """The NGFF 0.4 group attributes of a one-level ``(c, z, y, x)`` image.

    Args:
        name: the image's name.
        path: the level-0 array's path inside the group.
        voxel_size: ``(z, y, x)`` physical voxel size.
        translation: ``(z, y, x)`` physical position of voxel 0; left out when all zero.
        unit: unit of the space axes (e.g. ``'nanometer'``); ``None`` leaves it out.
    """
    space = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in "zyx"]
    transforms: list[dict[str, Any]] = [
        {"type": "scale", "scale": [1.0, *(float(v) for v in voxel_size)]}
    ]
    if any(float(t) != 0.0 for t in translation):
        transforms.append(
            {"type": "translation", "translation": [0.0, *(float(t) for t in translation)]}
        )
    return {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": name,
                "axes": [{"name": "c", "type": "channel"}, *space],
                "datasets": [{"path": path, "coordinateTransformations": transforms}],
            }
        ]
    }


def declared_voxel_size(path: str, key: str, fmt: str) -> VoxelGrid | None:
    """The voxel grid a volume declares, or ``None`` where it declares none.

    Looked up in this order: the OME-Zarr ``multiscales`` of the group holding ``key`` (the
    level's ``scale`` and ``translation``, with the multiscale's own transformations), then a
    ``voxel_size`` or ``resolution`` attribute of the array, with a ``translation`` attribute
    beside it (HDF5: also of the file's root; N5: ``resolution`` or ``pixelResolution``,
    listed x first).

    Args:
        path: the container, as ``trainer.volumes.Volume.path``.
        key: the array's key (for OME-Zarr, the level's path).
        fmt: one of ``trainer.volumes.FORMATS``.
    """
    if fmt == "hdf5":
        with h5py.File(path, "r") as f:
            for attrs in (f[key].attrs, f.attrs):
                grid = _from_attrs(dict(attrs), f"{path}['{key}']")
                if grid is not None:
                    return grid
        return None
    parent, _, level = key.rpartition("/")
    grid = _from_multiscales(_folder_attrs(path, parent, fmt), level, f"{path}['{parent}']")
    if grid is not None:
        return grid
    attrs = _folder_attrs(path, key, fmt)
    if fmt == "n5":
        attrs = _n5_zyx(attrs)
    return _from_attrs(attrs, f"{path}['{key}']")


def _folder_attrs(path: str, key: str, fmt: str) -> dict[str, Any]:
    folder = os.path.join(path, key)
    names = {"zarr3": ["zarr.json"], "zarr2": [".zattrs"], "n5": ["attributes.json"]}[fmt]
    for name in names:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        return data.get("attributes", {}) if fmt == "zarr3" else data
    return {}


def _from_multiscales(attrs: dict[str, Any], level: str, where: str) -> VoxelGrid | None:
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        return None
    ms = multiscales[0]
    dataset = next((d for d in ms.get("datasets", []) if d.get("path") == level), None)
    if dataset is None:
        return None
    axes = ms.get("axes") or [{"name": a} for a in "zyx"[-len(_scale(dataset)) :]]
    axes = [{"name": a} if isinstance(a, str) else a for a in axes]  # NGFF 0.3 lists names
    scale, shift = _scale(dataset), _translation(dataset)
    outer_scale, outer_shift = _scale(ms), _translation(ms)
    spatial = [i for i, a in enumerate(axes) if a.get("type", "space") == "space"]
    spatial = [i for i in spatial if axes[i].get("name") in ("z", "y", "x")] or spatial
    if len(spatial) != 3 or len(scale) != len(axes):
        return None
    vs, tr = [], []
    for i in spatial:
        s = scale[i] * (outer_scale[i] if outer_scale else 1.0)
        t = (shift[i] if shift else 0.0) * (outer_scale[i] if outer_scale else 1.0)
        vs.append(float(s))
        tr.append(float(t + (outer_shift[i] if outer_shift else 0.0)))
    unit = axes[spatial[0]].get("unit")
    return VoxelGrid(tuple(vs), tuple(tr), unit, f"OME-Zarr scale of {where}")  # type: ignore[arg-type]


def _scale(node: dict[str, Any]) -> list[float]:
    for t in node.get("coordinateTransformations") or []:
        if t.get("type") == "scale" and "scale" in t:
            return [float(v) for v in t["scale"]]
    return []


def _translation(node: dict[str, Any]) -> list[float]:
    for t in node.get("coordinateTransformations") or []:
        if t.get("type") == "translation" and "translation" in t:
            return [float(v) for v in t["translation"]]
    return []


def _n5_zyx(attrs: dict[str, Any]) -> dict[str, Any]:
    """N5 (BigDataViewer, n5-viewer) lists a resolution x first."""
    pixel = attrs.get("pixelResolution")
    if isinstance(pixel, dict) and "dimensions" in pixel:
        return {"voxel_size": list(pixel["dimensions"])[::-1], "unit": pixel.get("unit")}
    if "resolution" in attrs:
        return {"voxel_size": list(attrs["resolution"])[::-1], "unit": attrs.get("unit")}
    return {}


def _from_attrs(attrs: dict[str, Any], where: str) -> VoxelGrid | None:
    for name in VOXEL_SIZE_ATTRS:
        value = attrs.get(name)
        if value is None:
            continue
        try:
            vs = tuple(float(v) for v in (json.loads(value) if isinstance(value, str) else value))
        except (TypeError, ValueError):
            continue
        if len(vs) == 3 and all(v > 0 for v in vs):
            unit = attrs.get("unit")
            unit = unit.decode() if isinstance(unit, bytes) else unit
            shift = _attr_translation(attrs.get("translation"))
            return VoxelGrid(vs, shift, unit or None, f"'{name}' attribute of {where}")  # type: ignore[arg-type]
    return None


def _attr_translation(value: Any) -> tuple[float, float, float]:
    """A ``translation`` attribute beside a voxel size (``run.py predict``'s HDF5 output writes
    one when it crops), else the origin."""
    try:
        shift = tuple(float(v) for v in (json.loads(value) if isinstance(value, str) else value))
    except (TypeError, ValueError):
        return (0.0, 0.0, 0.0)
    return shift if len(shift) == 3 else (0.0, 0.0, 0.0)  # type: ignore[return-value]
