"""Volumes in HDF5, zarr v2/v3, OME-Zarr and N5, opened by content and read lazily.

Every container is written by its own library in the test (h5py, zarr-python, tensorstore
for N5) and read back through ``trainer.volumes`` and ``BatchCreatorImage``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import zarr

from trainer.data import BatchCreatorImage, DataError, LazyCube
from trainer.parallel import BackgroundProc
from trainer.volumes import (
    ChunkCache,
    ChunkReadError,
    VolumeError,
    detect_format,
    open_volume,
)

REPO = Path(__file__).resolve().parents[2]
SHAPE = (20, 44, 44)
CHUNKS = (8, 16, 16)


def model(patch_size=(8, 24, 24), offsets=(2, 4, 4), strides=(1, 2, 2)):
    return SimpleNamespace(patch_size=patch_size, offsets=offsets, strides=strides, in_channels=1)


def cube(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, shape, dtype=np.uint8)
    lab = (raw > 128).astype(np.int16) + (raw > 200)
    lab[:, :3] = -1  # an ignore band
    return raw, lab


def write(fmt: str, folder: Path, name: str, arrays: dict[str, np.ndarray], chunks=CHUNKS) -> Path:
    """Write ``arrays`` into one container of ``fmt`` with its own library; return its path."""
    path = folder / name
    if fmt == "hdf5":
        with h5py.File(path, "w") as f:
            for key, a in arrays.items():
                f.create_dataset(key, data=a, chunks=chunks, compression="gzip")
    elif fmt in ("zarr2", "zarr3"):
        g = zarr.open_group(path, mode="w", zarr_format=int(fmt[-1]))
        for key, a in arrays.items():
            g.create_array(key, data=a, chunks=chunks)
    elif fmt == "n5":
        import tensorstore as ts

        for key, a in arrays.items():
            spec = {
                "driver": "n5",
                "kvstore": {"driver": "file", "path": str(path)},
                "path": key,
                "metadata": {
                    "compression": {"type": "zstd"},
                    "dataType": str(a.dtype),
                    "dimensions": list(a.shape[::-1]),  # N5 lists x first
                    "blockSize": list(chunks[::-1]),
                },
            }
            ts.open(spec, create=True).result()[...].write(a.T).result()
    else:
        raise ValueError(fmt)
    return path


FORMATS = ["hdf5", "zarr2", "zarr3", "n5"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_container_is_told_by_content_and_read_box_by_box(tmp_path, fmt):
    raw, _ = cube()
    # a misleading name: the content decides
    path = write(fmt, tmp_path, "volume.h5" if fmt != "hdf5" else "volume.zarr", {"raw": raw})
    assert detect_format(path, "raw") == fmt
    vol = open_volume(path, "raw")
    assert (vol.format, vol.shape, vol.chunks, vol.dtype) == (fmt, SHAPE, CHUNKS, np.uint8)
    box = (slice(3, 17), slice(5, 40), slice(0, 9))
    np.testing.assert_array_equal(vol.read(box), raw[box])
    clone = pickle.loads(pickle.dumps(vol))  # a pickled volume carries no handle
    assert clone._handle is None
    np.testing.assert_array_equal(clone.read(box), raw[box])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_level_by_key_or_scale(tmp_path, zarr_format):
    raw, _ = cube()
    levels = [raw, raw[::2, ::2, ::2].copy()]
    path = tmp_path / "em.ome.zarr"
    g = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    multiscales = [
        {"axes": [{"name": a} for a in "zyx"], "datasets": [{"path": "0"}, {"path": "1"}]}
    ]
    if zarr_format == 3:
        g.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    else:
        g.attrs["multiscales"] = [{**multiscales[0], "version": "0.4"}]
    for i, a in enumerate(levels):
        g.create_array(str(i), data=a, chunks=CHUNKS)
    np.testing.assert_array_equal(open_volume(path, "1").read(), levels[1])
    np.testing.assert_array_equal(open_volume(path, "", scale=1).read(), levels[1])
    assert open_volume(path, "").shape == SHAPE  # level 0 by default
    with pytest.raises(VolumeError, match=r"scale=2 out of range.*2 level\(s\)"):
        open_volume(path, "", scale=2)


def _two_cubes(fmt, tmp_path):
    (raw0, lab0), (raw1, lab1) = cube(0), cube(1)
    d = write(fmt, tmp_path, f"raw.{fmt}", {"r0": raw0, "r1": raw1})
    lab = write(fmt, tmp_path, f"lab.{fmt}", {"l0": lab0, "l1": lab1})
    return dict(
        d_path=None,
        l_path=None,
        d_files=[(str(d), "r0"), (str(d), "r1")],
        l_files=[(str(lab), "l0"), (str(lab), "l1")],
        valid_cubes=[1],
    )


def _memory_reference(tmp_path, kwargs):
    """The same cubes as an in-memory HDF5 data set."""
    raw = {k: open_volume(p, k).read() for p, k in kwargs["d_files"]}
    lab = {k: open_volume(p, k).read() for p, k in kwargs["l_files"]}
    d = write("hdf5", tmp_path, "mem_raw.h5", raw)
    lb = write("hdf5", tmp_path, "mem_lab.h5", lab)
    return {
        **{k: v for k, v in kwargs.items() if k != "h5stream"},
        "d_files": [(str(d), k) for _, k in kwargs["d_files"]],
        "l_files": [(str(lb), k) for _, k in kwargs["l_files"]],
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_lazy_patches_equal_in_memory_patches_for_the_same_seed(tmp_path, fmt):
    lazy_kwargs = _two_cubes(fmt, tmp_path)
    if fmt == "hdf5":
        lazy_kwargs["h5stream"] = True
    lazy = BatchCreatorImage(model(), seed=7, **lazy_kwargs)
    mem = BatchCreatorImage(model(), seed=7, **_memory_reference(tmp_path, lazy_kwargs))
    assert lazy.lazy == [True, True] and mem.lazy == [False, False]
    assert all(isinstance(c, LazyCube) for c in lazy.train_d + lazy.train_l)
    batch_args = [
        dict(batch_size=6, warp=0.5, grey_augment_channels=(0,), ignore_thresh=0.5),
        dict(batch_size=3, warp=1, force_dense=True, warp_args={"lock_z": False}),
        dict(batch_size=4, source="valid"),
    ]
    for args in batch_args:
        x_lazy, y_lazy, info_lazy = lazy.getbatch(ret_info=True, **args)
        x_mem, y_mem, info_mem = mem.getbatch(ret_info=True, **args)
        np.testing.assert_array_equal(x_lazy, x_mem)
        np.testing.assert_array_equal(y_lazy, y_mem)
        assert [i["start"] for i in info_lazy] == [i["start"] for i in info_mem]
    assert lazy.n_failed_warp == mem.n_failed_warp


def test_hdf5_goes_lazy_above_the_memory_budget_only(tmp_path):
    kwargs = _two_cubes("hdf5", tmp_path)
    # two cubes of 20*44*44 voxels: 4 B raw + 2 B labels each, ~0.44 MiB together
    assert BatchCreatorImage(model(), memory_budget_mb=1, **kwargs).lazy == [False, False]
    assert BatchCreatorImage(model(), memory_budget_mb=0.1, **kwargs).lazy == [True, True]


def test_background_workers_open_their_own_handles(tmp_path):
    data = BatchCreatorImage(model(), seed=1, **_two_cubes("zarr3", tmp_path))
    data.getbatch(2)  # the parent has an open handle before the workers fork
    parent = os.getpid()
    vol = data.train_d[0].volume

    def batch_and_handle_pid():
        x, y = data.getbatch(2, warp=0.5)
        return x, y, np.array([vol._pid, os.getpid()])

    with BackgroundProc(batch_and_handle_pid, n_proc=2, seed=0) as bg:
        for _ in range(4):
            x, y, pids = bg.get()
            assert pids[0] == pids[1] != parent  # opened in the worker, by the worker
            assert x.shape == (2, 1, 8, 24, 24) and 0 <= x.min() and x.max() <= 1
            assert set(np.unique(y)) <= {-1, 0, 1, 2}


# -- chunk cache -------------------------------------------------------------------------------


def _chunk_bytes(vol):
    return int(np.prod(vol.chunks)) * vol.dtype.itemsize


@pytest.mark.parametrize("fmt", FORMATS)
def test_overlapping_boxes_through_a_bounded_cache_read_the_stored_values(tmp_path, fmt):
    raw, _ = cube()
    vol = open_volume(write(fmt, tmp_path, f"v.{fmt}", {"raw": raw}), "raw")
    limit = 10 * _chunk_bytes(vol)  # 10 of the 27 chunks
    cache = ChunkCache(limit)
    rng = np.random.default_rng(0)
    for _ in range(60):
        lo = rng.integers(0, np.array(SHAPE) - 1)
        hi = np.minimum(lo + rng.integers(1, 20, 3), SHAPE)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        got = vol.read(box, cache)
        np.testing.assert_array_equal(got, raw[box])
        got[...] = 0  # the caller's copy, not the cached chunk
        assert 0 < cache.nbytes <= limit
    np.testing.assert_array_equal(vol.read(None, cache), raw)
    assert cache.nbytes <= limit and len(cache) < 27  # chunks were dropped to stay in it


def test_cache_drops_the_least_recently_used_chunk_and_serves_the_held_ones(tmp_path):
    raw, _ = cube()
    p = write("zarr3", tmp_path, "v.zarr", {"raw": raw})
    vol = open_volume(p, "raw")
    cache = ChunkCache(8 * _chunk_bytes(vol))  # 8 whole chunks: the smallest cache used

    def box(index):
        return tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, CHUNKS))

    whole = [(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
    whole.insert(1, whole.pop(4))  # (0, 0, 0), (1, 0, 0), ...
    for index in [*whole, (0, 0, 0)]:  # used again: (1, 0, 0) is now the least recently used
        vol.read(box(index), cache)
    assert len(cache) == 8 and cache.nbytes == cache.limit
    vol.read((slice(16, 20), slice(32, 44), slice(32, 44)), cache)  # chunk (2, 2, 2)
    assert cache.get((vol.path, vol.key, (1, 0, 0))) is None  # the least recently used
    assert all(cache.get((vol.path, vol.key, i)) is not None for i in whole if i != (1, 0, 0))
    # a held chunk is not read again: its file may be corrupt now, the values stay
    _corrupt(p / "raw" / "c" / "0" / "0" / "0")
    np.testing.assert_array_equal(vol.read(box((0, 0, 0)), cache), raw[box((0, 0, 0))])
    with pytest.raises(ChunkReadError, match=r"chunk \(0, 0, 0\)"):
        vol.read(box((0, 0, 0)))  # without the cache the corrupt chunk is met and named


def test_chunks_too_big_for_the_cache_are_read_box_by_box(tmp_path):
    raw, _ = cube()
    vol = open_volume(write("zarr3", tmp_path, "v.zarr", {"raw": raw}), "raw")
    cache = ChunkCache(8 * _chunk_bytes(vol) - 1)
    assert not cache.holds(vol)
    box = (slice(2, 9), slice(3, 30), slice(0, 44))
    np.testing.assert_array_equal(vol.read(box, cache), raw[box])
    assert len(cache) == 0 and cache.nbytes == 0


def test_lazy_patches_with_a_small_budget_equal_in_memory_and_stay_in_it(tmp_path):
    kwargs = _two_cubes("zarr3", tmp_path)
    # 128 KiB: this process caches 64 KiB of the 2 x 115 KiB of decoded chunks
    lazy = BatchCreatorImage(model(), seed=3, memory_budget_mb=0.125, **kwargs)
    mem = BatchCreatorImage(model(), seed=3, **_memory_reference(tmp_path, kwargs))
    for args in [dict(batch_size=8, warp=0.5), dict(batch_size=4, source="valid")] * 3:
        x_lazy, y_lazy = lazy.getbatch(**args)
        x_mem, y_mem = mem.getbatch(**args)
        np.testing.assert_array_equal(x_lazy, x_mem)
        np.testing.assert_array_equal(y_lazy, y_mem)
        assert 0 < lazy.chunk_cache.nbytes <= lazy.chunk_cache.limit == 2**16


def test_each_worker_caches_its_share_of_the_budget_from_empty(tmp_path):
    data = BatchCreatorImage(model(), seed=1, memory_budget_mb=4, **_two_cubes("zarr3", tmp_path))
    data.getbatch(2)
    held = len(data.chunk_cache)
    assert held > 0 and data.chunk_cache.limit == 2 * 2**20  # half for the parent

    def cache_state():
        before = len(data.chunk_cache)  # what the fork copied from the parent is not used
        data.getbatch(1)
        return np.array([before, data.chunk_cache.limit, data.chunk_cache.nbytes])

    with BackgroundProc(cache_state, n_proc=2, seed=0) as bg:
        states = [bg.get()[0] for _ in range(2)]
    assert [int(s[0]) for s in states] == [0, 0]
    assert all(s[1] == 2**20 and 0 < s[2] <= s[1] for s in states)  # 2 MiB over 2 workers


# -- bad input ---------------------------------------------------------------------------------


def _kwargs(raw_path, raw_key, lab_path, lab_key):
    return dict(d_files=[(str(raw_path), raw_key)], l_files=[(str(lab_path), lab_key)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_key_lists_the_arrays_present(tmp_path, fmt):
    raw, lab = cube()
    p = write(fmt, tmp_path, f"v.{fmt}", {"raw": raw, "lab": lab})
    with pytest.raises(DataError, match=rf"'labels'.*{p.name}.*present.*lab"):
        BatchCreatorImage(model(), **_kwargs(p, "raw", p, "labels"))


def test_float_labels_are_refused_naming_the_volume(tmp_path):
    raw, lab = cube()
    p = write("zarr3", tmp_path, "v.zarr", {"raw": raw, "lab": lab.astype(np.float32)})
    with pytest.raises(DataError, match=r"v\.zarr\['lab'\] has dtype float32.*integer"):
        BatchCreatorImage(model(), **_kwargs(p, "raw", p, "lab"))


def test_mismatched_shapes_name_both(tmp_path):
    raw, lab = cube()
    p = write("zarr2", tmp_path, "v.zarr", {"raw": raw, "lab": lab[:, :41, :41].copy()})
    with pytest.raises(DataError, match=r"\(20, 41, 41\).*v\.zarr\['raw'\].*\(20, 44, 44\)"):
        BatchCreatorImage(model(), **_kwargs(p, "raw", p, "lab"))


def test_label_smaller_than_the_patch(tmp_path):
    raw, lab = cube()
    p = write("n5", tmp_path, "v.n5", {"raw": raw, "lab": lab[6:-6, 16:-16, 16:-16].copy()})
    with pytest.raises(DataError, match=r"model patch \(8, 24, 24\).*labels \(8, 12, 12\)"):
        BatchCreatorImage(model(), label_crop="centre", **_kwargs(p, "raw", p, "lab"))


def test_unsupported_codec_is_refused_before_training(tmp_path):
    raw, lab = cube()
    p = write("zarr3", tmp_path, "v.zarr", {"raw": raw, "lab": lab})
    meta_path = p / "raw" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"].append({"name": "no_such_codec", "configuration": {}})
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"v\.zarr\['raw'\].*no_such_codec|no_such_codec.*v\.zarr"):
        BatchCreatorImage(model(), **_kwargs(p, "raw", p, "lab"))


def _corrupt(chunk_file: Path) -> None:
    chunk_file.write_bytes(b"not a zstd or gzip stream" * 4)


def test_unreadable_first_chunk_is_refused_before_training(tmp_path):
    raw, lab = cube()
    p = write("zarr3", tmp_path, "v.zarr", {"raw": raw, "lab": lab})
    _corrupt(p / "raw" / "c" / "0" / "0" / "0")
    with pytest.raises(DataError, match=r"chunk \(0, 0, 0\).*v\.zarr\['raw'\]"):
        BatchCreatorImage(model(), **_kwargs(p, "raw", p, "lab"))


@pytest.mark.parametrize("fmt", ["zarr2", "zarr3", "n5", "hdf5"])
def test_corrupt_chunk_met_while_training_names_the_chunk(tmp_path, fmt):
    raw, lab = cube()
    p = write(fmt, tmp_path, f"v.{fmt}", {"raw": raw, "lab": lab})
    if fmt == "hdf5":
        with h5py.File(p, "r") as f:
            offset, size = f["raw"].id.get_chunk_info_by_coord((8, 16, 16))[2:4]
        with open(p, "r+b") as f:
            f.seek(offset)
            f.write(b"\xff" * size)
    else:
        name = {"zarr2": "1.1.1", "zarr3": "c/1/1/1", "n5": "1/1/1"}[fmt]
        _corrupt(p / "raw" / name)
    data = BatchCreatorImage(model(), seed=0, h5stream=True, **_kwargs(p, "raw", p, "lab"))
    with pytest.raises(ChunkReadError, match=r"chunk \(1, 1, 1\) \(voxels \[8:16, 16:32, 16:32\]"):
        for _ in range(200):
            data.getbatch(4)


@pytest.mark.parametrize("fmt", ["zarr2", "zarr3", "n5"])
def test_missing_chunk_files_are_listed_without_reading(tmp_path, fmt):
    raw, _ = cube()
    p = write(fmt, tmp_path, f"v.{fmt}", {"raw": raw})
    vol = open_volume(p, "raw")
    assert vol.missing_chunks() == []
    name = {"zarr2": "1.2.0", "zarr3": "c/1/2/0", "n5": "0/2/1"}[fmt]
    assert Path(vol.chunk_file((1, 2, 0))) == p / "raw" / name
    (p / "raw" / name).unlink()
    assert vol.missing_chunks() == [(1, 2, 0)]
    # only the chunks under the box count
    assert vol.missing_chunks((slice(0, 8), slice(0, 44), slice(0, 44))) == []
    assert vol.missing_chunks((slice(8, 9), slice(32, 33), slice(15, 16))) == [(1, 2, 0)]


def test_missing_shards_of_a_sharded_zarr_are_listed(tmp_path):
    raw, _ = cube()
    g = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    g.create_array("raw", data=raw, chunks=(4, 8, 8), shards=CHUNKS)
    (tmp_path / "s.zarr" / "raw" / "c" / "0" / "1" / "2").unlink()
    assert open_volume(tmp_path / "s.zarr", "raw").missing_chunks() == [(0, 1, 2)]


@pytest.mark.slow
def test_bad_data_exits_2_before_training(tmp_path):
    raw, lab = cube()
    p = write("zarr3", tmp_path, "v.zarr", {"raw": raw, "lab": lab})
    config = tmp_path / "bad.py"
    config.write_text(
        "import torch\n"
        "from trainer.models import CNN3D\n"
        "save_path = " + repr(str(tmp_path / "runs")) + "\n"
        "data_class = 'BatchCreatorImage'\n"
        f"data_init_kwargs = dict(d_files=[({str(p)!r}, 'raw')], l_files=[({str(p)!r}, 'nope')])\n"
        "batch_size = 1\nn_steps = 5\nhistory_freq = 5\nmonitor_batch_size = 1\n"
        "optimiser = 'Adam'\noptimiser_params = dict(lr=1e-3)\n"
        "def create_model():\n    return CNN3D(n_classes=2, in_channels=1)\n"
    )
    proc = subprocess.run(
        [sys.executable, "run.py", "train", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'nope' not found" in proc.stderr and "v.zarr" in proc.stderr


# -- the demo ----------------------------------------------------------------------------------


def test_demo_zarr_copy_trains_lazily_with_the_same_patches(tmp_path):
    from trainer.synthetic import ensure_demo_zarr, make_demo_data

    demo = make_demo_data(tmp_path, seed=0, shape=(16, 48, 48), preview_shape=(8, 48, 48))
    path = ensure_demo_zarr(demo)
    assert detect_format(path) == "zarr3"
    mtime = (path / "zarr.json").stat().st_mtime_ns
    assert ensure_demo_zarr(demo) == path and (path / "zarr.json").stat().st_mtime_ns == mtime
    m = model(patch_size=(8, 32, 32), offsets=(0, 0, 0), strides=(1, 1, 1))
    lazy = BatchCreatorImage(m, seed=3, **demo.zarr_data_init_kwargs())
    mem = BatchCreatorImage(m, seed=3, **demo.data_init_kwargs())
    assert all(lazy.lazy) and not any(mem.lazy)
    for a, b in zip(lazy.getbatch(4, warp=0.5), mem.getbatch(4, warp=0.5)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_demo_zarr_example_config_reads_the_zarr_copy(tmp_path):
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(tmp_path)}
    code = (
        "from trainer.config import ExperimentConfig\n"
        "cfg = ExperimentConfig('examples/demo_cnn3d_zarr.py')\n"
        "print(cfg.data_init_kwargs['d_files'][0])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(tmp_path / "demo.zarr") in proc.stdout and "raw_0" in proc.stdout
    assert detect_format(tmp_path / "demo.zarr") == "zarr3"
