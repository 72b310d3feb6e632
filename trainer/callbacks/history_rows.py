"""The history store: each monitoring row appended as it is measured, the HTML report at the end."""

from __future__ import annotations

import logging
from typing import Any

from trainer import runs
from trainer.callbacks.base import Callback

logger = logging.getLogger("voxelboard")


class HistoryRows(Callback):
    """Appends each row to ``trainer.tracker``; with ``plot_on``, writes the history report
    (``0-history.*.html``) when the loop ends."""

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        trainer.tracker.update_history(row)

    def on_train_end(self, trainer: Any, state: str) -> None:
        if not trainer.exp_config.plot_on:
            return
        prefix = runs.history_plot_prefix(trainer.run_dir)
        try:
            trainer.tracker.plot(str(prefix))
        except Exception as e:  # the HTML copy of the history is a convenience
            logger.warning("Could not write the history plot %s.*.html: %s", prefix.name, e)
