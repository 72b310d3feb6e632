"""The best value of one history column so far: what decides ``snapshots/BEST.pt``.

Pure bookkeeping; the handlers in ``trainer.callbacks`` write the snapshot
(``snapshots.BestSnapshot``) and the status fields (``status.StatusFields``) when ``update``
says the value improved.

Example:
    >>> best = BestValue("valid_iou_mean")
    >>> best.mode
    'max'
    >>> best.update(0.4, step=10, time_s=3.0), best.update(0.3, step=20, time_s=6.0)
    (True, False)
    >>> best.step, best.value
    (10, 0.4)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

#: words in a column name that make higher values better
_HIGHER_IS_BETTER = ("iou", "dice", "acc", "f1", "precision", "recall", "auc")


def mode_for(column: str, mode: str | None = None) -> str:
    """``'min'`` or ``'max'``: ``mode`` when given, else from the column's name.

    Higher is better for IoU, Dice, accuracy, F1, precision, recall and AUC columns; lower
    for everything else (losses, errors).
    """
    if mode is not None:
        return mode
    name = column.lower()
    return "max" if any(w in name for w in _HIGHER_IS_BETTER) else "min"


@dataclasses.dataclass
class BestValue:
    """Best value of ``metric`` so far, and the step and training time it was reached at.

    Attributes:
        metric: the history column.
        mode: ``'min'`` or ``'max'`` (``None`` on construction: from the column's name).
        value, step, time_s: the best so far; ``None`` before the first finite value.
    """

    metric: str
    mode: str | None = None
    value: float | None = None
    step: int | None = None
    time_s: float | None = None

    def __post_init__(self) -> None:
        self.mode = mode_for(self.metric, self.mode)

    def update(self, value: float, step: int, time_s: float) -> bool:
        """Take ``value`` if it is finite and better than the best so far; say whether it was.

        Ties keep the earlier step.
        """
        value = float(value)
        if not math.isfinite(value):
            return False
        if self.value is not None:
            better = value < self.value if self.mode == "min" else value > self.value
            if not better:
                return False
        self.value, self.step, self.time_s = value, int(step), float(time_s)
        return True

    def state_dict(self) -> dict[str, Any]:
        """What a snapshot and status.json record: ``best_metric``, ``best_mode``,
        ``best_value``, ``best_step``, ``best_time_s``."""
        return {
            "best_metric": self.metric,
            "best_mode": self.mode,
            "best_value": self.value,
            "best_step": self.step,
            "best_time_s": self.time_s,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a snapshot's record; ignored when it is for another metric or mode."""
        if not state or state.get("best_metric") != self.metric:
            return
        if state.get("best_mode") != self.mode or state.get("best_value") is None:
            return
        self.value = float(state["best_value"])
        self.step = int(state["best_step"])
        self.time_s = float(state.get("best_time_s") or 0.0)
