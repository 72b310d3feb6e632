"""End to end: `python run.py train` with a chosen loss, per-class validation metrics and BEST.pt.

Each run is a real subprocess on a small synthetic data set (a few seconds of training).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import runs
from trainer.class_metrics import metric_columns
from trainer.history import HISTORY_COLUMNS, loadhistorytracker

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

CONFIG = """
import torch
from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data
_demo = ensure_demo_data({data!r}, shape=(16, 48, 48), preview_shape=(12, 48, 48))
def create_model():
    return CNN3D(n_classes={n_classes}, base_filters=4, patch_size=(7, 24, 24))
data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(warp=0.0)
n_steps = 6
history_freq = 2
monitor_batch_size = 2
batch_size = 2
optimiser = "Adam"
optimiser_params = dict(lr=1e-3)
param_save_it = 1000
plot_on = False
{extra}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from trainer.synthetic import ensure_demo_data

    d = tmp_path_factory.mktemp("data")
    ensure_demo_data(d, shape=(16, 48, 48), preview_shape=(12, 48, 48))
    return d


def _train(tmp: Path, data_dir: Path, extra: str, *args: str, n_classes: int = 2, name="run"):
    cfg = tmp / f"{name}.py"
    cfg.write_text(CONFIG.format(data=str(data_dir), n_classes=n_classes,
                                 extra=textwrap.dedent(extra)))  # fmt: skip
    cmd = [sys.executable, str(REPO / "run.py"), "train", *(args or (str(cfg),)),
           "--save-path", str(tmp / "runs"), "--save-name", name, "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(data_dir)}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    return proc, tmp / "runs" / name


def test_dice_run_records_per_class_metrics_and_keeps_the_best_snapshot(tmp_path, data_dir, cli):
    extra = """
    loss = "CrossEntropy+Dice"
    loss_params = dict(ce_weight=0.5, dice_weight=2.0)
    class_weights = [0.3, 0.7]
    best_metric = "valid_iou_mean"
    """
    proc, run = _train(tmp_path, data_dir, extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = loadhistorytracker(run).history
    assert tuple(hist.columns) == (*HISTORY_COLUMNS, *metric_columns(2))
    assert list(hist["steps"]) == [0, 2, 4, 5]
    iou = hist[["valid_iou_0", "valid_iou_1"]].to_numpy()
    dice = hist[["valid_dice_0", "valid_dice_1"]].to_numpy()
    assert np.isfinite(iou).all() and ((iou >= 0) & (iou <= 1)).all()
    # pooled counts: Dice = 2 IoU / (1 + IoU) per class, the means are plain means
    np.testing.assert_allclose(dice, 2 * iou / (1 + iou), rtol=1e-9)
    np.testing.assert_allclose(hist["valid_iou_mean"], iou.mean(1), rtol=1e-9)
    # the error column stays the classification error
    assert ((hist["valid_err"] >= 0) & (hist["valid_err"] <= 100)).all()

    best_row = int(np.argmax(hist["valid_iou_mean"].to_numpy()))  # ties: the earliest
    status = runs.read_status(run).extra
    assert status["best_metric"] == "valid_iou_mean" and status["best_mode"] == "max"
    assert status["best_step"] == hist["steps"][best_row]
    assert status["best_value"] == pytest.approx(hist["valid_iou_mean"][best_row])
    assert status["error_metric"] == "classification error (%)"
    snap = torch.load(runs.snapshot_path(run, runs.BEST), weights_only=False)
    assert snap["best"]["best_step"] == status["best_step"]
    assert snap["step"] == status["best_step"] + 1  # the weights after that step's update
    assert runs.snapshot_names(run)[:3] == ["FINAL", "LAST", "BEST"]

    code, _, err = cli(["evaluate", run, "--snapshot", "BEST"], cwd=tmp_path,
                       env={"VOXELBOARD_DATA_DIR": str(data_dir)})  # fmt: skip
    assert code == 0, err[-3000:]
    assert "BEST" in runs.list_results(run)


def test_mse_run_reports_the_mean_squared_error(tmp_path, data_dir):
    proc, run = _train(tmp_path, data_dir, 'loss = "MSE"', n_classes=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = loadhistorytracker(run).history
    assert tuple(hist.columns) == HISTORY_COLUMNS  # no class metrics for regression
    # the error column is the MSE over the same voxels as the loss, not a percentage
    np.testing.assert_allclose(hist["valid_err"], hist["valid_loss"], rtol=1e-5)
    np.testing.assert_allclose(hist["train_err"], hist["train_loss"], rtol=1e-5)
    assert runs.read_status(run).extra["error_metric"] == "mean squared error"


def test_a_loss_module_from_the_config_trains(tmp_path, data_dir):
    extra = "loss = torch.nn.CrossEntropyLoss(ignore_index=-100)\nbest_metric = 'valid_err'"
    proc, run = _train(tmp_path, data_dir, extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert runs.read_status(run).extra["best_mode"] == "min"
    assert np.isfinite(loadhistorytracker(run).timeline["loss"]).all()


def test_resume_keeps_the_best_value_so_far(tmp_path, data_dir):
    # lr halves every step, so with best_mode 'max' the best lr is the one of step 0
    extra = """
    schedules = dict(lr=dict(dec=0.5, period=1))
    best_metric = "lr"
    best_mode = "max"
    """
    proc, run = _train(tmp_path, data_dir, extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = ("--resume", str(run), "--n-steps", "10")
    proc, _ = _train(tmp_path, data_dir, "", *cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = runs.read_status(run)
    assert status.step == 10
    assert (status.extra["best_step"], status.extra["best_value"]) == (0, pytest.approx(1e-3))
    assert torch.load(runs.snapshot_path(run, runs.BEST), weights_only=False)["step"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('loss = "Dise"', "unknown loss 'Dise': did you mean 'Dice'?"),
        ('best_metric = "valid_los"', "did you mean 'valid_loss'?"),
        ('best_metric = "valid_iou_7"', "valid_iou_0, valid_iou_1, valid_dice_0"),
        ('best_mode = "up"', "'best_mode': expected None, 'min' or 'max'"),
    ],
)
def test_bad_loss_and_best_metric_exit_2_with_a_message(tmp_path, data_dir, extra, message, cli):
    cfg = tmp_path / "run.py"
    cfg.write_text(CONFIG.format(data=str(data_dir), n_classes=2, extra=extra))
    code, _, err = cli(["train", cfg, "--save-path", tmp_path / "runs", "--device", "cpu"],
                       env={"VOXELBOARD_DATA_DIR": str(data_dir)}, cwd=tmp_path)  # fmt: skip
    assert code == 2, err[-3000:]
    assert message in err
    if "best_metric" in extra:
        assert "steps, time, train_loss, valid_loss" in err  # the columns are listed


@pytest.mark.parametrize(
    ("loss", "got"),
    [("lambda out, target: (out - out).sum(1)", "a tensor of shape"),
     ("lambda out, target: out.sum() * float('nan')", "returned nan"),
     ("lambda out, target: 0.5", "returned a float")],
)  # fmt: skip
def test_a_loss_that_is_no_finite_scalar_fails_at_step_0(tmp_path, data_dir, loss, got):
    proc, run = _train(tmp_path, data_dir, f"loss = {loss}")
    assert proc.returncode != 0
    assert "the loss of config key 'loss'" in proc.stderr and got in proc.stderr
    assert "at step 0" in proc.stderr
    status = runs.read_status(run)
    assert status.state == "failed" and "'loss'" in status.error
    assert json.loads((run / "config.json").read_text())["loss"].startswith("<function")
