"""Whole-volume prediction to disk: equal to predict_dense, resumable, refuses other layouts."""

from __future__ import annotations

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
from trainer.predictions import PredictionError, predict_to_disk, read_prediction
from trainer.volumes import open_volume

REPO = Path(__file__).resolve().parents[2]
# not a shape the models accept as is: the far end is mirror-padded, as in predict_dense
SHAPE = (19, 70, 61)
TILE = (14, 44, 44)


def raw_volume(tmp_path, fmt="zarr3"):
    raw = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    if fmt == "hdf5":
        path = tmp_path / "in.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("raw", data=raw, chunks=(8, 32, 32))
    else:
        path = tmp_path / "in.zarr"
        zarr.create_array(str(path), name="raw", data=raw, chunks=(8, 32, 32))
    return raw, open_volume(path, "raw")


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return CNN3D(n_classes=2, in_channels=1).eval()


@pytest.mark.parametrize(
    "fmt,out_name,dtype", [("zarr3", "p.zarr", "float16"), ("hdf5", "p.h5", "uint8")]
)
def test_disk_prediction_equals_predict_dense(tmp_path, cnn, fmt, out_name, dtype):
    raw, vol = raw_volume(tmp_path, fmt)
    ref = predict_dense(cnn, raw, tile_shape=TILE)
    out = predict_to_disk(cnn, vol, tmp_path / out_name, dtype=dtype, tile_shape=TILE)
    pred, record = read_prediction(out)
    assert record["complete"] and len(record["done"]) > 4  # several blocks
    got = pred.read().astype(np.float32) / (255 if dtype == "uint8" else 1)
    assert pred.dtype == np.dtype(dtype) and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=0.5 / 255 + 1e-6 if dtype == "uint8" else 1e-3)


def test_same_padding_model_keeps_predict_dense_tiling(tmp_path):
    torch.manual_seed(1)
    unet = UNet3D(n_classes=2, in_channels=1).eval()
    raw, vol = raw_volume(tmp_path)
    ref = predict_dense(unet, raw, tile_shape=(16, 48, 48))
    out = predict_to_disk(unet, vol, tmp_path / "u.zarr", tile_shape=(16, 48, 48))
    got = read_prediction(out)[0].read().astype(np.float32)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_a_stopped_prediction_resumes_with_the_blocks_not_yet_written(tmp_path, cnn):
    raw, vol = raw_volume(tmp_path)
    calls = []

    def stop_after_three(done, total, seconds):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_to_disk(cnn, vol, tmp_path / "p.zarr", tile_shape=TILE, progress=stop_after_three)
    with pytest.raises(PredictionError, match="no complete VoxelBoard prediction"):
        read_prediction(tmp_path / "p.zarr")
    again = []
    predict_to_disk(
        cnn, vol, tmp_path / "p.zarr", tile_shape=TILE, progress=lambda d, t, s: again.append(d)
    )
    total = again[-1]
    assert again[0] >= 3 and len(again) <= total - 2  # written blocks were skipped
    ref = predict_dense(cnn, raw, tile_shape=TILE)
    got = read_prediction(tmp_path / "p.zarr")[0].read().astype(np.float32)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_an_output_of_another_layout_is_refused_not_overwritten(tmp_path, cnn):
    _, vol = raw_volume(tmp_path)
    predict_to_disk(cnn, vol, tmp_path / "p.zarr", tile_shape=TILE)
    before = open_volume(tmp_path / "p.zarr", "prob").read()
    with pytest.raises(
        PredictionError, match=r"dtype float16.*needs.*dtype uint8.*not overwritten"
    ):
        predict_to_disk(cnn, vol, tmp_path / "p.zarr", dtype="uint8", tile_shape=TILE)
    with pytest.raises(PredictionError, match=r"tile \[14, 44, 44\].*tile \[16, 48, 48\]"):
        predict_to_disk(cnn, vol, tmp_path / "p.zarr", tile_shape=(16, 48, 48))
    np.testing.assert_array_equal(open_volume(tmp_path / "p.zarr", "prob").read(), before)


def _train_tiny_run(tmp_path) -> Path:
    raw = np.random.default_rng(0).integers(0, 256, (24, 80, 80), dtype=np.uint8)
    g = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    g.create_array("raw", data=raw, chunks=(8, 32, 32))
    g.create_array("lab", data=(raw > 128).astype(np.uint8), chunks=(8, 32, 32))
    config = tmp_path / "tiny.py"
    data = str(tmp_path / "data.zarr")
    config.write_text(
        "from trainer.models import CNN3D\n"
        f"save_path = {str(tmp_path / 'runs')!r}\n"
        "save_name = 'tiny'\n"
        "data_class = 'BatchCreatorImage'\n"
        f"data_init_kwargs = dict(d_files=[({data!r}, 'raw')], l_files=[({data!r}, 'lab')])\n"
        "batch_size = 1\nn_steps = 2\nhistory_freq = 1\nmonitor_batch_size = 1\n"
        "optimiser = 'Adam'\noptimiser_params = dict(lr=1e-3)\n"
        "def create_model():\n    return CNN3D(n_classes=2, in_channels=1)\n"
    )
    subprocess.run(
        [sys.executable, "run.py", "train", str(config), "--device", "cpu"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return tmp_path / "runs" / "tiny"


@pytest.mark.slow
def test_run_py_predict_writes_resumable_output_and_refuses_another_dtype(tmp_path):
    run_dir = _train_tiny_run(tmp_path)
    cmd = [sys.executable, "run.py", "predict", str(run_dir), str(tmp_path / "data.zarr")]
    out = str(tmp_path / "prob.zarr")
    proc = subprocess.run(
        [*cmd, out, "--key", "raw", "--block", "16", "48", "48", "--device", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ETA" in proc.stderr and "block 8/8" in proc.stderr
    assert read_prediction(out)[0].shape[0] == 2
    proc = subprocess.run(
        [*cmd, out, "--key", "raw", "--block", "16", "48", "48", "--dtype", "uint8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "not overwritten" in proc.stderr
