"""trainer.losses against numpy versions of the formulas, and trainer.class_metrics / trainer.best
against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

from trainer.best import BestValue, mode_for
from trainer.class_metrics import class_counts, metric_columns, overlap_scores
from trainer.errors import ConfigError
from trainer.losses import (
    IGNORE_INDEX,
    check_loss,
    cross_entropy,
    dice_loss,
    make_loss,
    mean_squared_error,
    squared_loss,
)

#: class weights of elektronn3's neuro_data example (ELEKTRONN2's neuro3d set none)
NEURO_DATA_WEIGHTS = [0.2653, 0.7347]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def elektronn2_nll(
    logits: np.ndarray, target: np.ndarray, w: list[float] | None, eps: float = 1e-5
) -> float:
    """ELEKTRONN2's class-weighted multinoulli NLL (reference/elektronn2-update-rules.md).

    VoxelBoard takes the log-softmax without ELEKTRONN2's ``eps`` inside the log (it would cap
    a voxel's loss at 11.5); ``eps=0`` is the same formula without it.
    """
    p = _softmax(logits.astype(np.float64))
    k = logits.shape[1]
    t = np.stack([(target == c) for c in range(k)], axis=1).astype(np.float64)  # ignore: all 0
    w = np.ones(k) if w is None else np.asarray(w, dtype=np.float64)
    wshape = (1, k) + (1,) * (logits.ndim - 2)
    return float((w.reshape(wshape) * t * -np.log(p + eps)).sum() / (t.sum() + eps))


def numpy_dice(logits: np.ndarray, target: np.ndarray, w=None, smooth=1e-5) -> float:
    p = _softmax(logits.astype(np.float64))
    k = logits.shape[1]
    m = (target >= 0)[:, None]
    t = np.stack([(target == c) for c in range(k)], axis=1)
    axes = (0, *range(2, logits.ndim))
    d = (2 * (p * t * m).sum(axes) + smooth) / ((p * m).sum(axes) + (t * m).sum(axes) + smooth)
    w = np.ones(k) if w is None else np.asarray(w, dtype=np.float64)
    return float(1 - (w * d).sum() / w.sum())


def neuro3d_batch() -> tuple[np.ndarray, np.ndarray]:
    """100 labelled voxels (85 of class 0, 15 of class 1) and 10 ignored ones; the model gives
    the true class a probability of 0.409 everywhere."""
    target = np.array([0] * 85 + [1] * 15 + [IGNORE_INDEX] * 10).reshape(1, 110, 1, 1)
    margin = math.log(0.40915 / (1 - 0.40915))
    logits = np.zeros((1, 2, 110, 1, 1))
    labelled = np.clip(target[0], 0, 1)
    logits[0, 1] = np.where(labelled == 1, margin, -margin)  # true class logit - other = margin
    logits[0, 1, 100:] = 3.0  # ignored voxels: any prediction
    return logits, target


def test_class_weights_follow_elektronn2_not_torch():
    logits, target = neuro3d_batch()
    w = torch.tensor(NEURO_DATA_WEIGHTS)
    ours = float(cross_entropy(torch.tensor(logits), torch.tensor(target), w))
    torch_ce = float(F.cross_entropy(torch.tensor(logits), torch.tensor(target), weight=w.double()))
    reference = elektronn2_nll(logits, target, NEURO_DATA_WEIGHTS)
    assert reference == pytest.approx(0.300, abs=5e-4)
    assert torch_ce == pytest.approx(0.894, abs=5e-4)  # what torch's normalisation gives
    assert ours == pytest.approx(reference, abs=1e-4)
    # not renormalised: doubling every weight doubles the loss
    double = float(cross_entropy(torch.tensor(logits), torch.tensor(target), 2 * w))
    assert double == pytest.approx(2 * ours, rel=1e-6)


@pytest.mark.parametrize("weights", [None, NEURO_DATA_WEIGHTS, [1.0, 3.0, 0.5]])
@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_matches_the_numpy_formula(weights, seed):
    rng = np.random.default_rng(seed)
    k = 3 if weights is None or len(weights) == 3 else 2
    logits = rng.normal(0, 2, (2, k, 3, 4, 5))
    target = rng.integers(-1, k, (2, 3, 4, 5))
    target[target < 0] = IGNORE_INDEX
    w = None if weights is None else torch.tensor(weights)
    ours = float(cross_entropy(torch.tensor(logits), torch.tensor(target), w))
    assert ours == pytest.approx(elektronn2_nll(logits, target, weights, eps=0), rel=1e-6)


def test_the_default_loss_is_elektronn2s_cross_entropy():
    logits, target = neuro3d_batch()
    spec = make_loss("CrossEntropy", None, torch.tensor(NEURO_DATA_WEIGHTS))
    got = float(spec.fn(torch.tensor(logits), torch.tensor(target)))
    assert got == pytest.approx(0.300, abs=5e-4)
    assert spec.targets == "classes" and spec.error_label == "classification error (%)"


@pytest.mark.parametrize("weights", [None, [0.2, 0.8]])
def test_dice_matches_numpy_and_ignores_unlabelled_voxels(weights):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, (2, 2, 4, 4, 4))
    target = rng.integers(0, 2, (2, 4, 4, 4))
    target[:, 0] = IGNORE_INDEX
    w = None if weights is None else torch.tensor(weights)
    got = float(dice_loss(torch.tensor(logits), torch.tensor(target), w))
    assert got == pytest.approx(numpy_dice(logits, target, weights), abs=1e-6)
    changed = logits.copy()
    changed[:, :, 0] = rng.normal(0, 5, changed[:, :, 0].shape)  # only ignored voxels change
    again = float(dice_loss(torch.tensor(changed), torch.tensor(target), w))
    assert again == pytest.approx(got, abs=1e-7)


def test_dice_by_hand():
    # one voxel per class, certain and right: Dice 1 for both classes, loss 0
    logits = torch.tensor([[[50.0, -50.0]], [[-50.0, 50.0]]]).permute(1, 0, 2)  # (1, 2, 2)
    target = torch.tensor([[0, 1]])
    assert float(dice_loss(logits, target, smooth=0.0)) == pytest.approx(0.0, abs=1e-6)
    # certain and wrong on the class-1 voxel: class 0 gets 2*1/(2+1), class 1 gets 0
    target = torch.tensor([[0, 0]])
    want = 1 - (2 / 3 + 0) / 2
    assert float(dice_loss(logits, target, smooth=0.0)) == pytest.approx(want, abs=1e-6)


def test_cross_entropy_plus_dice_weights_are_settable():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(0, 1, (1, 2, 3, 3, 3)))
    y = torch.tensor(rng.integers(0, 2, (1, 3, 3, 3)))
    spec = make_loss("CrossEntropy+Dice", {"ce_weight": 0.25, "dice_weight": 2.0}, None)
    want = 0.25 * float(cross_entropy(x, y)) + 2.0 * float(dice_loss(x, y))
    assert float(spec.fn(x, y)) == pytest.approx(want, rel=1e-6)


def _elektronn2_squared_loss(pred: np.ndarray, target: np.ndarray, unlabelled: np.ndarray) -> float:
    """ELEKTRONN2's SquaredLoss node then AggregateLoss, step by step in numpy (float64)."""
    n_labelled = (~unlabelled).sum()
    scale = pred.size / (n_labelled + 1)  # n_tot / (n_labelled + 1)
    out = scale * 0.5 * (target - pred) ** 2
    out[unlabelled] = 0.0
    out = out.mean(axis=1, keepdims=True)  # SquaredLoss: mean over the feature axis
    return float(np.mean(out))  # AggregateLoss: mean of the rest


