"""Neuron-score conventions: ignored true labels (against scikit-image), CREMI's adapted Rand
error (against its published formula, written out here), uint64 ids at and above 2**63."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from trainer.neuron_scores import check_ignore_labels, ignored_mask
from trainer.segmentation import segmentation_scores, threshold_components
from trainer.synthetic import generate_cube_neurons


def _pair(seed, shape=(6, 9, 11), n_gt=6, n_seg=8):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, n_gt, shape)
    # blocks of segments so that pairs share segments often, and some segment-0 voxels
    seg = rng.integers(0, n_seg, shape) * (rng.random(shape) < 0.85)
    return gt, seg


def _cremi_reference(seg, gt):
    """CREMI's ``adapted_rand(seg, gt)`` (cremi/evaluation/rand.py, after SNEMI3D's script):
    the contingency table p_ij (truth rows, segmentation columns) over every voxel; truth row 0
    left out; segmentation column 0 left out of the pair sums, its voxels adding
    (their number / all voxels) to both; no pair-of-itself correction."""
    a_ids, a = np.unique(gt.ravel(), return_inverse=True)
    b_ids, b = np.unique(seg.ravel(), return_inverse=True)
    p = np.zeros((len(a_ids), len(b_ids)))
    np.add.at(p, (a.ravel(), b.ravel()), 1.0)
    n = gt.size
    rows = a_ids != 0  # truth label 0 is not scored
    cols = b_ids != 0  # segment 0 leaves the pair counts
    scored = p[rows]
    in_zero = scored[:, ~cols].sum()
    sum_a = (scored.sum(axis=1) ** 2).sum()
    sum_b = (scored[:, cols].sum(axis=0) ** 2).sum() + in_zero / n
    sum_ab = (scored[:, cols] ** 2).sum() + in_zero / n
    precision, recall = sum_ab / sum_b, sum_ab / sum_a
    return 1.0 - 2.0 * precision * recall / (precision + recall), precision, recall


@pytest.mark.parametrize("seed", range(6))
def test_cremi_convention_is_cremis_formula(seed):
    gt, seg = _pair(seed, n_gt=3 + seed, n_seg=2 + 2 * seed)
    s = segmentation_scores(gt, seg, convention="cremi")
    are, precision, recall = _cremi_reference(seg, gt)
    assert s.adapted_rand_error == pytest.approx(are, abs=1e-12)
    assert (s.rand_precision, s.rand_recall) == pytest.approx((precision, recall), abs=1e-12)
    # VOI and ELEKTRONN2's Rand index do not depend on the convention
    default = segmentation_scores(gt, seg)
    assert (s.voi_split, s.voi_merge, s.rand_index) == (
        default.voi_split,
        default.voi_merge,
        default.rand_index,
    )
    assert s.adapted_rand_error != pytest.approx(default.adapted_rand_error, abs=1e-6)


def test_cremi_convention_with_ignored_labels_is_cremis_formula_on_them_as_background():
    gt, seg = _pair(7, n_gt=7)
    s = segmentation_scores(gt, seg, ignore_labels=(3, 5), convention="cremi")
    are, _, _ = _cremi_reference(seg, np.where(np.isin(gt, (3, 5)), 0, gt))
    assert s.adapted_rand_error == pytest.approx(are, abs=1e-12)


def test_cremi_convention_on_a_demo_segmentation_differs_from_skimages_by_its_zero_segment():
    _, lab, ids = generate_cube_neurons((16, 48, 48), np.random.default_rng(2))
    prob = np.clip(0.75 * lab + 0.45 * np.random.default_rng(0).random(lab.shape), 0, 1)
    seg = threshold_components(prob, 0.5)
    cremi = segmentation_scores(ids, seg, convention="cremi")
    assert cremi.adapted_rand_error == pytest.approx(_cremi_reference(seg, ids)[0], abs=1e-12)
    # without segment 0 the two conventions differ only by the pairs of a voxel with itself
    grown = np.where(seg == 0, seg.max() + 1, seg)
    assert segmentation_scores(ids, grown, convention="cremi").adapted_rand_error == (
        pytest.approx(_cremi_reference(grown, ids)[0], abs=1e-12)
    )


@pytest.mark.parametrize("seed", range(3))
def test_ignored_labels_are_left_out_as_scikit_image_leaves_them(seed):
    gt, seg = _pair(seed + 10, n_gt=8)
    gt[gt == 4] = 999  # "glia, not scored"
    s = segmentation_scores(gt, seg, ignore_labels=[999])
    split, merge = variation_of_information(gt, seg, ignore_labels=(0, 999))
    are, sk_prec, sk_rec = adapted_rand_error(gt, seg, ignore_labels=(0, 999))
    assert (s.voi_split, s.voi_merge) == pytest.approx((split, merge), abs=1e-12)
    assert s.adapted_rand_error == pytest.approx(are, abs=1e-12)
    assert (s.rand_precision, s.rand_recall) == pytest.approx((sk_rec, sk_prec), abs=1e-12)
    assert s.n_neurons == len(np.setdiff1d(np.unique(gt), [0, 999]))
    # scored as a neuron, 999 changes every score
    scored = segmentation_scores(gt, seg)
    assert scored.n_neurons == s.n_neurons + 1
    assert scored.voi_merge != pytest.approx(s.voi_merge, abs=1e-6)


def test_uint64_ids_at_and_above_2_63_score_as_their_compact_relabelling():
    gt, seg = _pair(20, n_gt=5, n_seg=6)
    background = np.uint64(2**64 - 1)  # CREMI's
    big = np.array([0, 2**63, 2**63 + 7, 2**64 - 2, 12], np.uint64)
    gt64 = big[gt]
    gt64[gt == 0] = background
    seg64 = np.array([0, 2**63 + 1, 2**64 - 1, 2**62, 3, 2**63], np.uint64)[seg]
    s = segmentation_scores(gt64, seg64, ignore_labels=[2**64 - 1])
    # the same partition with small ids, and scikit-image on it
    small = segmentation_scores(gt, seg)
    for k in ("voi_split", "voi_merge", "adapted_rand_error", "rand_precision", "rand_index"):
        assert getattr(s, k) == pytest.approx(getattr(small, k), abs=1e-12)
    assert (s.n_neurons, s.n_splits, s.n_merges) == (
        small.n_neurons,
        small.n_splits,
        small.n_merges,
    )
    assert s.largest_split == int(big[small.largest_split])
    split, merge = variation_of_information(gt, seg, ignore_labels=(0,))
    assert (s.voi_split, s.voi_merge) == pytest.approx((split, merge), abs=1e-12)
    # uint64 volumes of small ids (cc3d's uint64 output, most CREMI volumes) take the direct path
    as_u64 = segmentation_scores(gt.astype(np.uint64), seg.astype(np.uint64))
    assert as_u64 == small
    # the background not ignored: scored as one more neuron, without crashing
    assert segmentation_scores(gt64, seg64).n_neurons == s.n_neurons + 1
    assert ignored_mask(gt64, [2**64 - 1]).sum() == np.count_nonzero(gt == 0)


def test_bad_conventions_and_labels_are_named():
    gt, seg = _pair(1)
    with pytest.raises(ValueError, match="convention 'snemi'.*'skimage'.*'cremi'"):
        segmentation_scores(gt, seg, convention="snemi")
    with pytest.raises(ValueError, match=r"ignore label -1.*0 \.\. 2\*\*64 - 1"):
        segmentation_scores(gt, seg, ignore_labels=[-1])
    with pytest.raises(ValueError, match="ignore label 'glia'"):
        check_ignore_labels(["glia"])
    # a label the dtype cannot hold cannot be there
    assert not ignored_mask(gt.astype(np.uint8), [999]).any()
