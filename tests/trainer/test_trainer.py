"""The Trainer in-process: same result as a plain PyTorch loop, schedules, divergence, failures."""

from __future__ import annotations

import copy
import itertools
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer import runs
from trainer.config import ExperimentConfig
from trainer.trainer import DivergedError, Trainer

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data
_demo = ensure_demo_data({data!r}, shape=(16, 48, 48), preview_shape=(12, 48, 48))
def create_model():
    return CNN3D(n_classes=2, base_filters=4, patch_size=(7, 24, 24))
data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
preview_data_path = _demo.preview_data_path
preview_kwargs = dict(max_z_pred=2)
n_steps = {n_steps}
history_freq = 5
monitor_batch_size = 2
batch_size = 2
optimiser = "SGD"
optimiser_params = dict(lr=0.05, mom=0.9)
schedules = dict(lr=dict(updates=[(3, 0.01)]))
param_save_it = 4
plot_on = False
{extra}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def make_trainer(tmp: Path, data_dir: Path, n_steps: int = 8, extra: str = "", **kw) -> Trainer:
    cfg_file = tmp / "cfg.py"
    cfg_file.write_text(
        CONFIG.format(data=str(data_dir), n_steps=n_steps, extra=textwrap.dedent(extra))
    )
    cfg = ExperimentConfig(str(cfg_file))
    cfg.apply_overrides(save_path=str(tmp / "runs"), save_name=kw.pop("name", "run"))
    cfg.make_dir()
    return Trainer(cfg, device="cpu", **kw)


class Fixed:
    """A data source cycling through batches made once, so two loops see the same data."""

    def __init__(self, source, n: int = 3):
        self.batches = [source.getbatch(batch_size=2, source="train") for _ in range(n)]
        self._it = itertools.cycle(self.batches)
        self.monitor = {s: source.getbatch(batch_size=4, source=s) for s in ("train", "valid")}

    def getbatch(self, batch_size=1, source="train", **kw):
        # training batches have 2 examples, monitoring batches 4 (monitor_batch_size)
        return next(self._it) if batch_size == 2 else self.monitor[source]


