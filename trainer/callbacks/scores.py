"""History columns beyond the standard ten: per-class overlap scores and ``valid_are``."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from trainer.callbacks.base import Callback
from trainer.class_metrics import metric_columns, overlap_scores
from trainer.errors import ConfigError

logger = logging.getLogger("voxelboard")


class ClassScores(Callback):
    """Per-class IoU and Dice of the validation batch (class losses only).

    The counts come from the trainer's validation (``Trainer._validate``); NaN without
    validation data.
    """

    def columns(self, trainer: Any) -> tuple[str, ...]:
        return metric_columns(int(trainer.model.n_classes))

    def add_columns(self, trainer: Any, row: dict[str, float], counts: Any) -> None:
        if counts is None:
            row.update(dict.fromkeys(self.columns(trainer), math.nan))
        else:
            row.update(overlap_scores(counts))


class NeuronScore(Callback):
    """``valid_are``: the mean adapted Rand error of the validation cubes' neurons at the
    config's ``history_are_threshold`` (threshold -> components, ``trainer.segmentation``).

    Costs a dense prediction of every validation cube per history row. NaN, with a warning,
    when it cannot be computed: a monitor column does not stop training.

    Raises:
        ConfigError: the config gives no ``instance_files`` (the ground-truth neurons).
    """

    def __init__(self, cfg: Any):
        if not cfg.instance_files:
            raise ConfigError(
                f"{cfg.exp_file}: 'history_are_threshold' needs the ground-truth neurons: set "
                "'instance_files' (one (file, key) per cube, as l_files), or remove it"
            )
        self.threshold = float(cfg.history_are_threshold)
        self._instances: list[np.ndarray] | None = None  # read at the first row

    def columns(self, trainer: Any) -> tuple[str, ...]:
        return ("valid_are",)

    def add_columns(self, trainer: Any, row: dict[str, float], counts: Any) -> None:
        try:
            row["valid_are"] = self._error(trainer)
        except Exception as e:  # noqa: BLE001 - a monitor column must not stop training
            logger.warning("valid_are (history_are_threshold) not computed: %s", e)
            row["valid_are"] = math.nan

    def _error(self, trainer: Any) -> float:
        from trainer.evaluation.neurons import load_instances
        from trainer.inference import centre_crop, predict_labelled
        from trainer.segmentation import segmentation_scores, threshold_components

        cfg, data = trainer.exp_config, trainer.data
        if self._instances is None:
            l_path = (cfg.data_init_kwargs or {}).get("l_path")
            cubes = list(getattr(data, "valid_cubes", []))
            self._instances = load_instances(cfg.instance_files, l_path, cubes)
        errors = []
        for raw, lab, inst in zip(data.valid_d, data.valid_l, self._instances):
            lab = np.asarray(lab)
            lab = lab[0] if lab.ndim == 4 else lab
            _, _, prob = predict_labelled(trainer.model, np.asarray(raw), lab, 1, trainer.device)
            seg = threshold_components(prob, self.threshold)
            gt = centre_crop(np.asarray(inst), prob.shape)
            ignore = cfg.instance_ignore_labels
            s = segmentation_scores(gt, seg, check=False, ignore_labels=ignore)
            errors.append(s.adapted_rand_error)
        return float(np.mean(errors)) if errors else math.nan
