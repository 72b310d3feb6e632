"""Whole-volume prediction to disk: aligned with its input, equal to predict_dense, resumable,
and never mixing or losing results (issue 26's red-team cases)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr

from trainer.inference import predict_dense
from trainer.models import CNN3D, UNet3D
from trainer.prediction_store import read_record
from trainer.predictions import (
    PAD_MODES,
    DiskFullError,
    PredictionError,
    _fold,
    predict_to_disk,
    read_prediction,
    voxel_grid,
)
from trainer.volumes import open_volume

REPO = Path(__file__).resolve().parents[2]
# not a shape the models accept as is: the far end is mirror-padded, as in predict_dense
SHAPE = (12, 48, 45)
TILE = (10, 34, 34)
OFF = (2, 7, 7)  # CNN3D's offsets


def raw_volume(tmp_path, fmt="zarr3", seed=0, name="in"):
    raw = np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)
    if fmt == "hdf5":
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("raw", data=raw, chunks=(8, 32, 32))
    else:
        path = tmp_path / f"{name}.zarr"
        zarr.create_array(str(path), name="raw", data=raw, chunks=(8, 32, 32))
    return raw, open_volume(path, "raw")


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return CNN3D(n_classes=2, in_channels=1, base_filters=4, patch_size=(7, 24, 24)).eval()


@pytest.fixture(scope="module")
def cnn():
    return small_cnn()


def ngff_transforms(path):
    attrs = json.loads((Path(path) / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    return {t["type"]: t[t["type"]] for t in ms["datasets"][0]["coordinateTransformations"]}


# -- alignment -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", PAD_MODES)
def test_fold_pads_as_numpy_pads_even_beyond_the_volume(mode):
    for n in (1, 2, 5):
        a = np.arange(n) * 10 + 1
        want = np.pad(a, 13, mode=mode)
        i, inside = _fold(np.arange(-13, n + 13), n, mode)
        np.testing.assert_array_equal(
            np.where(inside, a[i], 0) if mode == "constant" else a[i], want
        )


@pytest.mark.parametrize(
    ("fmt", "out_name", "dtype"), [("zarr3", "p.zarr", "float16"), ("hdf5", "p.h5", "uint8")]
)
def test_padded_output_covers_the_input_and_equals_predicting_the_padded_input(
    tmp_path, cnn, fmt, out_name, dtype
):
    raw, vol = raw_volume(tmp_path, fmt)
    ref = predict_dense(cnn, np.pad(raw, [(o, o) for o in OFF], mode="symmetric"), tile_shape=TILE)
    out = predict_to_disk(cnn, vol, tmp_path / out_name, dtype=dtype, tile_shape=TILE)
    pred, record = read_prediction(out)
    assert record["complete"] and len(record["done"]) > 4  # several blocks
    assert pred.shape == (2, *SHAPE) == ref.shape  # voxel for voxel
    got = pred.read().astype(np.float32) / (255 if dtype == "uint8" else 1)
    np.testing.assert_allclose(got, ref, atol=0.5 / 255 + 1e-6 if dtype == "uint8" else 1e-3)
    assert (record["padding"], record["offsets"], record["translation"]) == (
        "symmetric",
        [2, 7, 7],
        [0, 0, 0],
    )


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_every_pad_mode_equals_predicting_the_input_padded_by_numpy(tmp_path, cnn, mode):
    raw, vol = raw_volume(tmp_path)
    ref = predict_dense(cnn, np.pad(raw, [(o, o) for o in OFF], mode=mode), tile_shape=TILE)
    out = predict_to_disk(cnn, vol, tmp_path / "p.zarr", tile_shape=TILE, padding=mode)
    got = read_prediction(out)[0].read().astype(np.float32)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_a_padded_voxel_equals_predicting_a_crop_around_it(tmp_path, cnn):
    raw, vol = raw_volume(tmp_path)
    got = read_prediction(predict_to_disk(cnn, vol, tmp_path / "p.zarr", tile_shape=TILE))[0]
    mirrored = np.pad(raw, [(o, o) for o in OFF], mode="symmetric")
    for z, y, x in [(6, 20, 30), (0, 0, 0), (11, 47, 44), (1, 3, 43)]:
        # input voxel (z, y, x) and its receptive field: (z, y, x) .. + 2 * offsets in the mirror
        crop = mirrored[z : z + 2 * OFF[0] + 1, y : y + 2 * OFF[1] + 1, x : x + 2 * OFF[2] + 1]
        want = predict_dense(cnn, crop)[:, 0, 0, 0]
        np.testing.assert_allclose(
            got.read((slice(None), z, y, x)).astype(np.float32), want, atol=1e-3
        )


@pytest.mark.parametrize("fmt", ["zarr3", "hdf5"])
def test_cropped_output_is_predict_dense_and_its_translation_places_it(tmp_path, cnn, fmt):
    raw, vol = raw_volume(tmp_path, fmt)
    grid = voxel_grid(vol, (40.0, 8.0, 4.0))
    out = tmp_path / ("c.zarr" if fmt == "zarr3" else "c.h5")
    predict_to_disk(cnn, vol, out, tile_shape=TILE, padding=None, grid=grid)
    padded = read_prediction(
        predict_to_disk(cnn, vol, tmp_path / "p.zarr", tile_shape=TILE, grid=grid)
    )[0].read()
    cropped, record = read_prediction(out)
    np.testing.assert_allclose(
        cropped.read().astype(np.float32), predict_dense(cnn, raw, tile_shape=TILE), atol=1e-3
    )
    if fmt == "zarr3":
        t = ngff_transforms(out)
        assert t["scale"] == [1.0, 40.0, 8.0, 4.0] and t["translation"] == [0.0, 80.0, 56.0, 28.0]
        assert "translation" not in ngff_transforms(tmp_path / "p.zarr")
        scale, shift = t["scale"][1:], t["translation"][1:]
    else:
        with h5py.File(out) as f:
            scale, shift = list(f["prob"].attrs["voxel_size"]), list(f["prob"].attrs["translation"])
        assert scale == [40.0, 8.0, 4.0] and shift == [80.0, 56.0, 28.0]
    # voxel k of the cropped output lies at shift + k * scale: the padded output's voxel there
    k = np.array([3, 10, 20])
    at = ((np.array(shift) + k * np.array(scale)) / np.array(scale)).astype(int)
    np.testing.assert_allclose(
        cropped.read((slice(None), *k)).astype(np.float32), padded[(slice(None), *at)], atol=1e-3
    )


def test_same_padding_model_keeps_predict_dense_tiling(tmp_path):
    torch.manual_seed(1)
    unet = UNet3D(n_classes=2, in_channels=1).eval()
    raw, vol = raw_volume(tmp_path)
    ref = predict_dense(unet, raw, tile_shape=(8, 32, 32))
    out = predict_to_disk(unet, vol, tmp_path / "u.zarr", tile_shape=(8, 32, 32))
    got = read_prediction(out)[0].read().astype(np.float32)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_voxel_size_from_the_input_then_the_flag_then_the_config(tmp_path):
    _, plain = raw_volume(tmp_path)
    assert voxel_grid(plain).voxel_size == (1.0, 1.0, 1.0)
    assert voxel_grid(plain, None, [30, 6, 6]).voxel_size == (30.0, 6.0, 6.0)
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f.create_dataset("raw", data=np.zeros((4, 5, 6), np.uint8)).attrs["resolution"] = [40, 4, 4]
    h5 = open_volume(tmp_path / "r.h5", "raw")
    assert voxel_grid(h5, None, [30, 6, 6]).voxel_size == (40.0, 4.0, 4.0)
    assert voxel_grid(h5, [50, 5, 5]).voxel_size == (50.0, 5.0, 5.0)
    z = zarr.create_array(str(tmp_path / "v.zarr"), name="raw", data=np.zeros((4, 5, 6), np.uint8))
    z.attrs["voxel_size"] = [35, 7, 7]
    assert voxel_grid(open_volume(tmp_path / "v.zarr", "raw")).voxel_size == (35.0, 7.0, 7.0)
    g = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w", zarr_format=2)
    g.create_array("s0", data=np.zeros((4, 5, 6), np.uint8))
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [45.0, 9.0, 9.0]}, {"type": "translation", "translation": [90.0, 0.0, 18.0]}]}]}]  # fmt: skip
    grid = voxel_grid(open_volume(tmp_path / "ome.zarr"))
    assert (grid.voxel_size, grid.translation, grid.unit) == (
        (45.0, 9.0, 9.0),
        (90.0, 0.0, 18.0),
        "nanometer",
    )


# -- never mixed, never lost ------------------------------------------------------------------


def _stop_after(n):
    calls = []

    def progress(done, total, seconds):
        calls.append(done)
        if len(calls) == n:
            raise KeyboardInterrupt

    return progress


def test_a_stopped_prediction_resumes_with_the_blocks_not_yet_written(tmp_path, cnn):
    raw, vol = raw_volume(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        predict_to_disk(cnn, vol, tmp_path / "p.zarr", tile_shape=TILE, progress=_stop_after(3))
    with pytest.raises(PredictionError, match="no complete VoxelBoard prediction"):
        read_prediction(tmp_path / "p.zarr")
    again = []
    predict_to_disk(
        cnn, vol, tmp_path / "p.zarr", tile_shape=TILE, progress=lambda d, t, s: again.append(d)
    )
    total = again[-1]
    assert again[0] >= 3 and len(again) <= total - 2  # written blocks were skipped
    ref = predict_dense(cnn, np.pad(raw, [(o, o) for o in OFF], mode="symmetric"), tile_shape=TILE)
    got = read_prediction(tmp_path / "p.zarr")[0].read().astype(np.float32)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_a_resume_on_another_input_is_refused_naming_it(tmp_path, cnn):
    _, first = raw_volume(tmp_path, seed=0, name="a")
    _, other = raw_volume(tmp_path, seed=1, name="b")  # same shape and dtype
    with pytest.raises(KeyboardInterrupt):
        predict_to_disk(cnn, first, tmp_path / "p.zarr", tile_shape=TILE, progress=_stop_after(3))
    with pytest.raises(
        PredictionError,
        match=r"unfinished prediction of something else: input fingerprint: recorded .*input path.*--overwrite",
    ):
        predict_to_disk(cnn, other, tmp_path / "p.zarr", tile_shape=TILE)
    # --overwrite starts again: nothing of the first input is left
    out = predict_to_disk(cnn, other, tmp_path / "p.zarr", tile_shape=TILE, overwrite=True)
    pad = [(o, o) for o in OFF]
    ref = predict_dense(cnn, np.pad(other.read(), pad, mode="symmetric"), tile_shape=TILE)
    np.testing.assert_allclose(read_prediction(out)[0].read().astype(np.float32), ref, atol=1e-3)


def test_another_model_pointed_at_a_complete_output_is_refused(tmp_path, cnn):
    _, vol = raw_volume(tmp_path)
    out = tmp_path / "p.h5"
    predict_to_disk(cnn, vol, out, tile_shape=TILE, provenance={"run": "/runs/a", "step": 5})
    before = read_prediction(out)[0].read()
    with pytest.raises(
        PredictionError,
        match=r"a complete prediction of something else: model run: recorded '/runs/a', now '/runs/b'",
    ):
        predict_to_disk(cnn, vol, out, tile_shape=TILE, provenance={"run": "/runs/b", "step": 5})
    with pytest.raises(PredictionError, match=r"model weights: recorded 'sha256:"):
        predict_to_disk(
            small_cnn(seed=7), vol, out, tile_shape=TILE, provenance={"run": "/runs/a", "step": 5}
        )
    with pytest.raises(PredictionError, match=r"dtype: recorded 'float16', now 'uint8'"):
        predict_to_disk(
            cnn, vol, out, dtype="uint8", tile_shape=TILE, provenance={"run": "/runs/a", "step": 5}
        )
    np.testing.assert_array_equal(read_prediction(out)[0].read(), before)


def test_a_rerun_verifies_the_last_recorded_blocks(tmp_path, cnn, caplog):
    raw, vol = raw_volume(tmp_path)
    out = predict_to_disk(cnn, vol, tmp_path / "p.h5", tile_shape=TILE)
    with h5py.File(out, "r+") as f:  # the last block's data lost, its record kept
        record = json.loads(f["prob"].attrs["voxelboard_prediction"])
        f["prob"][:, -3:, -10:, -10:] = 0
    assert record["complete"]
    predict_to_disk(cnn, vol, out, tile_shape=TILE)
    assert "recorded as written but their stored values differ" in caplog.text
    ref = predict_dense(cnn, np.pad(raw, [(o, o) for o in OFF], mode="symmetric"), tile_shape=TILE)
    np.testing.assert_allclose(read_prediction(out)[0].read().astype(np.float32), ref, atol=1e-3)


def test_an_existing_folder_that_is_no_prediction_is_never_touched(tmp_path, cnn):
    _, vol = raw_volume(tmp_path)
    with pytest.raises(
        PredictionError, match="holds no VoxelBoard prediction at key 'raw'.*Nothing was changed"
    ):
        predict_to_disk(cnn, vol, tmp_path / "in.zarr", key="raw", tile_shape=TILE, overwrite=True)
    assert open_volume(tmp_path / "in.zarr", "raw").shape == SHAPE
    # an output of the version before the record named its input: not resumed, overwritable
    old = {"tile": list(TILE), "input": "in.zarr['raw']", "done": [0], "complete": True}
    zarr.create_array(str(tmp_path / "old.zarr"), name="prob", shape=(2, 8, 34, 31), dtype="f2")
    zarr.open_array(str(tmp_path / "old.zarr"), path="prob", mode="r+").attrs[
        "voxelboard_prediction"
    ] = old
    with pytest.raises(PredictionError, match="older VoxelBoard.*--overwrite starts it again"):
        predict_to_disk(cnn, vol, tmp_path / "old.zarr", tile_shape=TILE)
    out = predict_to_disk(cnn, vol, tmp_path / "old.zarr", tile_shape=TILE, overwrite=True)
    assert read_prediction(out)[0].shape == (2, *SHAPE)


@pytest.mark.parametrize("out_name", ["p.zarr", "p.h5"])
def test_a_block_is_recorded_only_after_its_data_are_fsynced(tmp_path, cnn, monkeypatch, out_name):
    # real writes, watched: each fsync (by the file it syncs), each data write, each record save
    sys.path.insert(0, str(Path(__file__).parent))
    from durability import SyncOrder

    _, vol = raw_volume(tmp_path)
    out = tmp_path / out_name
    order = SyncOrder(monkeypatch, out if out_name.endswith(".zarr") else tmp_path)
    predict_to_disk(cnn, vol, out, tile_shape=(16, 48, 48))  # four blocks
    monkeypatch.undo()
    named, synced = order.check(out)
    n_blocks = len(read_record(out, "prob")["done"])
    assert named == n_blocks == 4
    assert synced >= n_blocks  # every block's data were fsynced before the record named it


def test_zarr_on_a_full_disk_stops_in_words_and_resumes(tmp_path, cnn):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_disk_full import SmallDisk  # its tmpfs (or skip: h5py/zarr write in C/pathlib)

    raw, vol = raw_volume(tmp_path)
    with SmallDisk(tmp_path / "small", tmp_path) as disk:
        if disk.kind != "tmpfs":
            pytest.skip("needs a tmpfs mount (root)")
        subprocess.run(["mount", "-o", "remount,size=96k", str(disk.root)], check=True)
        out = disk.root / "p.zarr"
        with pytest.raises(
            DiskFullError,
            match=rf"no space left on device for {out} \(block \d+/\d+\): it needs about .* [kMG]B free .*run the same command again",
        ):
            predict_to_disk(cnn, vol, out, tile_shape=TILE, dtype="float16")
        assert not list(out.rglob("*.partial")), "no torn chunk is left"
        disk.free()
        predict_to_disk(cnn, vol, out, tile_shape=TILE)
        got = read_prediction(out)[0].read().astype(np.float32)
    ref = predict_dense(cnn, np.pad(raw, [(o, o) for o in OFF], mode="symmetric"), tile_shape=TILE)
    np.testing.assert_allclose(got, ref, atol=1e-3)


# -- run.py predict ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, train_tiny_zarr_run) -> Path:
    """A CNN3D run trained two steps from a zarr volume (``data.zarr['raw']``) beside it."""
    return train_tiny_zarr_run(tmp_path_factory.mktemp("run"), n_steps=2)


def _predict(run_dir: Path, out: Path, *extra: str, env=None,
             timeout: float = 300) -> subprocess.CompletedProcess:  # fmt: skip
    data = run_dir.parents[1] / "data.zarr"
    cmd = [sys.executable, "run.py", "predict", str(run_dir), str(data), str(out), "--key", "raw"]
    cmd += ["--block", "16", "48", "48", "--device", "cpu", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env)  # fmt: skip


def _reference(run_dir: Path) -> np.ndarray:
    from trainer.evaluation import load_run

    run = load_run(run_dir, device="cpu")
    raw = open_volume(run_dir.parents[1] / "data.zarr", "raw").read()
    return predict_dense(run.model, np.pad(raw, [(o, o) for o in OFF], mode="symmetric"))


def _predict_argv(run_dir: Path, out: Path, *extra: str) -> list:
    """``run.py predict`` of ``run_dir``'s own data.zarr into ``out``, in 16 x 48 x 48 blocks."""
    data = run_dir.parents[1] / "data.zarr"
    return ["predict", run_dir, data, out, "--key", "raw", "--block", "16", "48", "48",
            "--device", "cpu", *extra]  # fmt: skip


