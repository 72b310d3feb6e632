"""Previews: a prediction of the preview cubes every ``preview_every`` steps and on the time
rule (``initial_prev_h``, then every ``prev_save_h`` hours of training), and how a preview's
blocks are cut and written (``Trainer.preview_slice`` and its ELEKTRONN2 siblings use these)."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from trainer import runs
from trainer.callbacks.base import Callback

logger = logging.getLogger("voxelboard")


class Previews(Callback):
    """Writes ``previews/preview-<step>.h5`` through ``Trainer.preview_slice`` when due.

    Its time is not training time, as in ELEKTRONN2. A preview that cannot be computed is
    logged and training goes on; one that cannot be written (a full disk) raises
    ``RunWriteError`` and stops the run.
    """

    untimed = True

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if not self._due(trainer, step):
            return
        trainer.preview_hours_done = trainer.train_time / 3600.0
        try:
            kw = dict(trainer.exp_config.preview_kwargs)
            kw.pop("number", None)
            trainer.preview_slice(number=step, **kw)
        except runs.RunWriteError:
            raise
        except Exception:
            logger.warning("Preview at step %d failed:\n%s", step, traceback.format_exc())

    @staticmethod
    def _due(trainer: Any, step: int) -> bool:
        if not trainer.preview_data:
            return False
        cfg = trainer.exp_config
        if cfg.preview_every and step % int(cfg.preview_every) == 0:
            return True
        hours = trainer.train_time / 3600.0
        initial, period = float(cfg.initial_prev_h), float(cfg.prev_save_h)
        if trainer.preview_hours_done is None:
            return hours >= initial
        return hours - trainer.preview_hours_done >= period


def preview_slab(model: Any, cube: np.ndarray, max_z_pred: int) -> np.ndarray:
    """The central z-slab of a (C, z, y, x) preview cube that gives ``max_z_pred`` output
    planes (at least one patch thick).

    Raises:
        ValueError: the cube is thinner than that (the message says what to change).
    """
    off_z = int(model.offsets[0])
    need = max(int(model.patch_size[0]), max_z_pred + 2 * off_z)
    z = cube.shape[1]
    if need > z:
        raise ValueError(
            f"preview cube has {z} z-planes but the model needs {need} "
            f"(patch z {model.patch_size[0]}, max_z_pred {max_z_pred}); "
            "use a thicker preview cube or a smaller max_z_pred in preview_kwargs"
        )
    z0 = (z - need) // 2
    return np.ascontiguousarray(cube[:, z0 : z0 + need], dtype=np.float32)


def write_preview(trainer: Any, number: int, blocks: list, export_class: str | int) -> Path:
    """Write ``(name, raw cube, probabilities)`` blocks as the preview of step ``number``:
    each raw cube cut to the region its probabilities cover (the model's offsets)."""
    model = trainer.model
    oz, oy, ox = (int(o) for o in model.offsets)
    aligned = []
    for name, raw, prob in blocks:
        region = raw[0, oz : raw.shape[1] - oz, oy : raw.shape[2] - oy, ox : raw.shape[3] - ox]
        prob = _select_classes(prob, export_class)
        aligned.append((name, region[: prob.shape[1], : prob.shape[2], : prob.shape[3]], prob))
    return runs.write_preview(
        trainer.run_dir, number, aligned, hours=trainer.train_time / 3600.0,
        n_classes=int(model.n_classes), save_name=str(trainer.exp_config.save_name),
        z0=oz, source=str(trainer.exp_config.preview_data_path),
    )  # fmt: skip


def _select_classes(prob: np.ndarray, export_class: Any) -> np.ndarray:
    if export_class in (None, "all"):
        return prob
    idx = (
        [int(c) for c in export_class]
        if isinstance(export_class, list | tuple)
        else [int(export_class)]
    )
    return prob[idx]
