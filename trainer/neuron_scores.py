"""Split and merge errors of a segmentation against true neurons, from one contingency table.

Pure functions of arrays (``trainer.segmentation`` re-exports them):

* ``segmentation_scores``: VOI split/merge (bits), adapted Rand error with precision and
  recall, ELEKTRONN2's Rand index, and the number of segments, splits and merges.
* ``contingency``: the overlaps of true neurons and segments in one counting pass.
* ``check_labels``: refuse volumes that cannot be compared.

Conventions:

* ground-truth id 0, and every id in ``ignore_labels``, is not scored: those voxels are left
  out of every count (a region labelled "glia, not scored" is not a neuron);
* segmentation id 0 (voxels no segment claims: predicted membrane) is an ordinary segment, so
  predicted membrane inside a true neuron costs merge error (``convention="skimage"``, the
  default: scikit-image's ``skimage.metrics``), or, for the adapted Rand error only, voxels
  of segment 0 are left out of the pair counts as CREMI's published evaluation code does
  (``convention="cremi"``);
* logarithms are base 2 (VOI in bits); Rand pair counts exclude a voxel paired with itself
  (``"skimage"``) or include it (``"cremi"``, as its code counts them).

Any integer ids work, uint64 ids at or above 2**63 (CREMI's background 2**64 - 1) included:
ids are made consecutive first (``fastremap.renumber``) when they are not small already.

Example:
    >>> import numpy as np
    >>> gt = np.array([[1, 1, 2, 2]])
    >>> s = segmentation_scores(gt, np.array([[1, 1, 1, 1]]))
    >>> round(s.voi_merge, 6), s.voi_split, s.n_merges
    (1.0, 0.0, 1)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable

import fastremap
import numpy as np

__all__ = [
    "CONVENTIONS",
    "Contingency",
    "SegmentationScores",
    "check_ignore_labels",
    "check_labels",
    "contingency",
    "ignored_mask",
    "segmentation_scores",
]

#: the adapted Rand conventions: scikit-image's (segment 0 an ordinary segment, pairs of a
#: voxel with itself excluded) and CREMI's (segment 0 out of the pair counts)
CONVENTIONS = ("skimage", "cremi")


def _check_arrays(gt: np.ndarray, seg: np.ndarray, names: tuple[str, str]) -> None:
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


def _warn_few_neurons(n_true: int, name: str) -> None:
    if n_true < 2:
        warnings.warn(
            f"{name} holds {n_true} neuron(s) (ids > 0): split and merge errors need at least two "
            "neurons to mean much",
            stacklevel=3,
        )


def check_labels(gt: np.ndarray, seg: np.ndarray, names: tuple[str, str] = ("gt", "seg")) -> None:
    """Refuse label volumes that cannot be compared; warn on a single true neuron.

    Raises:
        ValueError: the shapes differ (both named), a volume holds floats or negative ids.
    """
    gt, seg = np.asarray(gt), np.asarray(seg)
    _check_arrays(gt, seg, names)
    inside = gt[gt != 0]
    _warn_few_neurons(
        0 if inside.size == 0 else 1 if np.all(inside == inside.flat[0]) else 2, names[0]
    )


@dataclasses.dataclass(frozen=True)
class Contingency:
    """The non-zero overlaps of scored true neurons and segments: ``counts[k]`` voxels of true
    neuron ``gt_ids[k]`` lie in segment ``seg_ids[k]``; ``n_all`` voxels in the volume, the
    unscored ones included."""

    gt_ids: np.ndarray
    seg_ids: np.ndarray
    counts: np.ndarray
    n_all: int = 0

    @property
    def n_voxels(self) -> int:
        return int(self.counts.sum())


def _dense(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``ids``, ``idx``): ``a == ids[idx]`` with ``idx`` in ``0 .. len(ids) - 1``.

    Small non-negative ids are their own index (no pass); others (sparse, negative or beyond
    2**63) are renumbered in one ``fastremap`` pass.
    """
    if a.dtype == bool:
        return np.arange(2), a.view(np.uint8)
    if a.size == 0:
        return np.zeros(1, np.int64), a.astype(np.intp)
    lo, hi = a.min(), a.max()
    if lo >= 0 and int(hi) <= 4 * a.size + 1024:
        return np.arange(int(hi) + 1), a
    idx, mapping = fastremap.renumber(a, preserve_zero=False, in_place=False)
    ids = np.zeros(len(mapping) + 1, a.dtype)
    ids[np.fromiter(mapping.values(), np.int64, len(mapping))] = np.fromiter(
        mapping.keys(), a.dtype, len(mapping)
    )
    return ids, idx


