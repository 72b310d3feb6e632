"""Previews: a prediction of the preview cubes every ``preview_every`` steps and on the time
rule (``initial_prev_h``, then every ``prev_save_h`` hours of training)."""

from __future__ import annotations

import logging
import traceback
from typing import Any

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
