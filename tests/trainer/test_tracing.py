"""Tracing: Transform, rotated patches, the skeleton loss, the data source and sequence training."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.config import ExperimentConfig
from trainer.data import NoValidationData
from trainer.skeletons import Skeleton, render_neurites, write_tracing_file
from trainer.tracing import SkeletonLoss, TracingTrainer, TracingTrainerRNN
from trainer.tracing_data import (
    TRANSFORM_SIZE,
    AgentData,
    Transform,
    WarpingOOBError,
    cut_patches,
    sample_direction,
)

SHAPE = (24, 48, 128)
PATCH = (9, 17, 17)
CENTRE_ZY = (12.0, 24.0)  # the straight neurite runs along x here
RADIUS = 5.0


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _straight_file(path: Path, x0: float, x1: float, valid: bool = False) -> Path:
    nodes = [(*CENTRE_ZY, x) for x in np.arange(x0, x1 + 0.1, 2.0)]
    sk = Skeleton(nodes, radii=RADIUS, name="straight")
    raw = render_neurites(SHAPE, [sk], np.random.default_rng(0))
    return write_tracing_file(path, raw, [sk, sk] if valid else [sk], valid=[1] if valid else [])


# ------------------------------------------------------------------------------ Transform
@pytest.mark.parametrize("seed", range(5))
def test_transform_round_trips_through_its_array(seed):
    rng = np.random.default_rng(seed)
    t = Transform(_random_rotation(rng), rng.uniform(0, 50, 3), aniso_factor=rng.uniform(1, 4))
    arr = t.to_array()
    assert arr.shape == (TRANSFORM_SIZE,)
    back = Transform.from_array(arr)
    assert back == t
    np.testing.assert_allclose(back.rotation, t.rotation, atol=1e-12)
    u = rng.normal(size=(10, 3))
    np.testing.assert_allclose(t.data_to_patch(t.patch_to_data(u)), u, atol=1e-9)
    # the 4x4 matrix maps homogeneous patch offsets exactly like patch_to_data
    hom = np.c_[u, np.ones(10)] @ t.matrix.T
    np.testing.assert_allclose(hom[:, :3], t.patch_to_data(u), atol=1e-9)


@pytest.mark.parametrize(
    "direction", [(0, 0, 1), (0, 1, 0), (1, 0, 0), (-1, 0, 0), (0.3, -0.5, 0.8), (1, 1e-9, 0)]
)
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_from_direction_points_the_patch_x_axis_along_the_direction(direction, gamma):
    t = Transform.from_direction([5, 5, 5], direction, gamma=gamma)
    d = np.asarray(direction, float)
    np.testing.assert_allclose(t.direction, d / np.linalg.norm(d), atol=1e-9)
    assert np.linalg.det(t.rotation) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("arr", "match"),
    [(np.zeros(13), "has 20 values"), (np.r_[np.zeros(16), 1, 2, 3, 2.0], "rotation")],
)
def test_bad_transform_arrays_are_rejected(arr, match):
    with pytest.raises(ValueError, match=match):
        Transform.from_array(arr)


def test_prediction_becomes_position_and_direction_in_data_voxels():
    t = Transform.from_direction([10, 20, 30], [0, 0, 1], aniso_factor=2.0)
    pos, direction = t.cnn_pred2lab_position([2.0, 0.0, 4.0])  # patch z is data z here
    np.testing.assert_allclose(pos, [11, 20, 34])  # 2 physical units = 1 z voxel
    np.testing.assert_allclose(direction, np.array([2, 0, 4]) / math.hypot(2, 4))
    _, stay = t.cnn_pred2lab_position([0, 0, 0])
    np.testing.assert_allclose(stay, t.direction)


# ------------------------------------------------------------------------------ patches
@pytest.fixture(scope="module")
def volume() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).random(SHAPE, dtype=np.float32))


def test_patch_cut_along_x_is_the_plain_array_slice(volume):
    z, y, x = 12, 20, 40
    t = Transform.from_direction([z, y, x], [0, 0, 1])
    patch = cut_patches(volume, [t], PATCH)[0, 0]
    expected = volume.numpy()[z - 4 : z + 5, y - 8 : y + 9, x - 8 : x + 9]
    np.testing.assert_allclose(patch, expected, atol=1e-5)


def test_patch_cut_along_y_is_the_rotated_slice(volume):
    z, y, x = 12, 20, 40
    t = Transform.from_direction([z, y, x], [0, 1, 0])
    patch = cut_patches(volume, [t], PATCH)[0, 0]
    # patch x runs along data y; patch y = patch x cross patch z = -data x
    block = volume.numpy()[z - 4 : z + 5, y - 8 : y + 9, x - 8 : x + 9]
    np.testing.assert_allclose(patch, block.transpose(0, 2, 1)[:, ::-1, :], atol=1e-5)


def test_patch_between_voxels_is_interpolated(volume):
    t = Transform.from_direction([12, 20, 40.5], [0, 0, 1])
    patch = cut_patches(volume, [t], PATCH)[0, 0]
    v = volume.numpy()
    expected = (v[8:17, 12:29, 32:49] + v[8:17, 12:29, 33:50]) / 2
    np.testing.assert_allclose(patch, expected, atol=1e-5)


@pytest.mark.parametrize("position", [(3, 20, 40), (12, 20, 3), (12, 20, 120), (12, 45, 40)])
def test_patch_outside_the_volume_raises_a_catchable_error(volume, position):
    t = Transform.from_direction(position, [0, 0, 1])
    with pytest.raises(WarpingOOBError, match="outside the volume of shape"):
        cut_patches(volume, [t], PATCH)
    assert issubclass(WarpingOOBError, ValueError)


@pytest.mark.parametrize("max_angle", [0.0, 30.0, 90.0])
def test_sampled_directions_stay_within_the_angle(max_angle):
    rng = np.random.default_rng(0)
    tangent = np.array([0.0, 0.6, 0.8])
    dirs = np.array([sample_direction(tangent, rng, 0.5, max_angle) for _ in range(300)])
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0)
    angles = np.degrees(np.arccos(np.clip(np.abs(dirs @ tangent), 0, 1)))
    assert angles.max() <= max_angle + 1e-6
    signs = np.sign(dirs @ tangent)
    assert (signs > 0).any() and (signs < 0).any(), "both ways along the neurite"


# ------------------------------------------------------------------------------ loss
@pytest.fixture(scope="module")
def line() -> Skeleton:
    return Skeleton([(*CENTRE_ZY, x) for x in (10.0, 110.0)], radii=6.0)


def _loss_at(line: Skeleton, offset_yz: tuple[float, float], **kw):
    """Loss of a prediction that lands ``offset`` (physical y, z) beside the line."""
    t = Transform.from_direction([*CENTRE_ZY, 50.0], [0, 0, 1])
    dz, dy = offset_yz
    pred = torch.tensor([[dz, dy, 4.0]], requires_grad=True)
    res = SkeletonLoss(**kw)(pred, [line], [t])
    res.loss.sum().backward()
    return res, pred.grad[0].numpy()


@pytest.mark.parametrize(
    ("offset", "loss", "lost"),
    [
        ((0.0, 0.0), 0.0, False),  # on the skeleton
        ((0.0, 3.0), 0.0, False),  # inner hull radius 2 + tolerance 1.5 > 3
        ((0.0, 5.0), 1.5, False),  # 5 - 2 - 1.5, still inside the radius-6 neurite
        ((4.0, 3.0), 1.5, False),  # the same distance diagonally
        ((0.0, 8.0), 4.5 + 0.05 * 4, True),  # outside: the quadratic rise starts at r = 6
    ],
)
def test_skeleton_loss_zones(line, offset, loss, lost):
    res, _ = _loss_at(line, offset, prior_length=0.0, prior_forward=0.0)
    assert res.loss[0].item() == pytest.approx(loss, abs=1e-4)
    assert bool(res.lost[0]) is lost
    assert res.off_centre[0] == pytest.approx(math.hypot(*offset) / 6.0, abs=1e-3)


@pytest.mark.parametrize("offset", [(0.0, 5.0), (0.0, -5.0), (4.0, 3.0), (-8.0, 0.0), (6, 6)])
def test_skeleton_loss_gradient_points_back_to_the_skeleton(line, offset):
    _, grad = _loss_at(line, offset, prior_length=0.0, prior_forward=0.0)
    towards = -np.array([offset[0], offset[1], 0.0])  # patch frame = data frame here
    cos = (-grad) @ towards / (np.linalg.norm(grad) * np.linalg.norm(towards))
    assert cos == pytest.approx(1.0, abs=1e-6)


def test_skeleton_loss_pull_grows_outside_the_neurite(line):
    grads = [np.linalg.norm(_loss_at(line, (0.0, d), prior_length=0, prior_forward=0)[1])
             for d in (4.0, 5.5, 7.0, 9.0, 12.0)]  # fmt: skip
    assert grads[0] == pytest.approx(grads[1]) == pytest.approx(1.0, abs=1e-5)
    assert grads[1] < grads[2] < grads[3] < grads[4]
    assert np.linalg.norm(_loss_at(line, (0.0, 1.0))[1]) < 0.05, "on track: ~no gradient"


def test_step_prior_penalises_standing_still_and_going_back(line):
    t = Transform.from_direction([*CENTRE_ZY, 50.0], [0, 0, 1])
    loss = SkeletonLoss(step_length=4.0)
    values = loss(torch.tensor([[0, 0, 4.0], [0, 0, 0.0], [0, 0, -4.0]]), [line] * 3, [t] * 3)
    assert float(values.skeleton.abs().max()) == 0.0
    good, still, back = values.loss.tolist()
    assert good < 0.02 and still > 3.0 and back > 3.0


def test_skeleton_loss_rejects_mismatched_inputs(line):
    t = Transform.from_direction([*CENTRE_ZY, 50.0], [0, 0, 1])
    with pytest.raises(ValueError, match="one skeleton and transform per row"):
        SkeletonLoss()(torch.zeros(2, 3), [line], [t])


# ------------------------------------------------------------------------------ data source
@pytest.fixture(scope="module")
def straight_h5(tmp_path_factory) -> Path:
    return _straight_file(tmp_path_factory.mktemp("straight") / "s.h5", 20.0, 100.0, valid=True)


def test_getbatch_starts_inside_the_neurite_near_its_direction(straight_h5):
    data = AgentData(None, path=str(straight_h5), patch_size=PATCH)
    batch = data.getbatch(16, r_max_scale=0.5, max_angle=20.0, rng=np.random.default_rng(0))
    assert batch.img.shape == (16, 1, *PATCH) and batch.img.dtype == np.float32
    assert batch.transforms.shape == (16, TRANSFORM_SIZE) and batch.source == "train"
    for arr in batch.transforms:
        t = Transform.from_array(arr)
        dz, dy = (t.position[:2] - CENTRE_ZY) * (2.0, 1.0)
        assert math.hypot(dz, dy) <= 0.5 * RADIUS + 1e-6
        assert abs(t.direction[2]) >= math.cos(math.radians(20.0)) - 1e-9
    again = data.getbatch(16, r_max_scale=0.5, max_angle=20.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.transforms, batch.transforms)
    # the patch centre is inside the bright neurite
    assert batch.img[:, 0, 4, 8, 8].mean() > batch.img.mean()


def test_get_newslice_follows_a_position_and_stops_at_the_border(straight_h5):
    data = AgentData(None, path=str(straight_h5), patch_size=PATCH)
    img, t = data.get_newslice([*CENTRE_ZY, 60.0], [0, 0, 1])
    expected = data.volume.numpy()[8:17, 16:33, 52:69]
    np.testing.assert_allclose(img[0], expected, atol=1e-5)
    assert t.direction[2] == pytest.approx(1.0)
    with pytest.raises(WarpingOOBError):
        data.get_newslice([*CENTRE_ZY, 124.0], [0, 0, 1])


def test_valid_source_without_validation_skeletons(tmp_path):
    data = AgentData(None, path=str(_straight_file(tmp_path / "t.h5", 20, 100)), patch_size=PATCH)
    with pytest.raises(NoValidationData, match="no validation skeletons"):
        data.getbatch(1, source="valid")
    with pytest.raises(ValueError, match="source must be"):
        data.getbatch(1, source="test")
    with pytest.raises(ValueError, match="needs a patch size"):
        AgentData(None, path=str(tmp_path / "t.h5"))


# ------------------------------------------------------------------------------ trainers
ORACLE_CONFIG = """
import torch
from torch import nn
from trainer.tracing import SkeletonLoss


