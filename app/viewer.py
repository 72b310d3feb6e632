"""Neuroglancer, the connectomics field's viewer: volumes as aligned layers in a browser tab.

``python run.py view PATH[:KEY] ...`` and the dashboard's "Open in neuroglancer" buttons both
end here. A ``Layer`` is one 3-d array with its voxel grid (voxel size, offset in voxels,
unit) and its kind: ``image`` (raw data, probabilities) or ``segmentation`` (integer labels,
each id coloured). ``show`` puts layers into a ``neuroglancer.Viewer`` served by neuroglancer's
own web server (tornado, in a thread of this process, on a free port); the PyPI package ships
the compiled client, so nothing is fetched from the internet.

Alignment is by voxel coordinates: every layer lives in one (z, y, x) space whose unit is a
physical length; a layer's voxel size scales its voxels into it and its offset (the
OME-Zarr translation divided by the voxel size) moves its voxel 0. ``run.py predict --crop``
writes a translation, so its smaller grid lands over the raw voxels it was predicted from.

The server binds where ``set_bind_address`` says (loopback by default) and has no login: its
URLs carry a random token, and anyone who has the URL and can reach the port sees the
volumes. The dashboard therefore offers the viewer only where it has no login and is not
read-only, that is on a loopback dashboard (docs/dashboard.md, threat model).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.omezarr import declared_voxel_size
from trainer.volumes import Volume, VolumeError, open_volume

__all__ = [
    "KINDS",
    "Layer",
    "ViewerError",
    "evaluation_layers",
    "layer_grid",
    "layer_source",
    "open_layers",
    "parse_spec",
    "preview_layers",
    "set_bind_address",
    "show",
    "stop",
    "viewer_for",
    "volume_layers",
]

KINDS = ("image", "segmentation")
#: NGFF (UDUNITS) unit names -> neuroglancer's SI unit symbols
UNITS = {
    "nanometer": "nm",
    "micrometer": "um",
    "millimeter": "mm",
    "meter": "m",
    "angstrom": "nm",  # scaled below: neuroglancer has no angstrom symbol
}
#: viewers the dashboard keeps (each holds its cubes in memory; the oldest is dropped)
MAX_DASHBOARD_VIEWERS = 8
#: image layers of probabilities: white where the value is 1, transparent where it is 0
PROBABILITY_SHADER = """#uicontrol vec3 colour color(default="#ff00ff")
void main() {
  float v = toNormalized(getDataValue());
  emitRGBA(vec4(colour * v, v));
}
"""


class ViewerError(ValueError):
    """A volume cannot be shown (named in the message, with what to do)."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One 3-d volume in the viewer's (z, y, x) space.

    Attributes:
        name: the layer's name in neuroglancer's layer panel (unique within a viewer).
        data: a (z, y, x) array or anything with ``shape``, ``dtype`` and numpy slicing.
        kind: ``image`` or ``segmentation``.
        voxel_size: physical (z, y, x) size of one voxel, in ``unit``.
        offset: where voxel (0, 0, 0) lies, in voxels of this layer.
        unit: neuroglancer's unit symbol of ``voxel_size`` (``nm``, ``um``, ...).
        visible: shown when the viewer opens.
        probability: an image of values in [0, 1] drawn as a coloured overlay.
    """

    name: str
    data: Any
    kind: str = "image"
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[int, int, int] = (0, 0, 0)
    unit: str = "nm"
    visible: bool = True
    probability: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"layer {self.name!r}: kind {self.kind!r}, expected one of {KINDS}")
        if len(self.data.shape) != 3:
            raise ViewerError(
                f"layer {self.name!r} has shape {tuple(self.data.shape)}: a layer is (z, y, x)"
            )


# ---------------------------------------------------------------------------------------------
# volumes on disk


class _VolumeArray:
    """A ``Volume`` (or one channel of a (c, z, y, x) one) as neuroglancer reads arrays: shape,
    dtype and ``[slices]``, read box by box from disk; float16/64 are served as float32, the
    float type neuroglancer draws; signed ids of a segmentation as unsigned ones."""

    def __init__(self, volume: Volume, channel: int | None = None, ids: bool = False) -> None:
        self.volume, self.channel = volume, channel
        self.shape = tuple(volume.shape[-3:])
        dtype = np.dtype(volume.dtype)
        if ids and dtype.kind == "i":  # segment ids are unsigned in neuroglancer: -1 wraps
            dtype = np.dtype(f"uint{8 * dtype.itemsize}")
        self.dtype = np.dtype(np.float32) if dtype.kind == "f" else dtype

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        lead = () if self.channel is None else (slice(self.channel, self.channel + 1),)
        data = self.volume.read(lead + tuple(box))
        return np.asarray(data[0] if lead else data, self.dtype)


def parse_spec(spec: str) -> tuple[str, str]:
    """``PATH[:KEY]`` -> ``(path, key)``; a path that exists is taken whole (it may hold a
    colon), else the part after the last colon is the key.

    Example:
        >>> parse_spec("data/raw.h5:volumes/raw")
        ('data/raw.h5', 'volumes/raw')
    """
    if os.path.exists(os.path.expanduser(spec)) or ":" not in spec:
        return spec, ""
    path, _, key = spec.rpartition(":")
    return path, key


def _unit_and_scale(unit: str | None) -> tuple[str, float]:
    """neuroglancer's symbol of a declared unit and the factor into it; none or one it does
    not know (``pixel``) is taken as nanometres."""
    name = str(unit or "").lower()
    symbol = UNITS.get(name, name if name in UNITS.values() else "nm")
    return symbol, 0.1 if name == "angstrom" else 1.0


def _is_label_group(volume: Volume) -> bool:
    """An OME-Zarr ``image-label`` (what ``run.py segment`` writes): a segmentation."""
    parent = os.path.join(volume.path, volume.key.rpartition("/")[0])
    for name in (".zattrs", "zarr.json"):
        try:
            text = Path(parent, name).read_text(encoding="utf-8")
        except OSError:
            continue
        if "image-label" in text:
            return True
    return False


def guess_kind(volume: Volume) -> str:
    """``segmentation`` for an OME-Zarr label image or integer ids wider than a byte, else
    ``image`` (float probabilities, uint8 raw data); ``--segmentation`` says otherwise."""
    dtype = np.dtype(volume.dtype)
    if _is_label_group(volume):
        return "segmentation"
    return "segmentation" if dtype.kind in "iu" and dtype.itemsize > 1 else "image"


def volume_layers(
    spec: str, kind: str | None = None, voxel_size: Sequence[float] | None = None
) -> tuple[list[Layer], bool]:
    """The layers of one volume on disk, ``PATH[:KEY]`` as ``run.py view`` takes it, and
    whether the volume declares its voxel grid.

    A (c, z, y, x) volume (``run.py predict``'s probabilities) gives one image layer per
    channel, ``name[c]``; of two channels only the second (class 1) is shown at first. The
    voxel grid is what the volume declares (``trainer.omezarr.declared_voxel_size``), else
    ``voxel_size``, else 1 per axis with no offset.

    Raises:
        ViewerError: the volume cannot be opened or is not 3-d or 4-d.
    """
    path, key = parse_spec(spec)
    try:
        volume = open_volume(path, key)
        grid = declared_voxel_size(volume.path, volume.key, volume.format)
    except (VolumeError, OSError, KeyError) as e:
        raise ViewerError(f"cannot open {spec!r}: {e}") from None
    if len(volume.shape) not in (3, 4):
        raise ViewerError(
            f"{volume.name} has shape {volume.shape}: expected (z, y, x) or (c, z, y, x)"
        )
    unit, factor = _unit_and_scale(grid.unit if grid else None)
    size = grid.voxel_size if grid else tuple(voxel_size or (1.0, 1.0, 1.0))
    shift = grid.translation if grid else (0.0, 0.0, 0.0)
    offset = tuple(int(round(t / s)) for t, s in zip(shift, size))
    common = {"voxel_size": tuple(float(s) * factor for s in size), "offset": offset, "unit": unit}
    name = (volume.key.rstrip("/").split("/")[-1] if volume.key else "") or Path(path).stem
    if name.isdigit():  # an OME-Zarr level: the group's name says more
        name = Path(volume.key).parent.name or Path(path).stem
    kind = kind or guess_kind(volume)
    if kind == "segmentation" and np.dtype(volume.dtype).kind not in "iu":
        raise ViewerError(
            f"{volume.name} holds {volume.dtype} values: a segmentation holds integer ids; "
            "show it as an image (without --segmentation)"
        )
    ids = kind == "segmentation"
    if len(volume.shape) == 3:
        return [Layer(name, _VolumeArray(volume, ids=ids), kind, **common)], grid is not None
    n = volume.shape[0]
    if ids and n == 1:  # an OME-Zarr label image keeps the image's channel axis, of size 1
        return [Layer(name, _VolumeArray(volume, 0, ids=True), kind, **common)], grid is not None
    floats = np.dtype(volume.dtype).kind == "f"
    layers = [
        Layer(
            f"{name}[{c}]",
            _VolumeArray(volume, c, ids=ids),
            kind,
            visible=ids or n != 2 or c == 1,
            probability=floats,
            **common,
        )  # fmt: skip
        for c in range(n)
    ]
    return layers, grid is not None


def open_layers(
    images: Sequence[str],
    segmentations: Sequence[str] = (),
    voxel_size: Sequence[float] | None = None,
) -> list[Layer]:
    """The layers of ``run.py view``'s volumes: ``images`` by their guessed kind (see
    ``guess_kind``), ``segmentations`` as segmentation layers; names made unique.

    A volume that declares no voxel size takes ``voxel_size``, else the first declared one
    among the others (``run.py predict`` writes its output on its input's grid), so raw data
    without metadata still lies under its prediction.

    Raises:
        ViewerError: a volume cannot be opened, or no volume was named.
    """
    specs = [(s, None) for s in images] + [(s, "segmentation") for s in segmentations]
    if not specs:
        raise ViewerError("no volume to show: name one or more PATH[:KEY]")
    found = [volume_layers(spec, kind, voxel_size) for spec, kind in specs]
    declared = next((layers[0] for layers, has in found if has), None)
    out: list[Layer] = []
    seen: collections.Counter[str] = collections.Counter()
    for layers, has in found:
        for layer in layers:
            if not has and voxel_size is None and declared is not None:
                layer = dataclasses.replace(
                    layer, voxel_size=declared.voxel_size, unit=declared.unit
                )
            seen[layer.name] += 1
            if seen[layer.name] > 1:
                layer = dataclasses.replace(layer, name=f"{layer.name} ({seen[layer.name]})")
            out.append(layer)
    return out


# ---------------------------------------------------------------------------------------------
# the viewer


def set_bind_address(host: str = "127.0.0.1", port: int = 0) -> None:
    """Where neuroglancer's server listens (``port`` 0: a free one); before the first ``show``."""
    import neuroglancer

    neuroglancer.set_server_bind_address(host, bind_port=int(port))


def show(layers: Sequence[Layer], viewer: Any = None) -> Any:
    """``viewer`` (a new ``neuroglancer.Viewer`` if ``None``) showing exactly ``layers``; its
    ``get_viewer_url()`` is the page to open. The server starts on the first call."""
    import neuroglancer

    viewer = viewer if viewer is not None else neuroglancer.Viewer()
    with viewer.txn() as state:
        state.layers.clear()
        for layer in layers:
            ng = _ng_layer(neuroglancer, layer)
            state.layers.append(name=layer.name, layer=ng, visible=layer.visible)
        if layers:
            first = layers[0]
            state.dimensions = _space(neuroglancer, first.voxel_size, first.unit)
            state.position = [o + n / 2 for o, n in zip(first.offset, first.data.shape)]
    return viewer


def _space(neuroglancer: Any, voxel_size: Sequence[float], unit: str) -> Any:
    return neuroglancer.CoordinateSpace(
        names=["z", "y", "x"], units=[unit] * 3, scales=[float(v) for v in voxel_size]
    )


def _ng_layer(neuroglancer: Any, layer: Layer) -> Any:
    source = neuroglancer.LocalVolume(
        data=layer.data,
        dimensions=_space(neuroglancer, layer.voxel_size, layer.unit),
        volume_type=layer.kind,
        voxel_offset=list(layer.offset),
    )
    if layer.kind == "segmentation":
        return neuroglancer.SegmentationLayer(source=source)
    if layer.probability:
        return neuroglancer.ImageLayer(source=source, shader=PROBABILITY_SHADER, opacity=0.6)
    return neuroglancer.ImageLayer(source=source)


def stop() -> None:
    """Stop neuroglancer's server (its URLs stop working) and forget the dashboard's viewers."""
    if "neuroglancer" not in sys.modules:  # never started: nothing to stop, no import to pay
        return
    import neuroglancer

    with _LOCK:
        _VIEWERS.clear()
    neuroglancer.stop()


def layer_source(viewer: Any, name: str) -> Any:
    """The ``neuroglancer.LocalVolume`` behind layer ``name`` of ``viewer`` (its ``data``,
    ``dimensions``, ``voxel_offset``, ``shape``, ``volume_type``)."""
    url = viewer.state.layers[name].source[0].url  # python://volume/<viewer>.<volume token>
    return viewer.volume_manager.volumes[str(url).rpartition(".")[2]]


def layer_grid(viewer: Any, name: str) -> dict[str, Any]:
    """What ``viewer``'s state says of layer ``name``'s grid: ``{'voxel_size', 'offset',
    'unit', 'shape', 'kind'}`` (neuroglancer keeps lengths in metres: unit 'm')."""
    source = layer_source(viewer, name)
    return {
        "voxel_size": tuple(float(s) for s in source.dimensions.scales),
        "offset": tuple(int(o) for o in source.voxel_offset),
        "unit": source.dimensions.units[0],
        "shape": tuple(int(n) for n in source.shape),
        "kind": source.volume_type,
    }


# ---------------------------------------------------------------------------------------------
# the dashboard's viewers

_LOCK = threading.Lock()
#: (page, file, cube, threshold) -> viewer; bounded, oldest dropped (its URL stops working)
_VIEWERS: collections.OrderedDict[tuple, Any] = collections.OrderedDict()


def dashboard_url(key: tuple, layers: Sequence[Layer], host: str) -> str:
    """The URL of the dashboard's viewer for ``key`` showing ``layers`` (made on first use,
    kept for the next click, at most ``MAX_DASHBOARD_VIEWERS``); the server binds ``host``."""
    import neuroglancer

    with _LOCK:
        if not neuroglancer.server.is_server_running():
            set_bind_address(host, 0)
        viewer = _VIEWERS.pop(key, None)
        viewer = show(layers, viewer)
        _VIEWERS[key] = viewer
        while len(_VIEWERS) > MAX_DASHBOARD_VIEWERS:
            _VIEWERS.popitem(last=False)
        return viewer.get_viewer_url()


def viewer_for(url: str) -> Any:
    """The dashboard's viewer whose page is ``url``, or ``None`` (never made, or dropped)."""
    with _LOCK:
        return next((v for v in _VIEWERS.values() if v.get_viewer_url() == url), None)


def preview_layers(path: Path, block: str) -> list[Layer]:
    """Raw and class probabilities of cube ``block`` of a preview file, one grid (the cube's
    first plane at its z in the preview source).

    Raises:
        ViewerError: the file or cube cannot be read.
    """
    from trainer.runs import PreviewError, read_preview_block, read_preview_meta

    try:
        meta = read_preview_meta(path)
        if block not in meta.blocks:
            raise PreviewError(f"preview file {path} has no cube {block!r}")
        raw, prob = read_preview_block(path, block)
    except PreviewError as e:
        raise ViewerError(str(e)) from None
    offset = (int(meta.z0.get(block, 0)), 0, 0)
    n = prob.shape[0]
    layers = [Layer("raw", np.asarray(raw, np.float32), offset=offset)]
    layers += [
        Layer(
            f"probability class {c}",
            np.asarray(prob[c], np.float32),
            offset=offset,
            visible=n != 2 or c == 1,
            probability=True,
        )
        for c in range(n)
    ]
    return layers


def label_ids(label: np.ndarray) -> np.ndarray:
    """Binary labels (1, 0 and -1 for ignored) as segment ids: 1 foreground, 2 ignored, 0 none."""
    ids = np.zeros(label.shape, np.uint8)
    ids[label == 1] = 1
    ids[label < 0] = 2
    return ids


def evaluation_layers(
    raw: np.ndarray,
    prob: np.ndarray,
    label: np.ndarray,
    threshold: float,
    segments: np.ndarray,
    instances: np.ndarray | None = None,
) -> list[Layer]:
    """The evaluation page's cube as layers on one grid: raw, probabilities, true labels
    (``label_ids``), true neurons when the result has them, and the segmentation at
    ``threshold``, whose name says the threshold."""
    layers = [
        Layer("raw", raw),
        Layer("probability", prob, probability=True),
        Layer("true labels", label_ids(label), "segmentation", visible=False),
    ]
    if instances is not None:
        layers.append(Layer("true neurons", np.asarray(instances, np.uint64), "segmentation"))
    name = f"segmentation at {threshold:.4f}" if math.isfinite(threshold) else "segmentation"
    layers.append(Layer(name, np.asarray(segments, np.uint64), "segmentation"))
    return layers


def open_preview(files: Sequence[Path], index: Any, block: Any, host: str) -> str:
    """The URL of a viewer on cube ``block`` of the preview at slider position ``index``.

    Raises:
        ViewerError: no preview, or an unreadable file or cube.
    """
    from app import inputs
    from app import preview_view as pv

    block = inputs.text(block)
    if not files or block is None:
        raise ViewerError("no preview cube to open yet")
    path = pv.pick(list(files), index)
    return dashboard_url(("preview", str(path), block), preview_layers(path, block), host)


def open_evaluation(run_dir: Path, result: Any, cube: Any, threshold: Any, host: str) -> str:
    """The URL of a viewer on ``cube`` of ``result``'s probability cache: raw, probabilities,
    true labels, true neurons (a result evaluated with ``--instances``) and the segmentation
    at ``threshold`` (components of ``prob < threshold``, as the Neurons panel segments).

    Raises:
        ViewerError: a refused name, no probability cache, or an unreadable cube.
    """
    from app import evaluation_view as ev
    from app import inputs, paths
    from app import neurons_view as nv
    from trainer import runs
    from trainer.segmentation import threshold_components

    t = inputs.number(threshold, lo=0.0, hi=1.0)
    if t is None:
        raise ViewerError(f"threshold {threshold!r}: expected a number in [0, 1]")
    try:
        paths.check_name("cube", cube)
        path = ev.prob_cache_path(run_dir, result)
        raw, prob, label = runs.read_prob_cube(path, cube)
    except (paths.ClientPathError, ev.ResultViewError, runs.ProbCacheError) as e:
        raise ViewerError(str(e)) from None
    try:
        segments, instances, *_ = nv.segment_cube(run_dir, result, cube, t)
    except nv.NeuronViewError:  # no neuron scores: no true neurons, the page's default grouping
        segments, instances = threshold_components(prob, t), None
    layers = evaluation_layers(raw, prob, label, t, segments, instances)
    return dashboard_url(("evaluation", str(path), cube, round(t, 4)), layers, host)


def open_outputs(opener: Any, *args: Any) -> tuple[str | None, str, bool, str]:
    """The page's viewer link from ``opener(*args)``: ``(href, text, hidden, message)``."""
    try:
        url = opener(*args)
    except ViewerError as e:
        return None, "", True, str(e)
    return url, f"Open the viewer: {url}", False, ""


#: the link's outputs where the dashboard does not offer the viewer
NOT_OFFERED = (
    None,
    "",
    True,
    "The viewer is offered on a dashboard without a login that is not read-only "
    "(docs/dashboard.md, threat model); use `python run.py view` on the machine instead.",
)


def preview_outputs(files: Sequence[Path] | None, index: Any, block: Any, host: str | None):
    """The preview page's link outputs (``open_outputs``) for its button."""
    if host is None:
        return NOT_OFFERED
    return open_outputs(open_preview, files or [], index, block, host)


def evaluation_outputs(
    run_dir: Path | None, result: Any, cube: Any, threshold: Any, host: str | None
):
    """The evaluation page's link outputs (``open_outputs``) for its button."""
    if host is None:
        return NOT_OFFERED
    if run_dir is None:
        return None, "", True, "no such run"
    return open_outputs(open_evaluation, run_dir, result, cube, threshold, host)
