"""Neuron labels of a whole predicted volume, block by block (``python run.py segment``).

The input is a finished prediction of ``run.py predict`` (``trainer.predictions``): its
membrane channel becomes uint64 neuron labels, written as an OME-Zarr label image aligned
with the prediction (same scale and translation). Memory holds a few blocks, never the
volume: the block edge follows ``memory_gb`` (``trainer.blockwise.block_shape_for``).

**Components** (``threshold``): a block's components of ``membrane < threshold``
(``cc3d``, 6 face neighbours) are merged across block faces by union-find
(``trainer.blockwise``). Pass 1 counts each block's components and keeps its six faces; the
merge makes one label table; pass 2 labels each block again and writes it through the table.
The result equals ``trainer.segmentation.threshold_components`` up to the ids.

**Seeded watershed** (ELEKTRONN2's ``seg_old`` as ``trainer.segmentation.seeded_watershed``):
``Quantile`` thresholds are resolved on the whole volume (one histogram pass); the seeds
are the blockwise components of the seed mask (as above, read with a halo deep enough for
the seed depth test), written with their global ids to a work array; then each block is
flooded with a ``halo`` of context around it (landscape, slack seed, flood and growth all
computed on the grown block) and only its core is kept. Every seed has one id in every
block, so regions meet across block borders without a merge. The result equals the
in-memory watershed wherever the flood that reaches a core voxel, and the membrane
distances it follows, lie within the halo; docs/data.md says what that costs.

**Resumable.** The output's record (``trainer.prediction_store``) lists the blocks done;
pass ``p`` of block ``i`` is entry ``p * n_blocks + i``. A block enters it only after its
faces (pass 1) or its labels (pass 2, 3) are durably on disk; the faces, the label table
and the seeds live in a work folder that the finished output no longer has. The blocks
finished within ``SYNC_SECONDS`` share one flush: their files are fsynced together, then
recorded in one save (a kill loses at most those seconds of work; per block, the fsyncs
cost a run of small blocks half its time: bench/bench_segment.py). A rerun with
another input or setting is refused, naming what differs (``overwrite`` starts again).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.blockwise import (
    BlockFaces,
    block_shape_for,
    block_table,
    grow_box,
    local_components,
    merge_faces,
    plan_blocks,
)
from trainer.prediction_store import PredictionError, PredictionOutput
from trainer.runs.atomic import atomic_write_bytes
from trainer.segmentation import (
    ELEKTRONN2_SCALE,
    Quantile,
    flood_landscape,
    grow_segments,
    seed_depth2,
    seeded_watershed,
    slack_mask,
    threshold_components,
)
from trainer.volumes import Volume

__all__ = [
    "LABELS_KEY",
    "SegmentSetting",
    "label_location",
    "membrane_map",
    "register_label",
    "release_freed_memory",
    "resolve_quantiles",
    "segment_in_memory",
    "segment_to_disk",
    "setting_from_run",
]

#: the label image's array (its one resolution level)
LABELS_KEY = "0"
#: the work folder inside an unfinished output: faces, label tables, seeds
WORK_DIR = ".segment-work"
#: working bytes per voxel of a block (components) and of a grown block (watershed: landscape,
#: markers, flood, scikit-image's queue, growth copies; measured about 70 beyond a fixed
#: 60 MB on one block of 96³ and of 128³)
BYTES_PER_VOXEL = {"components": 40.0, "seeded": 128.0}
DEFAULT_HALO = 24
#: blocks finished within this many seconds are fsynced and recorded together
SYNC_SECONDS = 1.0
#: of the memory budget, what is not the blocks': zarr's reading and writing threads and
#: their buffers, the merge's faces (measured about 30 MB beyond the imports, whatever the
#: block: bench/bench_segment.py)
RESERVE_BYTES = 48 * 2**20


@dataclasses.dataclass(frozen=True)
class SegmentSetting:
    """How membrane probabilities become neurons.

    Attributes:
        method: ``'components'`` (``threshold``) or ``'seeded'`` (the others).
        threshold: components of ``membrane < threshold`` (probability in [0, 1]).
        thresh, hi_thresh, lo_thresh, grow_it: ``seeded_watershed``'s parameters on the
            uint8 map (``hi_thresh``/``lo_thresh`` values or ``Quantile``s).
        scale: voxel size (z, y, x) for the watershed's distances.
        source: where the setting came from, for the record and the console.
    """

    method: str
    threshold: float | None = None
    thresh: float = 0.0
    hi_thresh: float | Quantile = 140.0
    lo_thresh: float | Quantile = 18.0
    grow_it: tuple[int, int, int] = (0, 0, 0)
    scale: tuple[float, float, float] = ELEKTRONN2_SCALE
    source: str = ""

    def identity(self) -> dict[str, Any]:
        """The setting as plain values, for the output's record."""
        d = dataclasses.asdict(self)
        d.pop("source")
        for k in ("hi_thresh", "lo_thresh"):
            v = getattr(self, k)
            d[k] = {"quantile": v.q} if isinstance(v, Quantile) else float(v)
        d["grow_it"], d["scale"] = list(self.grow_it), list(self.scale)
        if self.method == "components":
            d = {"method": "components", "threshold": float(self.threshold), "connectivity": 6}
        return d