def contingency(gt: np.ndarray, seg: np.ndarray, ignore_labels: Iterable[int] = ()) -> Contingency:
    """The contingency table of ``gt`` and ``seg`` in one ``np.bincount`` pass.

    Voxels whose true id is 0 or in ``ignore_labels`` are not scored. Ids are made
    consecutive first where they are not small (``_dense``), then the pair index
    ``g * n_seg + s`` of every voxel is counted and the unscored rows dropped; only when that
    table would not fit in memory are the pairs counted by ``fastremap.unique`` instead.
    """
    g_ids, g = _dense(np.asarray(gt).ravel())
    s_ids, s = _dense(np.asarray(seg).ravel())
    n_s = len(s_ids)
    pair = g.astype(np.intp)
    pair *= n_s
    # unsafe only in name: every index is below len(ids) (uint64 would make it float64)
    np.add(pair, s, out=pair, casting="unsafe")
    if len(g_ids) * n_s <= max(4 * pair.size, 1 << 22):
        table = np.bincount(pair, minlength=len(g_ids) * n_s)
        nz = np.flatnonzero(table)
        counts = table[nz]
    else:
        nz, counts = fastremap.unique(pair, return_counts=True)
    del pair
    rows = nz // n_s
    keep = ~((g_ids == 0) | ignored_mask(g_ids, ignore_labels))[rows]
    return Contingency(
        g_ids[rows[keep]], s_ids[nz[keep] % n_s], counts[keep].astype(np.int64), int(g.size)
    )


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


def segmentation_scores(
    gt: np.ndarray,
    seg: np.ndarray,
    min_overlap: int = 1,
    check: bool = True,
    ignore_labels: Iterable[int] = (),
    convention: str = "skimage",
) -> SegmentationScores:
    """All neuron-level scores of ``seg`` against ``gt`` from one contingency table.

    Args:
        gt: true neuron ids (0 = boundary, not scored), integer volume (any integer dtype,
            uint64 ids >= 2**63 included).
        seg: segment ids of the same shape (0 = unassigned).
        min_overlap: voxels a piece needs to count towards ``n_splits`` / ``n_merges``.
        check: validate the inputs (shapes, integer ids >= 0; warn on fewer than two true
            neurons); off where the caller already did.
        ignore_labels: true ids left out of all counts as 0 is (e.g. ``(999,)`` for a
            region labelled "glia, not scored", ``(2**64 - 1,)`` for CREMI's background).
        convention: ``"skimage"`` (scikit-image's ``skimage.metrics``: segment 0 is an
            ordinary segment) or ``"cremi"`` (CREMI's ``adapted_rand``: segment 0 leaves the
            Rand pair counts); changes the adapted Rand error, precision and recall only.

    Formulas (n_ij voxels of scored neuron i in segment j, a_i = sum_j n_ij,
    b_j = sum_i n_ij, N = sum n_ij, p = n / N):

    * voi_split = -sum p_ij log2(p_ij / p_i), voi_merge = -sum p_ij log2(p_ij / p_j)
    * ``"skimage"``: P = sum n_ij^2 - N, A = sum a_i^2 - N, B = sum b_j^2 - N;
      precision = P / B, recall = P / A, adapted_rand_error = 1 - 2P / (A + B)
    * ``"cremi"``: with c = sum_i n_i0 / (voxels in the volume), P = sum_{j>0} n_ij^2 + c,
      A = sum a_i^2, B = sum_{j>0} b_j^2 + c; precision = P / B, recall = P / A,
      adapted_rand_error = 1 - 2 precision recall / (precision + recall)
    * rand_index (ELEKTRONN2) = 2 sum p_ij^2 / (sum p_i^2 + sum p_j^2)

    Raises:
        ValueError: an unknown ``convention``; with ``check``, volumes that cannot be
            compared (``check_labels``).
    """
    if convention not in CONVENTIONS:
        raise ValueError(
            f"convention {convention!r}: expected 'skimage' (segment 0 an ordinary segment) or "
            "'cremi' (segment 0 out of the Rand pair counts, as CREMI's evaluation code)"
        )
    gt, seg = np.asarray(gt), np.asarray(seg)
    if check:
        _check_arrays(gt, seg, ("gt", "seg"))
    c = contingency(gt, seg, ignore_labels)
    if check:
        _warn_few_neurons(len(np.unique(c.gt_ids)), "gt")
    if c.counts.size == 0:
        nan = float("nan")
        return SegmentationScores(nan, nan, nan, nan, nan, nan, 0, 0, 0, 0, 0, 0)
    return _scores(c, min_overlap, convention)


