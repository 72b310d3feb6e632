"""A sweep trial's pruning: each history row goes to the sweep's pruner."""

from __future__ import annotations

from typing import Any

from trainer.callbacks.base import Callback


class Pruning(Callback):
    """Reports each row to ``reporter`` (``trainer.sweeps.TrialReporter``); a pruned trial
    stops like a stop request, and ends in state ``pruned``."""

    def __init__(self, reporter: Any):
        self.reporter = reporter

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        if trainer.stop_reason is not None:
            return
        pruned = self.reporter.report(int(row["steps"]), row)
        if pruned is not None:
            trainer.pruned_reason = pruned
            # a stop signal that came during the report (it reads and writes the study) is
            # kept: it is never overwritten, by a prune or by "not pruned"
            trainer.stop_reason = trainer.stop_reason or pruned
