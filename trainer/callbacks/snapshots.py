"""Snapshots: ``LAST`` at every history row, ``step-<N>`` every ``param_save_it`` steps,
``FINAL`` at the end, and ``BEST`` whenever ``best_metric`` improved."""

from __future__ import annotations

import math
from typing import Any

from trainer import runs
from trainer.callbacks.base import Callback


class Snapshots(Callback):
    """Writes ``LAST``, the periodic ``step-<N>`` and ``FINAL`` through
    ``Trainer._save_snapshot`` (which announces each one to ``on_snapshot``)."""

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        trainer._save_snapshot(runs.LAST)

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if step > 0 and step % int(trainer.exp_config.param_save_it) == 0:
            trainer._save_snapshot(step)

    def on_train_end(self, trainer: Any, state: str) -> None:
        trainer._save_snapshot(runs.FINAL)


class BestSnapshot(Callback):
    """Keeps ``trainer.best`` (``best_metric``) up to date from each row, and copies the
    ``LAST`` snapshot written for a row that improved it to ``BEST``.

    Runs before ``Snapshots``, so ``LAST`` holds the updated best value.
    """

    def __init__(self) -> None:
        self._improved = False

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        best = trainer.best
        self._improved = best.update(row.get(best.metric, math.nan), row["steps"],
                                     trainer.train_time)  # fmt: skip

    def on_snapshot(self, trainer: Any, name: str, path: Any) -> None:
        if name != runs.LAST or not self._improved:
            return
        self._improved = False
        best = runs.snapshot_path(trainer.run_dir, runs.BEST)
        with runs.writing(best, trainer.run_dir):
            runs.keep_snapshot_as(trainer.run_dir, runs.LAST, runs.BEST)
        trainer.callbacks.snapshot(runs.BEST, best)
