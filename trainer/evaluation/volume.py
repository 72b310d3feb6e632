"""Evaluating a prediction on disk (``python run.py predict``) against a label volume.

Both volumes are read slab by slab along z and counted into a ``BinnedAccumulator``, so
memory is bounded by one slab and the bins whatever the volume's size. A valid-convolution
model predicts less than its input: prediction and labels are cropped, centred, to the
spatial shape they share (as ``predict_labelled`` does).

Example:
    >>> res = evaluate_prediction("prob.zarr", "labels.zarr", "lab")  # doctest: +SKIP
    >>> res.at(0.5).f1  # doctest: +SKIP
"""

from __future__ import annotations

import os

import numpy as np

from trainer.metrics import DEFAULT_N_BINS, BinnedAccumulator, EvaluationResult
from trainer.predictions import read_prediction
from trainer.volumes import open_volume

__all__ = ["evaluate_prediction"]


def evaluate_prediction(
    prediction: str | os.PathLike,
    labels: str | os.PathLike,
    label_key: str,
    prediction_key: str = "prob",
    channel: int = 1,
    n_bins: int = DEFAULT_N_BINS,
    slab: int = 16,
) -> EvaluationResult:
    """Binned evaluation of class ``channel`` of a finished prediction against labels.

    Args:
        prediction: the output of ``run.py predict`` (zarr folder or HDF5 file).
        labels: container of the label volume (z, y, x); negative labels are ignored,
            labels > 0 count as positive.
        label_key: its key.
        prediction_key: the prediction's key.
        channel: the class whose probability is scored.
        n_bins: score bins of the accumulator.
        slab: z slices read at a time.

    Raises:
        trainer.predictions.PredictionError: the prediction is not complete.
        ValueError: labels not (z, y, x) or ``channel`` out of range.
    """
    pred, _ = read_prediction(prediction, prediction_key)
    lab = open_volume(labels, label_key)
    if len(lab.shape) != 3:
        raise ValueError(f"labels {lab.name} have shape {lab.shape}: expected (z, y, x)")
    if not 0 <= channel < pred.shape[0]:
        raise ValueError(f"channel {channel} out of range for {pred.name} of shape {pred.shape}")
    shape = [min(a, b) for a, b in zip(pred.shape[1:], lab.shape)]
    p0 = [(n - m) // 2 for n, m in zip(pred.shape[1:], shape)]
    l0 = [(n - m) // 2 for n, m in zip(lab.shape, shape)]
    scale = np.float32(255) if pred.dtype == np.uint8 else np.float32(1)
    acc = BinnedAccumulator(n_bins=n_bins)
    for z in range(0, shape[0], slab):
        dz = min(slab, shape[0] - z)
        p_box = (
            slice(channel, channel + 1),
            slice(p0[0] + z, p0[0] + z + dz),
            *(slice(a, a + m) for a, m in zip(p0[1:], shape[1:])),
        )
        l_box = (
            slice(l0[0] + z, l0[0] + z + dz),
            *(slice(a, a + m) for a, m in zip(l0[1:], shape[1:])),
        )
        scores = pred.read(p_box)[0].astype(np.float32) / scale
        truth = lab.read(l_box)
        acc.add(np.where(truth < 0, -1, truth > 0).astype(np.int8), np.clip(scores, 0, 1))
    return acc.result()