def membrane_map(values: np.ndarray, dtype: Any, as_uint8: bool) -> np.ndarray:
    """A stored prediction's values as membrane probability: float32 in [0, 1], or with
    ``as_uint8`` ELEKTRONN2's ``uint8(p * 255)`` (a uint8 prediction as stored)."""
    values = np.asarray(values)
    if np.dtype(dtype) == np.uint8:
        return values if as_uint8 else values.astype(np.float32) / np.float32(255)
    p = np.clip(values.astype(np.float32), 0.0, 1.0)
    return (p * 255).astype(np.uint8) if as_uint8 else p


def segment_in_memory(membrane: np.ndarray, setting: SegmentSetting) -> np.ndarray:
    """The whole-volume segmentation ``segment_to_disk`` equals (up to ids): ``membrane``
    from ``membrane_map`` (float for components, uint8 for the watershed)."""
    if setting.method == "components":
        return threshold_components(membrane, setting.threshold, 6)
    return seeded_watershed(membrane, setting.thresh, setting.hi_thresh, setting.lo_thresh,
                            setting.grow_it, setting.scale)  # fmt: skip


def resolve_quantiles(histogram: np.ndarray, value: float | Quantile, above: bool) -> float:
    """``Quantile.of`` from a 256-bin histogram of a uint8 map (a fixed value as it is)."""
    if not isinstance(value, Quantile):
        return float(value)
    values = np.flatnonzero(histogram)
    at_or_below = np.cumsum(histogram[values])
    need = float(value.q) * at_or_below[-1]
    if not above:
        return float(values[min(np.searchsorted(at_or_below, need), len(values) - 1)])
    i = np.searchsorted(at_or_below, need, side="right") - 1
    return float(values[i]) if i >= 0 else float(values[0]) - 1.0


def label_location(prob_path: str | os.PathLike, output: str | os.PathLike) -> str | None:
    """The label name when ``output`` is ``<prob>/labels/<name>`` of an OME-Zarr prediction,
    ``None`` for a standalone output elsewhere.

    Raises:
        PredictionError: ``output`` lies inside the prediction but elsewhere.
    """
    prob, out = Path(prob_path).resolve(), Path(output).resolve()
    if prob.is_file() or prob not in out.parents:
        return None
    rel = out.relative_to(prob).parts
    if len(rel) != 2 or rel[0] != "labels" or rel[1].startswith("."):
        raise PredictionError(
            f"{output} lies inside the prediction {prob_path} but not at its labels: give "
            f"{Path(prob_path) / 'labels' / 'NAME'} (an OME-Zarr label image) or a path outside it"
        )
    return rel[1]