def _scores(c: Contingency, min_overlap: int, convention: str) -> SegmentationScores:
    n = c.counts.astype(np.float64)
    total = n.sum()
    gi, g_inv = np.unique(c.gt_ids, return_inverse=True)
    sj, s_inv = np.unique(c.seg_ids, return_inverse=True)
    a = np.bincount(g_inv, weights=n)
    b = np.bincount(s_inv, weights=n)
    split_terms = -n * np.log2(n / a[g_inv]) / total
    merge_terms = -n * np.log2(n / b[s_inv]) / total
    split_by_gt = np.bincount(g_inv, weights=split_terms)
    merge_by_seg = np.bincount(s_inv, weights=merge_terms)

    # integer sums of squares: exact up to 2**63 (float64 would round above 2**53)
    ci = c.counts
    sum_n2, sum_a2, sum_b2 = (int(v @ v) for v in (ci, a.astype(np.int64), b.astype(np.int64)))
    rand_index = 2.0 * sum_n2 / (sum_a2 + sum_b2)
    are, precision, recall = _adapted_rand(c, b, sj, sum_n2, sum_a2, sum_b2, convention)

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
        adapted_rand_error=are,
        rand_precision=precision,
        rand_recall=recall,
        rand_index=float(rand_index),
        n_neurons=len(gi),
        n_segments=int(np.count_nonzero(sj)),
        n_splits=int(np.count_nonzero(pieces >= 2)),
        n_merges=int(np.count_nonzero((neurons_in >= 2) & (sj != 0))),
        largest_split=largest_split,
        largest_merge=largest_merge,
    )


def _adapted_rand(
    c: Contingency,
    b: np.ndarray,
    sj: np.ndarray,
    sum_n2: int,
    sum_a2: int,
    sum_b2: int,
    convention: str,
) -> tuple[float, float, float]:
    """(adapted Rand error, precision, recall) in ``convention`` (see ``segmentation_scores``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if convention == "cremi":
            in0 = c.seg_ids == 0
            zero = float(c.counts[in0].sum()) / max(c.n_all, 1)
            b_real = np.where(sj != 0, b, 0.0).astype(np.int64)
            p = float(sum_n2 - int(c.counts[in0] @ c.counts[in0])) + zero
            bb = float(b_real @ b_real) + zero
            precision, recall = np.float64(p) / bb, np.float64(p) / sum_a2
            are = 1.0 - 2.0 * precision * recall / (precision + recall)
        else:
            n_tot = int(c.counts.sum())
            p, aa, bb = sum_n2 - n_tot, sum_a2 - n_tot, sum_b2 - n_tot
            precision, recall = np.float64(p) / bb, np.float64(p) / aa
            are = 1.0 - np.float64(2 * p) / (aa + bb)
    return float(are), float(precision), float(recall)


def ignored_mask(gt: np.ndarray, ignore_labels: Iterable[int]) -> np.ndarray:
    """True where ``gt`` holds one of ``ignore_labels`` (any integer dtype, uint64 ids at or
    above 2**63 included; a label the dtype cannot hold is not there).

    Raises:
        ValueError: a label that is no id (not a whole number in 0 .. 2**64 - 1).
    """
    gt = np.asarray(gt)
    out = np.zeros(gt.shape, bool)
    info = np.iinfo(gt.dtype) if np.issubdtype(gt.dtype, np.integer) else None
    for v in check_ignore_labels(ignore_labels):
        if info is None or info.min <= v <= info.max:
            out |= gt == gt.dtype.type(v)
    return out


def check_ignore_labels(ignore_labels: Iterable[int]) -> tuple[int, ...]:
    """``ignore_labels`` as a tuple of ints.

    Raises:
        ValueError: a value that is no id (names it): ids are whole numbers in 0 .. 2**64 - 1.
    """
    out = []
    for v in ignore_labels:
        ok = isinstance(v, int | np.integer) and not isinstance(v, bool) and 0 <= int(v) < 2**64
        if not ok:
            raise ValueError(
                f"ignore label {v!r}: expected a whole number in 0 .. 2**64 - 1 (a true neuron "
                "id whose voxels are not scored, e.g. 999 for glia or 2**64 - 1 for CREMI's "
                "background)"
            )
        out.append(int(v))
    return tuple(out)
