"""BatchCreatorImage: geometry, alignment of data and labels, augmentation, errors."""

from __future__ import annotations

import multiprocessing as mp
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from trainer.data import BatchCreatorImage, DataError, NoValidationData, load_preview_data
from trainer.synthetic import make_demo_data


def model(patch_size=(8, 32, 32), offsets=(0, 0, 0), strides=(1, 1, 1), in_channels=1):
    return SimpleNamespace(
        patch_size=patch_size, offsets=offsets, strides=strides, in_channels=in_channels
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(
        tmp_path_factory.mktemp("demo"), seed=0, shape=(16, 48, 48), preview_shape=(8, 48, 48)
    )


def demo_data(demo, m=None, **kwargs):
    d = BatchCreatorImage(m or model(), **{**demo.data_init_kwargs(), **kwargs})
    d.reseed(0)
    return d


def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


@pytest.fixture()
def coord_cube(tmp_path):
    """A cube whose 3 raw channels and 3 label channels hold each voxel's raw (z, y, x).

    The labels are smaller and centred (margin (2, 8, 8), not the models' offsets: hence
    ``label_crop='centre'``), so a label that is not aligned with its input voxel shows up as
    a coordinate mismatch.
    """
    shape, margin = (16, 48, 48), (2, 8, 8)
    coords = np.indices(shape)
    lab = coords[
        :, margin[0] : shape[0] - margin[0], margin[1] : shape[1] - margin[1], margin[2] :
    ][..., : shape[2] - 2 * margin[2]]
    write_h5(tmp_path / "raw.h5", raw=coords.astype(np.float32))
    write_h5(tmp_path / "lab.h5", lab=lab.astype(np.int32))
    return {
        "d_path": str(tmp_path),
        "l_path": str(tmp_path),
        "d_files": [("raw.h5", "raw")],
        "l_files": [("lab.h5", "lab")],
        "label_crop": "centre",
    }


GEOMETRIES = [
    # patch_size, offsets, strides
    ((8, 32, 32), (0, 0, 0), (1, 1, 1)),
    ((8, 32, 32), (2, 6, 6), (1, 2, 2)),
    ((9, 33, 33), (1, 4, 4), (2, 3, 3)),
    ((6, 24, 30), (1, 2, 3), (1, 4, 2)),
]


@pytest.mark.parametrize(("ps", "off", "st"), GEOMETRIES)
@pytest.mark.parametrize("force_dense", [False, True])
def test_batch_shapes_and_dtypes(demo, ps, off, st, force_dense):
    d = demo_data(demo, model(ps, off, st))
    x, y = d.getbatch(3, force_dense=force_dense)
    dense = np.subtract(ps, 2 * np.array(off))
    expected = tuple(dense) if force_dense else tuple(dense // st)
    assert x.shape == (3, 1, *ps) and x.dtype == np.float32
    assert y.shape == (3, 1, *expected) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) <= {0, 1}


@pytest.mark.parametrize(("ps", "off", "st"), GEOMETRIES)
@pytest.mark.parametrize("source", ["train", "valid"])
def test_labels_align_with_input_voxels(coord_cube, ps, off, st, source):
    """Labels (smaller, centred cube) match the centre crop of the input, strided."""
    kwargs = {**coord_cube, "valid_cubes": [0] if source == "valid" else None}
    if source == "valid":  # a training cube is needed too: reuse the same files
        kwargs["d_files"] = kwargs["d_files"] * 2
        kwargs["l_files"] = kwargs["l_files"] * 2
    d = BatchCreatorImage(model(ps, off, st, in_channels=3), **kwargs, seed=1)
    x, y = d.getbatch(6, source=source, grey_augment_channels=None)
    oz, oy, ox = off
    crop = x[:, :, oz : ps[0] - oz, oy : ps[1] - oy, ox : ps[2] - ox]
    n = np.subtract(ps, 2 * np.array(off)) // st
    expected = crop[:, :, :: st[0], :: st[1], :: st[2]][:, :, : n[0], : n[1], : n[2]]
    np.testing.assert_array_equal(y, expected.astype(np.int64))


def test_warped_labels_align_with_input_voxels(coord_cube):
    d = BatchCreatorImage(model((8, 24, 24), (1, 4, 4), (1, 2, 2), in_channels=3), **coord_cube)
    d.reseed(2)
    x, y, info = d.getbatch(8, warp=1, grey_augment_channels=None, force_dense=True, ret_info=True)
    assert all(i["warped"] for i in info)
    crop = x[:, :, 1:-1, 4:-4, 4:-4]
    # labels are the nearest source voxel, inputs interpolate the same source point
    assert np.abs(crop - y).max() <= 0.5 + 1e-4
    # and the warp really moved things off the voxel grid
    assert np.abs(crop - np.rint(crop)).max() > 0.1


def test_validation_batches_are_plain_crops(demo):
    d = demo_data(demo, model((8, 32, 32), (2, 4, 4), (1, 2, 2)))
    for _ in range(5):
        x, y, info = d.getbatch(
            4, source="valid", warp=1, flip=True, grey_augment_channels=(0,), ret_info=True
        )
        for b, i in enumerate(info):
            assert not i["warped"] and not i["swap_yx"] and not any(i["flips"])
            z, yy, xx = i["start"]
            raw = d.valid_d[i["cube"]]
            np.testing.assert_array_equal(x[b], raw[:, z : z + 8, yy : yy + 32, xx : xx + 32])


def test_train_batches_vary_and_are_augmented(demo):
    d = demo_data(demo)
    x1, _ = d.getbatch(4)
    x2, _ = d.getbatch(4)
    assert not np.array_equal(x1, x2)

    _, _, info = d.getbatch(64, grey_augment_channels=None, ret_info=True)
    for axis in range(3):
        assert 0 < sum(i["flips"][axis] for i in info) < 64
    assert 0 < sum(i["swap_yx"] for i in info) < 64

    _, _, info = d.getbatch(16, flip=False, ret_info=True)
    assert not any(i["swap_yx"] or any(i["flips"]) for i in info)


def test_grey_augment_changes_values_and_stays_in_unit_range(demo):
    d = demo_data(demo)
    x, _, info = d.getbatch(8, flip=False, grey_augment_channels=(0,), ret_info=True)
    assert 0.0 <= x.min() and x.max() <= 1.0
    changed = 0
    for b, i in enumerate(info):
        z, yy, xx = i["start"]
        crop = d.train_d[i["cube"]][:, z : z + 8, yy : yy + 32, xx : xx + 32]
        changed += not np.allclose(x[b], crop)
    assert changed == 8

    plain, _, info = d.getbatch(4, flip=False, grey_augment_channels=None, ret_info=True)
    for b, i in enumerate(info):
        z, yy, xx = i["start"]
        crop = d.train_d[i["cube"]][:, z : z + 8, yy : yy + 32, xx : xx + 32]
        np.testing.assert_array_equal(plain[b], crop)


def test_grey_augment_is_off_by_default_as_in_elektronn2(demo):
    d = demo_data(demo)
    x, _, info = d.getbatch(8, flip=False, ret_info=True)
    for b, i in enumerate(info):
        z, yy, xx = i["start"]
        crop = d.train_d[i["cube"]][:, z : z + 8, yy : yy + 32, xx : xx + 32]
        np.testing.assert_array_equal(x[b], crop)


@pytest.mark.parametrize(
    ("warp", "low", "high"), [(0, 0, 0), (False, 0, 0), (1, 40, 40), (True, 40, 40), (0.5, 5, 35)]
)
def test_warp_probability(demo, warp, low, high):
    d = demo_data(demo, model((6, 24, 24), (1, 4, 4), (1, 2, 2)))
    _, y, info = d.getbatch(40, warp=warp, ret_info=True)
    n_warped = sum(i["warped"] for i in info)
    assert low <= n_warped <= high
    assert set(np.unique(y)) <= {0, 1}
    assert d.n_failed_warp == 0


def test_warp_with_anisotropic_shear_keeps_label_set(demo):
    d = demo_data(demo, model((6, 24, 24), (1, 4, 4), (1, 2, 2)))
    args = {"warp_amount": 1.0, "lock_z": False, "sample_aniso": True, "perspective": True}
    x, y = d.getbatch(10, warp=1, warp_args=args)
    assert set(np.unique(y)) <= {0, 1}
    assert np.isfinite(x).all()


def test_reseed_repeats_batches(demo):
    d = demo_data(demo)
    d.reseed(5)
    a = d.getbatch(3, warp=0.5)
    d.reseed(5)
    b = d.getbatch(3, warp=0.5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def _child_batch(d, queue):
    queue.put(d.getbatch(2)[0])


def test_forked_processes_draw_different_batches(demo):
    d = demo_data(demo)
    d.reseed(0)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child_batch, args=(d, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        a, b = queue.get(timeout=30), queue.get(timeout=30)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    assert not np.array_equal(a, b)
    # the parent's generator was not advanced by the children
    d2 = demo_data(demo)
    d2.reseed(0)
    np.testing.assert_array_equal(d.getbatch(2)[0], d2.getbatch(2)[0])


def test_cube_prios_and_properties(demo):
    d = demo_data(demo, cube_prios=[1.0, 0.0], valid_cubes=[2])
    assert d.n_train_cubes == 2 and d.n_valid_cubes == 1
    assert d.n_labelled_pixel == 3 * 16 * 48 * 48
    assert all(a.shape == (1, 16, 48, 48) and a.dtype == np.float32 for a in d.train_d)
    assert all(a.shape == (1, 16, 48, 48) for a in d.train_l + d.valid_l)
    _, _, info = d.getbatch(20, ret_info=True)
    assert {i["cube"] for i in info} == {0}
    assert repr(d) == (
        "1-target Data Set with 1 input channel(s):\n"
        f"#train cubes: 2 and #valid cubes: 1, {3 * 16 * 48 * 48} labelled pixels."
    )


def test_ignore_thresh_skips_mostly_ignored_patches(tmp_path):
    raw = np.random.default_rng(0).integers(0, 255, (8, 32, 64), dtype=np.uint8)
    lab = np.zeros(raw.shape, np.int16)
    lab[:, :, :32] = -1
    write_h5(tmp_path / "r.h5", raw=raw)
    write_h5(tmp_path / "l.h5", lab=lab)
    kw = {
        "d_path": tmp_path,
        "l_path": tmp_path,
        "d_files": [("r.h5", "raw")],
        "l_files": [("l.h5", "lab")],
    }
    d = BatchCreatorImage(model((4, 16, 16)), **kw, seed=0)
    _, y = d.getbatch(20, ignore_thresh=0.0, flip=False)
    assert (y >= 0).all()
    _, y = d.getbatch(20, ignore_thresh=False, flip=False)
    assert (y < 0).any()

    lab[:] = -1
    write_h5(tmp_path / "l.h5", lab=lab)
    d = BatchCreatorImage(model((4, 16, 16)), **kw, seed=0)
    with pytest.raises(DataError, match="ignore_thresh"):
        d.getbatch(1, ignore_thresh=0.5)


def test_integer_raw_scaled_float_raw_unchanged_and_xyz_order(tmp_path):
    raw_int = np.arange(8 * 16 * 20, dtype=np.uint16).reshape(8, 16, 20) % 256
    raw_xyz = np.random.default_rng(0).random((20, 16, 8)).astype(np.float32) * 3
    write_h5(tmp_path / "a.h5", raw=raw_int, lab=np.zeros((8, 16, 20), np.uint8))
    write_h5(tmp_path / "b.h5", raw=raw_xyz, lab=np.zeros((20, 16, 8), np.int8))
    m = model((4, 8, 8))
    d = BatchCreatorImage(
        m, d_path=tmp_path, l_path=tmp_path, d_files=[("a.h5", "raw")], l_files=[("a.h5", "lab")]
    )
    np.testing.assert_allclose(d.train_d[0][0], raw_int / 255.0, rtol=1e-6)
    d = BatchCreatorImage(
        m,
        d_path=tmp_path,
        l_path=tmp_path,
        d_files=[("b.h5", "raw")],
        l_files=[("b.h5", "lab")],
        zxy=False,
    )
    assert d.train_d[0].shape == (1, 8, 20, 16)
    np.testing.assert_array_equal(d.train_d[0][0], np.moveaxis(raw_xyz, -1, 0))


def test_unsupported_options(demo):
    d = demo_data(demo)
    with pytest.raises(ValueError, match=r"\['affinities'\] are not supported"):
        d.getbatch(1, affinities="malis")
    with pytest.raises(ValueError, match="blurry_blobs_probability.*not supported"):
        d.getbatch(1, blurry_blobs_probability=0.1)
    # ELEKTRONN2 defaults spelled out are fine
    d.getbatch(1, affinities=False, nga_blur_noise_probability=0, blurry_blobs_args=None)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['strided'\]"):
        d.getbatch(1, strided=False)
    with pytest.raises(ValueError, match="warp_args.*elastic"):
        d.getbatch(1, warp=1, warp_args={"elastic": True})
    with pytest.raises(ValueError, match="source must be 'train' or 'valid'"):
        d.getbatch(1, source="test")
    with pytest.raises(ValueError, match=r"grey_augment_channels \[1\] out of range for 1"):
        d.getbatch(1, grey_augment_channels=(1,))


def test_no_validation_set(demo):
    d = demo_data(demo, valid_cubes=None)
    with pytest.raises(
        NoValidationData, match="No validation set.*valid_cubes in data_init_kwargs"
    ):
        d.getbatch(2, source="valid")
    assert issubclass(NoValidationData, ValueError)
    d = demo_data(demo, valid_cubes=[0, 1, 2])
    with pytest.raises(ValueError, match="No training cubes"):
        d.getbatch(1)


@pytest.fixture()
def files(tmp_path):
    write_h5(tmp_path / "raw.h5", raw=np.zeros((16, 48, 48), np.uint8), other=np.zeros(3))
    write_h5(tmp_path / "lab.h5", lab=np.zeros((16, 48, 48), np.int16))
    write_h5(tmp_path / "big.h5", lab=np.zeros((18, 48, 48), np.int16))
    write_h5(tmp_path / "odd.h5", lab=np.zeros((15, 48, 48), np.int16))
    write_h5(tmp_path / "float.h5", lab=np.zeros((16, 48, 48), np.float32))
    write_h5(tmp_path / "rgb.h5", raw=np.zeros((3, 16, 48, 48), np.uint8))
    return tmp_path


@pytest.mark.parametrize(
    ("override", "exc", "match"),
    [
        ({"d_files": [("nope.h5", "raw")]}, FileNotFoundError, r"not found: .*/nope\.h5"),
        (
            {"l_files": [("lab.h5", "label")]},
            DataError,
            r"'label' not found in .*lab\.h5; datasets present: \['lab'\]",
        ),
        (
            {"d_files": [("raw.h5", "data")]},
            DataError,
            r"'data' not found in .*raw\.h5.*\['other', 'raw'\]",
        ),
        (
            {"l_files": [("big.h5", "lab")]},
            DataError,
            r"big\.h5.*\(18, 48, 48\).*raw\.h5.*\(16, 48, 48\)",
        ),
        (
            {"l_files": [("odd.h5", "lab")]},
            DataError,
            r"\(15, 48, 48\).*\(16, 48, 48\).*model's offsets \(0, 0, 0\)",
        ),
        ({"l_files": [("float.h5", "lab")]}, DataError, "float32: expected integer"),
        ({"patch_size": (8, 64, 64)}, DataError, r"patch \(8, 64, 64\).*raw\.h5.*\(16, 48, 48\)"),
        (
            {"l_files": [("lab.h5", "lab")] * 2},
            DataError,
            "d_files has 1 entries but l_files has 2",
        ),
        ({"valid_cubes": [1]}, DataError, r"valid_cubes \[1\] out of range: there are 1 cubes"),
        ({"d_files": [("rgb.h5", "raw")]}, DataError, "has 3 channel.*in_channels=1"),
        ({"cube_prios": [1, 2]}, DataError, "cube_prios"),
        ({"offsets": (4, 0, 0)}, DataError, "inconsistent"),
    ],
)
def test_bad_data_errors(files, override, exc, match):
    geometry = {k: override.pop(k) for k in ("patch_size", "offsets") if k in override}
    kwargs = {
        "d_path": str(files),
        "l_path": str(files),
        "d_files": [("raw.h5", "raw")],
        "l_files": [("lab.h5", "lab")],
        **override,
    }
    with pytest.raises(exc, match=match):
        BatchCreatorImage(model(**geometry), **kwargs)


def test_input_node_without_geometry():
    with pytest.raises(TypeError, match=r"lacks \['offsets', 'strides'\]"):
        BatchCreatorImage(
            SimpleNamespace(patch_size=(8, 8, 8)), d_files=[("a", "b")], l_files=[("a", "b")]
        )


def test_load_preview_data(tmp_path):
    ints = np.full((4, 8, 8), 255, np.uint8)
    floats = np.full((2, 4, 8, 8), 0.25, np.float64)
    path = write_h5(tmp_path / "p.h5", a=ints, b=floats)
    both = load_preview_data(str(path))
    assert [a.shape for a in both] == [(1, 4, 8, 8), (2, 4, 8, 8)]
    assert all(a.dtype == np.float32 for a in both)
    assert both[0].max() == 1.0 and both[1].max() == 0.25
    (one,) = load_preview_data((str(path), "b"))
    assert one.shape == (2, 4, 8, 8)
    with pytest.raises(
        DataError, match=r"'c' not found in .*p\.h5; datasets present: \['a', 'b'\]"
    ):
        load_preview_data((str(path), "c"))
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_preview_data(str(tmp_path / "missing.h5"))


def test_demo_preview_cube_loads(demo):
    (cube,) = load_preview_data(demo.preview_data_path)
    assert cube.shape == (1, 8, 48, 48) and 0.0 <= cube.min() and cube.max() <= 1.0