@pytest.mark.parametrize("shape", [(2, 1, 3, 4, 5), (3, 2, 2, 6, 1)])
def test_squared_loss_is_elektronn2s_formula(shape):
    rng = np.random.default_rng(sum(shape))
    pred = rng.normal(size=shape)
    target = rng.normal(size=shape)
    unlabelled = rng.random(shape) < 0.3
    want = _elektronn2_squared_loss(pred, target, unlabelled)
    ours = squared_loss(
        torch.tensor(pred, dtype=torch.float64),
        torch.tensor(np.where(unlabelled, np.nan, target)),
    )
    assert float(ours) == pytest.approx(want, rel=1e-6)  # the loss is computed in float32
    assert make_loss("SquaredLoss", None, None).fn is squared_loss


def test_squared_loss_and_mse_skip_nan_targets():
    pred = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])  # (1, 1, 4)
    target = torch.tensor([[0.0, 2.0, float("nan"), 6.0]])  # (1, 4): no channel axis
    assert float(squared_loss(pred, target)) == pytest.approx(0.5 * (1 + 0 + 4) / (3 + 1))
    assert float(mean_squared_error(pred, target)) == pytest.approx((1 + 0 + 4) / 3)
    nothing = torch.full((1, 4), float("nan"))
    assert float(squared_loss(pred, nothing)) == 0.0 == float(mean_squared_error(pred, nothing))
    for name, fn in (("SquaredLoss", squared_loss), ("MSE", mean_squared_error)):
        spec = make_loss(name, None, torch.tensor([1.0, 2.0]))
        assert spec.fn is fn and spec.targets == "values"
        assert spec.error_label == "mean squared error"
        with pytest.raises(ValueError, match=r"differ in shape.*one output channel"):
            fn(torch.zeros(1, 2, 4), torch.zeros(1, 4))


