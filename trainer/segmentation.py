"""From a membrane probability map to neurons, and the neurons' split and merge errors.

Pure functions of arrays (no files, no processes except ``optimise_segmentation``'s pool):

* ``threshold_components``: membrane probability < threshold, then connected components
  (6-connectivity by default; ``"aniso"`` for cubes whose z voxels are much thicker).
* ``seeded_watershed``: ELEKTRONN2's seeded segmentation (``seg_old``) with its parameters
  ``thresh``, ``hi_thresh``, ``lo_thresh``, ``grow_it`` on a uint8 probability map; the two
  probability thresholds may be ``Quantile``s of the map instead of fixed values.
* ``remove_small_segments``: segments below a size become 0 (unassigned).
* ``segmentation_scores``: VOI split/merge (bits), adapted Rand error with precision and
  recall, ELEKTRONN2's Rand index, and the number of segments, splits and merges, all from
  one contingency-table pass (``contingency``).
* ``optimise_segmentation``: ELEKTRONN2's grid search over seeded segmentations (``DEFAULT_GRID``:
  thresholds relative to the map; ``ELEKTRONN2_GRID``: ELEKTRONN2's fixed ones).

Conventions (the same as scikit-image's ``skimage.metrics``):

* ground-truth id 0 is the membrane/boundary: those voxels are not scored;
* segmentation id 0 (voxels no segment claims: predicted membrane) is an ordinary segment,
  so predicted membrane inside a true neuron costs merge error;
* logarithms are base 2 (VOI in bits); Rand pair counts exclude a voxel paired with itself.

Example:
    >>> import numpy as np
    >>> gt = np.array([[1, 1, 2, 2]])
    >>> s = segmentation_scores(gt, np.array([[1, 1, 1, 1]]))
    >>> round(s.voi_merge, 6), s.voi_split, s.n_merges
    (1.0, 0.0, 1)
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
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
    "seeded_watershed",
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

_STRUCTURES = {6: 1, 18: 2, 26: 3}


def check_labels(gt: np.ndarray, seg: np.ndarray, names: tuple[str, str] = ("gt", "seg")) -> None:
    """Refuse label volumes that cannot be compared; warn on a single true neuron.

    Raises:
        ValueError: the shapes differ (both named), a volume holds floats or negative ids.
    """
    gt, seg = np.asarray(gt), np.asarray(seg)
    if gt.shape != seg.shape:
        raise ValueError(
            f"{names[0]} has shape {gt.shape} but {names[1]} has shape {seg.shape}: the instance "
            "labels must cover the prediction voxel for voxel; crop or pad one to the other"
        )
    for name, a in zip(names, (gt, seg)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(
                f"{name} is a {a.dtype} volume: instance labels must be integer ids "
                "(one id per neuron, 0 = boundary); convert with .astype(np.int64) if the "
                "values are whole numbers"
            )
        if a.size and np.issubdtype(a.dtype, np.signedinteger) and a.min() < 0:
            raise ValueError(
                f"{name} holds negative ids (min {int(a.min())}): ids must be >= 0 "
                "(0 = boundary/unassigned)"
            )
    inside = gt[gt != 0]
    n_true = 0 if inside.size == 0 else 1 if np.all(inside == inside.flat[0]) else 2
    if n_true < 2:
        warnings.warn(
            f"{names[0]} holds {n_true} neuron(s) (ids > 0): split and merge errors need at least two "
            "neurons to mean much",
            stacklevel=2,
        )


@dataclasses.dataclass(frozen=True)
class Contingency:
    """The non-zero overlaps of true neurons (id > 0) and segments: ``counts[k]`` voxels of true
    neuron ``gt_ids[k]`` lie in segment ``seg_ids[k]``."""

    gt_ids: np.ndarray
    seg_ids: np.ndarray
    counts: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.counts.sum())


def _compact(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids present, a relabelled to 0..n-1) in O(n) via a lookup table when ids are small."""
    top = int(a.max()) if a.size else 0
    if top <= 4 * a.size + 1024:
        present = np.bincount(a, minlength=top + 1) > 0
        lut = np.cumsum(present) - 1
        return np.flatnonzero(present), lut[a]
    ids, inverse = np.unique(a, return_inverse=True)
    return ids, inverse.ravel()