def register_label(prob_path: str | os.PathLike, name: str) -> None:
    """List ``name`` in ``<prob>/labels/.zattrs`` (NGFF's ``labels`` group), atomically."""
    import json

    from trainer.runs.atomic import atomic_write_json

    folder = Path(prob_path) / "labels"
    folder.mkdir(exist_ok=True)
    if not (folder / ".zgroup").exists():
        atomic_write_json(folder / ".zgroup", {"zarr_format": 2})
    try:
        attrs = json.loads((folder / ".zattrs").read_text())
    except (OSError, ValueError):
        attrs = {}
    names = list(attrs.get("labels", []))
    if name not in names:
        atomic_write_json(folder / ".zattrs", {**attrs, "labels": [*names, name]})


#: arrays above this size are mapped from the OS and returned to it when freed
MMAP_THRESHOLD = 1 << 20


def release_freed_memory() -> bool:
    """Make glibc hand arrays over ``MMAP_THRESHOLD`` back to the OS when they are freed;
    whether it could (``False`` off glibc). Call once per process, from the shell.

    By default glibc raises that threshold (to 32 MB) after the first large array is freed
    and then keeps freed arrays in per-thread caches: zarr's and ``edt``'s threads each kept
    tens of MB, and the watershed's peak went 50 % over ``--memory-gb``
    (bench/bench_segment.py, docs/data.md). A fixed threshold turns that dynamic off.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    m_mmap_threshold = -3  # glibc's malloc.h
    return mallopt is not None and mallopt(m_mmap_threshold, MMAP_THRESHOLD) == 1


Progress = Callable[[str, int, int, float], None]


def segment_to_disk(
    prob: Volume,
    prob_record: dict[str, Any],
    output: str | os.PathLike,
    setting: SegmentSetting,
    *,
    channel: int = 1,
    memory_gb: float = 2.0,
    block: Sequence[int] | None = None,
    halo: int = DEFAULT_HALO,
    label_name: str | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Path:
    """Segment ``prob``'s ``channel`` into uint64 labels at ``output['0']``; resume where it
    stopped.

    Args:
        prob: the prediction, ``(classes, z, y, x)`` (``trainer.predictions.read_prediction``).
        prob_record: its record (voxel size, translation and unit are copied).
        output: a zarr folder (an OME-Zarr label image, NGFF 0.4); ``<prob>/labels/<name>``
            with ``label_name`` set makes it one of the prediction's labels.
        setting: what to compute.
        channel: the membrane class of the prediction.
        memory_gb: the working memory to stay within beyond the interpreter and libraries
            (sets the block shape; ``RESERVE_BYTES`` of it are not the blocks').
        block: the block shape instead.
        halo: voxels of context around each watershed block.
        label_name: the name under ``<prob>/labels`` (``label_location``), or ``None``.
        progress: called after each block as ``(pass name, blocks done, blocks in all,
            seconds)``.
        overwrite: start again over an existing output.

    Raises:
        PredictionError: a bad channel, budget or block, or ``output`` holds something else.
    """
    if len(prob.shape) != 4 or not 0 <= channel < prob.shape[0]:
        raise PredictionError(
            f"{prob.name} has shape {prob.shape}: expected (classes, z, y, x) with a membrane "
            f"class {channel}; give --channel C for another class"
        )
    shape = tuple(int(n) for n in prob.shape[1:])
    seeded = setting.method == "seeded"
    reader = _Reader(prob, channel)
    if block is None:
        budget = max(memory_gb * 2**30 - RESERVE_BYTES, 0.0)
        try:
            block = block_shape_for(shape, budget, BYTES_PER_VOXEL[setting.method],
                                    halo if seeded else 0)  # fmt: skip
        except ValueError:
            smallest = block_shape_for(shape, 2**40, 1.0)  # any block: the volume's shape
            need = BYTES_PER_VOXEL[setting.method] * np.prod(
                [min(16, n) + 2 * (halo if seeded else 0) for n in smallest]
            )
            raise PredictionError(
                f"--memory-gb {memory_gb:g} holds no block: {setting.method} needs at least "
                f"{(need + RESERVE_BYTES) / 2**30:.3g} GB here (with {RESERVE_BYTES >> 20} MB "
                "for reading and writing); give a larger --memory-gb"
            ) from None
    blocks, grid = plan_blocks(shape, block)
    if seeded:
        setting = _resolved(setting, reader, blocks)
    path = Path(output)
    if path.suffix.lower() in (".h5", ".hdf5"):
        raise PredictionError(
            f"{output}: segment writes an OME-Zarr label image, a folder; give a name "
            "such as neurons.zarr"
        )
    record = _record(prob, prob_record, shape, block, halo if seeded else 0, setting, channel)
    out = PredictionOutput.open(path, LABELS_KEY, record, _attrs(prob_record, label_name),
                                overwrite=overwrite)  # fmt: skip
    run = _Passes(out, blocks, grid, path / WORK_DIR, progress, 3 if seeded else 2)
    try:
        # a complete output (its work folder gone) has nothing left to do
        unfinished = len(out.done) < run.n_passes * len(blocks)
        if unfinished and seeded:
            seeds = PredictionOutput.open(run.work / "seeds.zarr", "seeds", {**record, "done": []},
                                          {"zarr": {}, "hdf5": {}})  # fmt: skip
            seed_mask = _seed_mask(reader, setting, shape)
            run.components(0, seed_mask, lambda box, v: seeds.write(box, v[None], sync=False))
            run.flood(reader, seeds, setting, halo)
        elif unfinished:
            run.components(0, lambda box: reader.below(box, setting.threshold),
                           lambda box, v: out.write(box, v[None], sync=False))  # fmt: skip
        out.finish()
    finally:
        out.close()
    shutil.rmtree(path / WORK_DIR, ignore_errors=True)
    return path


def _resolved(setting: SegmentSetting, reader: _Reader, blocks: list) -> SegmentSetting:
    """``setting`` with its ``Quantile`` thresholds as values of the whole map (one pass)."""
    if not any(isinstance(v, Quantile) for v in (setting.hi_thresh, setting.lo_thresh)):
        return setting
    hist = np.zeros(256, np.int64)
    for box in blocks:
        hist += np.bincount(reader.uint8(box).ravel(), minlength=256)
    return dataclasses.replace(
        setting,
        hi_thresh=resolve_quantiles(hist, setting.hi_thresh, above=True),
        lo_thresh=resolve_quantiles(hist, setting.lo_thresh, above=False),
        source=f"{setting.source}; quantiles {_q(setting.hi_thresh)}, {_q(setting.lo_thresh)} "
        "of this volume",
    )


def _q(v: Any) -> str:
    return f"q{v.q:g}" if isinstance(v, Quantile) else f"{v:g}"


def _seed_mask(
    reader: _Reader, s: SegmentSetting, shape: tuple[int, ...]
) -> Callable[[tuple[slice, ...]], np.ndarray]:
    """The seed voxels of a block, as ``seeded_watershed`` finds them in the whole volume:
    deeper than ``thresh`` inside ``map <= lo``, read with a halo that holds that depth."""
    reach = 0 if s.thresh <= 0 else int(math.ceil(s.thresh / min(s.scale))) + 1

    def mask(box: tuple[slice, ...]) -> np.ndarray:
        if s.thresh < 0:
            return np.ones([b.stop - b.start for b in box], bool)
        grown = grow_box(box, reach, shape)
        pred = reader.uint8(grown)
        if s.thresh == 0:
            seeds = pred <= s.lo_thresh
        else:
            seeds = seed_depth2(pred, s.lo_thresh, s.scale, _threads()) > float(s.thresh) ** 2
        return seeds[_inner(box, grown)]

    return mask


def _threads() -> int:
    """Threads of the distance transforms: all cores, as ``seeded_watershed``'s."""
    return os.cpu_count() or 1


def _inner(box: Sequence[slice], grown: Sequence[slice]) -> tuple[slice, ...]:
    return tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown))


