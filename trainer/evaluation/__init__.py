"""Evaluation of binary segmentations, by concern.

* ``trainer.metrics``: the pure core (counts at every threshold in one pass, metrics by name).
* ``trainer.evaluation.reference``: ELEKTRONN2's functions (``evaluate``, ``binary_nll``, ...)
  as thin wrappers with its return shapes.
* ``trainer.evaluation.run``: evaluating a run's snapshot (``python run.py evaluate``), one
  prediction pass for the result file and the probability cache.
* ``trainer.evaluation.figures``: the evaluation's own HTML figures.
* ``trainer.runs.result_file``: the result file; ``trainer.runs.results``: the probability
  cache and ``threshold.json`` formats.

The public names of these modules are importable from here, as in ELEKTRONN2; none imports
torch until a function that predicts runs.

Example:
    >>> from trainer.evaluation import evaluate, evaluate_run  # doctest: +SKIP
"""

from __future__ import annotations

from trainer.evaluation.figures import (
    REFERENCE_GRID,
    error_histogram_figure,
    performance_figure,
)
from trainer.evaluation.reference import (
    binary_nll,
    confusion_table,
    error_hist,
    eval_thresh,
    evaluate,
    evaluate_model_binary,
    find_nearest,
    format_report,
    performance_measure,
    rescale_fudge,
    roc_area,
)
from trainer.evaluation.run import (
    LoadedRun,
    default_snapshot,
    evaluate_again,
    evaluate_run,
    load_run,
)
from trainer.metrics import (
    IGNORE_LABEL,
    NOTHING_POSITIVE,
    ErrorHistogram,
    EvaluationInputError,
    EvaluationResult,
    SingleClassWarning,
    ThresholdChoice,
    ThresholdMetrics,
    evaluate_arrays,
)

__all__ = [
    "IGNORE_LABEL",
    "NOTHING_POSITIVE",
    "REFERENCE_GRID",
    "ErrorHistogram",
    "EvaluationInputError",
    "EvaluationResult",
    "LoadedRun",
    "SingleClassWarning",
    "ThresholdChoice",
    "ThresholdMetrics",
    "binary_nll",
    "confusion_table",
    "default_snapshot",
    "error_hist",
    "error_histogram_figure",
    "eval_thresh",
    "evaluate",
    "evaluate_again",
    "evaluate_arrays",
    "evaluate_model_binary",
    "evaluate_run",
    "find_nearest",
    "format_report",
    "load_run",
    "performance_figure",
    "performance_measure",
    "rescale_fudge",
    "roc_area",
]
