"""Skeletons and the synthetic tracing dataset: nearest-point queries, generation, files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from trainer.skeletons import (
    TRACING_MANIFEST,
    Skeleton,
    ensure_tracing_data,
    load_tracing_data,
    load_tracing_file,
    make_tracing_data,
    random_neurites,
    render_neurites,
    write_tracing_file,
)

SMALL = (32, 64, 64)


@pytest.fixture(scope="module")
def straight() -> Skeleton:
    # along x at z=5 (physical z 10), y=20, from x=10 to x=50, radius 4 -> 6
    return Skeleton([(5, 20, 10), (5, 20, 30), (5, 20, 50)], radii=[4, 5, 6], name="s")


@pytest.mark.parametrize(
    ("voxel", "distance", "radius", "nearest_x"),
    [
        ((5, 20, 30), 0.0, 5.0, 30.0),  # on a node
        ((5, 23, 20), 3.0, 4.5, 20.0),  # beside the middle of the first edge
        ((6, 20, 40), 2.0, 5.5, 40.0),  # one z voxel = aniso_factor (2) physical units
        ((5, 20, 55), 5.0, 6.0, 50.0),  # beyond the end: the end node
        ((5, 24, 5), np.hypot(4, 5), 4.0, 10.0),
    ],
)
def test_nearest_point_distance_and_radius(straight, voxel, distance, radius, nearest_x):
    near = straight.nearest(straight.to_physical(voxel))
    assert near.distance[0] == pytest.approx(distance, abs=0.26)  # half the 0.5 spacing
    assert near.radius[0] == pytest.approx(radius, abs=0.05)
    assert near.point[0][2] == pytest.approx(nearest_x, abs=0.26)
    assert abs(near.tangent[0] @ [0, 0, 1]) == pytest.approx(1.0)


def test_nearest_agrees_with_brute_force_on_a_random_neurite():
    rng = np.random.default_rng(3)
    sk = random_neurites(SMALL, rng, n_neurites=1)[0]
    pts = rng.uniform(0, 60, (200, 3))
    near = sk.nearest(pts)
    # brute force: exact distances to every edge segment
    p = sk.nodes_physical
    a, b = p[sk.edges[:, 0]], p[sk.edges[:, 1]]
    ab = b - a
    t = np.clip(((pts[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    exact = np.linalg.norm(pts[:, None] - (a + t[..., None] * ab), axis=-1).min(1)
    assert np.all(near.distance >= exact - 1e-9)
    assert np.all(near.distance <= exact + 0.26)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(nodes=np.empty((0, 3)), radii=1), "no nodes"),
        (dict(nodes=[(0, 0, 0), (0, 0, 5)], radii=[1, 0]), "radius must be > 0"),
        (dict(nodes=[(0, 0, 0), (0, 0, 5)], radii=1, edges=[(0, 2)]), "outside 0..1"),
        (dict(nodes=[(0, 0, 0)], radii=1, aniso_factor=0), "aniso_factor"),
    ],
)
def test_bad_skeletons_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Skeleton(**kwargs)


def test_end_points_and_length(straight):
    assert straight.end_points().tolist() == [0, 2]
    assert straight.length == pytest.approx(40.0)


def test_random_neurites_are_deterministic_inside_and_apart():
    a = random_neurites(SMALL, np.random.default_rng(7), n_neurites=6)
    b = random_neurites(SMALL, np.random.default_rng(7), n_neurites=6)
    assert len(a) >= 3
    for sa, sb in zip(a, b):
        np.testing.assert_array_equal(sa.nodes, sb.nodes)
    for sk in a:
        assert (sk.nodes >= 0).all() and (sk.nodes <= np.array(SMALL) - 1).all()
        assert sk.length >= 40
    # tubes keep apart: node distance >= sum of radii (+ clearance, minus resampling slack)
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            d = cdist(a[i].nodes_physical, a[j].nodes_physical)
            gap = d - a[i].radii[:, None] - a[j].radii[None, :]
            assert gap.min() > 1.0


def test_rendered_neurites_are_bright_with_dark_membranes():
    rng = np.random.default_rng(0)
    sk = Skeleton([(16, 32, 8), (16, 32, 56)], radii=6)
    bg = np.full(SMALL, 128, np.uint8)
    raw = render_neurites(SMALL, [sk], rng, background=bg)
    centre = raw[15:18, 30:35, 15:50].mean()
    membrane = np.concatenate([raw[16, 26, 15:50], raw[16, 38, 15:50]]).mean()
    assert centre > 140 and membrane < 90
    assert (raw[:, :20] == 128).all(), "far from the neurite the background is untouched"


def test_make_tracing_data_writes_a_deterministic_split_dataset(tmp_path):
    a = make_tracing_data(tmp_path / "a", seed=5, shape=SMALL, n_neurites=8)
    b = make_tracing_data(tmp_path / "b", seed=5, shape=SMALL, n_neurites=8)
    raw_a, sk_a, valid_a = load_tracing_file(a.path)
    raw_b, sk_b, valid_b = load_tracing_file(b.path)
    np.testing.assert_array_equal(raw_a, raw_b)
    assert raw_a.shape == SMALL and raw_a.dtype == np.uint8
    assert valid_a == valid_b == a.valid and valid_a == [k for k in range(len(sk_a)) if k % 4 == 3]
    assert sorted(a.train + a.valid) == list(range(len(sk_a)))
    for sa, sb in zip(sk_a, sk_b):
        np.testing.assert_array_equal(sa.nodes, sb.nodes)
    manifest = json.loads((tmp_path / "a" / TRACING_MANIFEST).read_text())
    assert manifest["seed"] == 5 and manifest["shape"] == list(SMALL)
    assert a.data_init_kwargs() == {"path": str(a.path)}


def test_ensure_reuses_a_matching_dataset_and_regenerates_otherwise(tmp_path):
    first = ensure_tracing_data(tmp_path, seed=1, shape=SMALL, n_neurites=4)
    mtime = first.path.stat().st_mtime_ns
    assert ensure_tracing_data(tmp_path, seed=1, shape=SMALL, n_neurites=4) == first
    assert first.path.stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_tracing_data(tmp_path, seed=1, shape=SMALL, n_neurites=4)
    other = ensure_tracing_data(tmp_path, seed=2, shape=SMALL, n_neurites=4)
    assert other.seed == 2 and load_tracing_data(tmp_path).seed == 2


def test_a_half_made_dataset_is_not_loaded(tmp_path):
    data = make_tracing_data(tmp_path, seed=0, shape=SMALL, n_neurites=4)
    data.path.unlink()
    assert load_tracing_data(tmp_path) is None
    (tmp_path / TRACING_MANIFEST).write_text("{not json")
    assert load_tracing_data(tmp_path) is None


def test_file_round_trip_and_errors(tmp_path, straight):
    raw = np.arange(16 * 40 * 64, dtype=np.uint8).reshape(16, 40, 64)
    path = write_tracing_file(tmp_path / "t.h5", raw, [straight, straight], valid=[1])
    raw2, skels, valid = load_tracing_file(path)
    np.testing.assert_array_equal(raw2, raw)
    assert valid == [1] and len(skels) == 2
    np.testing.assert_allclose(skels[0].radii, straight.radii)
    np.testing.assert_array_equal(skels[0].edges, straight.edges)
    with pytest.raises(FileNotFoundError, match="ensure_tracing_data"):
        load_tracing_file(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["raw"] = raw
    with pytest.raises(ValueError, match="not a tracing data file"):
        load_tracing_file(tmp_path / "other.h5")