def test_training_equals_a_plain_pytorch_loop(tmp_path, data_dir):
    torch.manual_seed(0)
    tr = make_trainer(tmp_path, data_dir, n_steps=8, extra="monitor_batch_size = 4")
    tr.data = Fixed(tr.data)
    model = copy.deepcopy(tr.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step, (data, target) in zip(range(8), itertools.cycle(tr.data.batches)):
        loss = F.cross_entropy(model(torch.as_tensor(data)), torch.as_tensor(target)[:, 0].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if step == 3:  # Schedule(updates=[(3, 0.01)]) takes effect after step 3
            opt.param_groups[0]["lr"] = 0.01

    assert tr.run() == "finished"
    np.testing.assert_allclose(tr.tracker.timeline["loss"], losses, rtol=1e-5)
    for a, b in zip(tr.model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert list(tr.tracker.history["steps"]) == [0, 5, 7]
    np.testing.assert_allclose(tr.tracker.history["lr"], [0.05, 0.01, 0.01])


def test_snapshots_previews_and_status(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, n_steps=9, extra="preview_every = 4")
    tr.run()
    run_dir = tr.run_dir
    names = sorted(p.name for p in (run_dir / runs.SNAPSHOT_DIR).iterdir())
    # BEST.pt: valid_loss (the default best_metric) was best at some history step
    assert names == ["BEST.pt", "FINAL.pt", "LAST.pt", "step-00000004.pt", "step-00000008.pt"]
    assert [p.name for p in runs.preview_files(run_dir)] == [
        "preview-00000000.h5", "preview-00000004.h5", "preview-00000008.h5"]  # fmt: skip
    status = runs.read_status(run_dir)
    assert (status.state, status.step, status.n_steps) == ("finished", 9, 9)
    assert status.pid and status.heartbeat >= status.started
    assert not list(run_dir.rglob("*.tmp")), "no temporary file is left behind"


def test_background_processes_feed_the_loop(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, n_steps=6, extra="background_processes = 2")
    assert tr.run() == "finished"
    assert len(tr.tracker.timeline) == 6 and np.isfinite(tr.tracker.timeline["loss"]).all()


def test_nan_loss_marks_the_run_diverged_and_keeps_the_last_good_snapshot(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, n_steps=20, extra="monitor_batch_size = 4")
    tr.data = Fixed(tr.data)
    good = tr.data.batches[0]
    bad = (np.full_like(good[0], np.nan), good[1])
    tr.data.batches[:] = [good] * 6 + [bad]
    tr.data._it = iter(tr.data.batches)
    with pytest.raises(DivergedError, match="step 6"):
        tr.run()
    status = runs.read_status(tr.run_dir)
    assert status.state == "diverged" and "step 6" in status.error
    snap = torch.load(runs.snapshot_path(tr.run_dir, "LAST"), weights_only=False)
    assert snap["step"] == 6
    assert all(torch.isfinite(v).all() for v in snap["model"].values() if v.is_floating_point())


def test_an_exception_marks_the_run_failed_with_the_traceback_in_the_log(tmp_path, data_dir):
    import logging

    tr = make_trainer(tmp_path, data_dir, n_steps=20)

    def broken(**kw):
        raise OSError("disk on fire")

    tr.data.getbatch = broken
    handler = logging.FileHandler(tr.run_dir / runs.LOG_FILE)
    logging.getLogger("voxelboard").addHandler(handler)
    try:
        with pytest.raises(OSError, match="disk on fire"):
            tr.run()
    finally:
        logging.getLogger("voxelboard").removeHandler(handler)
        handler.close()
    status = runs.read_status(tr.run_dir)
    assert status.state == "failed" and "disk on fire" in status.error
    assert "Traceback" in (tr.run_dir / runs.LOG_FILE).read_text()


def test_no_validation_cube_gives_nan_monitoring(tmp_path, data_dir):
    extra = "data_init_kwargs = dict(_demo.data_init_kwargs(), valid_cubes=[])"
    tr = make_trainer(tmp_path, data_dir, n_steps=2, extra=extra)
    tr.run()
    hist = tr.tracker.history
    assert hist["valid_loss"].isna().all() and hist["train_loss"].notna().all()
    assert tr.test_model("valid") == (pytest.approx(math.nan, nan_ok=True),) * 2


def test_a_model_without_geometry_is_refused_with_a_hint(tmp_path, data_dir):
    extra = """
    def create_model():
        import torch
        return torch.nn.Conv3d(1, 2, 1)
    """
    with pytest.raises(TypeError, match="patch_size"):
        make_trainer(tmp_path, data_dir, extra=extra)


def test_model_methods_of_the_reference_api(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, n_steps=1)
    data, target = tr.debug_getcnnbatch()[:2]
    assert target.shape[-3:] == tuple(
        np.asarray(data.shape[-3:]) - 2 * np.asarray(tr.model.offsets)
    )
    path = tr.preview_slice_from_traindata(cube_i=0, off=(0, 0, 0), sh=(7, 30, 30), number=3)
    assert path.name == "preview-00000003.h5"
    loss, err = tr.test_model("train")
    assert loss > 0 and 0 <= err <= 100


def test_debug_getcnnbatch_writes_the_batch_image(tmp_path, data_dir):
    from trainer.plotting import batch_figure

    tr = make_trainer(tmp_path, data_dir, n_steps=1)
    data, target = tr.debug_getcnnbatch()[:2]
    page = (tr.run_dir / "Batch_test_image.html").read_text()
    assert "overlay" in page and "plotly.min.js" in page
    fig = batch_figure(data[0], target[0], tr.model.offsets)
    t = target.shape[2] // 2
    np.testing.assert_array_equal(fig.data[0].z, data[0, 0, tr.model.offsets[0] + t])
    lab = np.asarray(fig.data[1].z)
    oy, ox = tr.model.offsets[1:]
    np.testing.assert_array_equal(lab[oy:-oy, ox:-ox], np.clip(target[0, 0, t], 0, None))


@pytest.mark.skipif(sys.platform != "linux", reason="fork-based workers")
def test_resume_restores_model_optimizer_and_schedule(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, n_steps=5)
    tr.run()
    tr.exp_config.n_steps = 7
    again = Trainer(tr.exp_config, device="cpu", resume=True)
    assert again.step == 5
    for a, b in zip(again.model.parameters(), tr.model.parameters()):
        torch.testing.assert_close(a, b)
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert again.run() == "finished"
    assert list(again.tracker.timeline.index) == list(range(7))


def test_resume_from_a_snapshot_with_one_parameter_group_says_why_it_cannot(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, n_steps=2)
    tr.run()
    last = tr.run_dir / runs.SNAPSHOT_DIR / "LAST.pt"
    state = torch.load(last, weights_only=False)
    groups = state["optimizer"]["param_groups"]
    # what a VoxelBoard that decayed every parameter saved: one group of all parameters
    groups[:] = [{**groups[0], "params": sorted(i for g in groups for i in g["params"])}]
    torch.save(state, last)
    for p in last.parent.iterdir():
        if p.name != "LAST.pt":
            p.unlink()
    with pytest.raises(ValueError, match=r"LAST\.pt: its optimiser state has 1 parameter group"):
        Trainer(tr.exp_config, device="cpu", resume=True)


def test_resume_after_a_crash_drops_the_rows_past_the_snapshot(tmp_path, data_dir):
    import shutil

    tr = make_trainer(tmp_path, data_dir, n_steps=6)
    tr.run()
    snaps = tr.run_dir / runs.SNAPSHOT_DIR
    shutil.copy(snaps / "LAST.pt", tmp_path / "at-step-6.pt")
    tr.exp_config.n_steps = 8
    Trainer(tr.exp_config, device="cpu", resume=True).run()
    # a crash after step 7 whose only snapshot is from step 6: the store is ahead of it
    for p in snaps.iterdir():
        p.unlink()
    shutil.copy(tmp_path / "at-step-6.pt", snaps / "LAST.pt")
    tr.exp_config.n_steps = 10
    again = Trainer(tr.exp_config, device="cpu", resume=True)
    assert again.step == 6
    again.run()
    assert list(again.tracker.timeline.index) == list(range(10)), "no duplicate and no gap"
    assert list(again.tracker.history["steps"]) == [0, 5, 9]


def test_class_weights_are_normalised_as_in_elektronn2(tmp_path, data_dir):
    # 85 voxels of class 0, 15 of class 1, 10 ignored; the true class gets p = 0.409 each
    tr = make_trainer(tmp_path, data_dir, extra="class_weights = [0.2653, 0.7347]")
    target = np.array([0] * 85 + [1] * 15 + [-1] * 10).reshape(1, 1, 110, 1, 1)
    margin = np.log(0.40915 / (1 - 0.40915))
    logits = np.zeros((1, 2, 110, 1, 1), dtype=np.float32)
    logits[0, 1, :, 0, 0] = np.where(target.ravel() == 1, margin, -margin)
    x, y = tr._to_device((np.zeros((1, 1, 1, 1, 1)), target))
    loss = float(tr._loss(torch.from_numpy(logits), y))
    # ELEKTRONN2: sum of w * nll over labelled voxels / 100; torch's weighting gives 0.894
    assert loss == pytest.approx(0.300, abs=5e-4)


def test_the_smoothing_lengths_of_the_config_reach_speed_log_and_report(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, n_steps=7, extra="""
        time_per_step_smoothing_length = 3
        loss_smoothing_length = 4
        plot_on = True
    """)  # fmt: skip
    assert tr.run() == "finished"
    timeline = tr.tracker.timeline
    # the speed is the mean of the last 3 step times (the timeline's time is their running sum)
    step_times = np.diff(np.r_[0.0, timeline["time"].to_numpy()])
    assert tr.speed()["it_per_s"] == pytest.approx(1.0 / step_times[-3:].mean(), rel=1e-6)
    assert runs.read_status(tr.run_dir).extra["it_per_s"] == pytest.approx(
        1.0 / step_times[-3:].mean(), rel=1e-6
    )
    assert tr.smoothed_loss() == pytest.approx(timeline["loss"].to_numpy()[-4:].mean())
    # the end-of-run report draws the moving average over the config's window
    assert tr.tracker.loss_smoothing_length == 4
    report = next(tr.run_dir.glob("*.timeline.html")).read_text()
    assert "moving average (4)" in report and "moving average (200)" not in report
