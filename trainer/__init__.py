"""VoxelBoard's training engine: ELEKTRONN2's training API on PyTorch.

Public names are imported lazily, so ``import trainer`` is cheap and does not pull in
torch until a name that needs it is used (the dashboard imports the light modules only).

Example:
    >>> from trainer import ExperimentConfig, Trainer
    >>> cfg = ExperimentConfig("examples/demo_cnn3d.py")
    >>> Trainer(cfg).run()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "ExperimentConfig": "config",
    "Schedule": "schedules",
    "HistoryTracker": "history",
    "loadhistorytracker": "history",
    "Trainer": "trainer",
    "TracingTrainer": "tracing",
    "TracingTrainerRNN": "tracing",
    "BackgroundProc": "parallel",
    "SharedQ": "parallel",
    "TimeoutError": "parallel",
    "binary_nll": "evaluation",
    "confusion_table": "evaluation",
    "error_hist": "evaluation",
    "eval_thresh": "evaluation",
    "evaluate": "evaluation",
    "evaluate_model_binary": "evaluation",
    "find_nearest": "evaluation",
    "performance_measure": "evaluation",
    "rescale_fudge": "evaluation",
    "roc_area": "evaluation",
    "user_input": "shell",
    "BatchCreatorImage": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"trainer.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