@pytest.mark.slow
def test_run_py_predict_writes_an_aligned_ome_zarr_and_crops_on_request(tiny_run, tmp_path, cli):
    # the command's output and files (run.main in this process): a crash of the process on a
    # full disk is the test below, with real subprocesses
    out = tmp_path / "prob.zarr"
    code, _, err = cli(_predict_argv(tiny_run, out), cwd=REPO)
    assert code == 0, err[-2000:]
    assert "ETA" in err and "block 18/18" in err
    pred, record = read_prediction(out)
    assert pred.shape == (2, 24, 80, 80)  # the input's grid
    assert ngff_transforms(out) == {"scale": [1.0, 40.0, 8.0, 8.0]}  # the config's voxel size
    assert record["model"]["run"] == str(tiny_run) and record["model"]["step"] == 2
    assert record["model"]["snapshot"].endswith("FINAL.pt")
    assert "voxel_size = (40, 8, 8)" in record["config"]["text"]
    code, _, err = cli(_predict_argv(tiny_run, out, "--dtype", "uint8", "--overwrite", "--crop"))
    assert code == 0, err[-2000:]
    assert read_prediction(out)[0].shape == (2, 20, 66, 66)
    assert ngff_transforms(out)["translation"] == [0.0, 80.0, 56.0, 56.0]


