"""The field's libraries in the segmentation give what scipy gave: cc3d's components are
scipy's (same ids), the edt-based seeded watershed is ELEKTRONN2's scipy path voxel for voxel,
and the grid search's shared transforms and floods score each setting as made alone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.segmentation import watershed

from trainer.segmentation import (
    DEFAULT_GRID,
    ELEKTRONN2_SCALE,
    Quantile,
    grow_segments,
    label_components,
    optimise_segmentation,
    resolve_threshold,
    seeded_watershed,
    segmentation_scores,
    slack_mask,
    threshold_components,
)
from trainer.synthetic import generate_cube_neurons


def _scipy_seg_old(pred, thresh, hi_thresh, lo_thresh, grow_it, scale=ELEKTRONN2_SCALE):
    """ELEKTRONN2's ``seg_old`` as VoxelBoard computed it with scipy before edt and cc3d: three
    float64 distance transforms, ``ndimage.label`` seeds, a shifted slack seed."""
    hi = resolve_threshold(hi_thresh, pred, above=True)
    lo = resolve_threshold(lo_thresh, pred)
    hard = pred > hi
    dt_ws = -ndimage.distance_transform_edt(~hard, sampling=scale)
    dt_ws -= ndimage.distance_transform_edt(hard, sampling=scale)
    dt_labels = -ndimage.distance_transform_edt(~(pred > lo), sampling=scale)
    slack = ndimage.binary_erosion(pred > 150, iterations=3)
    seeds, n = ndimage.label(dt_labels < -thresh)
    if n == 0:
        return np.zeros(pred.shape, np.int32)
    seeds[seeds != 0] += 1
    seeds[slack] = 1
    return grow_segments(watershed(dt_ws, seeds).astype(np.int32) - 1, grow_it)


@pytest.fixture(scope="module")
def demo_map():
    """A demo cube's neurons and a membrane map like a half-trained net's (uint8)."""
    _, lab, ids = generate_cube_neurons((16, 64, 64), np.random.default_rng(7))
    rng = np.random.default_rng(1)
    prob = ndimage.gaussian_filter(lab.astype(np.float32), (0.5, 0.8, 0.8))
    prob = np.clip(0.9 * prob / prob.max() + 0.25 * rng.random(lab.shape, np.float32), 0, 1)
    return ids, prob, (prob * 255).astype(np.uint8)


@pytest.mark.parametrize("connectivity", [6, 18, 26, "aniso"])
def test_components_are_scipys_with_the_same_ids(demo_map, connectivity):
    _, prob, _ = demo_map
    structure = {
        6: ndimage.generate_binary_structure(3, 1),
        18: ndimage.generate_binary_structure(3, 2),
        26: ndimage.generate_binary_structure(3, 3),
        "aniso": np.array(
            [[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[1] * 3] * 3, [[0, 0, 0], [0, 1, 0], [0, 0, 0]]],
            bool,
        ),  # fmt: skip
    }[connectivity]
    for t in (0.3, 0.5, 0.7):
        ours = threshold_components(prob, t, connectivity)
        ref, n = ndimage.label(prob < t, structure=structure)
        assert ours.dtype == np.int32 and ours.max() == n > 1
        np.testing.assert_array_equal(ours, ref)
    with pytest.raises(ValueError, match="connectivity 8: expected 6, 18, 26 or 'aniso'"):
        label_components(prob < 0.5, 8)


#: the demo's settings: the default grid (thresholds relative to the map) and ELEKTRONN2's
#: fixed ones, the function's defaults among them
_SETTINGS = [
    (t, (0, 0, 0), hi, lo) for t in DEFAULT_GRID["thresh"] for hi in DEFAULT_GRID["hi_thresh"]
    for lo in DEFAULT_GRID["lo_thresh"][::2]
] + [
    (10.0, 4, 140, 18), (37, (1, 3, 3), 240, 2), (56, (3, 6, 6), 235, 60), (20, (2, 6, 6), 200, 40),
    (-1, 0, 140, 18),
]  # fmt: skip


def test_seeded_watershed_is_the_scipy_path_voxel_for_voxel(demo_map):
    _, _, pred = demo_map
    found = 0
    for thresh, grow, hi, lo in _SETTINGS:
        ours = seeded_watershed(pred, thresh, hi, lo, grow)
        ref = _scipy_seg_old(pred, thresh, hi, lo, grow)
        assert ours.dtype == np.int32
        np.testing.assert_array_equal(ours, ref, err_msg=str((thresh, grow, hi, lo)))
        found += ref.max() > 1
    assert found >= len(_SETTINGS) // 2  # the settings find neurons, not just nothing
    # seeds tested by boolean slices (up to 12 neighbours within thresh, here the most in-plane
    # and, on a cubic grid, the 6 faces) and by the distance transform just beyond
    for thresh, scale in ((19, ELEKTRONN2_SCALE), (1, (1.0, 1.0, 1.0)), (1.5, (1.0, 1.0, 1.0))):
        np.testing.assert_array_equal(
            seeded_watershed(pred, thresh, 200, 40, 0, scale=scale),
            _scipy_seg_old(pred, thresh, 200, 40, 0, scale=scale),
        )


def test_slack_is_scipys_erosion(demo_map):
    _, _, pred = demo_map
    thick = pred.copy()
    thick[4:12, 10:40, 5:50] = 255  # a thick membrane that survives, touching no border
    thick[:, :8, :8] = 255  # and one at the border, where the outside counts as background
    for p in (pred, thick, np.full((3, 4, 5), 200, np.uint8)):
        np.testing.assert_array_equal(slack_mask(p), ndimage.binary_erosion(p > 150, iterations=3))
    assert slack_mask(thick).sum() > 1000


def test_grid_search_shares_transforms_and_floods_without_changing_a_setting(demo_map):
    ids, _, pred = demo_map
    grid = {"thresh": [0, 20], "grow_it": [(0, 0, 0), (1, 3, 3)],
            "hi_thresh": [Quantile(0.8), 200], "lo_thresh": [Quantile(0.3), 40]}  # fmt: skip
    search = optimise_segmentation(ids, pred, grid, n_proc=1)
    assert len(search.settings) == 16
    for setting, score in zip(search.settings, search.scores):
        alone = segmentation_scores(ids, seeded_watershed(pred, **setting), check=False)
        assert score == alone, setting
    np.testing.assert_array_equal(search.segmentation, _scipy_seg_old(pred, **search.best_setting))