def test_callables_and_modules_are_losses():
    module = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    spec = make_loss(module, None, None)
    assert spec.fn is module and spec.name == "CrossEntropyLoss" and spec.targets == "classes"

    def my_mse(out, target):
        return ((out - target) ** 2).mean()

    spec = make_loss(my_mse, {"targets": "values"}, None)
    assert spec.targets == "values" and spec.name.endswith("my_mse")


@pytest.mark.parametrize(
    ("loss", "params", "match"),
    [
        ("Dise", None, r"unknown loss 'Dise': did you mean 'Dice'\?"),
        ("crossentropy", None, r"did you mean 'CrossEntropy'\?"),
        ("Focal", None, r"expected one of CrossEntropy, Dice, .*SquaredLoss, MSE"),
        ("CrossEntropy+Dice", {"dice_weigth": 1}, r"unknown key\(s\) 'dice_weigth'.*dice_weight"),
        ("Dice", [1], r"'loss_params': expected a dict"),
    ],
)
def test_bad_loss_values_are_named(loss, params, match):
    assert any(re.search(match, p) for p in check_loss(loss, params))
    with pytest.raises(ConfigError, match=match):
        make_loss(loss, params, None)


# ------------------------------------------------------------------------- class metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_scores_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(-1, 3, 5000)
    pred = rng.integers(0, 3, 5000)
    scores = overlap_scores(class_counts(pred, target, 3))
    keep = target >= 0
    iou = skm.jaccard_score(target[keep], pred[keep], labels=[0, 1, 2], average=None)
    dice = skm.f1_score(target[keep], pred[keep], labels=[0, 1, 2], average=None)
    for c in range(3):
        assert scores[f"valid_iou_{c}"] == pytest.approx(iou[c])
        assert scores[f"valid_dice_{c}"] == pytest.approx(dice[c])
    assert scores["valid_iou_mean"] == pytest.approx(iou.mean())
    assert scores["valid_dice_mean"] == pytest.approx(dice.mean())
    assert list(scores) == [*metric_columns(3)[:6], "valid_iou_mean", "valid_dice_mean"]


def test_counts_add_up_over_batches_and_absent_classes_are_left_out():
    a = class_counts(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 3)
    b = class_counts(np.array([1, 0]), np.array([1, IGNORE_INDEX]), 3)
    scores = overlap_scores(a + b)
    assert scores["valid_iou_0"] == pytest.approx(1 / 2)  # tp 1, fp 1 (the class-1 voxel)
    assert scores["valid_iou_1"] == pytest.approx(2 / 3)  # tp 2, fn 1
    assert math.isnan(scores["valid_iou_2"])  # neither predicted nor labelled
    assert scores["valid_iou_mean"] == pytest.approx((1 / 2 + 2 / 3) / 2)


# ------------------------------------------------------------------------- best value


@pytest.mark.parametrize(
    ("column", "mode"),
    [("valid_loss", "min"), ("train_err", "min"), ("valid_iou_mean", "max"),
     ("valid_dice_1", "max"), ("valid_accuracy", "max"), ("lr", "min")],
)  # fmt: skip
def test_direction_follows_the_column_name(column, mode):
    assert mode_for(column) == mode
    assert mode_for(column, "max" if mode == "min" else "min") != mode


def test_best_value_keeps_the_earliest_best_and_skips_nan():
    best = BestValue("valid_loss")
    assert [best.update(v, s, s / 10) for s, v in enumerate([0.5, math.nan, 0.4, 0.4, 0.6])] == [
        True, False, True, False, False]  # fmt: skip
    assert (best.value, best.step) == (0.4, 2)
    again = BestValue("valid_loss")
    again.load_state_dict(best.state_dict())
    assert (again.value, again.step, again.time_s) == (0.4, 2, 0.2)
    other = BestValue("valid_loss", "max")
    other.load_state_dict(best.state_dict())  # another direction: start afresh
    assert other.value is None
