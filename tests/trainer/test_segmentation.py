"""Segmentation core: metrics against scikit-image and ELEKTRONN2's formula, components,
seeded watershed, grid search, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage, sparse
from skimage.measure import label as sk_label
from skimage.metrics import adapted_rand_error, variation_of_information

from trainer.segmentation import (
    DEFAULT_GRID,
    ELEKTRONN2_GRID,
    Quantile,
    contingency,
    grow_segments,
    optimise_segmentation,
    remove_small_segments,
    resolve_threshold,
    seeded_watershed,
    segmentation_scores,
    threshold_components,
)
from trainer.synthetic import generate_cube_neurons


@pytest.fixture(scope="module")
def demo_cube():
    _, lab, ids = generate_cube_neurons((32, 64, 64), np.random.default_rng(3))
    return lab, ids


def _random_pair(seed, shape, n_gt, n_seg):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_gt, shape), rng.integers(0, n_seg, shape)


def _noisy_prob(lab, seed):
    rng = np.random.default_rng(seed)
    return np.clip(0.75 * lab + 0.45 * rng.random(lab.shape), 0, 1)


def _net_like_prob(lab, seed):
    """A membrane map like the demo net's after a short training: membranes a few voxels thick
    with weak spots, dark-but-unsure cell interiors, blobs the net takes for membrane."""
    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.normal(size=lab.shape), (0.5, 1.0, 1.0))
    thick = ndimage.gaussian_filter(lab.astype(np.float64), (0.5, 1.0, 1.0))
    logit = 12.0 * (thick - 0.35) + 1.5 * blobs / blobs.std() + rng.normal(size=lab.shape)
    return 1.0 / (1.0 + np.exp(-logit))


def _real_pairs(lab, ids):
    prob = _noisy_prob(lab, 0)
    yield ids, threshold_components(prob, 0.5)
    yield ids, threshold_components(prob, 0.3, connectivity=26)
    yield ids, grow_segments(threshold_components(prob, 0.6, connectivity="aniso"), (1, 2, 2))


def _assert_like_skimage(gt, seg):
    s = segmentation_scores(gt, seg)
    split, merge = variation_of_information(gt, seg, ignore_labels=(0,))
    are, sk_prec, sk_rec = adapted_rand_error(gt, seg)
    assert s.voi_split == pytest.approx(split, abs=1e-9)
    assert s.voi_merge == pytest.approx(merge, abs=1e-9)
    assert s.adapted_rand_error == pytest.approx(are, abs=1e-9)
    # scikit-image returns recall first: its "precision" divides by the true pairs
    assert s.rand_precision == pytest.approx(sk_rec, abs=1e-9)
    assert s.rand_recall == pytest.approx(sk_prec, abs=1e-9)


@pytest.mark.parametrize(
    ("seed", "shape", "n_gt", "n_seg"),
    [(0, (10, 20, 20), 5, 7), (1, (7, 9, 11), 40, 3), (2, (30, 30, 30), 2, 200), (3, (5, 5), 4, 4)],
)
def test_scores_equal_skimage_on_random_volumes(seed, shape, n_gt, n_seg):
    _assert_like_skimage(*_random_pair(seed, shape, n_gt, n_seg))


def test_scores_equal_skimage_with_spread_out_ids():
    # ids too spread for a direct pair table but small enough for a lookup table
    gt, seg = _random_pair(4, (10, 20, 20), 6, 9)
    _assert_like_skimage(gt * 997, seg * 1009)


def test_scores_equal_skimage_on_demo_cube_segmentations(demo_cube):
    lab, ids = demo_cube
    for gt, seg in _real_pairs(lab, ids):
        assert 0.0 < segmentation_scores(gt, seg).adapted_rand_error < 1.0
        _assert_like_skimage(gt, seg)


def test_scores_equal_skimage_with_huge_and_sparse_ids(demo_cube):
    lab, ids = demo_cube
    seg = threshold_components(_noisy_prob(lab, 1), 0.5).astype(np.int64)
    # ids far above the voxel count take the sorting path of the contingency table (and are
    # beyond scikit-image's dense index range): the scores do not depend on the id values
    huge = segmentation_scores(ids.astype(np.int64) * 1_000_003, seg * 7_919_000_011)
    small = segmentation_scores(ids, seg)
    for k in ("voi_split", "voi_merge", "adapted_rand_error", "rand_precision", "rand_index"):
        assert getattr(huge, k) == pytest.approx(getattr(small, k), abs=1e-12)
    assert (huge.n_splits, huge.n_merges, huge.n_segments) == (
        small.n_splits,
        small.n_merges,
        small.n_segments,
    )
    assert huge.largest_split == small.largest_split * 1_000_003
    _assert_like_skimage(ids, seg)


def test_contingency_counts_every_pair_once():
    gt, seg = _random_pair(5, (9, 8, 7), 6, 9)
    c = contingency(gt, seg)
    dense = sparse.coo_array((np.ones(gt.size), (gt.ravel(), seg.ravel()))).toarray()
    dense[0] = 0  # true id 0 is not scored
    assert c.n_voxels == np.count_nonzero(gt)
    np.testing.assert_array_equal(dense[c.gt_ids, c.seg_ids], c.counts)
    assert len(c.counts) == np.count_nonzero(dense)


def test_rand_index_is_elektronn2s_formula():
    gt, seg = _random_pair(7, (12, 12, 12), 9, 5)
    keep = gt.ravel() != 0
    table = sparse.coo_array((np.ones(keep.sum()), (gt.ravel()[keep], seg.ravel()[keep]))).toarray()
    p = table / table.sum()
    expected = 2 * (p**2).sum() / ((p.sum(0) ** 2).sum() + (p.sum(1) ** 2).sum())
    assert segmentation_scores(gt, seg).rand_index == pytest.approx(expected, abs=1e-12)


def test_counts_splits_merges_and_the_largest_of_each():
    gt = np.zeros((1, 6, 6), np.int32)
    gt[0, :, :2], gt[0, :, 2:4], gt[0, :, 4:] = 1, 2, 3
    seg = np.zeros_like(gt)
    seg[0, :3, :2], seg[0, 3:, :2] = 5, 6  # neuron 1 cut in two
    seg[0, :, 2:] = 9  # neurons 2 and 3 joined
    seg[0, 0, 5] = 0  # one unassigned voxel: segment 0 is not a merge
    s = segmentation_scores(gt, seg)
    assert (s.n_neurons, s.n_segments, s.n_splits, s.n_merges) == (3, 3, 1, 1)
    assert (s.largest_split, s.largest_merge) == (1, 9)
    assert s.voi_split > 0 and s.voi_merge > 0
    perfect = segmentation_scores(gt, gt * 10)
    assert perfect.voi == 0 and perfect.adapted_rand_error == 0 and perfect.rand_index == 1
    assert (perfect.n_splits, perfect.n_merges, perfect.largest_split) == (0, 0, 0)


def test_min_overlap_ignores_specks():
    gt = np.ones((1, 1, 10), np.int32)
    gt[0, 0, 5:] = 2
    seg = np.ones_like(gt)
    seg[0, 0, 5:] = 2
    seg[0, 0, 0] = 3  # a 1-voxel piece of neuron 1
    assert segmentation_scores(gt, seg).n_splits == 1
    assert segmentation_scores(gt, seg, min_overlap=2).n_splits == 0


@pytest.mark.parametrize(("connectivity", "sk_conn"), [(6, 1), (18, 2), (26, 3)])
def test_components_partition_like_skimage(demo_cube, connectivity, sk_conn):
    lab, _ = demo_cube
    prob = _noisy_prob(lab, 2)
    ours = threshold_components(prob, 0.4, connectivity=connectivity)
    theirs = sk_label(prob < 0.4, connectivity=sk_conn)
    # the same partition: a perfect score against each other
    s = segmentation_scores(theirs, ours)
    assert (s.voi, ours.max()) == (0.0, theirs.max())
    assert np.all((ours == 0) == (prob >= 0.4))


def test_connectivity_options_join_what_they_should():
    prob = np.ones((3, 3, 3))
    prob[0, 0, 0] = prob[0, 1, 1] = 0  # in-plane diagonal
    prob[1, 1, 1] = 0  # z face neighbour of (0, 1, 1)
    prob[2, 2, 2] = 0  # z diagonal of (1, 1, 1)
    assert threshold_components(prob, 0.5).max() == 3
    assert threshold_components(prob, 0.5, connectivity="aniso").max() == 2
    assert threshold_components(prob, 0.5, connectivity=26).max() == 1
    with pytest.raises(ValueError, match="connectivity 4"):
        threshold_components(prob, 0.5, connectivity=4)


def test_remove_small_segments_relabels_in_order():
    seg = np.array([[[0, 3, 3, 3, 7, 9, 9]]])
    np.testing.assert_array_equal(remove_small_segments(seg, 2), [[[0, 1, 1, 1, 0, 2, 2]]])
    prob = np.ones((1, 1, 7))
    prob[0, 0, [0, 2, 3]] = 0
    np.testing.assert_array_equal(
        threshold_components(prob, 0.5, min_size=2)[0, 0, :4], [0, 0, 1, 1]
    )


def test_grow_segments_per_axis():
    seg = np.zeros((5, 5, 5), np.int32)
    seg[2, 2, 2] = 4
    grown = grow_segments(seg, (1, 2, 0))
    assert set(np.unique(grown[:, :, 2])) == {0, 4}
    np.testing.assert_array_equal(grown[2, :, 2], [4, 4, 4, 4, 4])
    np.testing.assert_array_equal(grown[:, 2, 2], [0, 4, 4, 4, 0])
    assert np.all(grown[:, :, [0, 1, 3, 4]] == 0)
    np.testing.assert_array_equal(grow_segments(seg, 0), seg)


def test_seeded_watershed_finds_the_neurons_of_a_clean_map(demo_cube):
    lab, ids = demo_cube
    pred = np.where(lab == 1, 250, 0).astype(np.uint8)
    seg = seeded_watershed(pred, thresh=20, hi_thresh=240, lo_thresh=2, grow_it=(1, 3, 3))
    good = segmentation_scores(ids, seg)
    noisy = np.clip(
        pred.astype(int) + np.random.default_rng(0).integers(0, 140, pred.shape), 0, 255
    )
    bad = segmentation_scores(ids, seeded_watershed(noisy.astype(np.uint8), 20, 240, 2, (1, 3, 3)))
    assert good.adapted_rand_error < bad.adapted_rand_error
    assert good.n_segments > ids.max() // 3
    # no voxel deep enough inside a cell: no seed, no segment
    assert not seeded_watershed(np.full((8, 16, 16), 200, np.uint8), 37, 240, 2, 0).any()


def test_optimise_segmentation_parallel_equals_serial_and_picks_the_lowest_error(demo_cube):
    lab, ids = demo_cube
    pred = np.where(lab == 1, 250, 3).astype(np.uint8)
    grid = {"thresh": [20, 56], "grow_it": [(0, 0, 0), (1, 3, 3)], "hi_thresh": [240],
            "lo_thresh": [2, 5]}  # fmt: skip
    serial = optimise_segmentation(ids, pred, grid, n_proc=1)
    parallel = optimise_segmentation(ids, pred, grid, n_proc=2)
    assert len(serial.settings) == 8
    t1, t2 = serial.table(), parallel.table()
    for k in t1:
        np.testing.assert_array_equal(t1[k], t2[k])
    assert serial.best == int(np.argmin(t1["adapted_rand_error"]))
    np.testing.assert_array_equal(
        serial.segmentation, seeded_watershed(pred, **serial.best_setting)
    )
    # lo_thresh 2 finds no seeds in a map whose cells read 3: those settings score worst
    assert serial.best_setting["lo_thresh"] == 5
    assert np.prod([len(v) for v in ELEKTRONN2_GRID.values()]) == 144


@pytest.mark.parametrize(
    ("gt", "seg", "match"),
    [
        (np.ones((4, 5, 6), int), np.ones((4, 5, 7), int), r"\(4, 5, 6\).*\(4, 5, 7\)"),
        (np.ones((2, 2, 2), int), -np.ones((2, 2, 2), int), "negative ids"),
        (np.ones((2, 2, 2)), np.ones((2, 2, 2), int), "float64 volume"),
    ],
)
def test_bad_input_is_named(gt, seg, match):
    with pytest.raises(ValueError, match=match):
        segmentation_scores(gt, seg)


def test_single_neuron_warns_and_still_scores():
    gt = np.ones((2, 3, 4), int)
    seg = np.full_like(gt, 2)
    seg[1] = 1
    with pytest.warns(UserWarning, match="1 neuron"):
        s = segmentation_scores(gt, seg)
    assert s.voi_split == pytest.approx(1.0) and s.n_splits == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segmentation_scores(np.array([[[1, 2]]]), np.array([[[1, 2]]]))


#: the default grid before it was made relative to the map: ELEKTRONN2's fixed thresholds
_FIXED_GRID = {"thresh": [37, 43, 56], "grow_it": [(0, 0, 0), (1, 3, 3)], "hi_thresh": [240],
               "lo_thresh": [2, 32]}  # fmt: skip


@pytest.fixture(scope="module")
def net_like_cube():
    _, lab, ids = generate_cube_neurons((32, 64, 64), np.random.default_rng(5))
    prob = _net_like_prob(lab, 0)
    return ids, prob, (prob * 255).astype(np.uint8)


def test_default_grid_segments_a_net_like_map(net_like_cube):
    ids, prob, pred = net_like_cube
    search = optimise_segmentation(ids, pred, n_proc=1)
    assert len(search.settings) == np.prod([len(v) for v in DEFAULT_GRID.values()]) == 12
    are = search.best_scores.adapted_rand_error
    assert are < 0.25
    # fixed thresholds find few or no seeds in such a map
    fixed = optimise_segmentation(ids, pred, _FIXED_GRID, n_proc=1)
    assert fixed.best_scores.adapted_rand_error > 0.5
    # and the seeded search beats plain components at their best threshold
    components = [
        segmentation_scores(ids, threshold_components(prob, t), check=False).adapted_rand_error
        for t in np.linspace(0.02, 0.98, 49)
    ]
    assert are < min(components) - 0.3


def test_quantile_thresholds_are_resolved_per_map(net_like_cube):
    ids, _, pred = net_like_cube
    lo, hi = Quantile(0.3), Quantile(0.8)
    v, w = lo.of(pred), hi.of(pred, above=True)
    # seeds (<= v) at least 30 % of the voxels, hard membrane (> w) at least 20 %, ties included
    assert np.mean(pred <= v) >= 0.3 > np.mean(pred < v)
    assert np.mean(pred > w) >= 0.2 > np.mean(pred > w + 1)
    assert resolve_threshold(hi, pred, above=True) == w and resolve_threshold(240, pred) == 240
    np.testing.assert_array_equal(
        seeded_watershed(pred, 0, hi, lo, 0), seeded_watershed(pred, 0, w, v, 0)
    )
    # a sure net's map: most voxels 0 or 255; the membrane keeps the 255s
    sure = np.array([0, 0, 0, 1, 2, 255, 255, 255], np.uint8)
    assert (Quantile(0.3).of(sure), Quantile(0.8).of(sure, above=True)) == (0, 2)
    assert Quantile(0.0).of(sure, above=True) == -1
    grid = {"thresh": [0], "grow_it": [(0, 0, 0)], "hi_thresh": [hi, 240], "lo_thresh": [lo]}
    search = optimise_segmentation(ids, pred, grid, n_proc=1)
    table = search.table()
    np.testing.assert_array_equal(table["hi_thresh"], [w, 240])
    np.testing.assert_array_equal(table["hi_quantile"], [0.8, np.nan])
    np.testing.assert_array_equal(table["lo_quantile"], [0.3, 0.3])
    assert search.grid_settings[0]["hi_thresh"] == hi
    np.testing.assert_array_equal(
        search.segmentation, seeded_watershed(pred, **search.best_setting)
    )
    with pytest.raises(ValueError, match=r"Quantile\(1.5\).*\[0, 1\]"):
        Quantile(1.5)


def test_elektronn2_grid_is_kept_as_it_was():
    assert ELEKTRONN2_GRID == {
        "thresh": [37, 40, 43, 56],
        "grow_it": [(0, 0, 0), (1, 3, 3), (2, 6, 6), (3, 6, 6)],
        "hi_thresh": [235, 240, 245],
        "lo_thresh": [1, 2, 3],
    }