class _Reader:
    """The membrane channel of the prediction, box by box."""

    def __init__(self, prob: Volume, channel: int) -> None:
        self.prob, self.channel = prob, channel

    def _raw(self, box: tuple[slice, ...]) -> np.ndarray:
        return self.prob.read((slice(self.channel, self.channel + 1), *box))[0]

    def below(self, box: tuple[slice, ...], threshold: float) -> np.ndarray:
        """``membrane_map(...) < threshold`` without making the float map: the stored values
        compared in float32 (clipping to [0, 1] changes no answer for a threshold in (0, 1])."""
        raw, t = self._raw(box), np.float32(threshold)
        if self.prob.dtype == np.uint8:
            return (np.arange(256, dtype=np.float32) / np.float32(255) < t)[raw]
        return raw < t

    def float(self, box: tuple[slice, ...]) -> np.ndarray:
        return membrane_map(self._raw(box), self.prob.dtype, as_uint8=False)

    def uint8(self, box: tuple[slice, ...]) -> np.ndarray:
        return membrane_map(self._raw(box), self.prob.dtype, as_uint8=True)


class _Passes:
    """The passes over the blocks, each block's entry in the output's record once done."""

    def __init__(self, out: PredictionOutput, blocks: list, grid: tuple, work: Path,
                 progress: Progress | None, n_passes: int) -> None:  # fmt: skip
        self.out, self.blocks, self.grid, self.work = out, blocks, grid, work
        self.progress, self.n_passes = progress, n_passes
        self.n_labels = 0
        self.start = self.synced = time.monotonic()
        #: blocks written but not yet durable: (record entry, pass name), and their files
        self.pending: list[tuple[int, str]] = []
        self.pending_files: list[Path] = []
        work.mkdir(parents=True, exist_ok=True)

    def _todo(self, p: int) -> list[int]:
        n = len(self.blocks)
        return [i for i in range(n) if p * n + i not in self.out.done]

    def _done(self, p: int, i: int, name: str, files: Sequence[Path]) -> None:
        """Block ``i`` of pass ``p`` is written (``files``); recorded at the next sync."""
        self.pending.append((p * len(self.blocks) + i, name))
        self.pending_files.extend(files)
        if time.monotonic() - self.synced >= SYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        """fsync the pending blocks' files, then record them all in one save."""
        if not self.pending:
            return
        self.out.sync(self.pending_files)
        self.out.mark_done(*(entry for entry, _name in self.pending))
        pending, self.pending, self.pending_files = self.pending, [], []
        self.synced = time.monotonic()
        if self.progress:
            total = self.n_passes * len(self.blocks)
            done = len(self.out.done) - len(pending)
            for k, (_entry, name) in enumerate(pending, 1):
                self.progress(name, done + k, total, self.synced - self.start)

    def components(self, p: int, mask_of: Callable, write: Callable) -> None:
        """Passes ``p`` (faces and counts) and ``p + 1`` (labels through the merged table)."""
        last = None
        for i in self._todo(p):
            c = local_components(mask_of(self.blocks[i]))
            last = (i, c.labels)
            buf = io.BytesIO()
            np.savez(buf, count=np.int64(c.count), **c.faces.as_arrays())
            faces = self.work / f"faces-{i}.npz"
            atomic_write_bytes(faces, buf.getvalue(), fsync=False)
            self._done(p, i, "components", [faces])
        self._sync()
        table, counts = self._table()
        self.n_labels = int(table.max()) if table.size else 0
        # backwards: the block pass p ended with is labelled already
        for i in reversed(self._todo(p + 1)):
            if last is not None and last[0] == i:
                labels = last[1]
            else:
                labels = local_components(mask_of(self.blocks[i])).labels
            last = None
            ids = block_table(table, counts, i)
            # a table that keeps every id (one block, or no merge into it) needs no lookup: a
            # widening copy costs a quarter of the gather
            same = np.array_equal(ids, np.arange(len(ids), dtype=ids.dtype))
            files = write(self.blocks[i], labels.astype(np.uint64) if same else ids[labels])
            self._done(p + 1, i, "labels" if self.n_passes == 2 else "seeds", files)
        self._sync()

    def _table(self) -> tuple[np.ndarray, list[int]]:
        """The merged label table and the blocks' counts (made once, kept in the work folder)."""
        path = self.work / "table.npz"
        if path.exists():
            with np.load(path) as f:
                return f["table"], [int(c) for c in f["counts"]]
        faces = _Faces(self.work)
        try:
            counts = [faces.count(i) for i in range(len(self.blocks))]
            table = merge_faces(self.grid, counts, faces)
        except FileNotFoundError as e:
            raise PredictionError(
                f"{self.out.path}: the work file {e.filename} of a finished pass is gone; "
                "--overwrite starts the segmentation again"
            ) from None
        buf = io.BytesIO()
        np.savez(buf, table=table, counts=np.asarray(counts, np.int64))
        atomic_write_bytes(path, buf.getvalue())
        return table, counts

    def flood(self, reader: _Reader, seeds: PredictionOutput, s: SegmentSetting, halo: int) -> None:
        """Pass 2: each block flooded with ``halo`` of context, its core kept."""
        n_seeds = self.n_labels
        shape = tuple(self.out.record["shape"][1:])
        for i in self._todo(2):
            box = self.blocks[i]
            grown = grow_box(box, halo, shape)
            markers = seeds.read(grown)[0].astype(np.int64)
            ws = _flood_block(reader.uint8(grown), markers, n_seeds, s)
            files = self.out.write(box, ws[None, *_inner(box, grown)].astype(np.uint64), sync=False)
            self._done(2, i, "watershed", files)
        self._sync()