def contingency(gt: np.ndarray, seg: np.ndarray) -> Contingency:
    """The contingency table of ``gt`` (id 0 not scored) and ``seg`` in one ``np.bincount`` pass.

    Ids are first made consecutive (a lookup table, no sort), then the pair index
    ``g * n_seg + s`` is counted; only when that table would not fit in memory are the pairs
    sorted instead.
    """
    g = np.asarray(gt).ravel()
    s = np.asarray(seg).ravel()
    keep = g != 0
    if not keep.all():
        g, s = g[keep], s[keep]
    g = g.astype(np.int64, copy=False)
    s = s.astype(np.int64, copy=False)
    top_g, top_s = (int(g.max()) + 1, int(s.max()) + 1) if g.size else (1, 1)
    if top_g * top_s <= max(4 * g.size, 1 << 22):
        # small ids (threshold components, consecutive neuron ids): count them as they are
        g_ids, g_c, s_ids, s_c = np.arange(top_g), g, np.arange(top_s), s
    else:
        g_ids, g_c = _compact(g)
        s_ids, s_c = _compact(s)
    n_s = max(len(s_ids), 1)
    pair = g_c * n_s + s_c
    if len(g_ids) * n_s <= max(4 * pair.size, 1 << 22):
        table = np.bincount(pair, minlength=len(g_ids) * n_s)
        nz = np.flatnonzero(table)
        counts = table[nz]
    else:
        nz, counts = np.unique(pair, return_counts=True)
    return Contingency(g_ids[nz // n_s], s_ids[nz % n_s], counts.astype(np.int64))


@dataclasses.dataclass(frozen=True)
class SegmentationScores:
    """Neuron-level scores of a segmentation against true neurons (lower errors are better).

    Attributes:
        voi_split: H(seg | gt) in bits: how much a true neuron is cut into pieces.
        voi_merge: H(gt | seg) in bits: how much a segment mixes true neurons.
        adapted_rand_error: 1 - F-score of the voxel pairs in one neuron (SNEMI3D).
        rand_precision: pairs together in both / pairs together in the segmentation.
        rand_recall: pairs together in both / pairs together in the ground truth.
        rand_index: ELEKTRONN2's Rand index (``compute_V_rand_N2``, pairs with themselves
            included; higher is better).
        n_neurons: true neurons (ids > 0) in the scored voxels.
        n_segments: segments (ids > 0) over the scored voxels.
        n_splits: true neurons cut into >= 2 segments of at least ``min_overlap`` voxels each.
        n_merges: segments holding >= 2 true neurons with at least ``min_overlap`` voxels each.
        largest_split: the true neuron with the largest share of ``voi_split`` (0 if none).
        largest_merge: the segment with the largest share of ``voi_merge`` (0 if none).
    """

    voi_split: float
    voi_merge: float
    adapted_rand_error: float
    rand_precision: float
    rand_recall: float
    rand_index: float
    n_neurons: int
    n_segments: int
    n_splits: int
    n_merges: int
    largest_split: int
    largest_merge: int

    @property
    def voi(self) -> float:
        """Variation of information: split + merge."""
        return self.voi_split + self.voi_merge

    def as_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "voi": self.voi}


def _xlog2x_over(n: np.ndarray, total: np.ndarray) -> np.ndarray:
    """n * log2(n / total), 0 where n is 0."""
    return n * np.log2(n / total)


def segmentation_scores(
    gt: np.ndarray, seg: np.ndarray, min_overlap: int = 1, check: bool = True
) -> SegmentationScores:
    """All neuron-level scores of ``seg`` against ``gt`` from one contingency table.

    Args:
        gt: true neuron ids (0 = boundary, not scored), integer volume.
        seg: segment ids of the same shape (0 = unassigned, an ordinary segment).
        min_overlap: voxels a piece needs to count towards ``n_splits`` / ``n_merges``.
        check: validate the inputs (``check_labels``); off where the caller already did.

    Formulas (n_ij voxels of neuron i in segment j, a_i = sum_j n_ij, b_j = sum_i n_ij,
    N = sum n_ij, p = n / N):

    * voi_split = -sum p_ij log2(p_ij / p_i), voi_merge = -sum p_ij log2(p_ij / p_j)
    * P = sum n_ij^2 - N, A = sum a_i^2 - N, B = sum b_j^2 - N;
      precision = P / B, recall = P / A, adapted_rand_error = 1 - 2P / (A + B)
    * rand_index (ELEKTRONN2) = 2 sum p_ij^2 / (sum p_i^2 + sum p_j^2)
    """
    if check:
        check_labels(gt, seg)
    c = contingency(gt, seg)
    if c.counts.size == 0:
        nan = float("nan")
        return SegmentationScores(nan, nan, nan, nan, nan, nan, 0, 0, 0, 0, 0, 0)
    n = c.counts.astype(np.float64)
    total = n.sum()
    gi, g_inv = np.unique(c.gt_ids, return_inverse=True)
    sj, s_inv = np.unique(c.seg_ids, return_inverse=True)
    a = np.bincount(g_inv, weights=n)
    b = np.bincount(s_inv, weights=n)
    split_terms = -_xlog2x_over(n, a[g_inv]) / total
    merge_terms = -_xlog2x_over(n, b[s_inv]) / total
    split_by_gt = np.bincount(g_inv, weights=split_terms)
    merge_by_seg = np.bincount(s_inv, weights=merge_terms)

    ci = c.counts
    sum_n2 = int(ci @ ci)
    sum_a2 = int(a.astype(np.int64) @ a.astype(np.int64))
    sum_b2 = int(b.astype(np.int64) @ b.astype(np.int64))
    n_tot = int(total)
    p, aa, bb = sum_n2 - n_tot, sum_a2 - n_tot, sum_b2 - n_tot
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.float64(p) / bb
        recall = np.float64(p) / aa
        are = 1.0 - np.float64(2 * p) / (aa + bb)
    rand_index = 2.0 * sum_n2 / (sum_a2 + sum_b2)

    big = ci >= min_overlap
    real_seg = c.seg_ids != 0
    pieces = np.bincount(g_inv[big & real_seg], minlength=len(gi))
    neurons_in = np.bincount(s_inv[big], minlength=len(sj))
    largest_split = int(gi[np.argmax(split_by_gt)]) if split_by_gt.max() > 0 else 0
    merge_real = np.where(sj != 0, merge_by_seg, -1.0)
    largest_merge = int(sj[np.argmax(merge_real)]) if merge_real.max() > 0 else 0
    return SegmentationScores(
        voi_split=float(split_terms.sum()),
        voi_merge=float(merge_terms.sum()),
        adapted_rand_error=float(are),
        rand_precision=float(precision),
        rand_recall=float(recall),
        rand_index=float(rand_index),
        n_neurons=len(gi),
        n_segments=int(np.count_nonzero(sj)),
        n_splits=int(np.count_nonzero(pieces >= 2)),
        n_merges=int(np.count_nonzero((neurons_in >= 2) & (sj != 0))),
        largest_split=largest_split,
        largest_merge=largest_merge,
    )


def _structure(connectivity: int | str) -> np.ndarray:
    if connectivity == "aniso":
        # in-plane 8-neighbours, across z only the face neighbour: a diagonal step in z is
        # much longer than one in y/x when z voxels are thicker
        st = np.zeros((3, 3, 3), bool)
        st[1] = True
        st[0, 1, 1] = st[2, 1, 1] = True
        return st
    if connectivity not in _STRUCTURES:
        raise ValueError(
            f"connectivity {connectivity!r}: expected 6, 18, 26 or 'aniso' (8 in-plane "
            "neighbours, 2 across z)"
        )
    return ndimage.generate_binary_structure(3, _STRUCTURES[connectivity])


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
        int32 ids 1..n in scan order, 0 on the membrane.
    """
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"prob has shape {prob.shape}: expected a (z, y, x) volume")
    seg, _ = ndimage.label(prob < threshold, structure=_structure(connectivity))
    seg = seg.astype(np.int32, copy=False)
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
        for ax in range(seg.ndim):
            if pixel[ax] <= step:
                continue
            for src, dst in ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))):
                s = [slice(None)] * seg.ndim
                d = [slice(None)] * seg.ndim
                s[ax], d[ax] = src, dst
                from_, to = seg[tuple(s)], grown[tuple(d)]
                take = (from_ != 0) & (seg[tuple(d)] == 0)
                to[take] = from_[take]
        seg = grown
    return seg


def _seed_maps(pred: np.ndarray, hi_thresh: float, lo_thresh: float, scale: Sequence[float]):
    """The distance maps of one (hi_thresh, lo_thresh) pair, shared by its other settings."""
    hard = pred > hi_thresh
    dt_ws = -ndimage.distance_transform_edt(~hard, sampling=scale)
    dt_ws -= ndimage.distance_transform_edt(hard, sampling=scale)  # the "slack" term
    dt_labels = -ndimage.distance_transform_edt(~(pred > lo_thresh), sampling=scale)
    slack = ndimage.binary_erosion(pred > 150, iterations=3)
    return dt_ws, dt_labels, slack


def _watershed_from(dt_ws, dt_labels, slack, thresh, grow_it) -> np.ndarray:
    from skimage.segmentation import watershed

    seeds, n = ndimage.label(dt_labels < -thresh)
    if n == 0:
        return np.zeros(dt_ws.shape, np.int32)
    seeds[seeds != 0] += 1
    seeds[slack] = 1
    ws = watershed(dt_ws, seeds).astype(np.int32) - 1
    return grow_segments(ws, grow_it)


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
    ``Quantile``s of ``pred``.

    Example:
        >>> seg = seeded_watershed(pred, 0, Quantile(0.8), Quantile(0.3), 0)  # doctest: +SKIP

    Returns:
        int32 ids (0 = no segment).
    """
    pred = np.asarray(pred)
    if pred.ndim != 3:
        raise ValueError(f"pred has shape {pred.shape}: expected a (z, y, x) volume")
    hi, lo = resolve_threshold(hi_thresh, pred, above=True), resolve_threshold(lo_thresh, pred)
    maps = _seed_maps(pred, hi, lo, scale)
    return _watershed_from(*maps, thresh, grow_it)


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


def _init_worker(gt: np.ndarray, pred: np.ndarray, scale: Sequence[float]) -> None:
    _WORK.update(gt=gt, pred=pred, scale=tuple(scale))


def _score_group(group: list[dict[str, Any]]) -> list[SegmentationScores]:
    """Score settings that share (hi_thresh, lo_thresh): their distance maps are made once."""
    gt, pred = _WORK["gt"], _WORK["pred"]
    maps = _seed_maps(pred, group[0]["hi_thresh"], group[0]["lo_thresh"], _WORK["scale"])
    out = []
    for s in group:
        seg = _watershed_from(*maps, s["thresh"], s["grow_it"])
        out.append(segmentation_scores(gt, seg, check=False))
    return out


def optimise_segmentation(
    gt: np.ndarray,
    pred: np.ndarray,
    grid: dict[str, Iterable[Any]] | None = None,
    n_proc: int | None = None,
    scale: Sequence[float] = ELEKTRONN2_SCALE,
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

    The best setting has the lowest adapted Rand error. (ELEKTRONN2 took the lowest of its Rand
    index, an F-score where higher is better, i.e. its worst setting; its ``ri`` report
    columns here hold the Rand index of the best setting instead.)
    """
    check_labels(gt, pred, ("instance labels", "prediction"))
    gt, pred = np.asarray(gt), np.asarray(pred)
    given = _grid_settings(DEFAULT_GRID if grid is None else grid)
    resolved: dict[Any, float] = {}  # each Quantile once: a quantile of the map costs a pass
    settings = [_resolved(s, pred, resolved) for s in given]
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault((s["hi_thresh"], s["lo_thresh"]), []).append(i)
    jobs = [[settings[i] for i in idx] for idx in groups.values()]
    n_proc = min(n_proc or os.cpu_count() or 1, len(jobs))
    if n_proc <= 1:
        _init_worker(gt, pred, scale)
        try:
            results = [_score_group(j) for j in jobs]
        finally:
            _WORK.clear()
    else:
        with ProcessPoolExecutor(
            n_proc, initializer=_init_worker, initargs=(gt, pred, scale)
        ) as ex:
            results = list(ex.map(_score_group, jobs))
    scores: list[SegmentationScores] = [None] * len(settings)  # type: ignore[list-item]
    for idx, res in zip(groups.values(), results):
        for i, r in zip(idx, res):
            scores[i] = r
    are = np.array([s.adapted_rand_error for s in scores])
    best = int(np.nanargmin(are)) if np.isfinite(are).any() else 0
    seg = seeded_watershed(pred, scale=scale, **settings[best])
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
