"""Demo data generator: layout, determinism, statistics, idempotence."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from trainer.synthetic import (
    MANIFEST_FILE,
    ensure_demo_data,
    generate_cube,
    generate_cube_neurons,
    load_demo_data,
    make_demo_data,
)

SMALL = {"shape": (16, 48, 48), "n_cubes": 2, "preview_shape": (8, 48, 48)}


def _arrays(demo):
    out = []
    for path, key in [(p, "raw") for p in demo.raw_files] + [(p, "lab") for p in demo.label_files]:
        with h5py.File(path, "r") as f:
            out.append(f[key][()])
    with h5py.File(demo.preview_file, "r") as f:
        out.append(f["raw"][()])
    return out


def test_layout_and_manifest(tmp_path):
    demo = make_demo_data(tmp_path, seed=3, **SMALL)
    assert [p.name for p in demo.raw_files] == ["raw_0.h5", "raw_1.h5"]
    assert [p.name for p in demo.label_files] == ["labels_0.h5", "labels_1.h5"]
    for p in demo.raw_files:
        with h5py.File(p, "r") as f:
            assert f["raw"].dtype == np.uint8 and f["raw"].shape == (16, 48, 48)
    for p in demo.label_files:
        with h5py.File(p, "r") as f:
            assert f["lab"].dtype == np.int16 and f["lab"].shape == (16, 48, 48)
            assert set(np.unique(f["lab"][()])) <= {0, 1}
    with h5py.File(demo.preview_file, "r") as f:
        assert f["raw"].shape == (8, 48, 48) and f["raw"].dtype == np.uint8
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["seed"] == 3
    assert manifest["valid_cubes"] == [1]
    assert manifest["d_files"] == [["raw_0.h5", "raw"], ["raw_1.h5", "raw"]]
    assert manifest["l_files"] == [["labels_0.h5", "lab"], ["labels_1.h5", "lab"]]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    kwargs = demo.data_init_kwargs()
    assert kwargs["valid_cubes"] == [1] and kwargs["d_path"] == str(tmp_path)


def test_ground_truth_neurons_written_and_named(tmp_path):
    demo = make_demo_data(tmp_path, seed=3, **SMALL)
    assert [p.name for p in demo.instance_files] == ["neurons_0.h5", "neurons_1.h5"]
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["i_files"] == [["neurons_0.h5", "ids"], ["neurons_1.h5", "ids"]]
    assert load_demo_data(tmp_path).instance_files == demo.instance_files
    for lab_file, ids_file in zip(demo.label_files, demo.instance_files):
        with h5py.File(lab_file, "r") as f, h5py.File(ids_file, "r") as g:
            lab, ids = f["lab"][()], g["ids"][()]
        assert ids.dtype == np.int32 and ids.shape == lab.shape
        # 0 exactly on the membrane, consecutive ids 1..n inside
        np.testing.assert_array_equal(ids == 0, lab == 1)
        n = int(ids.max())
        assert n > 5 and set(np.unique(ids)) == set(range(n + 1))
    # a missing neurons file makes the dataset incomplete
    demo.instance_files[0].unlink()
    assert load_demo_data(tmp_path) is None


def test_neurons_are_the_cells_behind_the_membranes():
    raw, lab, ids = generate_cube_neurons((24, 64, 64), np.random.default_rng(5))
    raw2, lab2 = generate_cube((24, 64, 64), np.random.default_rng(5))
    np.testing.assert_array_equal(raw, raw2)
    np.testing.assert_array_equal(lab, lab2)
    # two face-adjacent inside voxels with different ids always have a membrane between them
    # in the generator's own cells: so neighbours inside are never of two cells
    for ax in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        x, y = ids[tuple(a)], ids[tuple(b)]
        both = (x > 0) & (y > 0)
        assert np.all(x[both] == y[both])


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _arrays(make_demo_data(tmp_path / "a", seed=7, **SMALL))
    b = _arrays(make_demo_data(tmp_path / "b", seed=7, **SMALL))
    c = _arrays(make_demo_data(tmp_path / "c", seed=8, **SMALL))
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert all(x.tobytes() != z.tobytes() for x, z in zip(a, c))
    # the preview cube has its own stream: it is not a copy of a training cube
    assert a[-1].tobytes() != a[0][:8].tobytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cube_statistics(seed):
    raw, lab = generate_cube((24, 64, 64), np.random.default_rng(seed))
    frac = lab.mean()
    assert 0.2 <= frac <= 0.4, frac
    inside, membrane = raw[lab == 0].mean(), raw[lab == 1].mean()
    assert inside - membrane > 40, (inside, membrane)
    # noisy, not flat: a net has to look at context
    assert raw[lab == 0].std() > 10
    assert raw.min() < 60 and raw.max() > 200


def test_membranes_thicker_in_xy_than_in_z():
    _, lab = generate_cube((24, 64, 64), np.random.default_rng(0))
    # fraction of membrane voxels whose neighbour along the axis is membrane too: runs of
    # ~2 px across a boundary in y/x, single planes in z
    same_x = (lab[:, :, 1:] & lab[:, :, :-1]).sum() / lab[:, :, 1:].sum()
    same_z = (lab[1:] & lab[:-1]).sum() / lab[1:].sum()
    assert same_x > same_z


def test_ensure_reuses_matching_and_regenerates_otherwise(tmp_path):
    first = ensure_demo_data(tmp_path, seed=1, **SMALL)
    stamp = first.raw_files[0].stat().st_mtime_ns, first.raw_files[0].stat().st_ino
    again = ensure_demo_data(tmp_path, seed=1, **SMALL)
    assert again == first
    assert (again.raw_files[0].stat().st_mtime_ns, again.raw_files[0].stat().st_ino) == stamp

    # a half-made dataset (no manifest) is regenerated
    (tmp_path / MANIFEST_FILE).unlink()
    assert load_demo_data(tmp_path) is None
    ensure_demo_data(tmp_path, seed=1, **SMALL)
    assert load_demo_data(tmp_path) is not None
    assert first.raw_files[0].stat().st_ino != stamp[1]

    # another seed replaces it
    other = ensure_demo_data(tmp_path, seed=2, **SMALL)
    assert other.seed == 2 and load_demo_data(tmp_path).seed == 2


def test_missing_file_makes_dataset_incomplete(tmp_path):
    demo = make_demo_data(tmp_path, seed=0, **SMALL)
    demo.label_files[1].unlink()
    assert load_demo_data(tmp_path) is None
    assert ensure_demo_data(tmp_path, seed=0, **SMALL).label_files[1].is_file()


def test_make_refuses_to_overwrite(tmp_path):
    make_demo_data(tmp_path, seed=0, **SMALL)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_demo_data(tmp_path, seed=0, **SMALL)
    make_demo_data(tmp_path, seed=0, overwrite=True, **SMALL)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (16, 48)}, "shape must be 3 positive ints"),
        ({"shape": (0, 48, 48)}, "shape must be 3 positive ints"),
        ({"preview_shape": "big"}, "preview_shape must be 3 positive ints"),
        ({"n_cubes": 0}, "n_cubes must be >= 1"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_demo_data(tmp_path, **{**SMALL, **kwargs})
    assert not (tmp_path / MANIFEST_FILE).exists()