@pytest.mark.slow
def test_run_py_predict_on_a_full_disk_says_so_in_one_line_and_resumes(tiny_run, tmp_path, cli):
    # HDF5, which crashed there (exit 139), as a real process; then zarr, which printed a raw
    # traceback with no path, through the command in this process (it cannot crash it)
    sys.path.insert(0, str(Path(__file__).parent))
    from test_disk_full import SmallDisk

    with SmallDisk(tmp_path / "small", tmp_path) as disk:
        if disk.kind != "tmpfs":
            pytest.skip("needs a tmpfs mount (root): h5py and zarr write below Python's os layer")
        subprocess.run(["mount", "-o", "remount,size=1000k", str(disk.root)], check=True)
        out = disk.root / "prob.h5"
        proc = _predict(tiny_run, out)
        assert proc.returncode == 1, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"run.py predict: no space left on device for {out} (block ")
        assert re.search(r"\d [kMG]B free", last) and "run the same command again" in last
        assert "Traceback" not in proc.stderr
        # whole chunks are counted: the blocks that fit (the first two chunks) are kept
        stopped_at = int(last.split("(block ")[1].split("/")[0])
        assert stopped_at > 1, last
        assert read_record(out, "prob")["done"] == list(range(stopped_at - 1))
        disk.free()
        proc = _predict(tiny_run, out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = read_prediction(out)[0].read().astype(np.float32)
        out.unlink()
        subprocess.run(["mount", "-o", "remount,size=300k", str(disk.root)], check=True)
        out = disk.root / "prob.zarr"
        code, _, err = cli(_predict_argv(tiny_run, out), cwd=REPO)
        assert code == 1, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"run.py predict: no space left on device for {out} (block ")
        assert re.search(r"\d [kMG]B free", last) and "run the same command again" in last
        assert "Traceback" not in err and not list(out.rglob("*.partial"))
        stopped_at = int(last.split("(block ")[1].split("/")[0])
        assert stopped_at > 1 and read_record(out, "prob")["done"] == list(range(stopped_at - 1))
        disk.free()
        code, _, err = cli(_predict_argv(tiny_run, out), cwd=REPO)
        assert code == 0, err[-3000:]
        got_zarr = read_prediction(out)[0].read().astype(np.float32)
    ref = _reference(tiny_run)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    np.testing.assert_allclose(got_zarr, ref, atol=1e-3)


