"""From a membrane probability map to neurons, and the neurons' split and merge errors.

Pure functions of arrays (no files, no processes except ``optimise_segmentation``'s pool):

* ``threshold_components``: membrane probability < threshold, then connected components
  (``cc3d``; 6-connectivity by default; ``"aniso"`` for cubes whose z voxels are much thicker).
* ``seeded_watershed``: ELEKTRONN2's seeded segmentation (``seg_old``) with its parameters
  ``thresh``, ``hi_thresh``, ``lo_thresh``, ``grow_it`` on a uint8 probability map; the two
  probability thresholds may be ``Quantile``s of the map instead of fixed values. Its distance
  transforms are the ``edt`` package's (anisotropic, several labels in one pass).
* ``remove_small_segments``: segments below a size become 0 (unassigned).
* ``segmentation_scores`` (``trainer.neuron_scores``, re-exported): VOI split/merge (bits),
  adapted Rand error with precision and recall, ELEKTRONN2's Rand index, and the number of
  segments, splits and merges, all from one contingency-table pass (``contingency``); true
  ids in ``ignore_labels`` are not scored; ``convention="cremi"`` for CREMI's Rand error.
* ``optimise_segmentation``: ELEKTRONN2's grid search over seeded segmentations (``DEFAULT_GRID``:
  thresholds relative to the map; ``ELEKTRONN2_GRID``: ELEKTRONN2's fixed ones). Settings
  share what does not depend on them: one distance transform per ``hi_thresh`` and per
  ``lo_thresh``, one flood per (``thresh``, ``hi_thresh``, ``lo_thresh``).

The scores' conventions (scikit-image's by default, CREMI's on request) and an example are in
``trainer.neuron_scores``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import cc3d
import edt
import numpy as np
from scipy import ndimage

from trainer.neuron_scores import (
    CONVENTIONS,
    Contingency,
    SegmentationScores,
    check_labels,
    contingency,
    segmentation_scores,
)

__all__ = [
    "CONVENTIONS",
    "DEFAULT_GRID",
    "ELEKTRONN2_GRID",
    "Contingency",
    "Quantile",
    "SegmentationScores",
    "SegmentationSearch",
    "check_labels",
    "contingency",
    "grow_segments",
    "optimise_segmentation",
    "remove_small_segments",
    "resolve_threshold",
    "flood_landscape",
    "label_components",
    "seed_depth2",
    "seeded_watershed",
    "slack_mask",
    "segmentation_scores",
    "threshold_components",
]

#: ELEKTRONN2's grid: 4 thresholds x 4 grow iterations x 3 high x 3 low thresholds = 144
ELEKTRONN2_GRID: dict[str, list[Any]] = {
    "thresh": [37, 40, 43, 56],
    "grow_it": [(0, 0, 0), (1, 3, 3), (2, 6, 6), (3, 6, 6)],
    "hi_thresh": [235, 240, 245],
    "lo_thresh": [1, 2, 3],
}


@dataclasses.dataclass(frozen=True)
class Quantile:
    """A probability threshold given as a fraction of the voxels of the map it is applied to.

    As ``lo_thresh`` of ``seeded_watershed``, ``Quantile(0.3)`` is the smallest value ``v`` with
    at least 30 % of the voxels ``<= v`` (seed voxels); as ``hi_thresh``, ``Quantile(0.8)`` is
    the largest ``v`` with at least 20 % of the voxels ``> v`` (hard membrane). Ties go to the
    seeds and to the membrane, so a sure net's map (most voxels 0 or 255) keeps both, and the
    same setting finds seeds in a sharp map and in a noisy one.

    Example:
        >>> a = np.array([0, 0, 0, 1, 2, 255, 255, 255], np.uint8)
        >>> Quantile(0.3).of(a), Quantile(0.8).of(a, above=True)
        (0.0, 2.0)
    """

    q: float

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.q) <= 1.0:
            raise ValueError(f"Quantile({self.q!r}): expected a fraction of the voxels in [0, 1]")

    def of(self, pred: np.ndarray, above: bool = False) -> float:
        """The threshold ``v`` in ``pred``: at least ``q`` of the voxels ``<= v``; with ``above``,
        at least ``1 - q`` of them ``> v`` (one below the smallest value when that takes them
        all)."""
        values, counts = np.unique(np.asarray(pred), return_counts=True)
        at_or_below = np.cumsum(counts)
        need = float(self.q) * at_or_below[-1]
        if not above:
            return float(values[min(np.searchsorted(at_or_below, need), len(values) - 1)])
        i = np.searchsorted(at_or_below, need, side="right") - 1
        return float(values[i]) if i >= 0 else float(values[0]) - 1.0


#: the default grid: 12 settings with thresholds relative to the map. Seeds are the regions of
#: the 20/30/40 % lowest voxels, whole (``thresh`` 0 nm: right for a noisy map) or without
#: their outermost in-plane voxel (9 nm: cuts the thin bridges of a sure net's map); they
#: flood the distance map of the 25 % or 15 % highest voxels. ELEKTRONN2's fixed thresholds
#: (seeds where ``pred <= 3``, >= 37 nm deep) find no seed in a net's noisy map of small cells;
#: see docs/evaluation.md, "Neurons", for what each grid scores on the demo.
DEFAULT_GRID: dict[str, list[Any]] = {
    "thresh": [0, 9],
    "grow_it": [(0, 0, 0)],
    "hi_thresh": [Quantile(0.75), Quantile(0.85)],
    "lo_thresh": [Quantile(0.2), Quantile(0.3), Quantile(0.4)],
}

#: ELEKTRONN2's voxel size (z, y, x) in nm for the distance transforms of the seeded watershed
ELEKTRONN2_SCALE = (20.0, 9.0, 9.0)

#: the neighbourhoods ``cc3d`` labels with; ``"aniso"`` is not one of them (see ``label_components``)
_CC3D_CONNECTIVITY = (6, 18, 26)


def _aniso_structure() -> np.ndarray:
    # in-plane 8-neighbours, across z only the face neighbour: a diagonal step in z is much
    # longer than one in y/x when z voxels are thicker
    st = np.zeros((3, 3, 3), bool)
    st[1] = True
    st[0, 1, 1] = st[2, 1, 1] = True
    return st


def label_components(mask: np.ndarray, connectivity: int | str = 6) -> np.ndarray:
    """The connected components of a boolean volume: int32 ids 1..n in scan order, 0 outside.

    ``cc3d.connected_components`` for 6, 18 and 26 neighbours (its ids are scipy's: numbered
    in scan order), its uint32 output viewed as int32 (no copy). ``"aniso"`` (8 neighbours in a
    z plane, the 2 face neighbours across z) is no neighbourhood cc3d offers: that one stays
    ``scipy.ndimage.label`` with the structure.

    Raises:
        ValueError: an unknown ``connectivity`` (names the choices).
    """
    if connectivity == "aniso":
        out = np.empty(mask.shape, np.int32)
        ndimage.label(mask, structure=_aniso_structure(), output=out)
        return out
    if connectivity not in _CC3D_CONNECTIVITY:
        raise ValueError(
            f"connectivity {connectivity!r}: expected 6, 18, 26 or 'aniso' (8 in-plane "
            "neighbours, 2 across z)"
        )
    out = cc3d.connected_components(mask, connectivity=int(connectivity), out_dtype=np.uint32)
    return out.view(np.int32)


def threshold_components(
    prob: np.ndarray, threshold: float, connectivity: int | str = 6, min_size: int = 0
) -> np.ndarray:
    """Segments = connected components of ``prob < threshold`` (prob = membrane probability).

    Args:
        prob: membrane probability (z, y, x), any float or uint8 scale matching ``threshold``.
        threshold: voxels at or above it are membrane (id 0).
        connectivity: 6 (faces, the default), 18, 26, or ``"aniso"`` (8 neighbours in a
            z plane, the face neighbours across z: for anisotropic cubes).
        min_size: segments smaller than this become 0 (``remove_small_segments``).

    Returns:
        int32 ids 1..n in scan order, 0 on the membrane (``label_components``).
    """
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"prob has shape {prob.shape}: expected a (z, y, x) volume")
    seg = label_components(prob < threshold, connectivity)
    return remove_small_segments(seg, min_size) if min_size > 1 else seg


def remove_small_segments(seg: np.ndarray, min_size: int) -> np.ndarray:
    """Segments of fewer than ``min_size`` voxels become 0; the rest keep their order, 1..n."""
    seg = np.asarray(seg)
    sizes = np.bincount(seg.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[seg]


def grow_segments(seg: np.ndarray, pixel: Sequence[int] | int) -> np.ndarray:
    """ELEKTRONN2's ``grow_seg``: segments grow into id-0 voxels, ``pixel[ax]`` steps per axis.

    Step k grows along every axis that still has steps left; where two segments reach one voxel
    in the same step the later direction wins (z-, z+, y-, y+, x-, x+). Unlike ELEKTRONN2 the
    outermost voxel layer grows too.
    """
    pixel = [int(pixel)] * 3 if np.isscalar(pixel) else [int(p) for p in pixel]
    seg = np.array(seg, copy=True)
    for step in range(max(pixel, default=0)):
        grown = seg.copy()
        empty = seg == 0  # one comparison a step, sliced for every direction
        for ax in range(seg.ndim):
            if pixel[ax] <= step:
                continue
            for src, dst in ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))):
                s = [slice(None)] * seg.ndim
                d = [slice(None)] * seg.ndim
                s[ax], d[ax] = src, dst
                s, d = tuple(s), tuple(d)
                np.copyto(grown[d], seg[s], where=~empty[s] & empty[d])
        seg = grown
    return seg


def _threads() -> int:
    return os.cpu_count() or 1


def flood_landscape(
    pred: np.ndarray, hi_thresh: float, scale: Sequence[float], threads: int = 1
) -> np.ndarray:
    """ELEKTRONN2's flooding landscape ``-edt(~hard) - edt(hard)`` (hard: ``pred > hi_thresh``),
    squared: ``-d**2`` with ``d`` each voxel's distance (in ``scale`` units) to the nearest voxel
    on the other side of the membrane's boundary.

    One two-label pass of ``edt.edtsq`` (the two transforms of ELEKTRONN2 are zero where the
    other is not). Squaring keeps the order and ties of the distances, so the flood is the
    same; the squared distances are whole numbers, exact in float32 below 2**24 (here, within
    (2**24)**0.5 = 4096 nm of a membrane with ELEKTRONN2's scale). A volume without both sides
    is at -inf everywhere.
    """
    sides = np.add(pred > hi_thresh, 1, dtype=np.uint8)
    d2 = edt.edtsq(sides, anisotropy=tuple(scale), black_border=False, parallel=threads)
    return np.negative(d2, out=d2)


def seed_depth2(
    pred: np.ndarray, lo_thresh: float, scale: Sequence[float], threads: int = 1
) -> np.ndarray:
    """Squared depth (``scale`` units) of each ``pred <= lo_thresh`` voxel, 0 elsewhere."""
    return edt.edtsq(pred <= lo_thresh, anisotropy=tuple(scale), black_border=False,
                     parallel=threads)  # fmt: skip


def slack_mask(pred: np.ndarray, iterations: int = 3) -> np.ndarray:
    """ELEKTRONN2's thick membrane, flooded by a seed of its own: ``pred > 150`` eroded 3 times.

    ``scipy.ndimage.binary_erosion(pred > 150, iterations=3)`` (6 face neighbours, outside the
    volume counts as background), as boolean slices: six ANDs a step instead of a pass of its
    structure at every voxel (a quarter of its time).
    """
    out = np.asarray(pred) > 150
    for _ in range(iterations):
        prev = out.copy()
        for ax in range(out.ndim):
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            lo[ax], hi[ax] = slice(None, -1), slice(1, None)
            out[tuple(hi)] &= prev[tuple(lo)]
            out[tuple(lo)] &= prev[tuple(hi)]
            lo[ax], hi[ax] = 0, -1
            out[tuple(lo)] = out[tuple(hi)] = False
    return out


#: the most voxels a seed's depth test looks at by boolean slices; a deeper ``thresh`` takes
#: a distance transform (one pass, whatever the depth)
_MAX_BALL = 12


def _ball(thresh: float, scale: Sequence[float]) -> list[tuple[int, ...]] | None:
    """The offsets ``o != 0`` with ``|o * scale| <= thresh``, or None when there are more than
    ``_MAX_BALL``."""
    reach = [int(thresh // s) for s in scale]
    if np.prod([2 * r + 1 for r in reach]) > 8 * _MAX_BALL:
        return None
    t2 = float(thresh) ** 2
    ball = [
        o
        for o in itertools.product(*(range(-r, r + 1) for r in reach))
        if any(o) and sum((k * s) ** 2 for k, s in zip(o, scale)) <= t2
    ]
    return ball if len(ball) <= _MAX_BALL else None


def _eroded(region: np.ndarray, ball: list[tuple[int, ...]]) -> np.ndarray:
    """The voxels of ``region`` whose ``ball`` neighbours inside the volume are all in it
    (outside the volume counts as region, as for ``edt`` without a black border)."""
    out = region.copy()
    for o in ball:
        dst = tuple(slice(max(-k, 0), n - max(k, 0)) for k, n in zip(o, region.shape))
        src = tuple(slice(max(k, 0), n - max(-k, 0)) for k, n in zip(o, region.shape))
        out[dst] &= region[src]
    return out


def _needs_depth(thresh: float, scale: Sequence[float]) -> bool:
    return thresh > 0 and _ball(thresh, scale) is None


def _seeds(
    pred: np.ndarray, lo: float, thresh: float, depth2: Any, scale: Sequence[float]
) -> np.ndarray:
    """The seed regions: deeper than ``thresh`` in ``pred <= lo`` (a depth of 0 everywhere
    outside it, so ``thresh`` 0 needs no transform and a negative one takes every voxel).

    Deeper than ``thresh`` means no voxel outside the region within ``thresh``: for a shallow
    ``thresh`` (up to ``_MAX_BALL`` voxels within it, e.g. ELEKTRONN2's default 10 nm: the 4
    in-plane face neighbours) that test is a few boolean slices, otherwise the squared depth
    ``depth2`` (``seed_depth2``) > ``thresh**2``: whole numbers, so the same voxels as
    ELEKTRONN2's float comparison either way.
    """
    if thresh < 0:
        return np.ones(pred.shape, bool)
    if thresh == 0:
        return pred <= lo
    ball = _ball(thresh, scale)
    if ball is not None:
        return _eroded(pred <= lo, ball)
    if depth2 is None:
        depth2 = seed_depth2(pred, lo, scale, _threads())
    return depth2 > float(thresh) ** 2


def _flood(landscape: np.ndarray, seeds: np.ndarray, slack: np.ndarray) -> np.ndarray:
    """Seeds (and the slack seed) flood ``landscape``; the slack seed's region becomes 0."""
    from skimage.segmentation import watershed

    markers = label_components(seeds, 6)
    n = int(markers.max()) if markers.size else 0
    if n == 0:
        return np.zeros(seeds.shape, np.int32)
    markers[slack] = n + 1  # the slack seed's id: above the others, so theirs stay as labelled
    ws = watershed(landscape, markers)
    ws[ws == n + 1] = 0
    return ws


def resolve_threshold(value: float | Quantile, pred: np.ndarray, above: bool = False) -> float:
    """A fixed threshold as it is; a ``Quantile`` as its value in ``pred`` (``Quantile.of``;
    ``above`` for ``hi_thresh``)."""
    return value.of(pred, above) if isinstance(value, Quantile) else value


def seeded_watershed(
    pred: np.ndarray,
    thresh: float = 10.0,
    hi_thresh: float | Quantile = 140,
    lo_thresh: float | Quantile = 18,
    grow_it: Sequence[int] | int = 4,
    scale: Sequence[float] = ELEKTRONN2_SCALE,
) -> np.ndarray:
    """ELEKTRONN2's seeded segmentation (``seg_old``) of a uint8 membrane map (0..255).

    Seeds are the connected regions deeper than ``thresh`` (in ``scale`` units) inside the
    voxels with ``pred <= lo_thresh``; they flood the distance map of the ``pred > hi_thresh``
    membrane (plus a slack term through it); thick membrane (``pred > 150`` eroded 3 times) is
    flooded by a "slack" seed that becomes 0; then segments grow ``grow_it`` voxels into 0.
    With no seed at all the result is all 0. ``hi_thresh`` and ``lo_thresh`` may be
    ``Quantile``s of ``pred``. The distance transforms (``edt``, on all cores) and the seeds
    (``cc3d``) are ELEKTRONN2's, computed in fewer passes; the flood is scikit-image's.

    Example:
        >>> seg = seeded_watershed(pred, 0, Quantile(0.8), Quantile(0.3), 0)  # doctest: +SKIP

    Returns:
        int32 ids (0 = no segment).
    """
    pred = np.asarray(pred)
    if pred.ndim != 3:
        raise ValueError(f"pred has shape {pred.shape}: expected a (z, y, x) volume")
    hi, lo = resolve_threshold(hi_thresh, pred, above=True), resolve_threshold(lo_thresh, pred)
    seeds = _seeds(pred, lo, thresh, None, scale)
    ws = _flood(flood_landscape(pred, hi, scale, _threads()), seeds, slack_mask(pred))
    return grow_segments(ws, grow_it)


@dataclasses.dataclass(frozen=True)
class SegmentationSearch:
    """``optimise_segmentation``'s table and its best setting.

    Attributes:
        settings: one dict per setting (``thresh``, ``grow_it``, ``hi_thresh``, ``lo_thresh``)
            with the thresholds as applied to the map (a ``Quantile`` resolved), so
            ``seeded_watershed(pred, **settings[i])`` makes segmentation ``i`` again.
        scores: ``SegmentationScores`` per setting, in the order of ``settings``.
        best: index of the setting with the lowest adapted Rand error.
        segmentation: the best setting's segmentation.
        grid_settings: the settings as the grid gave them (``Quantile``s kept).
    """

    settings: list[dict[str, Any]]
    scores: list[SegmentationScores]
    best: int
    segmentation: np.ndarray
    grid_settings: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def best_setting(self) -> dict[str, Any]:
        return self.settings[self.best]

    @property
    def best_scores(self) -> SegmentationScores:
        return self.scores[self.best]

    def table(self) -> dict[str, np.ndarray]:
        """Columns: the parameters (``grow_z``, ``grow_y``, ``grow_x`` for ``grow_it``;
        ``hi_quantile`` and ``lo_quantile`` the grid's ``Quantile``, NaN for a fixed
        threshold), then every score."""
        cols: dict[str, list[Any]] = {}
        given = self.grid_settings or self.settings
        for setting, spec, score in zip(self.settings, given, self.scores):
            row = {k: v for k, v in setting.items() if k != "grow_it"}
            row.update(zip(("grow_z", "grow_y", "grow_x"), setting["grow_it"]))
            for k in ("hi", "lo"):
                v = spec[f"{k}_thresh"]
                row[f"{k}_quantile"] = float(v.q) if isinstance(v, Quantile) else float("nan")
            row.update(score.as_dict())
            for k, v in row.items():
                cols.setdefault(k, []).append(v)
        return {k: np.asarray(v) for k, v in cols.items()}


def _grid_settings(grid: dict[str, Iterable[Any]]) -> list[dict[str, Any]]:
    missing = {"thresh", "grow_it", "hi_thresh", "lo_thresh"} - set(grid)
    if missing:
        raise ValueError(f"segmentation grid lacks {sorted(missing)}; see ELEKTRONN2_GRID")
    return [
        {"thresh": t, "grow_it": tuple(int(x) for x in g), "hi_thresh": h, "lo_thresh": lo}
        for t, g, h, lo in itertools.product(
            grid["thresh"], grid["grow_it"], grid["hi_thresh"], grid["lo_thresh"]
        )
    ]


_WORK: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class _Maps:
    """What settings share: a landscape per ``hi_thresh``, a squared seed depth per
    ``lo_thresh`` (only where some setting's ``thresh`` > 0 needs it) and the slack seed."""

    landscape: dict[float, np.ndarray]
    depth2: dict[float, np.ndarray]
    slack: np.ndarray
    scale: tuple[float, ...]


def _shared_maps(
    pred: np.ndarray, settings: list[dict[str, Any]], scale: Sequence[float], threads: int
) -> _Maps:
    his = dict.fromkeys(s["hi_thresh"] for s in settings)
    los = dict.fromkeys(s["lo_thresh"] for s in settings if _needs_depth(s["thresh"], scale))
    return _Maps(
        {h: flood_landscape(pred, h, scale, threads) for h in his},
        {lo: seed_depth2(pred, lo, scale, threads) for lo in los},
        slack_mask(pred),
        tuple(scale),
    )


def _floods(maps: _Maps, pred: np.ndarray, thresh: float, hi: float, lo: float) -> np.ndarray:
    seeds = _seeds(pred, lo, thresh, maps.depth2.get(lo), maps.scale)
    return _flood(maps.landscape[hi], seeds, maps.slack)


def _init_worker(gt: np.ndarray, pred: np.ndarray, maps: _Maps, score_kw: dict[str, Any]) -> None:
    _WORK.update(gt=gt, pred=pred, maps=maps, score_kw=score_kw)


def _score_flood(
    job: tuple[float, float, float, list[tuple[int, ...]]],
) -> list[SegmentationScores]:
    """Score the settings that share one flood (thresh, hi, lo): they differ in ``grow_it``."""
    thresh, hi, lo, grows = job
    ws = _floods(_WORK["maps"], _WORK["pred"], thresh, hi, lo)
    return [
        segmentation_scores(_WORK["gt"], grow_segments(ws, g), check=False, **_WORK["score_kw"])
        for g in grows
    ]


def optimise_segmentation(
    gt: np.ndarray,
    pred: np.ndarray,
    grid: dict[str, Iterable[Any]] | None = None,
    n_proc: int | None = None,
    scale: Sequence[float] = ELEKTRONN2_SCALE,
    ignore_labels: Iterable[int] = (),
    convention: str = "skimage",
) -> SegmentationSearch:
    """ELEKTRONN2's grid search over ``seeded_watershed`` settings, scored against ``gt``.

    Args:
        gt: true neuron ids (0 = boundary).
        pred: uint8 membrane map (``uint8(p * 255)``), same shape.
        grid: lists for ``thresh``, ``grow_it``, ``hi_thresh``, ``lo_thresh`` (fixed values or
            ``Quantile``s of ``pred``); default ``DEFAULT_GRID`` (12 settings relative to the
            map); ``ELEKTRONN2_GRID`` is the original 144.
        n_proc: worker processes; default all cores. 1 runs in this process.
        scale: voxel size (z, y, x) for the distance transforms.
        ignore_labels: true ids not scored (``segmentation_scores``).
        convention: the adapted Rand convention (``segmentation_scores``).

    The distance transforms are made once per ``hi_thresh`` and per ``lo_thresh`` (in this
    process, on ``n_proc`` threads), the flood once per (``thresh``, ``hi_thresh``,
    ``lo_thresh``); the workers grow and score. The shared maps hold 4 bytes a voxel per
    distinct ``hi_thresh`` and per ``lo_thresh`` with a deep ``thresh``. The best setting has the lowest adapted Rand
    error. (ELEKTRONN2 took the lowest of its Rand index, an F-score where higher is better,
    i.e. its worst setting; its ``ri`` report columns here hold the Rand index of the best
    setting instead.)
    """
    check_labels(gt, pred, ("instance labels", "prediction"))
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r}: expected one of {CONVENTIONS}")
    gt, pred = np.asarray(gt), np.asarray(pred)
    given = _grid_settings(DEFAULT_GRID if grid is None else grid)
    resolved: dict[Any, float] = {}  # each Quantile once: a quantile of the map costs a pass
    settings = [_resolved(s, pred, resolved) for s in given]
    groups: dict[tuple[float, float, float], list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault((s["thresh"], s["hi_thresh"], s["lo_thresh"]), []).append(i)
    jobs = [(*key, [settings[i]["grow_it"] for i in idx]) for key, idx in groups.items()]
    n_proc = min(n_proc or _threads(), len(jobs))
    maps = _shared_maps(pred, settings, scale, max(n_proc, 1))
    score_kw = {"ignore_labels": tuple(ignore_labels), "convention": convention}
    if n_proc <= 1:
        _init_worker(gt, pred, maps, score_kw)
        try:
            results = [_score_flood(j) for j in jobs]
        finally:
            _WORK.clear()
    else:
        # forked workers inherit the maps; a job is one flood and its grow_it variants
        with ProcessPoolExecutor(
            n_proc, initializer=_init_worker, initargs=(gt, pred, maps, score_kw)
        ) as ex:
            results = list(ex.map(_score_flood, jobs))
    scores: list[SegmentationScores] = [None] * len(settings)  # type: ignore[list-item]
    for idx, res in zip(groups.values(), results):
        for i, r in zip(idx, res):
            scores[i] = r
    are = np.array([s.adapted_rand_error for s in scores])
    best = int(np.nanargmin(are)) if np.isfinite(are).any() else 0
    b = settings[best]
    seg = grow_segments(
        _floods(maps, pred, b["thresh"], b["hi_thresh"], b["lo_thresh"]), b["grow_it"]
    )
    return SegmentationSearch(settings, scores, best, seg, given)


def _resolved(setting: dict[str, Any], pred: np.ndarray, cache: dict[Any, float]) -> dict[str, Any]:
    """``setting`` with its ``Quantile`` thresholds as values of ``pred``."""
    out = dict(setting)
    for k in ("hi_thresh", "lo_thresh"):
        key = (k, setting[k])
        if key not in cache:
            cache[key] = resolve_threshold(setting[k], pred, above=k == "hi_thresh")
        out[k] = cache[key]
    return out