def _flood_block(
    pred: np.ndarray, markers: np.ndarray, n_seeds: int, s: SegmentSetting
) -> np.ndarray:
    """``seeded_watershed``'s flood on one grown block, with global seed ids as markers."""
    from skimage.segmentation import watershed

    if n_seeds == 0:
        return np.zeros(pred.shape, np.int64)
    markers[slack_mask(pred)] = n_seeds + 1
    if not markers.any():
        return np.zeros(pred.shape, np.int64)
    ws = watershed(flood_landscape(pred, s.hi_thresh, s.scale, _threads()), markers)
    ws[ws == n_seeds + 1] = 0
    return grow_segments(ws, s.grow_it)


class _Faces:
    """Block faces loaded from the work folder when the merge asks for them."""

    def __init__(self, work: Path) -> None:
        self.work = work

    def __getitem__(self, i: int) -> BlockFaces:
        with np.load(self.work / f"faces-{i}.npz") as f:
            return BlockFaces.from_arrays(dict(f))

    def count(self, i: int) -> int:
        with np.load(self.work / f"faces-{i}.npz") as f:
            return int(f["count"])


def _record(prob: Volume, prob_record: dict, shape: tuple[int, ...], block: Sequence[int],
            halo: int, setting: SegmentSetting, channel: int) -> dict[str, Any]:  # fmt: skip
    from trainer.predictions import input_fingerprint

    return {
        "shape": [1, *shape],
        "dtype": "uint64",
        "axes": ["c", "z", "y", "x"],
        "tile": [int(b) for b in block],
        "padding": f"halo {halo}",
        "offsets": [0, 0, 0],
        "voxel_size": prob_record.get("voxel_size"),
        "translation": prob_record.get("translation"),
        "unit": prob_record.get("unit"),
        "input": {
            "path": os.path.abspath(prob.path),
            "key": prob.key,
            "shape": list(prob.shape),
            "dtype": str(prob.dtype),
            "fingerprint": input_fingerprint(prob),
            "channel": channel,
        },
        "model": setting.identity(),
        "source": setting.source,
        "done": [],
        "complete": False,
    }


