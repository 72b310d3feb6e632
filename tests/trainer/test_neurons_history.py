"""End to end: `history_are_threshold` adds the validation neurons' adapted Rand error to the
history (a real `python run.py train` subprocess on a small demo data set)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from trainer.class_metrics import metric_columns
from trainer.history import HISTORY_COLUMNS, loadhistorytracker

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

CONFIG = """
from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data
_demo = ensure_demo_data({data!r}, shape=(16, 48, 48), preview_shape=(12, 48, 48))
def create_model():
    return CNN3D(n_classes=2, base_filters=4, patch_size=(7, 24, 24))
data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(warp=0.0)
n_steps = 4
history_freq = 2
monitor_batch_size = 2
batch_size = 2
optimiser = "Adam"
optimiser_params = dict(lr=1e-3)
param_save_it = 1000
plot_on = False
{extra}
"""


def _train(tmp: Path, extra: str, name: str = "run") -> tuple[subprocess.CompletedProcess, Path]:
    data = tmp / "data"
    cfg = tmp / f"{name}.py"
    cfg.write_text(CONFIG.format(data=str(data), extra=textwrap.dedent(extra)))
    cmd = [sys.executable, str(REPO / "run.py"), "train", str(cfg), "--save-path",
           str(tmp / "runs"), "--save-name", name, "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(data)}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    return proc, tmp / "runs" / name


def test_history_records_the_adapted_rand_error_of_the_validation_neurons(tmp_path):
    from trainer.evaluation.run import load_run
    from trainer.inference import centre_crop, predict_labelled
    from trainer.segmentation import segmentation_scores, threshold_components

    extra = """
    instance_files = _demo.instance_files_kwarg()
    history_are_threshold = 0.5
    """
    proc, run = _train(tmp_path, extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = loadhistorytracker(run).history
    assert tuple(hist.columns) == (*HISTORY_COLUMNS, *metric_columns(2), "valid_are")
    are = hist["valid_are"].to_numpy()
    assert np.isfinite(are).all() and ((are >= 0) & (are <= 1)).all()
    # the last row is the error of the final weights on the validation cube
    loaded = load_run(run, "FINAL", "cpu", data_dir=tmp_path / "data")
    raw, lab = loaded.data.valid_d[0], np.asarray(loaded.data.valid_l[0])
    _, _, prob = predict_labelled(loaded.model, np.asarray(raw), lab[0] if lab.ndim == 4 else lab)
    (k,) = loaded.data.valid_cubes
    with h5py.File(tmp_path / "data" / f"neurons_{k}.h5") as f:
        ids = centre_crop(f["ids"][()], prob.shape)
    want = segmentation_scores(ids, threshold_components(prob, 0.5)).adapted_rand_error
    assert are[-1] == pytest.approx(want, abs=1e-6)


def test_history_are_threshold_without_neurons_is_refused(tmp_path):
    proc, _run = _train(tmp_path, "history_are_threshold = 0.5\n", name="bad")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "'history_are_threshold' needs" in proc.stderr and "instance_files" in proc.stderr