class Oracle(nn.Module):
    '''Steps straight ahead: the perfect prediction on a straight neurite.'''

    patch_size = {patch}
    offsets = (0, 0, 0)
    strides = (1, 1, 1)
    n_classes = 3

    def __init__(self):
        super().__init__()
        self.step = nn.Parameter(torch.tensor([0.0, 0.0, 4.0]))
        self.tracing_loss = SkeletonLoss(step_length=4.0, prior_forward=0.0)

    def forward(self, x):
        return self.step.expand(len(x), 3)


def create_model():
    return Oracle()


data_class = "AgentData"
data_init_kwargs = dict(path={path!r})
data_batch_args = dict(r_max_scale=0.0, max_angle=0.0)
sequence_training = {seq}
n_steps = {n_steps}
history_freq = 1000
monitor_batch_size = 2
batch_size = 1
optimiser = "SGD"
optimiser_params = dict(lr=1e-9)
"""


def _config(tmp_path: Path, h5: Path, seq: int, n_steps: int) -> ExperimentConfig:
    path = tmp_path / "oracle.py"
    path.write_text(textwrap.dedent(ORACLE_CONFIG).format(patch=PATCH, path=str(h5), seq=seq,
                                                          n_steps=n_steps))  # fmt: skip
    cfg = ExperimentConfig(path)
    cfg.apply_overrides(save_path=str(tmp_path / "runs"), save_name="oracle", device="cpu")
    cfg.make_dir()
    return cfg


@pytest.mark.parametrize(
    ("x_range", "seq", "end"),
    [
        ((20.0, 100.0), 1000, "lost track"),  # past the end the oracle leaves the neurite
        ((0.0, 127.0), 1000, "left the volume"),  # the neurite runs out of the cube
        ((20.0, 100.0), 5, "max_tracing"),  # (a start near an end is lost sooner)
    ],
)
def test_sequence_training_follows_an_oracle_to_the_end(tmp_path, x_range, seq, end):
    h5 = _straight_file(tmp_path / "s.h5", *x_range)
    trainer = TracingTrainer(_config(tmp_path, h5, seq, n_steps=60), device="cpu")
    assert trainer.run() == "finished"
    ends = [t.end for t in trainer.traces]
    assert ends.count(end) >= 2 and set(ends) <= {end, "lost track"}
    for trace in trainer.traces:
        pos = np.array(trace.positions)
        np.testing.assert_allclose(pos[:, :2], np.broadcast_to(CENTRE_ZY, pos[:, :2].shape),
                                   atol=1e-6)  # fmt: skip
        steps = np.diff(pos[:, 2])
        np.testing.assert_allclose(np.abs(steps), 4.0, atol=1e-6)
        assert (np.sign(steps) == np.sign(steps[0])).all(), "always forward"
        on, losses = np.array(trace.on_track), np.array(trace.losses)
        along = (pos[1:, 2] >= x_range[0]) & (pos[1:, 2] <= x_range[1])
        assert np.allclose(losses[along], 0.0), "no loss while on the skeleton"
        assert len(trace) <= seq
        if trace.end == "lost track":
            assert on[:-1].all() and not on[-1] and losses[-1] > 0
            # lost only beyond the neurite's end, within one step of its rounded cap
            last_on, lost_at = pos[-2, 2], pos[-1, 2]
            tip = x_range[1] if steps[0] > 0 else x_range[0]
            assert abs(last_on - tip) <= RADIUS and RADIUS < abs(lost_at - tip) <= RADIUS + 4
        else:
            assert on.all()
        if trace.end == "max_tracing":
            assert len(trace) == seq
        if trace.end == "left the volume":
            x_half = (PATCH[2] - 1) / 2
            assert not (x_half <= pos[-1, 2] + np.sign(steps[0]) * 4 <= 127 - x_half)
    if seq > 100:
        assert max(len(t) for t in trainer.traces) >= 8, "some trace started far from the end"
    hist = trainer.tracker.history
    assert list(hist["steps"]) == [0, 59] and hist["valid_err"].isna().all()
    assert trainer.tracker.debug_outputs.columns.tolist()[2:] == list(trainer.debug_names)


def test_rnn_trainer_tracks_the_radius_as_regression(tmp_path, straight_h5):
    cfg = _config(tmp_path, straight_h5, seq=4, n_steps=6)
    cfg.create_model = lambda: __import__("trainer.tracing").tracing.TracingRNN(
        patch_size=PATCH, hidden_size=16, channels=4
    )
    cfg.data_batch_args = dict(r_max_scale=0.5, max_angle=30.0)
    trainer = TracingTrainerRNN(cfg, device="cpu")
    assert trainer.run() == "finished"
    pred, target = trainer.tracker.regression_track
    assert pred.shape == target.shape == (6, 1)
    np.testing.assert_allclose(target, RADIUS, atol=0.05)
    assert np.isfinite(pred).all()
    hist = trainer.tracker.history
    assert (hist["loss_gain"] == 0).all()
    assert hist[["train_loss", "valid_loss", "train_err", "valid_err"]].notna().all().all()
    assert (hist[["train_err", "valid_err"]].to_numpy() <= 100).all()