# -- many workers (trainer.block_claims) ------------------------------------------------------


def _one_process_reference(run_dir: Path, out: Path, dtype: str) -> np.ndarray:
    """What `run.py predict` in one process writes (same tiles, padding and dtype)."""
    from trainer.evaluation import load_run

    run = load_run(run_dir, device="cpu")
    vol = open_volume(run_dir.parents[1] / "data.zarr", "raw")
    predict_to_disk(run.model, vol, out, dtype=dtype, tile_shape=(16, 48, 48))
    return read_prediction(out)[0].read()


def _live_lease(folder: Path) -> tuple[str, int] | None:
    """A block being predicted right now: (its lease's name, its worker's pid)."""
    for lease in sorted((folder / "claims").glob("predict-*.0")):
        if not (folder / "done" / f"{lease.name[:-2]}.json").exists():
            try:
                return lease.name, json.loads(lease.read_text())["pid"]
            except (OSError, ValueError):
                continue
    return None


@pytest.mark.slow
def test_two_workers_one_killed_mid_block_then_a_resubmission_equal_one_process(tiny_run, tmp_path):
    """Also: the same output with another snapshot, or an HDF5 output, is refused."""
    import os
    import signal
    import time

    from trainer.distributed_predict import prepare_predict
    from trainer.jobs import job_progress

    want = _one_process_reference(tiny_run, tmp_path / "one.zarr", "float16")
    out = tmp_path / "many.zarr"
    folder = out / ".voxelboard-job"
    data = tiny_run.parents[1] / "data.zarr"
    cmd = [sys.executable, "run.py", "predict", str(tiny_run), str(data), str(out), "--key",
           "raw", "--block", "16", "48", "48", "--device", "cpu"]  # fmt: skip
    job = subprocess.Popen([*cmd, "--workers", "2"], cwd=REPO, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while (held := _live_lease(folder) if folder.exists() else None) is None:
            assert job.poll() is None and time.monotonic() < deadline, "no block started"
            time.sleep(0.01)
        os.kill(held[1], signal.SIGKILL)  # a worker, mid-block
        # the other worker takes the block over; stop the whole job before it is done
        while len(list((folder / "done").glob("predict-*"))) < 10:
            assert job.poll() is None and time.monotonic() < deadline, job.stderr.read()
            time.sleep(0.01)
        os.killpg(job.pid, signal.SIGKILL)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    before = {p.name: p.read_text() for p in (folder / "done").iterdir()}
    assert 10 <= len(before) < 18 and "finish-0.json" not in before
    taken = json.loads((folder / "claims" / f"{held[0][:-2]}.1").read_text())
    assert taken["pid"] != held[1]  # the killed worker's block went to the other one
    again = subprocess.run([*cmd, "--workers", "1"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    after = {p.name: p.read_text() for p in (folder / "done").iterdir()}
    assert {k: after[k] for k in before} == before  # blocks done before were left alone
    progress = job_progress(out)
    (new,) = [w for w in progress["workers"] if w["state"] == "finished"]
    assert new["blocks"] == 18 + 1 - len(before)  # only what was missing, and the finish
    assert progress["complete"] and progress["blocks"]["retried"] >= 1
    got, record = read_prediction(out)
    assert record["complete"] and record["done"] == list(range(18))
    np.testing.assert_array_equal(got.read().view(np.uint16), want.view(np.uint16))
    spec = {"run_dir": str(tiny_run), "input": str(data), "key": "raw", "output": str(out),
            "output_key": "prob", "snapshot": "LAST", "dtype": "float16",
            "tile": [16, 48, 48], "voxel_size": None, "padding": "symmetric"}  # fmt: skip
    with pytest.raises(PredictionError, match=r"holds a complete prediction of something else: .*"
                       r"model snapshot: recorded '.*FINAL\.pt', now '.*LAST\.pt'"):  # fmt: skip
        prepare_predict(spec, {"backend": "local"})
    with pytest.raises(PredictionError, match="several workers write a zarr folder only"):
        prepare_predict({**spec, "output": str(tmp_path / "p.h5")}, {"backend": "local"})


@pytest.mark.slow
def test_a_two_task_slurm_array_stopped_and_resumed_predicts_as_one_process(
    tiny_run, tmp_path, cluster
):
    """The module's trained run (no training of its own) and its 18 small blocks: the array
    is stopped as the jobs page's Stop does (``scancel``) after a few blocks, its tasks end
    CANCELLED and the job reads stopped; the page's Resume command finishes it."""
    import os
    import time

    from app.block_jobs import task_states
    from app.job_actions import resume_command, stop
    from app.jobs_view import read_jobs
    from trainer.jobs import job_progress
    from trainer.runs.job_records import read_job_records

    want = _one_process_reference(tiny_run, tmp_path / "one.zarr", "uint8")
    out = tmp_path / "array.zarr"
    folder = out / ".voxelboard-job"
    env = {**os.environ, "SLURM_CONF": str(cluster.conf)}
    data = tiny_run.parents[1] / "data.zarr"
    cmd = [sys.executable, "run.py", "predict", str(tiny_run), str(data), str(out), "--key",
           "raw", "--block", "16", "48", "48", "--device", "cpu", "--dtype", "uint8",
           "--backend", "slurm", "--jobs", "2", "--wait", "--slurm-partition", "debug",
           "--slurm-time", "15"]  # fmt: skip
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(list((folder / "done").glob("predict-*"))) < 3:
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        (record,) = [r for r in read_job_records(tiny_run) if r["output"] == str(out)]
        stopped_id = job_progress(out)["slurm_job_id"]
        assert stop(record, cluster.slurm) == [f"Slurm job {stopped_id}"]
        # the --wait command sees its tasks end and says what is missing
        assert first.wait(120) == 1 and "unfinished" in first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    tasks = {f"{stopped_id}_{k}": "CANCELLED" for k in range(2)}
    assert task_states(out, cluster.slurm) == tasks
    (row,) = [r for r in read_jobs(tiny_run.parent, slurm=cluster.slurm) if r.output == str(out)]
    assert (row.state, row.backend, row.tasks) == ("stopped", "slurm", tuple(tasks.items()))
    assert 3 <= row.done < row.total == 19 and {w.state for w in row.workers} == {"stopped"}
    proc = subprocess.run(resume_command(record), cwd=record["cwd"], env=env, timeout=600,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr + "".join(
        p.read_text() for p in folder.glob("slurm-*.log")
    )
    got, record = read_prediction(out)
    assert record["complete"] and record["done"] == list(range(18))
    np.testing.assert_array_equal(got.read(), want)
    p = job_progress(out)
    job_id = p["slurm_job_id"]
    assert job_id != stopped_id
    assert (p["backend"], p["workers_asked"], p["blocks"]["done"]) == ("slurm", 2, 19)
    states = {w["worker"]: w["state"] for w in p["workers"]}
    # a task cancelled before its worker started has no worker file
    assert {w: s for w, s in states.items() if w.startswith(f"slurm-{stopped_id}_")} == {
        f"slurm-{t}": "stopped" for t in tasks if f"slurm-{t}" in states}  # fmt: skip
    assert {w: s for w, s in states.items() if not w.startswith(f"slurm-{stopped_id}_")} == {
        f"slurm-{job_id}_0": "finished", f"slurm-{job_id}_1": "finished"}  # fmt: skip
    assert task_states(out, cluster.slurm) == {f"{job_id}_0": "COMPLETED",
                                               f"{job_id}_1": "COMPLETED"}  # fmt: skip


def test_an_hdf5_block_is_charged_the_whole_chunks_it_allocates(tmp_path, monkeypatch):
    """libhdf5 stores whole chunks: the free-space check before a block counts each chunk it
    touches that is not in the file yet (a block smaller than its chunks still costs them)."""
    import shutil

    from trainer.prediction_store import HDF5_MARGIN, PredictionOutput

    with h5py.File(tmp_path / "p.h5", "w") as f:
        array = f.create_dataset("prob", shape=(2, 24, 80, 80), dtype="f2", chunks=(1, 24, 64, 64))
        out = PredictionOutput(tmp_path / "p.h5", "prob", "hdf5", array, {"done": []})
        chunk = 24 * 64 * 64 * 2
        first = (slice(0, 16), slice(0, 48), slice(0, 48))
        assert out._unallocated_bytes(first) == 2 * chunk  # one chunk per class
        array[(slice(None), *first)] = 1
        assert out._unallocated_bytes(first) == 0
        across = (slice(8, 24), slice(40, 72), slice(0, 48))  # into the chunks at y = 64
        assert out._unallocated_bytes(across) == 2 * chunk
        # a disk with room for the block's own bytes and the margin, not for its new chunks
        real = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage",
                            lambda p: real(p)._replace(free=chunk + HDF5_MARGIN + 100))  # fmt: skip
        out.check_space(16 * 48 * 48 * 2 * 2, "block 1/9", 0, first)
        with pytest.raises(DiskFullError, match=r"p\.h5 \(block 2/9\)"):
            out.check_space(16 * 32 * 48 * 2 * 2, "block 2/9", 0, across)


def test_libhdf5s_failed_flush_on_a_full_disk_counts_as_a_full_disk():
    from trainer.prediction_store import disk_full

    flush = RuntimeError(
        "Unable to synchronously flush file (file write failed: time = Tue Dec  8 00:39:50 "
        "2026\n, filename = 'prob.h5', file descriptor = 6, errno = 28, error message = 'No "
        "space left on device', buf = 0x7f, total write size = 1608)"
    )
    assert disk_full(flush)
    assert disk_full(RuntimeError("Can't decrement id ref count")) is False
    wrapped = RuntimeError("Can't decrement id ref count")
    wrapped.__context__ = flush
    assert disk_full(wrapped)