def _attrs(prob_record: dict, label_name: str | None) -> dict[str, Any]:
    from trainer.omezarr import NGFF_VERSION, image_metadata

    vs = prob_record.get("voxel_size") or [1.0, 1.0, 1.0]
    tr = prob_record.get("translation") or [0.0, 0.0, 0.0]
    meta = image_metadata(label_name or "neurons", LABELS_KEY, vs, tr, prob_record.get("unit"))
    source = {"image": "../../"} if label_name else {}
    meta["image-label"] = {"version": NGFF_VERSION, "source": source}
    return {
        "zarr": meta,
        "hdf5": {"axes": "c,z,y,x", "voxel_size": list(vs), "translation": list(tr),
                 "unit": prob_record.get("unit") or ""},
    }  # fmt: skip


def setting_from_run(
    run_dir: str | os.PathLike,
    threshold: float | None = None,
    seeded: bool = False,
    result: str | None = None,
) -> SegmentSetting:
    """The setting ``run.py segment`` uses: ``threshold`` if given; with ``seeded`` the
    seeded-watershed setting with the lowest mean adapted Rand error over the validation
    cubes of ``evaluate --instances``' result (``result``, else the one the saved threshold
    names, else the newest with neuron scores); else the threshold saved on the evaluation
    page (``eval/threshold.json``).

    Raises:
        PredictionError: nothing to take the setting from (names the file and what to do).
    """
    from trainer import runs

    if threshold is not None and not seeded:
        if not 0.0 < threshold <= 1.0:
            raise PredictionError(f"--threshold {threshold}: expected a probability in (0, 1]")
        return SegmentSetting("components", threshold=float(threshold), source="--threshold")
    saved = runs.read_threshold(run_dir)
    if not seeded:
        if saved is None:
            raise PredictionError(
                f"{runs.threshold_path(run_dir)}: no threshold saved; save one on the evaluation "
                "page, or give --threshold T or --seeded"
            )
        return SegmentSetting("components", threshold=float(saved["threshold"]),
                              source=f"{runs.threshold_path(run_dir)}")  # fmt: skip
    names = [result] if result else [saved["result"]] if saved else runs.list_results(run_dir)
    for name in names:
        path = runs.result_path(run_dir, name)
        try:
            cubes = runs.read_neurons(path)
        except runs.ResultFileError:
            if result:
                raise PredictionError(
                    f"{path}: no readable evaluation result; see --result"
                ) from None
            continue
        if cubes:
            return _best_seeded(cubes, f"{path} (seeded watershed, evaluate --instances)")
    raise PredictionError(
        f"{runs.eval_dir(run_dir)}: no result with neuron scores; run `python run.py evaluate "
        f"{run_dir} --instances` first, or segment with the saved threshold (no --seeded)"
    )


def _best_seeded(cubes: list[dict[str, Any]], source: str) -> SegmentSetting:
    """The grid row with the lowest adapted Rand error averaged over the cubes."""
    are = np.nanmean([np.asarray(c["search/adapted_rand_error"], float) for c in cubes], axis=0)
    row = int(np.nanargmin(are)) if np.isfinite(are).any() else 0
    c = cubes[0]

    def threshold(k: str) -> float | Quantile:
        q = float(c[f"search/{k}_quantile"][row])
        return Quantile(q) if math.isfinite(q) else float(c[f"search/{k}_thresh"][row])

    return SegmentSetting(
        "seeded",
        thresh=float(c["search/thresh"][row]),
        hi_thresh=threshold("hi"),
        lo_thresh=threshold("lo"),
        grow_it=tuple(int(c[f"search/grow_{a}"][row]) for a in "zyx"),  # type: ignore[arg-type]
        source=source,
    )
